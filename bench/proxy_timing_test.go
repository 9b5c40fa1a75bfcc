package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/gateway"
)

// BenchmarkScrape sends the same scrape to a pod directly (the floor),
// through scrapegate, and through httputil.ReverseProxy (what a Go user would
// write), for several body sizes. Allocations are the whole process's: pod,
// proxy and client; the pod and the client allocate nothing.
func BenchmarkScrape(b *testing.B) {
	for _, body := range []struct {
		name string
		gzip bool
		size int
	}{
		{"4KiB", false, 4 << 10},
		{"64KiB-gzip", true, 64 << 10},
		{"1MiB", false, 1 << 20},
		{"32MiB", false, 32 << 20},
	} {
		payload := exposition(body.size, body.gzip)
		pod := startPod(b, payload, body.gzip)
		gw := startScrapegate(b)
		rp := startReverseProxy(b)
		podPath := "/pods/" + strings.Replace(pod, ":", "/", 1) + "/metrics"
		b.Run(body.name+"/direct", func(b *testing.B) { scrape(b, pod, "/metrics", len(payload)) })
		b.Run(body.name+"/scrapegate", func(b *testing.B) { scrape(b, gw, podPath, len(payload)) })
		b.Run(body.name+"/httputil", func(b *testing.B) { scrape(b, rp, podPath, len(payload)) })
	}
}

func scrape(b *testing.B, addr, uri string, size int) {
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 256, MaxResponseBodySize: 64 << 20}
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

// exposition returns size bytes of Prometheus text format, or with compress
// a gzip stream of about size bytes.
func exposition(size int, compress bool) []byte {
	want := size
	if compress {
		want = size * 8
	}
	var plain bytes.Buffer
	for i := 0; plain.Len() < want; i++ {
		fmt.Fprintf(&plain, "http_requests_total{pod=\"bench\",code=\"%d\",path=\"/api/v%d\"} %d\n", 200+i%5, i%97, i*7919%100003)
	}
	if !compress {
		return plain.Bytes()[:size]
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(plain.Bytes())
	_ = zw.Close()
	return gz.Bytes()
}

func startPod(b *testing.B, payload []byte, gzipped bool) string {
	ln := listen(b, "127.0.0.40:0")
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain; version=0.0.4")
		if gzipped {
			ctx.Response.Header.Set("Content-Encoding", "gzip")
		}
		ctx.SetBody(payload)
	}}
	go func() { _ = s.Serve(ln) }()
	b.Cleanup(func() { _ = s.Shutdown() })
	return ln.Addr().String()
}

func startScrapegate(b *testing.B) string {
	cfg := gateway.DefaultConfig()
	allow, err := gateway.ParseCIDRs("127.0.0.0/8")
	if err != nil {
		b.Fatal(err)
	}
	cfg.AllowCIDRs = allow
	cfg.DrainDelay = 0
	// Every request comes from one caller here: keep the per-caller rate
	// limiter on the path, but out of the way.
	cfg.CallerRateLimit = 1e9
	cfg.CallerRateBurst = 1e9
	g, err := gateway.New(cfg, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	ln := listen(b, "127.0.0.1:0")
	go func() { _ = g.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// startReverseProxy is the baseline: httputil.ReverseProxy mapping the same
// /pods/{ip}/{port}/{path} contract, with a keep-alive pool per host.
func startReverseProxy(b *testing.B) string {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			rest := strings.TrimPrefix(pr.In.URL.Path, "/pods/")
			ip, rest, _ := strings.Cut(rest, "/")
			port, path, _ := strings.Cut(rest, "/")
			addr := netip.MustParseAddr(ip)
			pr.SetURL(&url.URL{Scheme: "http", Host: net.JoinHostPort(addr.String(), port)})
			pr.Out.URL.Path = "/" + path
			pr.Out.URL.RawPath = ""
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true},
	}
	ln := listen(b, "127.0.0.1:0")
	s := &http.Server{Handler: rp}
	go func() { _ = s.Serve(ln) }()
	b.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}

func listen(b *testing.B, addr string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return ln
}
