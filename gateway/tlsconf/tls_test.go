package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/internal/testutil"
)

var tlsLoopback = []netip.Addr{netip.MustParseAddr("127.0.0.1")}

// handshakeResult is the outcome of tlsHandshake, seen from both ends.
type handshakeResult struct {
	client, server       tls.ConnectionState
	clientErr, serverErr error
}

func (r handshakeResult) ok() bool { return r.clientErr == nil && r.serverErr == nil }

// tlsHandshake runs one handshake over loopback TCP between a server with
// serverCfg and a client with clientCfg. After a successful handshake the
// server sends one byte that the client reads: in TLS 1.3 the client's
// Handshake returns before the server has checked the client certificate,
// and a refusal only shows on the client's next read.
func tlsHandshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	ln := testutil.Listen(t, "127.0.0.1")
	defer ln.Close() // at once: a test makes many handshakes
	var res handshakeResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			res.serverErr = err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		sc := tls.Server(c, serverCfg)
		if err := sc.Handshake(); err != nil {
			res.serverErr = err
			return
		}
		res.server = sc.ConnectionState()
		_, res.serverErr = sc.Write([]byte{'x'})
		// Wait for the client to hang up, so that it reads the byte
		// before the close.
		_, _ = io.Copy(io.Discard, sc)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	cc := tls.Client(c, clientCfg)
	err = cc.Handshake()
	if err == nil {
		res.client = cc.ConnectionState()
		var b [1]byte
		_, err = io.ReadFull(cc, b[:])
	}
	res.clientErr = err
	cc.Close()
	<-done
	return res
}

// clientTrusting returns a client configuration that trusts ca and checks
// the server's name "localhost".
func clientTrusting(ca *testutil.CA) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
}

func mustNewServerTLS(t *testing.T, o ServerOptions) (*tls.Config, []*reload.Files) {
	t.Helper()
	cfg, _, rs, err := NewServer(o)
	mustLoad(t, "NewServer", rs, err)
	return cfg, rs
}

// mustLoad fails the test if the constructor named what failed (err) or
// its files rs do not load.
func mustLoad(t *testing.T, what string, rs []*reload.Files, err error) {
	t.Helper()
	if err == nil {
		err = reload.LoadAll(rs, zerolog.Nop())
	}
	if err != nil {
		t.Fatalf("%s: %s", what, err)
	}
}

func TestServerTLSHandshake(t *testing.T) {
	ca := testutil.NewCA(t, "listener CA")
	serverCert := ca.IssueServer(t, []string{"localhost"}, tlsLoopback)
	cfg, rs := mustNewServerTLS(t, ServerOptions{CertFile: serverCert.CertFile, KeyFile: serverCert.KeyFile})
	if len(rs) != 1 || rs[0].Flag() != "tls-cert-file" {
		t.Fatalf("reloadables: %+v", rs)
	}
	client := clientTrusting(ca)
	client.NextProtos = []string{"h2", "http/1.1"}
	res := tlsHandshake(t, cfg, client)
	if !res.ok() {
		t.Fatalf("handshake: client %v, server %v", res.clientErr, res.serverErr)
	}
	if res.client.Version != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", res.client.Version)
	}
	if res.client.NegotiatedProtocol != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", res.client.NegotiatedProtocol)
	}
	// The reloadable is loaded already: reloading unchanged files is a no-op.
	if changed, err := rs[0].Reload(); changed || err != nil {
		t.Errorf("reload of unchanged files: %v, %v", changed, err)
	}
}

func TestServerTLSVersionsAndCipherSuites(t *testing.T) {
	ca := testutil.NewCA(t, "listener CA")
	serverCert := ca.IssueServer(t, []string{"localhost"}, nil)
	cfg, _ := mustNewServerTLS(t, ServerOptions{CertFile: serverCert.CertFile, KeyFile: serverCert.KeyFile})

	// f makes a handshake with a client limited to versions minV..maxV and
	// to suites (if not nil); wantErr is "" for success or a part of the
	// server's handshake error.
	f := func(name string, minV, maxV uint16, suites []uint16, wantErr string) {
		t.Helper()
		client := clientTrusting(ca)
		client.MinVersion, client.MaxVersion, client.CipherSuites = minV, maxV, suites
		res := tlsHandshake(t, cfg, client)
		wantOK := wantErr == ""
		if res.ok() != wantOK || (!wantOK && (res.serverErr == nil || !strings.Contains(res.serverErr.Error(), wantErr))) {
			t.Errorf("%s: handshake ok=%v (client %v, server %v), want ok=%v %s", name, res.ok(), res.clientErr, res.serverErr, wantOK, wantErr)
			return
		}
		if wantOK && len(suites) == 1 && res.client.CipherSuite != suites[0] {
			t.Errorf("%s: suite %s", name, tls.CipherSuiteName(res.client.CipherSuite))
		}
		if wantOK && maxV == tls.VersionTLS12 && (res.client.Version != tls.VersionTLS12 || !slices.Contains(tls12CipherSuites, res.client.CipherSuite)) {
			t.Errorf("%s: version %x, suite %s", name, res.client.Version, tls.CipherSuiteName(res.client.CipherSuite))
		}
	}
	f("TLS 1.0", tls.VersionTLS10, tls.VersionTLS10, nil, "unsupported versions")
	f("TLS 1.1", tls.VersionTLS10, tls.VersionTLS11, nil, "unsupported versions")
	f("TLS 1.2 CBC only", tls.VersionTLS12, tls.VersionTLS12, []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
	}, "no cipher suite supported by both")
	f("TLS 1.2 defaults", tls.VersionTLS12, tls.VersionTLS12, nil, "")
	for _, s := range []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	} {
		f("TLS 1.2 "+tls.CipherSuiteName(s), tls.VersionTLS12, tls.VersionTLS12, []uint16{s}, "")
	}
	f("TLS 1.3", tls.VersionTLS13, tls.VersionTLS13, nil, "")
}

func TestServerTLSRotation(t *testing.T) {
	ca := testutil.NewCA(t, "listener CA")
	a := ca.Issue(t, testutil.LeafSpec{CN: "A", DNSNames: []string{"localhost"}})
	b := ca.Issue(t, testutil.LeafSpec{CN: "B", DNSNames: []string{"localhost"}})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	testutil.WriteFile(t, certFile, a.CertPEM)
	testutil.WriteFile(t, keyFile, a.KeyPEM)
	cfg, rs := mustNewServerTLS(t, ServerOptions{CertFile: certFile, KeyFile: keyFile})

	served := func(want *testutil.Leaf) {
		t.Helper()
		res := tlsHandshake(t, cfg, clientTrusting(ca))
		if !res.ok() {
			t.Fatalf("handshake: client %v, server %v", res.clientErr, res.serverErr)
		}
		got := res.client.PeerCertificates[0]
		if got.SerialNumber.Cmp(want.Cert.SerialNumber) != 0 || got.Subject.CommonName != want.Cert.Subject.CommonName {
			t.Fatalf("served %s (serial %x), want %s (serial %x)", got.Subject.CommonName, got.SerialNumber, want.Cert.Subject.CommonName, want.Cert.SerialNumber)
		}
	}
	served(a)

	testutil.WriteFile(t, certFile, b.CertPEM)
	testutil.WriteFile(t, keyFile, b.KeyPEM)
	if changed, err := rs[0].Reload(); !changed || err != nil {
		t.Fatalf("reload to B: %v, %v", changed, err)
	}
	served(b)

	// Half-rotated: A's certificate with B's key. Refused; B stays.
	testutil.WriteFile(t, certFile, a.CertPEM)
	if _, err := rs[0].Reload(); err == nil || !strings.Contains(err.Error(), "tls-cert-file") {
		t.Fatalf("reload of a mismatched pair: %v", err)
	}
	served(b)

	// An expired certificate is refused on reload too.
	old := ca.Issue(t, testutil.LeafSpec{CN: "old", DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	testutil.WriteFile(t, certFile, old.CertPEM)
	testutil.WriteFile(t, keyFile, old.KeyPEM)
	if _, err := rs[0].Reload(); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("reload of an expired certificate: %v", err)
	}
	served(b)
}

func TestServerTLSOptionErrors(t *testing.T) {
	ca := testutil.NewCA(t, "listener CA")
	serverCert := ca.IssueServer(t, []string{"localhost"}, nil)
	certFile, keyFile := serverCert.CertFile, serverCert.KeyFile
	other := ca.Issue(t, testutil.LeafSpec{CN: "other", DNSNames: []string{"localhost"}})
	expired := ca.Issue(t, testutil.LeafSpec{CN: "expired", DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	notCA := filepath.Join(t.TempDir(), "empty.pem")
	testutil.WriteFile(t, notCA, []byte("not a certificate\n"))

	f := func(o ServerOptions, wantErr string) {
		t.Helper()
		_, _, rs, err := NewServer(o)
		if err == nil {
			err = reload.LoadAll(rs, zerolog.Nop())
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("NewServer(%+v): error %v, want one containing %q", o, err, wantErr)
		}
	}
	f(ServerOptions{CertFile: certFile}, "key file")
	f(ServerOptions{KeyFile: keyFile}, "certificate file")
	f(ServerOptions{CertFile: certFile, KeyFile: keyFile + ".missing"}, "cannot read -tls-cert-file")
	f(ServerOptions{CertFile: certFile, KeyFile: other.KeyFile}, "private key does not match")
	f(ServerOptions{CertFile: expired.CertFile, KeyFile: expired.KeyFile}, `expired at`)
	f(ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientAllowedNames: []string{"x"}}, "client CA file")
	f(ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: ca.CertFile, ClientAllowedNames: []string{"x", ""}}, "empty")
	f(ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: notCA}, "no PEM certificate found")
	f(ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: ca.CertFile + ".missing"}, "cannot read -tls-client-ca-file")
}

// certRejections records OnClientCertRejected calls.
type certRejections struct {
	mu      sync.Mutex
	reasons []string
	details []string
}

func (r *certRejections) record(reason, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
	r.details = append(r.details, detail)
}

// take returns the reasons and details recorded since the last call.
func (r *certRejections) take() (reasons, details []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reasons, details = r.reasons, r.details
	r.reasons, r.details = nil, nil
	return reasons, details
}

// mtlsServer is a listener TLS configuration requiring client certificates
// from the CA in caFile, recording refusals.
type mtlsServer struct {
	cfg      *tls.Config
	rs       []*reload.Files
	rejected certRejections
	serverCA *testutil.CA
}

func newMTLSServer(t *testing.T, caFile string, allowed ...string) *mtlsServer {
	t.Helper()
	s := &mtlsServer{serverCA: testutil.NewCA(t, "listener CA")}
	serverCert := s.serverCA.IssueServer(t, []string{"localhost"}, nil)
	certFile, keyFile := serverCert.CertFile, serverCert.KeyFile
	s.cfg, s.rs = mustNewServerTLS(t, ServerOptions{
		CertFile: certFile, KeyFile: keyFile,
		ClientCAFile:         caFile,
		ClientAllowedNames:   allowed,
		OnClientCertRejected: s.rejected.record,
	})
	return s
}

// check makes a handshake presenting cert (none if nil) with TLS version
// maxVersion at most and checks it is accepted (wantReason "") or refused
// for wantReason. It returns the refusal's detail.
func (s *mtlsServer) check(t *testing.T, maxVersion uint16, cert *tls.Certificate, wantReason string) string {
	t.Helper()
	client := clientTrusting(s.serverCA)
	client.MaxVersion = maxVersion
	if cert != nil {
		client.Certificates = []tls.Certificate{*cert}
	}
	res := tlsHandshake(t, s.cfg, client)
	reasons, details := s.rejected.take()
	if wantReason == "" {
		if !res.ok() || len(reasons) > 0 {
			t.Errorf("handshake refused: client %v, server %v, reasons %q %q", res.clientErr, res.serverErr, reasons, details)
		}
		if res.ok() && cert != nil && !res.server.PeerCertificates[0].Equal(cert.Leaf) {
			t.Errorf("server saw another client certificate")
		}
		return ""
	}
	if res.ok() {
		t.Errorf("handshake accepted, want refusal for %s", wantReason)
		return ""
	}
	if res.clientErr == nil {
		t.Errorf("the client did not see the refusal")
	}
	if len(reasons) != 1 || reasons[0] != wantReason {
		t.Errorf("refusal reasons %q (%q), want [%s]; server error %v", reasons, details, wantReason, res.serverErr)
		return ""
	}
	if res.serverErr == nil || !strings.Contains(res.serverErr.Error(), wantReason) {
		t.Errorf("server handshake error %v does not name %s", res.serverErr, wantReason)
	}
	if strings.ContainsAny(details[0], "\r\n") {
		t.Errorf("detail is not one line: %q", details[0])
	}
	return details[0]
}

var tlsVersions = []struct {
	name string
	v    uint16
}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}

func TestMTLSClientCertificates(t *testing.T) {
	ca := testutil.NewCA(t, "client CA")
	otherCA := testutil.NewCA(t, "other CA")
	inter := ca.NewIntermediate(t, "client issuing CA")
	s := newMTLSServer(t, ca.CertFile)
	if len(s.rs) != 2 || s.rs[1].Flag() != "tls-client-ca-file" {
		t.Fatalf("reloadables: %+v", s.rs)
	}

	valid := ca.IssueClient(t, "prometheus").TLS
	viaIntermediate := inter.IssueClient(t, "prometheus").TLS
	leafOnly := viaIntermediate
	leafOnly.Certificate = leafOnly.Certificate[:1] // intermediate not presented
	untrusted := otherCA.IssueClient(t, "prometheus").TLS
	serverOnly := ca.Issue(t, testutil.LeafSpec{CN: "prometheus", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}).TLS
	noEKU := ca.Issue(t, testutil.LeafSpec{CN: "prometheus", ExtKeyUsage: []x509.ExtKeyUsage{}}).TLS // no EKU: any usage
	expired := ca.Issue(t, testutil.LeafSpec{CN: "prometheus", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).TLS
	evil := otherCA.IssueClient(t, "evil\nforged log line", "bad\x07name").TLS

	for _, v := range tlsVersions {
		t.Run(v.name, func(t *testing.T) {
			s.check(t, v.v, &valid, "")
			s.check(t, v.v, &viaIntermediate, "")
			s.check(t, v.v, &noEKU, "")
			// No certificate completes the handshake, so that probes reach
			// /healthz; the gateway answers other requests 401.
			s.check(t, v.v, nil, "")
			d := s.check(t, v.v, &untrusted, clientCertUntrusted)
			if !strings.Contains(d, `CN=prometheus`) || !strings.Contains(d, "unknown authority") {
				t.Errorf("detail %q", d)
			}
			s.check(t, v.v, &leafOnly, clientCertUntrusted)
			d = s.check(t, v.v, &serverOnly, clientCertUntrusted)
			if !strings.Contains(d, "incompatible key usage") {
				t.Errorf("detail %q", d)
			}
			d = s.check(t, v.v, &expired, clientCertUntrusted)
			if !strings.Contains(d, "expired") {
				t.Errorf("detail %q", d)
			}
			d = s.check(t, v.v, &evil, clientCertUntrusted)
			if !strings.Contains(d, `evil\nforged`) || !strings.Contains(d, `\a`) {
				t.Errorf("detail not escaped: %q", d)
			}
		})
	}
}

func TestMTLSAllowedNames(t *testing.T) {
	ca := testutil.NewCA(t, "client CA")
	otherCA := testutil.NewCA(t, "other CA")
	const spiffe = "spiffe://cluster.local/ns/monitoring/sa/prometheus"
	s := newMTLSServer(t, ca.CertFile, "prometheus", "scraper.monitoring.svc", spiffe, "ops@example.com")

	f := func(cert tls.Certificate, wantReason string) {
		t.Helper()
		for _, v := range tlsVersions {
			s.check(t, v.v, &cert, wantReason)
		}
	}
	f(ca.IssueClient(t, "prometheus").TLS, "")                                   // CN
	f(ca.IssueClient(t, "x", "other.example", "scraper.monitoring.svc").TLS, "") // DNS SAN
	f(ca.IssueClient(t, "x", spiffe).TLS, "")                                    // URI SAN
	f(ca.IssueClient(t, "x", "ops@example.com").TLS, "")                         // email SAN
	f(ca.IssueClient(t, "Prometheus").TLS, ClientCertNameNotAllowed)             // case-sensitive
	f(ca.IssueClient(t, "x", spiffe+"-evil", "spiffe://cluster.local").TLS, ClientCertNameNotAllowed)
	f(ca.IssueClient(t, "x", "prometheus.example", "127.0.0.1").TLS, ClientCertNameNotAllowed)
	f(ca.IssueClient(t, "").TLS, ClientCertNameNotAllowed)
	f(otherCA.IssueClient(t, "prometheus").TLS, clientCertUntrusted) // trust comes first

	d := s.check(t, tls.VersionTLS13, certPtr(ca.IssueClient(t, "x", spiffe+"-evil").TLS), ClientCertNameNotAllowed)
	if !strings.Contains(d, `uri=["`+spiffe+`-evil"]`) || !strings.Contains(d, "CN=x") {
		t.Errorf("detail %q", d)
	}
}

func certPtr[T any](v T) *T { return &v }

func TestMTLSClientCAReload(t *testing.T) {
	caA := testutil.NewCA(t, "client CA A")
	caB := testutil.NewCA(t, "client CA B")
	caFile := filepath.Join(t.TempDir(), "client-ca.pem")
	testutil.CopyFile(t, caFile, caA.CertFile)
	s := newMTLSServer(t, caFile)
	r := s.rs[1]
	clientA, clientB := caA.IssueClient(t, "a").TLS, caB.IssueClient(t, "b").TLS

	s.check(t, tls.VersionTLS13, &clientA, "")
	s.check(t, tls.VersionTLS13, &clientB, clientCertUntrusted)

	// Rotation with overlap: both CAs.
	testutil.CopyFile(t, caFile, testutil.WriteCABundle(t, caA, caB))
	if changed, err := r.Reload(); !changed || err != nil {
		t.Fatalf("reload: %v, %v", changed, err)
	}
	s.check(t, tls.VersionTLS13, &clientA, "")
	s.check(t, tls.VersionTLS13, &clientB, "")

	// Only B.
	testutil.CopyFile(t, caFile, caB.CertFile)
	if changed, err := r.Reload(); !changed || err != nil {
		t.Fatalf("reload: %v, %v", changed, err)
	}
	s.check(t, tls.VersionTLS12, &clientA, clientCertUntrusted)
	s.check(t, tls.VersionTLS13, &clientA, clientCertUntrusted)
	s.check(t, tls.VersionTLS12, &clientB, "")
	s.check(t, tls.VersionTLS13, &clientB, "")

	// A file without certificates is refused; B stays in force.
	testutil.WriteFile(t, caFile, []byte("-----BEGIN GARBAGE-----\n-----END GARBAGE-----\n"))
	if _, err := r.Reload(); err == nil || !strings.Contains(err.Error(), "tls-client-ca-file") {
		t.Fatalf("reload of an empty bundle: %v", err)
	}
	s.check(t, tls.VersionTLS13, &clientA, clientCertUntrusted)
	s.check(t, tls.VersionTLS13, &clientB, "")
}

// A session resumed from a ticket is checked against the CA in force at
// resumption, not the one that issued the ticket.
func TestMTLSResumptionAfterCAReload(t *testing.T) {
	for _, v := range tlsVersions {
		t.Run(v.name, func(t *testing.T) {
			caA, caB := testutil.NewCA(t, "client CA A"), testutil.NewCA(t, "client CA B")
			caFile := filepath.Join(t.TempDir(), "client-ca.pem")
			testutil.CopyFile(t, caFile, caA.CertFile)
			s := newMTLSServer(t, caFile)
			client := clientTrusting(s.serverCA)
			client.MaxVersion = v.v
			client.Certificates = []tls.Certificate{caA.IssueClient(t, "a").TLS}
			client.ClientSessionCache = tls.NewLRUClientSessionCache(4)

			if res := tlsHandshake(t, s.cfg, client); !res.ok() || res.client.DidResume {
				t.Fatalf("first handshake: client %v, server %v, resumed %v", res.clientErr, res.serverErr, res.client.DidResume)
			}
			if res := tlsHandshake(t, s.cfg, client); !res.ok() || !res.client.DidResume {
				t.Fatalf("second handshake: client %v, server %v, resumed %v", res.clientErr, res.serverErr, res.client.DidResume)
			}
			testutil.CopyFile(t, caFile, caB.CertFile)
			if _, err := s.rs[1].Reload(); err != nil {
				t.Fatal(err)
			}
			s.rejected.take()
			if res := tlsHandshake(t, s.cfg, client); res.ok() {
				t.Fatalf("handshake after the CA changed accepted (resumed %v)", res.client.DidResume)
			}
			if reasons, _ := s.rejected.take(); len(reasons) != 1 || reasons[0] != clientCertUntrusted {
				t.Errorf("reasons %q", reasons)
			}
		})
	}
}

// newTLSHostClient returns a HostClient for an https pod built like the
// gateway's (its own Dial returning a connection without a Handshake method,
// as the gateway's upstreamConn, so that fasthttp makes the handshake; no
// WriteTimeout) with cfg.
func newTLSHostClient(t *testing.T, addr string, cfg *tls.Config) *fasthttp.HostClient {
	t.Helper()
	hc := &fasthttp.HostClient{
		Addr:      addr,
		IsTLS:     true,
		TLSConfig: cfg,
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			c, err := fasthttp.DialDualStackTimeout(addr, 5*time.Second)
			if err != nil {
				return nil, err
			}
			return wrappedConn{c}, nil
		},
	}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

// wrappedConn hides a connection's type, as the gateway's wrapper does.
type wrappedConn struct{ net.Conn }

// scrapeTLS scrapes the pod through hc and checks the response.
func scrapeTLS(t *testing.T, hc *fasthttp.HostClient) error {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("https://" + hc.Addr + "/metrics")
	if err := hc.DoTimeout(req, resp, 10*time.Second); err != nil {
		return err
	}
	if resp.StatusCode() != http.StatusOK || string(resp.Body()) != "up 1\n" {
		t.Fatalf("response %d %q", resp.StatusCode(), resp.Body())
	}
	return nil
}

func mustNewUpstreamTLS(t *testing.T, o UpstreamOptions) (*Upstream, []*reload.Files) {
	t.Helper()
	o.Flags = "target-tls"
	u, rs, err := NewUpstream(o)
	mustLoad(t, "NewUpstream", rs, err)
	return u, rs
}

func TestUpstreamTLSVerification(t *testing.T) {
	ca := testutil.NewCA(t, "pods CA")
	otherCA := testutil.NewCA(t, "other CA")
	ipCert := ca.IssueServer(t, nil, tlsLoopback).TLS
	dnsCert := ca.IssueServer(t, []string{"pod.example"}, nil).TLS
	wrongIPCert := ca.IssueServer(t, []string{"127.0.0.1"}, []netip.Addr{netip.MustParseAddr("127.0.0.2")}).TLS
	expiredCert := ca.Issue(t, testutil.LeafSpec{IPs: tlsLoopback, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).TLS
	viaIntermediate := ca.NewIntermediate(t, "pods issuing CA").IssueServer(t, nil, tlsLoopback).TLS

	// f scrapes a pod serving cert with options o and checks the outcome
	// and the SNI the pod saw.
	f := func(name string, cert tls.Certificate, o UpstreamOptions, wantOK bool, wantSNI string) {
		t.Helper()
		pod := testutil.StartTLSPod(t, "127.0.0.1:0", cert, nil)
		u, _ := mustNewUpstreamTLS(t, o)
		err := scrapeTLS(t, newTLSHostClient(t, pod.Addr, u.ForTarget(pod.Addr)))
		if (err == nil) != wantOK {
			t.Errorf("%s: scrape error %v, want ok=%v", name, err, wantOK)
			return
		}
		if err != nil {
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				t.Errorf("%s: error %v (%T) is not a *tls.CertificateVerificationError", name, err, err)
			}
		}
		if sni := pod.LastSNI(t); sni != wantSNI {
			t.Errorf("%s: pod saw SNI %q, want %q", name, sni, wantSNI)
		}
	}
	f("IP SAN", ipCert, UpstreamOptions{CAFile: ca.CertFile}, true, "")
	f("IP SAN via intermediate", viaIntermediate, UpstreamOptions{CAFile: ca.CertFile}, true, "")
	f("wrong CA", ipCert, UpstreamOptions{CAFile: otherCA.CertFile}, false, "")
	f("system roots", ipCert, UpstreamOptions{}, false, "")
	f("insecure", ipCert, UpstreamOptions{InsecureSkipVerify: true}, true, "")
	f("insecure, expired", expiredCert, UpstreamOptions{InsecureSkipVerify: true}, true, "")
	f("expired", expiredCert, UpstreamOptions{CAFile: ca.CertFile}, false, "")
	f("other IP, its address as a DNS name", wrongIPCert, UpstreamOptions{CAFile: ca.CertFile}, false, "")
	f("DNS name only", dnsCert, UpstreamOptions{CAFile: ca.CertFile}, false, "")
	f("server name", dnsCert, UpstreamOptions{CAFile: ca.CertFile, ServerName: "pod.example"}, true, "pod.example")
	f("wrong server name", dnsCert, UpstreamOptions{CAFile: ca.CertFile, ServerName: "other.example"}, false, "other.example")
	f("server name, IP certificate", ipCert, UpstreamOptions{CAFile: ca.CertFile, ServerName: "pod.example"}, false, "pod.example")
	f("insecure, server name", dnsCert, UpstreamOptions{InsecureSkipVerify: true, ServerName: "pod.example"}, true, "pod.example")
}

func TestUpstreamTLSIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 tlsLoopback: %s", err)
	}
	ln.Close()
	ca := testutil.NewCA(t, "pods CA")
	f := func(ip string, wantOK bool) {
		t.Helper()
		pod := testutil.StartTLSPod(t, "[::1]:0", ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr(ip)}).TLS, nil)
		u, _ := mustNewUpstreamTLS(t, UpstreamOptions{CAFile: ca.CertFile})
		if err := scrapeTLS(t, newTLSHostClient(t, pod.Addr, u.ForTarget(pod.Addr))); (err == nil) != wantOK {
			t.Errorf("certificate for %s: scrape error %v, want ok=%v", ip, err, wantOK)
		}
	}
	f("::1", true)
	f("::2", false)
}

func TestUpstreamTLSClientCertificate(t *testing.T) {
	ca := testutil.NewCA(t, "pods CA")
	clientCA := testutil.NewCA(t, "gateway client CA")
	serverCert := ca.IssueServer(t, nil, tlsLoopback).TLS
	pod := testutil.StartTLSPod(t, "127.0.0.1:0", serverCert, clientCA.Pool())

	f := func(o UpstreamOptions, wantOK bool) *fasthttp.HostClient {
		t.Helper()
		o.CAFile = ca.CertFile
		u, _ := mustNewUpstreamTLS(t, o)
		hc := newTLSHostClient(t, pod.Addr, u.ForTarget(pod.Addr))
		if err := scrapeTLS(t, hc); (err == nil) != wantOK {
			t.Errorf("%+v: scrape error %v, want ok=%v", o, err, wantOK)
		}
		return hc
	}
	f(UpstreamOptions{}, false)
	other := testutil.NewCA(t, "other").IssueClient(t, "gateway")
	f(UpstreamOptions{CertFile: other.CertFile, KeyFile: other.KeyFile}, false)

	// Rotation of the client certificate.
	a, b := clientCA.IssueClient(t, "gateway-a"), clientCA.IssueClient(t, "gateway-b")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	testutil.CopyFile(t, certFile, a.CertFile)
	testutil.CopyFile(t, keyFile, a.KeyFile)
	u, rs := mustNewUpstreamTLS(t, UpstreamOptions{CAFile: ca.CertFile, CertFile: certFile, KeyFile: keyFile})
	if len(rs) != 2 || rs[0].Flag() != "target-tls-ca-file" || rs[1].Flag() != "target-tls-cert-file" {
		t.Fatalf("reloadables %+v", rs)
	}
	hc := newTLSHostClient(t, pod.Addr, u.ForTarget(pod.Addr))
	if err := scrapeTLS(t, hc); err != nil {
		t.Fatal(err)
	}
	if got := pod.LastClientSerial(); got != a.Cert.SerialNumber.Text(16) {
		t.Fatalf("pod saw client certificate %s, want A", got)
	}
	testutil.CopyFile(t, certFile, b.CertFile)
	testutil.CopyFile(t, keyFile, b.KeyFile)
	if changed, err := rs[1].Reload(); !changed || err != nil {
		t.Fatalf("reload: %v, %v", changed, err)
	}
	hc.CloseIdleConnections() // the next scrape makes a new connection
	if err := scrapeTLS(t, hc); err != nil {
		t.Fatal(err)
	}
	if got := pod.LastClientSerial(); got != b.Cert.SerialNumber.Text(16) {
		t.Fatalf("pod saw client certificate %s, want B", got)
	}
	// A half-written pair is refused, B stays.
	testutil.CopyFile(t, certFile, a.CertFile)
	if _, err := rs[1].Reload(); err == nil || !strings.Contains(err.Error(), "target-tls-cert-file") {
		t.Fatalf("reload of a mismatched pair: %v", err)
	}
	hc.CloseIdleConnections()
	if err := scrapeTLS(t, hc); err != nil {
		t.Fatal(err)
	}
	if got := pod.LastClientSerial(); got != b.Cert.SerialNumber.Text(16) {
		t.Fatalf("pod saw client certificate %s, want B", got)
	}
}

// The CA reloads for HostClients that already exist: fasthttp keeps its
// clone of the TLS configuration per address for the HostClient's life.
func TestUpstreamTLSCAReload(t *testing.T) {
	caA, caB := testutil.NewCA(t, "pods CA A"), testutil.NewCA(t, "pods CA B")
	pod := testutil.StartTLSPod(t, "127.0.0.1:0", caB.IssueServer(t, nil, tlsLoopback).TLS, nil)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	testutil.CopyFile(t, caFile, caA.CertFile)
	u, rs := mustNewUpstreamTLS(t, UpstreamOptions{CAFile: caFile})
	if len(rs) != 1 || rs[0].Flag() != "target-tls-ca-file" {
		t.Fatalf("reloadables %+v", rs)
	}
	hc := newTLSHostClient(t, pod.Addr, u.ForTarget(pod.Addr))
	if err := scrapeTLS(t, hc); err == nil {
		t.Fatal("scrape with CA A succeeded")
	}
	testutil.CopyFile(t, caFile, caB.CertFile)
	if changed, err := rs[0].Reload(); !changed || err != nil {
		t.Fatalf("reload: %v, %v", changed, err)
	}
	if err := scrapeTLS(t, hc); err != nil {
		t.Fatalf("scrape with CA B: %s", err)
	}
	testutil.WriteFile(t, caFile, nil)
	if _, err := rs[0].Reload(); err == nil || !strings.Contains(err.Error(), "target-tls-ca-file") {
		t.Fatalf("reload of an empty CA file: %v", err)
	}
	hc.CloseIdleConnections()
	if err := scrapeTLS(t, hc); err != nil {
		t.Fatalf("scrape after a failed reload: %s", err)
	}
}

func TestUpstreamTLSOptionErrors(t *testing.T) {
	ca := testutil.NewCA(t, "pods CA")
	leaf := ca.IssueClient(t, "gateway")
	f := func(o UpstreamOptions, wantErr string) {
		t.Helper()
		o.Flags = "target-tls"
		_, rs, err := NewUpstream(o)
		if err == nil {
			err = reload.LoadAll(rs, zerolog.Nop())
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("NewUpstream(%+v): error %v, want one containing %q", o, err, wantErr)
		}
	}
	f(UpstreamOptions{CertFile: leaf.CertFile}, "both")
	f(UpstreamOptions{KeyFile: leaf.KeyFile}, "both")
	f(UpstreamOptions{CAFile: ca.CertFile, InsecureSkipVerify: true}, "cannot be combined")
	f(UpstreamOptions{CAFile: leaf.KeyFile}, "no PEM certificate found")
	f(UpstreamOptions{CAFile: ca.CertFile + ".missing"}, "cannot read -target-tls-ca-file")
	f(UpstreamOptions{CertFile: leaf.CertFile, KeyFile: ca.CertFile}, "target-tls-cert-file")

	u, rs := mustNewUpstreamTLS(t, UpstreamOptions{})
	if len(rs) != 0 || u.ForTarget("10.0.0.1:443").GetClientCertificate != nil {
		t.Errorf("no files, yet reloadables %+v or a client certificate", rs)
	}
}

func TestUpstreamTLSTargetHost(t *testing.T) {
	f := func(addr, want string) {
		t.Helper()
		if got := targetHost(addr); got != want {
			t.Errorf("targetHost(%q) = %q, want %q", addr, got, want)
		}
	}
	f("10.1.2.3:9100", "10.1.2.3")
	f("10.1.2.3", "10.1.2.3")
	f("[fd00::1]:9100", "fd00::1")
	f("[fe80::1%eth0]:9100", "fe80::1")
	f("pod.example:443", "pod.example")
	f("", "")
}

// A config fixed to a target with no name to check against fails closed.
func TestUpstreamTLSNoNameFailsClosed(t *testing.T) {
	ca := testutil.NewCA(t, "pods CA")
	pod := testutil.StartTLSPod(t, "127.0.0.1:0", ca.IssueServer(t, nil, tlsLoopback).TLS, nil)
	u, _ := mustNewUpstreamTLS(t, UpstreamOptions{CAFile: ca.CertFile})
	if err := scrapeTLS(t, newTLSHostClient(t, pod.Addr, u.ForTarget(":0"))); err == nil ||
		!strings.Contains(err.Error(), "no name or address") {
		t.Fatalf("scrape error %v", err)
	}
}

// What fasthttp v1.74.0 and crypto/tls do with a TLS config shared by all
// HostClients, which is why Upstream makes one per target: fasthttp sets
// the per-address clone's ServerName to the host IP, crypto/tls sends no
// SNI for an IP and reports ConnectionState.ServerName as "", so a shared
// VerifyConnection cannot tell which address was dialled. A ServerName set
// in the config is kept by fasthttp and sent as SNI.
func TestUpstreamTLSFasthttpServerName(t *testing.T) {
	ca := testutil.NewCA(t, "pods CA")
	pod := testutil.StartTLSPod(t, "127.0.0.1:0", ca.IssueServer(t, []string{"pod.example"}, tlsLoopback).TLS, nil)
	f := func(serverName, wantSNI, wantStateName string) {
		t.Helper()
		var mu sync.Mutex
		var stateName []string
		cfg := &tls.Config{
			InsecureSkipVerify: true, //nolint:gosec // test probe
			ServerName:         serverName,
			VerifyConnection: func(cs tls.ConnectionState) error {
				mu.Lock()
				stateName = append(stateName, cs.ServerName)
				mu.Unlock()
				return nil
			},
		}
		if err := scrapeTLS(t, newTLSHostClient(t, pod.Addr, cfg)); err != nil {
			t.Fatal(err)
		}
		if sni := pod.LastSNI(t); sni != wantSNI {
			t.Errorf("ServerName %q: SNI %q, want %q", serverName, sni, wantSNI)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(stateName) != 1 || stateName[0] != wantStateName {
			t.Errorf("ServerName %q: ConnectionState.ServerName %q, want [%q]", serverName, stateName, wantStateName)
		}
	}
	f("", "", "")
	f("pod.example", "pod.example", "pod.example")
}

func TestTLSEscapeControl(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		if got := escapeControl(in); got != want {
			t.Errorf("escapeControl(%q) = %q, want %q", in, got, want)
		}
	}
	f("subject=\"CN=x\" ok", "subject=\"CN=x\" ok")
	f("a\nb\r\x00\x7f", `a\x0ab\x0d\x00\x7f`)
	f("é\u0085\u2028", `é\x85\u2028`)
}
