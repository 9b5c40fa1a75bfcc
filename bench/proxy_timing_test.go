package bench

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/bench/baseline"
	"github.com/scrapegate/scrapegate/gateway"
	"github.com/scrapegate/scrapegate/gateway/target"
	"github.com/scrapegate/scrapegate/internal/testutil"
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
		// key=value names let benchstat put the proxies side by side:
		// benchstat -col /proxy
		b.Run("body="+body.name+"/proxy=direct", func(b *testing.B) { scrape(b, pod, "/metrics", len(payload)) })
		b.Run("body="+body.name+"/proxy=scrapegate", func(b *testing.B) { scrape(b, gw, podPath, len(payload)) })
		b.Run("body="+body.name+"/proxy=httputil", func(b *testing.B) { scrape(b, rp, podPath, len(payload)) })
	}
}

// scrapeRequest is the request Prometheus sends for uri at addr.
func scrapeRequest(addr, uri string) []byte {
	return []byte("GET " + uri + " HTTP/1.1\r\nHost: " + addr + "\r\n" +
		"Accept: text/plain;version=0.0.4;q=0.3,*/*;q=0.2\r\nAccept-Encoding: gzip\r\n" +
		"User-Agent: Prometheus/3.5.0\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n")
}

func scrape(b *testing.B, addr, uri string, size int) {
	request := scrapeRequest(addr, uri)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := dialScraper(addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		for pb.Next() {
			if err := c.scrape(request, size); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// scraper is a keep-alive HTTP/1.1 client that allocates nothing per
// scrape, so that allocs/op counts only the pod and the proxy (and the pod,
// a fasthttp server answering with a fixed body, allocates nothing either).
// It reads the status line and headers, then discards exactly Content-Length
// bytes of body.
type scraper struct {
	net.Conn
	br *bufio.Reader
}

func dialScraper(addr string) (*scraper, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot dial %q: %w", addr, err)
	}
	return &scraper{Conn: c, br: bufio.NewReaderSize(c, 16<<10)}, nil
}

func (c *scraper) scrape(request []byte, size int) error {
	if _, err := c.Write(request); err != nil {
		return fmt.Errorf("cannot send the scrape: %w", err)
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("cannot read the status line: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("status line %q; want 200", line)
	}
	length := -1
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("cannot read the headers: %w", err)
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("Content-Length")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return fmt.Errorf("bad Content-Length %q", v)
			}
		}
	}
	if length != size {
		return fmt.Errorf("Content-Length %d; want %d", length, size)
	}
	if _, err := c.br.Discard(length); err != nil {
		return fmt.Errorf("cannot read the body: %w", err)
	}
	return nil
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

func startPod(b testing.TB, payload []byte, gzipped bool) string {
	ln := testutil.Listen(b, "127.0.0.40")
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

func startScrapegate(b testing.TB) string {
	cfg := gateway.DefaultConfig()
	allow, err := target.ParseCIDRs("127.0.0.0/8")
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
	ln := testutil.Listen(b, "127.0.0.1")
	go func() { _ = g.Serve(ln) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// startReverseProxy is the baseline a Go user would write (bench/baseline).
func startReverseProxy(b *testing.B) string {
	ln := testutil.Listen(b, "127.0.0.1")
	s := &http.Server{Handler: baseline.NewReverseProxy()}
	go func() { _ = s.Serve(ln) }()
	b.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}
