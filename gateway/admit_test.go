package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/scrapegate/scrapegate/gateway/callers"
	"github.com/scrapegate/scrapegate/internal/testutil"
)

// headerRecordingPod is a pod that remembers the headers of its last request.
func headerRecordingPod(t *testing.T) (*testPod, func() http.Header) {
	var mu sync.Mutex
	var last http.Header
	pod := startPod(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last = r.Header.Clone()
		mu.Unlock()
		fmt.Fprint(w, "ok")
	})
	return pod, func() http.Header {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

func TestAuthBearerAndBasic(t *testing.T) {
	cfg := testConfig()
	cfg.AuthBearerTokensFile = testutil.TempFile(t, "tokens", []byte("# Prometheus A\ntoken-a\n"))
	cfg.AuthHTPasswdFile = testutil.TempFile(t, "htpasswd", []byte("prom:"+testutil.Bcrypt(t, "s3cret")+"\n"))
	pod, lastHeaders := headerRecordingPod(t)
	g, gw := startGateway(t, cfg)
	basic := "Authorization: " + testutil.BasicAuth("prom", "s3cret")
	proxyBasic := "Proxy-Authorization: " + testutil.BasicAuth("prom", "s3cret")
	absolute := "http://" + pod.addr.String() + "/metrics"

	f := func(target string, wantStatus int, headers ...string) rawResponse {
		t.Helper()
		r := get(t, gw, target, headers...)
		if r.StatusCode != wantStatus {
			t.Fatalf("GET %s %q = %d %q; want %d", target, headers, r.StatusCode, r.body, wantStatus)
		}
		return r
	}
	// Scrapes and /metrics need credentials; probes never do.
	r := f(pod.podPath("/metrics"), 401)
	if got := r.Header.Values("WWW-Authenticate"); strings.Join(got, "|") != `Bearer realm="scrapegate"|Basic realm="scrapegate", charset="UTF-8"` {
		t.Fatalf("WWW-Authenticate = %q", got)
	}
	if strings.Contains(r.body, "token") || !strings.Contains(r.body, "credentials required") {
		t.Fatalf("401 body %q", r.body)
	}
	f("/metrics", 401)
	f("/no/such/page", 401)
	f("/healthz", 200)
	f("/readyz", 200)
	f(pod.podPath("/metrics"), 401, "Authorization: Bearer token-b")
	f(pod.podPath("/metrics"), 401, "Authorization: Bearer token-a token-a")
	f(pod.podPath("/metrics"), 401, "Authorization: Digest x")
	f(pod.podPath("/metrics"), 401, "Authorization: "+testutil.BasicAuth("prom", "wrong"))
	r = f(pod.podPath("/metrics"), 401, "Authorization: "+testutil.BasicAuth("nobody", "s3cret"))
	if !strings.Contains(r.body, "invalid credentials") {
		t.Fatalf("a wrong user's 401 must look like a wrong password's: %q", r.body)
	}
	f(pod.podPath("/metrics"), 200, "Authorization: Bearer token-a")
	f(pod.podPath("/metrics"), 200, "authorization: bearer token-a")
	f(pod.podPath("/metrics"), 200, basic)
	f("/metrics", 200, "Authorization: Bearer token-a")
	if h := lastHeaders(); h.Get("Authorization") != "" || h.Get("Proxy-Authorization") != "" {
		t.Fatalf("credentials reached the pod: %v", h)
	}

	// Forward-proxy requests: 407, and the proxy URL's credentials count.
	r = f(absolute, 407)
	if r.Header.Get("Proxy-Authenticate") == "" || r.Header.Get("WWW-Authenticate") != "" {
		t.Fatalf("407 must challenge with Proxy-Authenticate only: %v", r.Header)
	}
	f(absolute, 200, proxyBasic)
	if h := lastHeaders(); h.Get("Authorization") != "" || h.Get("Proxy-Authorization") != "" {
		t.Fatalf("proxy credentials reached the pod: %v", h)
	}
	f(absolute, 200, "Authorization: Bearer token-a")
	f(absolute, 407, "Proxy-Authorization: Bearer token-b", "Authorization: Bearer token-a")
	if h := lastHeaders(); h.Get("Authorization") != "" || h.Get("Proxy-Authorization") != "" {
		t.Fatalf("credentials reached the pod: %v", h)
	}

	for reason, want := range map[string]float64{"missing": 4, "bad_token": 2, "malformed": 1, "unsupported": 1, "bad_password": 1, "unknown_user": 1} {
		series := fmt.Sprintf(`scrapegate_auth_failures_total{reason=%q}`, reason)
		if got := metricValue(t, g, series); got != want {
			t.Errorf("%s = %v; want %v", series, got, want)
		}
	}
}

func TestAuthMetricsOpen(t *testing.T) {
	cfg := testConfig()
	cfg.AuthBearerTokensFile = testutil.TempFile(t, "tokens", []byte("token-a\n"))
	cfg.MetricsRequireAuth = false
	pod, _ := headerRecordingPod(t)
	_, gw := startGateway(t, cfg)
	if r := get(t, gw, "/metrics"); r.StatusCode != 200 {
		t.Fatalf("/metrics with -metrics-require-auth=false = %d", r.StatusCode)
	}
	if r := get(t, gw, pod.podPath("/metrics")); r.StatusCode != 401 {
		t.Fatalf("a scrape without credentials = %d; want 401", r.StatusCode)
	}
}

func TestAuthTokenRotation(t *testing.T) {
	cfg := testConfig()
	cfg.AuthBearerTokensFile = testutil.TempFile(t, "tokens", []byte("old-token\n"))
	log := &testutil.LogBuffer{}
	logger, err := NewLogger(log, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	pod, _ := headerRecordingPod(t)
	g, gw := startGatewayWithLog(t, cfg, logger)
	status := func(token string) int {
		t.Helper()
		return get(t, gw, pod.podPath("/metrics"), "Authorization: Bearer "+token).StatusCode
	}
	if status("old-token") != 200 || status("new-token") != 401 {
		t.Fatal("before rotation: want old-token accepted, new-token refused")
	}
	testutil.WriteFile(t, cfg.AuthBearerTokensFile, []byte("new-token\n"))
	g.reloadAll()
	if status("old-token") != 401 || status("new-token") != 200 {
		t.Fatal("after rotation: want old-token refused, new-token accepted")
	}
	if got := metricValue(t, g, `scrapegate_file_reloads_total{flag="auth-bearer-tokens-file",result="success"}`); got != 1 {
		t.Fatalf("successful reloads = %v; want 1", got)
	}

	// A file that becomes unreadable or invalid keeps the last good set,
	// and the error is logged once, not at every check.
	if err := os.Remove(cfg.AuthBearerTokensFile); err != nil {
		t.Fatal(err)
	}
	g.reloadAll()
	g.reloadAll()
	if status("new-token") != 200 {
		t.Fatal("a vanished token file must keep the last good tokens in force")
	}
	testutil.WriteFile(t, cfg.AuthBearerTokensFile, nil)
	g.reloadAll()
	if status("new-token") != 200 {
		t.Fatal("an empty token file, as in the middle of a write, must keep the last good tokens in force")
	}
	if got := metricValue(t, g, `scrapegate_file_reloads_total{flag="auth-bearer-tokens-file",result="failure"}`); got != 3 {
		t.Fatalf("failed reloads = %v; want 3", got)
	}
	if got := len(log.Lines("cannot reload file")); got != 2 {
		t.Fatalf("%d reload errors logged; want 2 (one per distinct error): %q", got, log.Lines("cannot reload"))
	}
	if lines := log.Lines("new-token"); len(lines) != 0 {
		t.Fatalf("a token reached the log: %q", lines)
	}
	// A file with only comments revokes every token.
	testutil.WriteFile(t, cfg.AuthBearerTokensFile, []byte("# all revoked\n"))
	g.reloadAll()
	if status("new-token") != 401 {
		t.Fatal("a token file with only comments must refuse every caller")
	}
}

func TestRateLimitPerCaller(t *testing.T) {
	cfg := testConfig()
	cfg.CallerRateLimit = 0.001 // no refill within the test
	cfg.CallerRateBurst = 2
	pod, _ := headerRecordingPod(t)
	g, gw := startGateway(t, cfg)
	for i := range 2 {
		if r := get(t, gw, pod.podPath("/metrics")); r.StatusCode != 200 {
			t.Fatalf("request %d = %d; want 200 within the burst", i, r.StatusCode)
		}
	}
	if got := metricValue(t, g, "scrapegate_rate_limited_callers"); got != 0 {
		t.Fatalf("scrapegate_rate_limited_callers = %v after allowed requests only; want 0", got)
	}
	r := get(t, gw, pod.podPath("/metrics"))
	if r.StatusCode != 429 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("past the burst: %d, Retry-After %q; want 429 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if got := metricValue(t, g, "scrapegate_rate_limited_callers"); got != 1 {
		t.Fatalf("scrapegate_rate_limited_callers = %v while a caller is limited; want 1", got)
	}
	if r := get(t, gw, "/metrics"); r.StatusCode != 429 {
		t.Fatalf("/metrics past the burst = %d; want 429", r.StatusCode)
	}
	for _, probe := range []string{"/healthz", "/readyz"} {
		if r := get(t, gw, probe); r.StatusCode != 200 {
			t.Fatalf("%s = %d; probes are never rate-limited", probe, r.StatusCode)
		}
	}
	if got := metricValue(t, g, `scrapegate_rejected_requests_total{reason="rate_limited"}`); got != 2 {
		t.Fatalf("rate_limited = %v; want 2", got)
	}
}

// getFrom is get over a connection from the local address src.
func getFrom(t *testing.T, src, gw, target string, headerLines ...string) rawResponse {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	req := "GET " + target + " HTTP/1.1\r\nHost: " + gw + "\r\n" + strings.Join(append(headerLines, ""), "\r\n") + "\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("GET %s from %s: cannot read response: %s", target, src, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s from %s: cannot read body: %s", target, src, err)
	}
	return rawResponse{Response: resp, body: string(body)}
}

// Failed logins are charged to the caller that made them, with
// -caller-rate-limit off: past its budget it gets 429, and another caller
// logs in.
func TestFailedLoginsGet429ForTheirCallerOnly(t *testing.T) {
	cfg := testConfig()
	cfg.AuthHTPasswdFile = testutil.TempFile(t, "htpasswd", []byte("prom:"+testutil.Bcrypt(t, "right")+"\n"))
	g, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	g.auth.Failures = callers.NewRateLimiter(0.001, 2) // no refill within the test
	gw := serveGateway(t, g)
	wrong := func(i int) string { return "Authorization: " + testutil.BasicAuth("prom", fmt.Sprint("wrong", i)) }
	right := "Authorization: " + testutil.BasicAuth("prom", "right")
	for i := range 2 {
		if r := getFrom(t, "127.0.0.1", gw, "/metrics", wrong(i)); r.StatusCode != 401 {
			t.Fatalf("wrong password #%d = %d; want 401", i, r.StatusCode)
		}
	}
	for _, h := range []string{wrong(2), wrong(0), right} {
		r := getFrom(t, "127.0.0.1", gw, "/metrics", h)
		if r.StatusCode != 429 || r.Header.Get("Retry-After") == "" || r.Header.Get("WWW-Authenticate") != "" || !strings.Contains(r.body, "too many failed logins") {
			t.Fatalf("past the failed logins (%s): %d, Retry-After %q, WWW-Authenticate %q, %q; want 429 with Retry-After, no challenge",
				h, r.StatusCode, r.Header.Get("Retry-After"), r.Header.Get("WWW-Authenticate"), r.body)
		}
	}
	if r := getFrom(t, "127.0.0.3", gw, "/metrics", right); r.StatusCode != 200 {
		t.Fatalf("another caller's good login = %d; want 200", r.StatusCode)
	}
	for series, want := range map[string]float64{
		`scrapegate_auth_failures_total{reason="bad_password"}`:      2,
		`scrapegate_auth_failures_total{reason="too_many_failures"}`: 3,
		`scrapegate_rejected_requests_total{reason="rate_limited"}`:  0,
	} {
		if got := metricValue(t, g, series); got != want {
			t.Fatalf("%s = %v; want %v", series, got, want)
		}
	}
}

func TestRequestSizeLimits(t *testing.T) {
	cfg := testConfig()
	cfg.MaxURIBytes = 100
	cfg.MaxRequestHeaderBytes = 2048
	pod, _ := headerRecordingPod(t)
	_, gw := startGateway(t, cfg)
	long := pod.podPath("/metrics/" + strings.Repeat("a", 100))
	if r := get(t, gw, long); r.StatusCode != 414 {
		t.Fatalf("a %d-byte target = %d; want 414", len(long), r.StatusCode)
	}
	if r := get(t, gw, pod.podPath("/metrics"), "X-Big: "+strings.Repeat("b", 4096)); r.StatusCode != 431 {
		t.Fatalf("a 4 KiB header = %d; want 431", r.StatusCode)
	}
	if r := get(t, gw, pod.podPath("/metrics")); r.StatusCode != 200 {
		t.Fatalf("a normal scrape = %d", r.StatusCode)
	}
}

func TestLoops(t *testing.T) {
	pod, lastHeaders := headerRecordingPod(t)
	g, gw := startGateway(t, testConfig())
	if r := get(t, gw, pod.podPath("/metrics"), "Via: 1.0 corp-proxy"); r.StatusCode != 200 {
		t.Fatalf("scrape = %d", r.StatusCode)
	}
	// The caller's Via stays at the gateway like any header a scrape does
	// not need; the gateway's own marks the request.
	if got := lastHeaders().Values("Via"); strings.Join(got, ", ") != "1.1 scrapegate" {
		t.Fatalf("the pod saw Via %q; want only scrapegate's", got)
	}
	// A request that went through a scrapegate is a loop, whoever sent it.
	r := get(t, gw, pod.podPath("/metrics"), "Via: 1.1 proxy, 1.1 ScrapeGate")
	if r.StatusCode != 508 {
		t.Fatalf("a request carrying scrapegate's Via = %d %q; want 508", r.StatusCode, r.body)
	}
	// The gateway's own address is refused before any request is sent:
	// exactly one request reaches the gateway.
	before := metricValue(t, g, `scrapegate_requests_total{route="pods",code="403"}`)
	r = get(t, gw, "/pods/"+strings.Replace(gw, ":", "/", 1)+"/metrics")
	if r.StatusCode != 403 || !strings.Contains(r.body, "the gateway itself") {
		t.Fatalf("the gateway as its own target = %d %q; want 403", r.StatusCode, r.body)
	}
	if got := metricValue(t, g, `scrapegate_requests_total{route="pods",code="403"}`) - before; got != 1 {
		t.Fatalf("%v pods requests answered 403; want exactly 1", got)
	}
	if got := metricValue(t, g, `scrapegate_requests_total{route="pods",code="508"}`); got != 1 {
		t.Fatalf("%v requests answered 508; want only the one with a Via", got)
	}
}

func TestMaxResponseBodyBytes(t *testing.T) {
	body := strings.Repeat("x", 1000)
	release := make(chan struct{})
	pod := startPod(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/growing" {
			// No Content-Length, and the body passes the cap only after the
			// gateway has sent the headers on.
			fmt.Fprint(w, body[:500])
			w.(http.Flusher).Flush()
			<-release
			fmt.Fprint(w, body[500:])
			return
		}
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
		fmt.Fprint(w, body)
	})
	cfg := testConfig()
	cfg.MaxResponseBodyBytes = 999
	g, gw := startGateway(t, cfg)
	r := get(t, gw, pod.podPath("/sized"))
	if r.StatusCode != 502 || !strings.Contains(r.body, "max-response-body-bytes") {
		t.Fatalf("a 1000-byte body over a 999-byte cap = %d %q; want 502", r.StatusCode, r.body)
	}
	// Past the cap before anything was sent on: a clean 502.
	r = get(t, gw, pod.podPath("/chunked"))
	if r.StatusCode != 502 || !strings.Contains(r.body, "max-response-body-bytes") {
		t.Fatalf("chunked body over the cap = %d %q; want 502", r.StatusCode, r.body)
	}
	// Past the cap after the headers went out: the response is aborted.
	resp := getUnread(t, gw, pod.podPath("/growing"))
	close(release)
	got, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || err == nil || len(got) > 999 {
		t.Fatalf("body growing over the cap: %d, %d bytes, error %v; want the response aborted within the cap", resp.StatusCode, len(got), err)
	}
	testutil.WaitFor(t, "body_too_large to be counted", func() bool {
		return metricValue(t, g, `scrapegate_upstream_errors_total{reason="body_too_large"}`) == 3
	})
	cfg.MaxResponseBodyBytes = 1000
	_, gw = startGateway(t, cfg)
	if r := get(t, gw, pod.podPath("/chunked")); r.StatusCode != 200 || r.body != body {
		t.Fatalf("a body exactly at the cap = %d, %d bytes", r.StatusCode, len(r.body))
	}
}

// answerBeforeClose reads what the gateway sends until it closes conn, and
// whether it closed it within a generous bound.
func answerBeforeClose(t *testing.T, conn net.Conn) (string, bool) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(conn)
	var netErr net.Error
	return string(b), err == nil || !(errors.As(err, &netErr) && netErr.Timeout())
}

func TestSlowClientsAreDisconnected(t *testing.T) {
	cfg := testConfig()
	cfg.ClientReadTimeout = 200 * time.Millisecond
	cfg.ClientIdleTimeout = 200 * time.Millisecond
	pod, _ := headerRecordingPod(t)
	_, gw := startGateway(t, cfg)

	// Slowloris: a request whose headers never end.
	slow := dialGateway(t, gw)
	fmt.Fprintf(slow, "GET %s HTTP/1.1\r\nHost: x\r\nX-Slow: 1", pod.podPath("/metrics"))
	if answer, ok := answerBeforeClose(t, slow); !ok || !strings.HasPrefix(answer, "HTTP/1.1 408 ") {
		t.Fatalf("a request whose headers never end got %q (closed: %v); want 408 and the connection closed after -client-read-timeout", answer, ok)
	}

	// Silence: a connection that never sends a byte, as HTTP clients leave
	// behind, is closed without an answer, which the client would take for
	// the response to its next request on it.
	silent := dialGateway(t, gw)
	if answer, ok := answerBeforeClose(t, silent); !ok || answer != "" {
		t.Fatalf("a silent connection got %q (closed: %v); want it closed after -client-read-timeout without an answer", answer, ok)
	}

	// An idle keep-alive connection is closed after -client-idle-timeout,
	// once its response is complete.
	idle := dialGateway(t, gw)
	fmt.Fprintf(idle, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", pod.podPath("/metrics"))
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "ok" || resp.Close {
		t.Fatalf("keep-alive scrape: %q %v close=%v", body, err, resp.Close)
	}
	_ = idle.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("an idle keep-alive connection: %v; want it closed by the server (EOF)", err)
	}
}

func TestRedirectsAreNotPassedOn(t *testing.T) {
	pod := startPod(t, "127.0.0.2", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/not-modified" {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		http.Redirect(w, r, "http://attacker.example/collect", http.StatusFound)
	})
	g, gw := startGateway(t, testConfig())
	// A caller following the redirect would send its gateway credentials
	// to the attacker.
	r := get(t, gw, pod.podPath("/metrics"))
	if r.StatusCode != 502 || r.Header.Get("Location") != "" || !strings.Contains(r.body, "attacker.example") {
		t.Fatalf("a pod's redirect = %d, Location %q, %q; want 502 without Location", r.StatusCode, r.Header.Get("Location"), r.body)
	}
	if got := metricValue(t, g, `scrapegate_upstream_errors_total{reason="redirect"}`); got != 1 {
		t.Fatalf("redirects = %v; want 1", got)
	}
	if r := get(t, gw, pod.podPath("/not-modified")); r.StatusCode != 304 {
		t.Fatalf("304 = %d; it is not a redirect", r.StatusCode)
	}
}

func TestBadRequestsDoNotEchoCredentials(t *testing.T) {
	cfg := testConfig()
	cfg.MaxRequestHeaderBytes = 1024
	cfg.MaxURIBytes = 512
	_, gw := startGateway(t, cfg)
	secret := "Authorization: Bearer sup3r-s3cret"
	for _, r := range []rawResponse{
		get(t, gw, "/metrics", secret, "X-Big: "+strings.Repeat("b", 2048)),
		get(t, gw, "/metrics", secret, "X-Bad-Value: a\x01b"),
	} {
		if r.StatusCode != 431 && r.StatusCode != 400 || strings.Contains(r.body, "sup3r") {
			t.Fatalf("%d %.300q; want a 4xx that does not quote the request", r.StatusCode, r.body)
		}
	}
}

func TestEndpointPoolIsBounded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxEndpoints = 5
	g, gw := startGateway(t, cfg)
	// Scanning closed ports: every endpoint that never answered makes room
	// for the next, so the pool stays at its bound and scans get 502, not 503.
	for i := range 30 {
		port := testutil.FreeAddr(t, "127.0.0.3").Port()
		if r := get(t, gw, fmt.Sprintf("/pods/127.0.0.3/%d/metrics", port)); r.StatusCode != 502 {
			t.Fatalf("scan %d: %d %q; want 502", i, r.StatusCode, r.body)
		}
		if n := metricValue(t, g, "scrapegate_pooled_endpoints"); n > 5 {
			t.Fatalf("%v pooled endpoints; want at most 5", n)
		}
	}
	// Pods that answered are never crowded out: with the pool full of them,
	// a new endpoint gets 503 and the pods keep their pools.
	var pods []*testPod
	for range 5 {
		pod, _ := headerRecordingPod(t)
		pods = append(pods, pod)
		if r := get(t, gw, pod.podPath("/metrics")); r.StatusCode != 200 {
			t.Fatalf("a pod: %d %q", r.StatusCode, r.body)
		}
	}
	r := get(t, gw, fmt.Sprintf("/pods/127.0.0.3/%d/metrics", testutil.FreeAddr(t, "127.0.0.3").Port()))
	if r.StatusCode != 503 || !strings.Contains(r.body, "max-endpoints") {
		t.Fatalf("a new endpoint with the pool full of answering pods: %d %q; want 503", r.StatusCode, r.body)
	}
	for _, pod := range pods {
		if r := get(t, gw, pod.podPath("/metrics")); r.StatusCode != 200 || pod.conns.Load() != 1 {
			t.Fatalf("a pooled pod: %d, %d connections; want 200 over its one pooled connection", r.StatusCode, pod.conns.Load())
		}
	}
}
