package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/gateway/upstream"
	"github.com/scrapegate/scrapegate/internal/testutil"
)

func TestProxyForwardsRawPathAndQuery(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	pod := startPod(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Host+" "+r.RequestURI)
		mu.Unlock()
		fmt.Fprint(w, "ok")
	})
	_, gw := startGateway(t, testConfig())

	f := func(target, wantRequestURI string) {
		t.Helper()
		mu.Lock()
		seen = nil
		mu.Unlock()
		r := get(t, gw, target)
		if r.StatusCode != 200 || r.body != "ok" {
			t.Fatalf("GET %s = %d %q; want 200 ok", target, r.StatusCode, r.body)
		}
		mu.Lock()
		defer mu.Unlock()
		want := pod.addr.String() + " " + wantRequestURI
		if len(seen) != 1 || seen[0] != want {
			t.Fatalf("GET %s: pod saw %q; want [%q]", target, seen, want)
		}
	}
	f(pod.podPath("/metrics"), "/metrics")
	f(pod.podPath("/metrics?a=1&b=%20c&a=2"), "/metrics?a=1&b=%20c&a=2")
	f(pod.podPath("/a%41b/.c/c//d"), "/a%41b/.c/c//d")
	f(pod.podPath("/probe?target=http://10.0.0.1:80/x?y"), "/probe?target=http://10.0.0.1:80/x?y")
	f(pod.podPath("//evil.example/x"), "//evil.example/x")
	f(pod.podPath(""), "/")
	// The psystrike rule writes the bracketed form for IPv6; IPv4 may come bracketed too.
	f(fmt.Sprintf("/pods/[%s]/%d/m", pod.addr.Addr(), pod.addr.Port()), "/m")
	// Forward-proxy mode: absolute-form request targets.
	f("http://"+pod.addr.String()+"/metrics?x=1", "/metrics?x=1")
	f("HTTP://"+pod.addr.String()+"/a%41b", "/a%41b")
}

func TestProxyIPv6(t *testing.T) {
	pod := startPod(t, "::1", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Host+" "+r.RequestURI)
	})
	_, gw := startGateway(t, testConfig())
	port := pod.addr.Port()
	want := fmt.Sprintf("[::1]:%d /metrics", port)
	for _, target := range []string{
		fmt.Sprintf("/pods/::1/%d/metrics", port),
		fmt.Sprintf("/pods/[::1]/%d/metrics", port),
		fmt.Sprintf("http://[::1]:%d/metrics", port),
	} {
		if r := get(t, gw, target); r.StatusCode != 200 || r.body != want {
			t.Fatalf("GET %s = %d %q; want 200 %q", target, r.StatusCode, r.body, want)
		}
	}
}

func TestProxyWithGoProxyClient(t *testing.T) {
	// Prometheus's proxy_url uses Go's HTTP client: check that exact client.
	pod := startPod(t, "127.0.0.3", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "pod says "+r.URL.Path)
	})
	_, gw := startGateway(t, testConfig())
	proxyURL, _ := url.Parse("http://" + gw)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	resp, err := c.Get("http://" + pod.addr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "pod says /metrics" {
		t.Fatalf("via proxy_url: %d %q", resp.StatusCode, body)
	}
}

func TestProxyPassesGzipThrough(t *testing.T) {
	var plain bytes.Buffer
	for i := range 2000 {
		fmt.Fprintf(&plain, "metric_%d{pod=\"p\"} %d\n", i, i)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(plain.Bytes())
	_ = zw.Close()
	pod := startPod(t, "127.0.0.4", func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			http.Error(w, "gzip was not asked for", 400)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", fmt.Sprint(gz.Len()))
		_, _ = w.Write(gz.Bytes())
	})
	_, gw := startGateway(t, testConfig())
	r := get(t, gw, pod.podPath("/metrics"), "Accept-Encoding: gzip")
	if r.StatusCode != 200 {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	if got := r.Header.Get("Content-Encoding"); got != "gzip" {
		t.Fatalf("Content-Encoding = %q; want gzip", got)
	}
	if r.ContentLength != int64(gz.Len()) {
		t.Fatalf("Content-Length = %d; want the pod's %d", r.ContentLength, gz.Len())
	}
	if r.body != gz.String() {
		t.Fatalf("body differs from the pod's gzip bytes (%d vs %d bytes)", len(r.body), gz.Len())
	}
	if got := r.Header.Get("Content-Type"); got != "text/plain; version=0.0.4" {
		t.Fatalf("Content-Type = %q", got)
	}
}

func TestProxyHeaders(t *testing.T) {
	var got http.Header
	pod := startPod(t, "127.0.0.5", func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		h := w.Header()
		h.Set("Connection", "X-Pod-Hop")
		h.Set("X-Pod-Hop", "1")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Authenticate", "Basic")
		h.Set("Upgrade", "h2c")
		h.Set("X-Pod-Kept", "yes")
		fmt.Fprint(w, "ok")
	})
	cfg := testConfig()
	cfg.ForwardRequestHeaders = []string{"x-tenant"}
	_, gw := startGateway(t, cfg)
	r := get(t, gw, pod.podPath("/metrics"),
		"Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
		"Accept-Encoding: gzip",
		"User-Agent: Prometheus/2.42.0",
		"X-Prometheus-Scrape-Timeout-Seconds: 10",
		"Authorization: Bearer gateway-secret",
		"Proxy-Authorization: Basic Zm9vOmJhcg==",
		"Cookie: session=secret",
		"Connection: keep-alive, X-Caller-Hop",
		"Connection: X-Caller-Hop2",
		"X-Caller-Hop: 1",
		"X-Caller-Hop2: 1",
		"Keep-Alive: timeout=5",
		"TE: trailers",
		"Trailer: X-T",
		"Upgrade: websocket",
		"Proxy-Connection: keep-alive",
		"X-Tenant: team-a",
		// Headers a scrape does not need, some of which mean something to
		// a pod's server, a proxy in front of it, or a metadata service.
		"X-Custom: dropped",
		"X-Forwarded-For: 10.0.0.1",
		"X-Forwarded-Host: evil",
		"Forwarded: for=10.0.0.1",
		"X-Real-IP: 10.0.0.1",
		"X-Original-URL: /admin",
		"X-Rewrite-URL: /admin",
		"X-HTTP-Method-Override: DELETE",
		"Metadata-Flavor: Google",
		"Metadata: true",
		"X-aws-ec2-metadata-token: t",
		"X-aws-ec2-metadata-token-ttl-seconds: 60",
		"Impersonate-User: admin",
	)
	if r.StatusCode != 200 {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	for k, want := range map[string]string{
		"Accept":                              "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
		"Accept-Encoding":                     "gzip",
		"User-Agent":                          "Prometheus/2.42.0",
		"X-Prometheus-Scrape-Timeout-Seconds": "10",
		"X-Tenant":                            "team-a", // -forward-request-headers
	} {
		if got.Get(k) != want {
			t.Errorf("pod got %s: %q; want %q", k, got.Get(k), want)
		}
	}
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Caller-Hop", "X-Caller-Hop2",
		"Keep-Alive", "Te", "Trailer", "Upgrade", "Proxy-Connection",
		"X-Custom", "X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "X-Real-Ip", "X-Original-Url", "X-Rewrite-Url",
		"X-Http-Method-Override", "Metadata-Flavor", "Metadata", "X-Aws-Ec2-Metadata-Token", "X-Aws-Ec2-Metadata-Token-Ttl-Seconds",
		"Impersonate-User"} {
		if v, ok := got[k]; ok {
			t.Errorf("pod got %s: %q; it must not be forwarded", k, v)
		}
	}
	if c := got.Get("Connection"); strings.Contains(strings.ToLower(c), "x-caller-hop") || strings.Contains(strings.ToLower(c), "upgrade") {
		t.Errorf("pod got Connection: %q", c)
	}
	if r.Header.Get("X-Pod-Kept") != "yes" {
		t.Errorf("X-Pod-Kept was dropped: %v", r.Header)
	}
	for _, k := range []string{"X-Pod-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade"} {
		if v, ok := r.Header[k]; ok {
			t.Errorf("caller got %s: %q; it must not be forwarded", k, v)
		}
	}
}

func TestProxyAddsNoContentType(t *testing.T) {
	// net/http would sniff one; a raw pod sends exactly what it means.
	pod := listenRaw(t, "127.0.0.6", func(c net.Conn) {
		_, _ = c.Read(make([]byte, 4096))
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	_, gw := startGateway(t, testConfig())
	r := get(t, gw, fmt.Sprintf("/pods/127.0.0.6/%d/metrics", pod.port))
	if v, ok := r.Header["Content-Type"]; ok || r.body != "ok" {
		t.Fatalf("pod sent no Content-Type; caller got %q (body %q)", v, r.body)
	}
}

func TestProxyHead(t *testing.T) {
	pod := startPod(t, "127.0.0.6", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead {
			http.Error(w, "want HEAD, got "+r.Method, 400)
			return
		}
		w.Header().Set("Content-Length", "12345")
	})
	_, gw := startGateway(t, testConfig())
	r := rawGet(t, gw, "HEAD", pod.podPath("/metrics"))
	if r.StatusCode != 200 || r.ContentLength != 12345 || r.body != "" {
		t.Fatalf("HEAD = %d, Content-Length %d, body %q; want 200, 12345, empty", r.StatusCode, r.ContentLength, r.body)
	}
}

func TestProxyHonoursScrapeTimeoutHeader(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	pod := startPod(t, "127.0.0.7", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	cfg := testConfig()
	// Were the header ignored, the default would outlast the test.
	cfg.ScrapeTimeoutDefault = time.Hour
	cfg.ScrapeTimeoutMax = time.Hour
	g, gw := startGateway(t, cfg)
	r := get(t, gw, pod.podPath("/metrics"), "X-Prometheus-Scrape-Timeout-Seconds: 0.5")
	if r.StatusCode != 504 || !strings.Contains(r.body, "timeout") || !strings.Contains(r.body, pod.addr.String()) {
		t.Fatalf("slow pod: %d %q; want 504 naming the target and the timeout", r.StatusCode, r.body)
	}
	if v := metricValue(t, g, `scrapegate_upstream_errors_total{reason="timeout"}`); v != 1 {
		t.Fatalf("timeout errors = %v; want 1", v)
	}
}

func TestScrapeTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.ScrapeTimeoutDefault = 7 * time.Second
	cfg.ScrapeTimeoutMax = 30 * time.Second
	cfg.ScrapeTimeoutMargin = 250 * time.Millisecond
	g, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	f := func(header string, want time.Duration) {
		t.Helper()
		var h fasthttp.RequestHeader
		if header != "" {
			h.Set("X-Prometheus-Scrape-Timeout-Seconds", header)
		}
		if got := g.scrapeTimeout(&h); got != want {
			t.Fatalf("scrapeTimeout(%q) = %s; want %s", header, got, want)
		}
	}
	f("", 7*time.Second)
	f("10", 9750*time.Millisecond)
	f("2.5", 2250*time.Millisecond)
	f("0.2", 100*time.Millisecond)  // the margin never takes more than half
	f("30", 29750*time.Millisecond) // the margin applies at the maximum too
	f("60", 30*time.Second)         // clamped to the maximum
	f("1e300", 30*time.Second)
	f("0", 7*time.Second)
	f("-1", 7*time.Second)
	f("NaN", 7*time.Second)
	f("soon", 7*time.Second)
}

func TestProxyReusesConnections(t *testing.T) {
	pod := startPod(t, "127.0.0.8", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("x", 100<<10))
	})
	_, gw := startGateway(t, testConfig())
	for range 5 {
		if r := get(t, gw, pod.podPath("/metrics")); r.StatusCode != 200 || len(r.body) != 100<<10 {
			t.Fatalf("status %d, %d bytes", r.StatusCode, len(r.body))
		}
	}
	if n := pod.conns.Load(); n != 1 {
		t.Fatalf("5 scrapes opened %d connections to the pod; want 1", n)
	}
}

func TestProxyRetriesOnlyAStaleIdleConnection(t *testing.T) {
	// The pod closes each connection right after answering, without saying
	// so: the gateway's pooled connection is dead by the next scrape.
	pod := startPod(t, "127.0.0.9", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		fmt.Fprint(w, "ok")
		w.(http.Flusher).Flush()
		conn, _, _ := w.(http.Hijacker).Hijack()
		waitForPeerRead(conn)
		conn.Close()
	})
	g, gw := startGateway(t, testConfig())
	for i := range 3 {
		if r := get(t, gw, pod.podPath("/metrics")); r.StatusCode != 200 || r.body != "ok" {
			t.Fatalf("scrape %d: %d %q", i, r.StatusCode, r.body)
		}
	}
	if v := metricValue(t, g, `scrapegate_upstream_errors_total{reason="connection_reset"}`); v != 0 {
		t.Fatalf("stale pooled connections were reported as errors: %v", v)
	}

	// A pod that answers with an error is asked exactly once.
	var hits sync.Map
	failing := startPod(t, "127.0.0.9", func(w http.ResponseWriter, r *http.Request) {
		n, _ := hits.LoadOrStore("n", new(int))
		*n.(*int)++
		http.Error(w, "boom", 500)
	})
	if r := get(t, gw, failing.podPath("/metrics")); r.StatusCode != 500 {
		t.Fatalf("failing pod: %d; want its 500 passed through", r.StatusCode)
	}
	n, _ := hits.Load("n")
	if *n.(*int) != 1 {
		t.Fatalf("failing pod was asked %d times; want 1", *n.(*int))
	}
}

func TestProxyDoesNotRetryAFreshConnection(t *testing.T) {
	// The pod reads the scrape and hangs up without answering, as a crashing
	// handler would: that scrape failed, and the pod must not get it twice.
	pod := listenRaw(t, "127.0.0.9", func(c net.Conn) {
		_, _ = c.Read(make([]byte, 4096))
	})
	_, gw := startGateway(t, testConfig())
	r := get(t, gw, fmt.Sprintf("/pods/127.0.0.9/%d/metrics", pod.port))
	if r.StatusCode != 502 || !strings.Contains(r.body, "connection_reset") {
		t.Fatalf("pod hung up: %d %q; want 502 connection_reset", r.StatusCode, r.body)
	}
	if n := pod.accepted.Load(); n != 1 {
		t.Fatalf("the pod got the scrape on %d connections; want 1", n)
	}
}

func TestProxySurvivesAPodRestartWithPooledConnections(t *testing.T) {
	// Several pooled connections die at once when the pod restarts on the
	// same address; the next scrape must not fail on a second dead one.
	const conns = 3
	arrived := make(chan struct{}, conns)
	release := make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery == "hold" {
			arrived <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "ok")
	})
	ln, err := net.Listen("tcp", "127.0.0.21:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	before := &http.Server{Handler: handler}
	go func() { _ = before.Serve(ln) }()
	cfg := testConfig()
	cfg.MaxConnsPerEndpoint = conns
	g, gw := startGateway(t, cfg)
	path := "/pods/" + strings.Replace(addr, ":", "/", 1) + "/metrics"
	var held sync.WaitGroup
	for range conns {
		held.Add(1)
		go func() {
			defer held.Done()
			get(t, gw, path+"?hold")
		}()
	}
	for range conns {
		<-arrived
	}
	close(release)
	held.Wait()
	if n := endpointState(t, g, netip.MustParseAddrPort(addr)).Conns; n != conns {
		t.Fatalf("%d pooled connections; want %d", n, conns)
	}

	_ = before.Close() // the pod restarts: every pooled connection is dead
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	after := &http.Server{Handler: handler}
	go func() { _ = after.Serve(ln) }()
	defer after.Close()
	if r := get(t, gw, path); r.StatusCode != 200 || r.body != "ok" {
		t.Fatalf("first scrape after the restart: %d %q", r.StatusCode, r.body)
	}
}

func TestProxyQueuedScrapesGetConnectionsClosedByThePod(t *testing.T) {
	// One connection per endpoint, and the pod closes it after each answer:
	// a scrape queued for it must get a fresh connection, not a failure.
	const scrapes = 3
	inPod := make(chan struct{}, scrapes)
	release := make(chan struct{})
	pod := startPod(t, "127.0.0.22", func(w http.ResponseWriter, r *http.Request) {
		inPod <- struct{}{}
		<-release
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, "ok")
	})
	cfg := testConfig()
	cfg.MaxConnsPerEndpoint = 1
	g, gw := startGateway(t, cfg)
	results := make(chan rawResponse, scrapes)
	for range scrapes {
		go func() { results <- get(t, gw, pod.podPath("/metrics")) }()
	}
	<-inPod
	testutil.WaitFor(t, "every scrape to be in flight", func() bool { return g.pool.Inflight() == scrapes })
	close(release)
	for range scrapes {
		if r := <-results; r.StatusCode != 200 {
			t.Fatalf("queued scrape: %d %q; want 200", r.StatusCode, r.body)
		}
	}
}

// waitForPeerRead gives the peer a moment to have read what was flushed: a
// close with unread data in the socket would be a reset, not a clean close.
func waitForPeerRead(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, _ = conn.Read(make([]byte, 1))
}

func TestPoolEvictsIdleEndpoints(t *testing.T) {
	pod := startPod(t, "127.0.0.10", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	cfg := testConfig()
	cfg.EndpointIdleTTL = time.Minute
	g, gw := startGateway(t, cfg)
	get(t, gw, pod.podPath("/metrics"))
	if n := g.pool.Len(); n != 1 {
		t.Fatalf("pooled endpoints = %d; want 1", n)
	}
	if n := g.pool.EvictIdle(time.Now()); n != 0 {
		t.Fatalf("evicted %d endpoints used just now", n)
	}
	if n := g.pool.EvictIdle(time.Now().Add(2 * time.Minute)); n != 1 {
		t.Fatalf("evicted %d endpoints idle past the TTL; want 1", n)
	}
	if v := metricValue(t, g, "scrapegate_pooled_endpoints"); v != 0 {
		t.Fatalf("scrapegate_pooled_endpoints = %v after eviction", v)
	}
	if v := metricValue(t, g, "scrapegate_pooled_endpoints_evicted_total"); v != 1 {
		t.Fatalf("scrapegate_pooled_endpoints_evicted_total = %v", v)
	}
	// The evicted pool's idle connection is closed: the next scrape dials.
	get(t, gw, pod.podPath("/metrics"))
	if n := pod.conns.Load(); n != 2 {
		t.Fatalf("pod saw %d connections; want 2 (one per pool)", n)
	}

	// An endpoint with a scrape in flight is never evicted, however old.
	s, err := g.pool.Begin(upstream.Key{Addr: pod.addr}, nil, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if n := g.pool.EvictIdle(time.Now().Add(time.Hour)); n != 0 {
		t.Fatalf("evicted an endpoint with an active scrape")
	}
	s.Finish()
}

func TestProxyChurnKeepsPoolBounded(t *testing.T) {
	cfg := testConfig()
	cfg.EndpointIdleTTL = time.Minute
	g, gw := startGateway(t, cfg)
	// 300 endpoints that each existed once (connection refused is enough to
	// create a pool entry); after the TTL none is left.
	for i := range 300 {
		get(t, gw, fmt.Sprintf("/pods/127.0.%d.%d/1/metrics", 100+i/250, 1+i%250))
	}
	if n := g.pool.Len(); n != 300 {
		t.Fatalf("pooled endpoints = %d; want 300", n)
	}
	g.pool.EvictIdle(time.Now().Add(2 * time.Minute))
	if n := g.pool.Len(); n != 0 {
		t.Fatalf("pooled endpoints after TTL = %d; want 0", n)
	}
}

func TestProxyErrors(t *testing.T) {
	garbage := listenRaw(t, "127.0.0.11", func(c net.Conn) {
		_, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n\r\n")
	})
	reset := listenRaw(t, "127.0.0.11", func(c net.Conn) {
		_ = c.(*net.TCPConn).SetLinger(0)
	})
	closedPort := testutil.FreeAddr(t, "127.0.0.11").Port()
	g, gw := startGateway(t, testConfig())

	f := func(target string, wantStatus int, wantReason string, wantMetric string) {
		t.Helper()
		before := metricValue(t, g, wantMetric)
		r := get(t, gw, target)
		if r.StatusCode != wantStatus {
			t.Fatalf("GET %s = %d %q; want %d", target, r.StatusCode, r.body, wantStatus)
		}
		if strings.Count(r.body, "\n") != 1 || !strings.HasSuffix(r.body, "\n") || !strings.Contains(r.body, wantReason) ||
			!strings.Contains(r.body, target) {
			t.Fatalf("GET %s: body %q is not one line naming the target and %q", target, r.body, wantReason)
		}
		if got := r.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Fatalf("GET %s: Content-Type %q", target, got)
		}
		if after := metricValue(t, g, wantMetric); after != before+1 {
			t.Fatalf("GET %s: %s went %v -> %v; want +1", target, wantMetric, before, after)
		}
	}
	f("/pods/127.1/80/metrics", 400, "bad_target", `scrapegate_rejected_requests_total{reason="bad_target"}`)
	f("/pods/10.0.0.1/99999/metrics", 400, "bad_target", `scrapegate_rejected_requests_total{reason="bad_target"}`)
	f("http://user@127.0.0.11:80/metrics", 400, "bad_target", `scrapegate_rejected_requests_total{reason="bad_target"}`)
	f("/pods/8.8.8.8/53/metrics", 403, "forbidden", `scrapegate_rejected_requests_total{reason="forbidden"}`)
	f("http://169.254.169.254/latest/meta-data", 403, "forbidden", `scrapegate_rejected_requests_total{reason="forbidden"}`)
	f(fmt.Sprintf("/pods/127.0.0.11/%d/metrics", closedPort), 502, "connect_refused", `scrapegate_upstream_errors_total{reason="connect_refused"}`)
	f(fmt.Sprintf("/pods/127.0.0.11/%d/metrics", garbage.port), 502, "bad_response", `scrapegate_upstream_errors_total{reason="bad_response"}`)
	f(fmt.Sprintf("/pods/127.0.0.11/%d/metrics", reset.port), 502, "connection_reset", `scrapegate_upstream_errors_total{reason="connection_reset"}`)

	r := rawGet(t, gw, "POST", "/pods/127.0.0.11/80/metrics")
	if r.StatusCode != 405 {
		t.Fatalf("POST = %d; want 405", r.StatusCode)
	}
	r = rawGet(t, gw, "DELETE", "http://127.0.0.11:80/metrics")
	if r.StatusCode != 405 || r.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("DELETE absolute-form = %d, Allow %q; want 405 GET, HEAD", r.StatusCode, r.Header.Get("Allow"))
	}
	r = get(t, gw, "/nothing/here")
	if r.StatusCode != 404 || strings.Count(r.body, "\n") != 1 {
		t.Fatalf("unknown path = %d %q; want 404 and one line", r.StatusCode, r.body)
	}
}

func TestPolicyRefusalOpensNoConnection(t *testing.T) {
	canary := listenRaw(t, "127.0.0.12", func(c net.Conn) {})
	cfg := testConfig()
	cfg.AllowCIDRs = mustParsePrefixes("10.0.0.0/8")
	_, gw := startGateway(t, cfg)
	for _, target := range []string{
		fmt.Sprintf("/pods/127.0.0.12/%d/metrics", canary.port),
		fmt.Sprintf("/pods/::ffff:127.0.0.12/%d/metrics", canary.port),
		fmt.Sprintf("http://127.0.0.12:%d/metrics", canary.port),
	} {
		if r := get(t, gw, target); r.StatusCode != 403 {
			t.Fatalf("GET %s = %d; want 403", target, r.StatusCode)
		}
	}
	// Any connection the gateway opened was established before it answered,
	// so it is accepted before this one.
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.12:%d", canary.port))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	testutil.WaitFor(t, "the canary to accept the test's own connection", func() bool { return canary.accepted.Load() > 0 })
	if n := canary.accepted.Load(); n != 1 {
		t.Fatalf("the canary saw %d connections from the gateway", n-1)
	}
}

func TestProxyMidBodyFailureIsAFailure(t *testing.T) {
	lines := strings.Repeat("partial_metric 1\n", 100)
	chunks := strings.Repeat(fmt.Sprintf("%x\r\npartial_metric 1\n\r\n", len("partial_metric 1\n")), 100)
	f := func(name, headers, body string) {
		t.Helper()
		pod := listenRaw(t, "127.0.0.13", func(c net.Conn) {
			_, _ = c.Read(make([]byte, 4096))
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n"+headers+"\r\n"+body)
			// and the pod dies mid-body.
		})
		g, gw := startGateway(t, testConfig())
		conn, err := net.Dial("tcp", gw)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /pods/127.0.0.13/%d/metrics HTTP/1.1\r\nHost: x\r\n\r\n", pod.port)
		// Whether the headers got out before the abort or not, the caller
		// must not be able to read a complete response.
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			var body []byte
			body, err = io.ReadAll(resp.Body)
			if err == nil {
				t.Fatalf("%s: a truncated body read cleanly (%d bytes): Prometheus would store a partial scrape", name, len(body))
			}
		}
		testutil.WaitFor(t, "body_failed to be counted", func() bool {
			return metricValue(t, g, `scrapegate_upstream_errors_total{reason="body_failed"}`) == 1
		})
	}
	f("content-length", "Content-Length: 100000\r\n", lines)
	f("chunked, cut inside a chunk", "Transfer-Encoding: chunked\r\n", "1000\r\n"+lines)
	f("chunked, cut between chunks", "Transfer-Encoding: chunked\r\n", chunks)
}

func TestProxyCompleteChunkedBodyFromClosingPod(t *testing.T) {
	// The mirror image of a cut between chunks: the pod sends the last chunk
	// and then closes. That body is complete and must pass as such.
	chunks := strings.Repeat(fmt.Sprintf("%x\r\nsome_metric 1\n\r\n", len("some_metric 1\n")), 100) + "0\r\n\r\n"
	f := func(name, headers string) {
		t.Helper()
		pod := listenRaw(t, "127.0.0.13", func(c net.Conn) {
			_, _ = c.Read(make([]byte, 4096))
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"+headers+"\r\n"+chunks)
		})
		g, gw := startGateway(t, testConfig())
		r := get(t, gw, fmt.Sprintf("/pods/127.0.0.13/%d/metrics", pod.port))
		if r.StatusCode != 200 || r.body != strings.Repeat("some_metric 1\n", 100) {
			t.Fatalf("%s: %d, %d bytes", name, r.StatusCode, len(r.body))
		}
		if v := metricValue(t, g, `scrapegate_upstream_errors_total{reason="body_failed"}`); v != 0 {
			t.Fatalf("%s: a complete body counted as failed", name)
		}
	}
	f("connection close", "Connection: close\r\n")
	f("keep-alive", "")
}

func TestProxyClientDisconnectClosesUpstream(t *testing.T) {
	pod, podConnClosed := bigBodyPod(t, "127.0.0.14")
	g, gw := startGateway(t, testConfig())
	fdsBefore := openFDs(t)
	conn, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", pod.podPath("/metrics"))
	if _, err := io.ReadFull(conn, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case <-podConnClosed:
	case <-time.After(30 * time.Second):
		t.Fatal("the pod's connection stayed open after the caller went away")
	}
	testutil.WaitFor(t, "the scrape to be released", func() bool {
		return g.pool.Inflight() == 0 && metricValue(t, g, `scrapegate_client_aborts_total{reason="client_gone"}`) == 1
	})
	// Caller, gateway and pod sockets all closed: no descriptor leaked.
	testutil.WaitFor(t, "open file descriptors to return to their count before the scrape", func() bool {
		return openFDs(t) <= fdsBefore
	})
	state := endpointState(t, g, pod.addr)
	if n := state.Active; n != 0 {
		t.Fatalf("endpoint still has %d active scrapes", n)
	}
	if n := state.Conns; n != 0 {
		t.Fatalf("the half-read connection went back to the pool (%d pooled)", n)
	}
	// And the next scrape works on a fresh connection.
	get(t, gw, pod.podPath("/metrics?short"))
}

func TestProxyOverloadAnswers503AtOnce(t *testing.T) {
	inPod := make(chan struct{})
	release := make(chan struct{})
	pod := startPod(t, "127.0.0.15", func(w http.ResponseWriter, r *http.Request) {
		inPod <- struct{}{}
		<-release
		fmt.Fprint(w, "ok")
	})
	cfg := testConfig()
	cfg.MaxInflight = 1
	g, gw := startGateway(t, cfg)
	first := make(chan rawResponse)
	go func() { first <- get(t, gw, pod.podPath("/metrics")) }()
	<-inPod
	r := get(t, gw, pod.podPath("/metrics"))
	if r.StatusCode != 503 || r.Header.Get("Retry-After") == "" || !strings.Contains(r.body, "overloaded") {
		t.Fatalf("past -max-inflight: %d Retry-After=%q %q; want 503 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"), r.body)
	}
	close(release)
	if r := <-first; r.StatusCode != 200 {
		t.Fatalf("the scrape in flight got %d", r.StatusCode)
	}
	if v := metricValue(t, g, `scrapegate_rejected_requests_total{reason="overloaded"}`); v != 1 {
		t.Fatalf("overloaded = %v; want 1", v)
	}
}

func TestProxyLargeBodyStreamsWithBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1 GiB")
	}
	const size = 1 << 30
	chunk := bytes.Repeat([]byte("some_metric{label=\"value\"} 12345\n"), 2000)
	pod := startPod(t, "127.0.0.16", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for left := size; left > 0; {
			n := min(left, len(chunk))
			if _, err := w.Write(chunk[:n]); err != nil {
				return
			}
			left -= n
		}
	})
	cfg := testConfig()
	// A slow machine may need long for 1 GiB; the default deadline would
	// (rightly) cut it off.
	cfg.ScrapeTimeoutDefault = 10 * time.Minute
	cfg.ScrapeTimeoutMax = 10 * time.Minute
	_, gw := startGateway(t, cfg)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp := getUnread(t, gw, pod.podPath("/metrics"))
	if resp.ContentLength != size {
		t.Fatalf("Content-Length = %d; want the pod's %d", resp.ContentLength, size)
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 64<<10))
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v; want %d", n, err, size)
	}
	runtime.ReadMemStats(&after)
	// Everything allocated in this process while 1 GiB went through pod,
	// gateway and client: a buffered body alone would be 1 GiB.
	if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 32<<20 {
		t.Fatalf("%d MiB allocated to move 1 GiB; the body is being buffered", allocated>>20)
	}
}

// TestProxySendsATypicalScrapeInOneWrite checks the cost that dominates a
// proxied scrape, system calls: a typical body leaves the gateway in one
// write with its headers, however the pod wrote it. (How many writes a
// larger body takes depends on how much each read from the pod brings, so
// it is measured by the benchmarks, not asserted here.)
func TestProxySendsATypicalScrapeInOneWrite(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 10<<10)
	pod := startPod(t, "127.0.0.17", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		for b := body; len(b) > 0; b = b[min(len(b), 1000):] {
			_, _ = w.Write(b[:min(len(b), 1000)])
			w.(http.Flusher).Flush() // the answer arrives in pieces
		}
	})
	g, err := New(testConfig(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ln := &writeCountingListener{Listener: testutil.Listen(t, "127.0.0.1")}
	gw := serveGatewayOn(t, g, ln)
	resp := rawGet(t, gw, "GET", pod.podPath("/metrics"))
	if resp.StatusCode != 200 || resp.body != string(body) || resp.bodyErr != nil {
		t.Fatalf("%d, %d bytes, %v; want 200 and the pod's %d bytes", resp.StatusCode, len(resp.body), resp.bodyErr, len(body))
	}
	if n := ln.writes.Load(); n != 1 {
		t.Fatalf("the response went out in %d writes; want 1", n)
	}
}

// writeCountingListener counts the writes on the connections it accepts.
type writeCountingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &writeCountingConn{Conn: c, writes: &l.writes}, nil
}

type writeCountingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *writeCountingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func TestGracefulShutdownFinishesInflightScrape(t *testing.T) {
	pod, inPod, release := heldPod(t, "127.0.0.17", "finished")
	g, gw := startGateway(t, testConfig())
	scrape := make(chan rawResponse)
	go func() { scrape <- get(t, gw, pod.podPath("/metrics")) }()
	<-inPod

	shutdown := make(chan error)
	go func() { shutdown <- g.Shutdown(context.Background()) }()
	testutil.WaitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", gw)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned (%v) with a scrape in flight", err)
	default:
	}
	close(release)
	if r := <-scrape; r.StatusCode != 200 || r.body != "finished" {
		t.Fatalf("in-flight scrape during shutdown: %d %q", r.StatusCode, r.body)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown: %s", err)
	}
}

func TestDrainingReportsNotReadyAndMovesConnections(t *testing.T) {
	pod := startPod(t, "127.0.0.18", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	cfg := testConfig()
	cfg.DrainDelay = time.Hour
	g, gw := startGateway(t, cfg)
	if r := get(t, gw, "/readyz"); r.StatusCode != 200 {
		t.Fatalf("/readyz before shutdown = %d", r.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	shutdown := make(chan error)
	go func() { shutdown <- g.Shutdown(ctx) }()
	testutil.WaitFor(t, "draining", func() bool { return g.state.Load() == stateDraining })
	if r := get(t, gw, "/readyz"); r.StatusCode != 503 {
		t.Fatalf("/readyz while draining = %d; want 503", r.StatusCode)
	}
	if r := get(t, gw, "/healthz"); r.StatusCode != 200 {
		t.Fatalf("/healthz while draining = %d; want 200", r.StatusCode)
	}
	r := get(t, gw, pod.podPath("/metrics"))
	if r.StatusCode != 200 || !r.Close {
		t.Fatalf("scrape while draining = %d, Connection: close %v; want 200 and close", r.StatusCode, r.Close)
	}
	cancel()
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
}

func TestStoppingRefusesNewScrapes(t *testing.T) {
	pod := startPod(t, "127.0.0.19", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	g, gw := startGateway(t, testConfig())
	// A request that reached a connection the server had not yet closed.
	get(t, gw, "/healthz")
	g.state.Store(stateStopping)
	r := get(t, gw, pod.podPath("/metrics"))
	if r.StatusCode != 503 || !strings.Contains(r.body, "draining") {
		t.Fatalf("scrape while stopping = %d %q; want 503 draining", r.StatusCode, r.body)
	}
	g.state.Store(stateServing)
}

func TestMetricsEndpoint(t *testing.T) {
	pod := startPod(t, "127.0.0.20", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "12345") })
	_, gw := startGateway(t, testConfig())
	get(t, gw, pod.podPath("/metrics"))
	r := get(t, gw, "/metrics")
	if r.StatusCode != 200 {
		t.Fatalf("/metrics = %d", r.StatusCode)
	}
	for _, want := range []string{
		"# HELP scrapegate_requests_total Requests answered",
		"# TYPE scrapegate_requests_total counter",
		`scrapegate_requests_total{route="pods",code="200"} 1`,
		"# TYPE scrapegate_upstream_response_seconds histogram",
		`scrapegate_upstream_response_seconds_bucket{le="+Inf"} 1`,
		"scrapegate_upstream_response_seconds_count 1",
		"scrapegate_response_bytes_total 5",
		"# HELP scrapegate_upstream_inflight_requests Scrapes in flight",
		"scrapegate_upstream_inflight_requests 0",
		"scrapegate_pooled_endpoints 1",
		`scrapegate_upstream_errors_total{reason="timeout"} 0`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(r.body, "127.0.0.20") {
		t.Errorf("/metrics has per-target labels")
	}
	for _, line := range strings.Split(r.body, "\n") {
		if strings.HasPrefix(line, "# HELP scrapegate_") && len(strings.Fields(line)) < 4 {
			t.Errorf("HELP without text: %q", line)
		}
	}
}

func TestShutdownBeforeServe(t *testing.T) {
	g, err := New(testConfig(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(testutil.Listen(t, "127.0.0.1")) }()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after Shutdown: %s", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve after Shutdown is serving")
	}
}
