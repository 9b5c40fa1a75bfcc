package gateway

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// tlsGet scrapes target through a gateway serving TLS, as a caller with
// clientCfg, and returns the status and body, or the error of a refused
// handshake.
func tlsGet(t *testing.T, gw string, clientCfg *tls.Config, target string) (int, string, error) {
	t.Helper()
	c := &http.Client{
		Timeout:   time.Minute,
		Transport: &http.Transport{TLSClientConfig: clientCfg, DisableKeepAlives: true},
	}
	resp, err := c.Get("https://" + gw + target)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestGatewayServesTLSAndClientCertificates(t *testing.T) {
	ca := testutil.NewCA(t, "gateway CA")
	callerCA := testutil.NewCA(t, "callers CA")
	serverCert := ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	certFile, keyFile := serverCert.CertFile, serverCert.KeyFile
	cfg := testConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	cfg.TLSClientCAFile = testutil.WriteCABundle(t, callerCA)
	cfg.TLSClientAllowedNames = []string{"prometheus"}
	pod, _ := headerRecordingPod(t)
	g, gw := startGateway(t, cfg)

	prometheus := callerCA.IssueClient(t, "prometheus").TLS
	intruder := callerCA.IssueClient(t, "someone-else").TLS
	client := func(cert *tls.Certificate) *tls.Config {
		c := &tls.Config{RootCAs: ca.Pool()}
		if cert != nil {
			c.Certificates = []tls.Certificate{*cert}
		}
		return c
	}
	if status, body, err := tlsGet(t, gw, client(&prometheus), pod.podPath("/metrics")); err != nil || status != 200 || body != "ok" {
		t.Fatalf("an allowed client certificate: %d %q %v; want 200 ok", status, body, err)
	}
	// Without a certificate the handshake completes, so that kubelet and
	// load balancer probes work, and everything else gets a 401.
	for target, want := range map[string]int{pod.podPath("/metrics"): 401, "/metrics": 401, "/healthz": 200, "/readyz": 200} {
		if status, body, err := tlsGet(t, gw, client(nil), target); err != nil || status != want {
			t.Fatalf("%s without a client certificate: %d %q %v; want %d", target, status, body, err, want)
		}
	}
	if _, _, err := tlsGet(t, gw, client(&intruder), pod.podPath("/metrics")); err == nil {
		t.Fatal("a certificate without an allowed name was served")
	}
	other := testutil.NewCA(t, "other CA").IssueClient(t, "prometheus").TLS
	if _, _, err := tlsGet(t, gw, client(&other), pod.podPath("/metrics")); err == nil {
		t.Fatal("a certificate from another CA was served")
	}
	if got := metricValue(t, g, `scrapegate_auth_failures_total{reason="client_cert_missing"}`); got != 2 {
		t.Fatalf("client_cert_missing = %v; want 2", got)
	}
	for _, reason := range []string{"client_cert_name_not_allowed", "client_cert_untrusted"} {
		series := fmt.Sprintf(`scrapegate_rejected_connections_total{reason=%q}`, reason)
		testutil.WaitFor(t, series, func() bool { return metricValue(t, g, series) == 1 })
	}
	// A plain-HTTP request to the TLS listener gets no scrape.
	conn := dialGateway(t, gw)
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if line, _ := bufio.NewReader(conn).ReadString('\n'); strings.HasPrefix(line, "HTTP/") {
		t.Fatalf("plain HTTP on the TLS listener got an HTTP answer %q", line)
	}

	// cert-manager rotates the certificate: new handshakes get the new one.
	newCert := ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	testutil.CopyFile(t, certFile, newCert.CertFile)
	testutil.CopyFile(t, keyFile, newCert.KeyFile)
	g.reloadAll()
	var served string
	cc := client(&prometheus)
	cc.VerifyConnection = func(cs tls.ConnectionState) error {
		served = cs.PeerCertificates[0].SerialNumber.String()
		return nil
	}
	if status, _, err := tlsGet(t, gw, cc, pod.podPath("/metrics")); err != nil || status != 200 {
		t.Fatalf("after rotation: %d %v", status, err)
	}
	if want := newCert.Cert.SerialNumber.String(); served != want {
		t.Fatalf("after rotation the gateway served certificate %s; want the new one %s", served, want)
	}
}

// TestGatewayServesTLSAndPlainOnOnePort: with -tls-self-signed and
// -tls-allow-plain, https:// and http:// reach the same port, caller
// authentication applies to both, the fingerprint logged at start is the
// served certificate's, and a plain connection that stays silent holds up no
// TLS caller behind it.
func TestGatewayServesTLSAndPlainOnOnePort(t *testing.T) {
	cfg := testConfig()
	cfg.TLSSelfSigned, cfg.TLSAllowPlain = true, true
	cfg.ClientReadTimeout = time.Hour // the silent connection below stays waiting for its first byte
	cfg.AuthBearerTokensFile = testutil.TempFile(t, "tokens", []byte("token-a\n"))
	pod, _ := headerRecordingPod(t)
	var logs testutil.LogBuffer
	_, gw := startGatewayWithLog(t, cfg, zerolog.New(&logs))

	lines := logs.Lines("sha256_fingerprint")
	if len(lines) != 1 {
		t.Fatalf("%d log lines with the fingerprint; want 1:\n%s", len(lines), logs.String())
	}
	var logged struct {
		Level       string `json:"level"`
		Fingerprint string `json:"sha256_fingerprint"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &logged); err != nil || logged.Level != "info" || len(logged.Fingerprint) != 64 {
		t.Fatalf("fingerprint log line %s: %+v, %v; want level info and 64 hex digits", lines[0], logged, err)
	}

	silent := dialGateway(t, gw) // connects first and never sends a byte

	// Pinned as a client of -tls-self-signed would: the served leaf must
	// have the logged fingerprint.
	pinned := &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // verified by the pin
		VerifyConnection: func(cs tls.ConnectionState) error {
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if got := hex.EncodeToString(sum[:]); got != logged.Fingerprint {
				return fmt.Errorf("served certificate has fingerprint %s; the log says %s", got, logged.Fingerprint)
			}
			return nil
		},
	}
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: pinned, DisableKeepAlives: true}}
	f := func(scheme, target, token string, wantStatus int, wantBody string) {
		t.Helper()
		req, err := http.NewRequest("GET", scheme+"://"+gw+target, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", scheme, target, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != wantStatus || !strings.Contains(string(body), wantBody) {
			t.Fatalf("%s %s with token %q: %d %q %v; want %d %q", scheme, target, token, resp.StatusCode, body, err, wantStatus, wantBody)
		}
		if isTLS := resp.TLS != nil; isTLS != (scheme == "https") {
			t.Fatalf("%s %s answered with TLS %v", scheme, target, isTLS)
		}
	}
	for _, scheme := range []string{"https", "http"} {
		f(scheme, "/healthz", "", 200, "")
		f(scheme, pod.podPath("/metrics"), "", 401, "unauthorized")
		f(scheme, pod.podPath("/metrics"), "wrong", 401, "unauthorized")
		f(scheme, "/metrics", "", 401, "unauthorized")
		f(scheme, pod.podPath("/metrics"), "token-a", 200, "ok")
	}

	// Every request above was served while the silent connection waited.
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the silent connection read %v; want it still open, waiting", err)
	}
}

func TestGatewayScrapesHTTPSTargets(t *testing.T) {
	ca := testutil.NewCA(t, "pods CA")
	leaf := ca.IssueServer(t, []string{"pod.example"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	pod := testutil.StartTLSPod(t, "127.0.0.1:0", leaf.TLS, nil)
	cfg := testConfig()
	cfg.TargetTLSCAFile = testutil.WriteCABundle(t, ca)
	g, gw := startGateway(t, cfg)
	ipPort := netip.MustParseAddrPort(pod.Addr)
	httpsPath := fmt.Sprintf("/pods/https/%s/%d/metrics", ipPort.Addr(), ipPort.Port())

	f := func(target string, wantStatus int, wantBody string) {
		t.Helper()
		r := get(t, gw, target)
		if r.StatusCode != wantStatus || !strings.Contains(r.body, wantBody) {
			t.Fatalf("GET %s = %d %q; want %d %q", target, r.StatusCode, r.body, wantStatus, wantBody)
		}
	}
	f(httpsPath, 200, "up 1")
	f("https://"+pod.Addr+"/metrics", 200, "up 1")
	// The same endpoint in plain HTTP is another pool, and fails as HTTP.
	f(fmt.Sprintf("/pods/%s/%d/metrics", ipPort.Addr(), ipPort.Port()), 400, "")
	if n := metricValue(t, g, "scrapegate_pooled_endpoints"); n != 2 {
		t.Fatalf("%v pooled endpoints; want 2: https and http are distinct", n)
	}

	// A pod whose certificate the CA did not sign is refused.
	rogue := testutil.StartTLSPod(t, "127.0.0.1:0", testutil.NewCA(t, "rogue").IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")}).TLS, nil)
	rp := netip.MustParseAddrPort(rogue.Addr)
	f(fmt.Sprintf("/pods/https/%s/%d/metrics", rp.Addr(), rp.Port()), 502, "tls_failed")
	if got := metricValue(t, g, `scrapegate_upstream_errors_total{reason="tls_failed"}`); got != 1 {
		t.Fatalf("tls_failed = %v; want 1", got)
	}
}

func TestGatewayHTTPSTargetStalledHandshake(t *testing.T) {
	// A pod that accepts the connection and never answers the ClientHello.
	release := make(chan struct{})
	defer close(release)
	stalled := listenRaw(t, "127.0.0.1", func(c net.Conn) { <-release })
	cfg := testConfig()
	cfg.DialTimeout = 300 * time.Millisecond
	g, gw := startGateway(t, cfg)
	r := get(t, gw, fmt.Sprintf("/pods/https/127.0.0.1/%d/metrics", stalled.port))
	if r.StatusCode != 504 {
		t.Fatalf("a stalled TLS handshake = %d %q; want 504 after -dial-timeout", r.StatusCode, r.body)
	}
	if got := metricValue(t, g, `scrapegate_upstream_errors_total{reason="timeout"}`); got != 1 {
		t.Fatalf("timeouts = %v; want 1", got)
	}
}

func TestGatewayHTTPSTargetTruncatedWithCloseNotify(t *testing.T) {
	ca := testutil.NewCA(t, "pods CA")
	leaf := ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// Read the request, send half a chunked body, then close
				// cleanly: a TLS close_notify before the last chunk.
				_, _ = http.ReadRequest(bufio.NewReader(c))
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nup 1\n\r\n")
				_ = c.Close()
			}()
		}
	}()
	cfg := testConfig()
	cfg.TargetTLSCAFile = testutil.WriteCABundle(t, ca)
	g, gw := startGateway(t, cfg)
	port := ln.Addr().(*net.TCPAddr).Port
	r := rawGet(t, gw, "GET", fmt.Sprintf("/pods/https/127.0.0.1/%d/metrics", port))
	if r.StatusCode != 200 || r.bodyErr == nil {
		t.Fatalf("a body cut off by close_notify: %d, body %q, error %v; want the response aborted", r.StatusCode, r.body, r.bodyErr)
	}
	testutil.WaitFor(t, "body_failed", func() bool {
		return metricValue(t, g, `scrapegate_upstream_errors_total{reason="body_failed"}`) == 1
	})
}

func TestClientCertificateCheckedOnEveryRequest(t *testing.T) {
	ca := testutil.NewCA(t, "gateway CA")
	callersA, callersB := testutil.NewCA(t, "callers A"), testutil.NewCA(t, "callers B")
	serverCert := ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	certFile, keyFile := serverCert.CertFile, serverCert.KeyFile
	cfg := testConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	cfg.TLSClientCAFile = testutil.WriteCABundle(t, callersA)
	g, gw := startGateway(t, cfg)
	clientA := callersA.IssueClient(t, "prometheus").TLS

	conn, err := tls.Dial("tcp", gw, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{clientA}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(conn)
	get := func() *http.Response {
		t.Helper()
		fmt.Fprint(conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp
	}
	if resp := get(); resp.StatusCode != 200 {
		t.Fatalf("with a certificate from the trusted CA: %d", resp.StatusCode)
	}
	// The CA file no longer trusts callers A: the open connection is
	// refused on its next request and closed.
	testutil.CopyFile(t, cfg.TLSClientCAFile, testutil.WriteCABundle(t, callersB))
	g.reloadAll()
	resp := get()
	if resp.StatusCode != 401 || !resp.Close {
		t.Fatalf("after the CA was replaced: %d, close=%v; want 401 and the connection closed", resp.StatusCode, resp.Close)
	}
	if got := metricValue(t, g, `scrapegate_auth_failures_total{reason="client_cert_invalid"}`); got != 1 {
		t.Fatalf("client_cert_invalid = %v; want 1", got)
	}
	if _, _, err := tlsGet(t, gw, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{clientA}}, "/metrics"); err == nil {
		t.Fatal("a new connection with a certificate the CA file no longer trusts was served")
	}
}

// TestSilentTLSConnectionIsClosedWithoutAnAnswer: a connection that
// completes the TLS handshake and then sends nothing, as Go's HTTP client
// (and so Prometheus) leaves behind when it dials while waiting for a
// pooled connection, is closed after -client-read-timeout without an
// answer, as on a plain listener: a 408 would reach that client as the
// response to its next request.
func TestSilentTLSConnectionIsClosedWithoutAnAnswer(t *testing.T) {
	ca := testutil.NewCA(t, "gateway CA")
	serverCert := ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	cfg := testConfig()
	cfg.TLSCertFile, cfg.TLSKeyFile = serverCert.CertFile, serverCert.KeyFile
	cfg.ClientReadTimeout = 200 * time.Millisecond
	_, gw := startGateway(t, cfg)
	conn, err := tls.Dial("tcp", gw, &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if answer, ok := answerBeforeClose(t, conn); !ok || answer != "" {
		t.Fatalf("a silent TLS connection got %q (closed: %v); want it closed after -client-read-timeout without an answer", answer, ok)
	}
	// A TLS connection whose request never ends still gets its 408.
	slow, err := tls.Dial("tcp", gw, &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
	if answer, ok := answerBeforeClose(t, slow); !ok || !strings.HasPrefix(answer, "HTTP/1.1 408 ") {
		t.Fatalf("a TLS request whose headers never end got %q (closed: %v); want 408", answer, ok)
	}
}
