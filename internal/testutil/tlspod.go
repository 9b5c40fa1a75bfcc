package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// TLSPod is an https server standing for a pod: it answers every request
// "up 1\n", records the SNI, client certificate and Authorization header
// of its callers, and counts the connections it accepted.
type TLSPod struct {
	// Addr is the pod's address, "ip:port".
	Addr string
	mu   sync.Mutex
	snis []string
	// clientSerials are the serial numbers (hex) of the client
	// certificates the pod saw, one per request.
	clientSerials []string
	// authorizations are the Authorization headers of the requests, one
	// per request, "" for none.
	authorizations []string
	conns          atomic.Int32
}

// StartTLSPod starts a TLSPod listening on listenAddr, a loopback address
// such as "127.0.0.1:0", with cert; if clientCAs is not nil it requires
// client certificates from them. It stops when the test ends.
func StartTLSPod(t testing.TB, listenAddr string, cert tls.Certificate, clientCAs *x509.CertPool) *TLSPod {
	t.Helper()
	ln := listen(t, listenAddr)
	p := &TLSPod{Addr: ln.Addr().String()}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.authorizations = append(p.authorizations, r.Header.Get("Authorization"))
		p.mu.Unlock()
		if len(r.TLS.PeerCertificates) > 0 {
			p.mu.Lock()
			p.clientSerials = append(p.clientSerials, r.TLS.PeerCertificates[0].SerialNumber.Text(16))
			p.mu.Unlock()
		}
		_, _ = io.WriteString(w, "up 1\n")
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are expected
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			p.conns.Add(1)
		}
	}
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			p.mu.Lock()
			p.snis = append(p.snis, hello.ServerName)
			p.mu.Unlock()
			return nil, nil
		},
	}
	if clientCAs != nil {
		srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		srv.TLS.ClientCAs = clientCAs
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return p
}

// LastSNI returns the SNI of the last handshake the pod saw.
func (p *TLSPod) LastSNI(t testing.TB) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.snis) == 0 {
		t.Fatal("the pod saw no handshake")
	}
	return p.snis[len(p.snis)-1]
}

// LastClientSerial returns the serial number (hex) of the client
// certificate of the last request the pod answered, "" if none.
func (p *TLSPod) LastClientSerial() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.clientSerials) == 0 {
		return ""
	}
	return p.clientSerials[len(p.clientSerials)-1]
}

// LastAuthorization returns the Authorization header of the last request
// the pod answered, "" if it had none; it fails the test if there was no
// request.
func (p *TLSPod) LastAuthorization(t testing.TB) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.authorizations) == 0 {
		t.Fatal("the pod saw no request")
	}
	return p.authorizations[len(p.authorizations)-1]
}

// Conns returns how many connections the pod accepted.
func (p *TLSPod) Conns() int { return int(p.conns.Load()) }

// Requests returns how many requests the pod answered.
func (p *TLSPod) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.authorizations)
}
