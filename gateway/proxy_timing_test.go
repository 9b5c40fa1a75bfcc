package gateway

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkProxy measures one scrape through the gateway against the same
// scrape sent to the pod directly, in one run, so their ratio is meaningful.
// Allocations are the whole process's: pod, gateway and client.
func BenchmarkProxy(b *testing.B) {
	for _, body := range []struct {
		name string
		gzip bool
		size int
	}{
		{"4KiB", false, 4 << 10},
		{"64KiB-gzip", true, 64 << 10},
		{"1MiB", false, 1 << 20},
	} {
		payload, encoding := benchBody(body.size, body.gzip)
		pod := startBenchPod(b, payload, encoding)
		_, gw := startGateway(b, testConfig())
		b.Run(body.name+"/direct", func(b *testing.B) {
			benchScrapes(b, pod, "/metrics", len(payload))
		})
		b.Run(body.name+"/scrapegate", func(b *testing.B) {
			benchScrapes(b, gw, fmt.Sprintf("/pods/%s/metrics", podPathAddr(pod)), len(payload))
		})
	}
}

func benchScrapes(b *testing.B, addr, uri string, size int) {
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 256, StreamResponseBody: false}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(uri)
		req.Header.SetHost(addr)
		req.Header.Set("Accept-Encoding", "gzip")
		req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "10")
		for pb.Next() {
			if err := c.Do(req, resp); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != 200 || len(resp.Body()) != size {
				b.Fatalf("status %d, %d bytes; want 200, %d", resp.StatusCode(), len(resp.Body()), size)
			}
		}
	})
}

// benchBody returns a Prometheus text exposition of about size bytes, or
// (gzip) a compressed one of about size bytes.
func benchBody(size int, compress bool) ([]byte, string) {
	var plain bytes.Buffer
	for i := 0; plain.Len() < size*map[bool]int{false: 1, true: 8}[compress]; i++ {
		fmt.Fprintf(&plain, "http_requests_total{pod=\"bench\",code=\"%d\",path=\"/api/v%d\"} %d\n", 200+i%5, i%97, i*7919%100003)
	}
	if !compress {
		return plain.Bytes()[:size], ""
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(plain.Bytes())
	_ = zw.Close()
	return gz.Bytes(), "gzip"
}

func startBenchPod(b *testing.B, payload []byte, encoding string) string {
	ln, err := net.Listen("tcp", "127.0.0.40:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain; version=0.0.4")
		if encoding != "" {
			ctx.Response.Header.Set("Content-Encoding", encoding)
		}
		ctx.SetBody(payload)
	}}
	go func() { _ = s.Serve(ln) }()
	b.Cleanup(func() { _ = s.Shutdown() })
	return ln.Addr().String()
}

// podPathAddr turns "ip:port" into the "ip/port" of a /pods/ path.
func podPathAddr(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return host + "/" + port
}
