package tlsconf

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// plainTestListener is a TLS-or-plain listener on 127.0.0.1 with a
// self-signed certificate, and a client config that trusts it.
func plainTestListener(t *testing.T, firstByte time.Duration) (net.Listener, *tls.Config) {
	t.Helper()
	cert, _, err := SelfSigned("", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewTLSOrPlainListener(inner, &tls.Config{Certificates: []tls.Certificate{*cert}}, firstByte)
	t.Cleanup(func() { ln.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	return ln, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	return c
}

// acceptFrom accepts the next connection and checks that it is the one
// client opened, as TLS or not.
func acceptFrom(t *testing.T, ln net.Listener, client net.Conn, wantTLS bool) net.Conn {
	t.Helper()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	if got, want := c.RemoteAddr().String(), client.LocalAddr().String(); got != want {
		t.Fatalf("accepted the connection from %s; want the one from %s", got, want)
	}
	if _, isTLS := c.(*tls.Conn); isTLS != wantTLS {
		t.Fatalf("accepted a %T; want TLS %v", c, wantTLS)
	}
	return c
}

func TestTLSOrPlainListenerSortsConnections(t *testing.T) {
	ln, clientCfg := plainTestListener(t, time.Minute)

	f := func(useTLS bool) {
		t.Helper()
		raw := dial(t, ln.Addr().String())
		client := raw
		if useTLS {
			client = tls.Client(raw, clientCfg)
		}
		// The first line written goes before Accept: a TLS client's
		// handshake and a plain one's request both start at once.
		written := make(chan error, 1)
		go func() { _, err := io.WriteString(client, "GET / HTTP/1.1\r\n"); written <- err }()
		server := acceptFrom(t, ln, raw, useTLS)
		line, err := bufio.NewReader(server).ReadString('\n')
		if err != nil || line != "GET / HTTP/1.1\r\n" {
			t.Fatalf("TLS %v: the server read %q, %v; want the request line whole", useTLS, line, err)
		}
		if err := <-written; err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(server, "HTTP/1.1 204 No Content\r\n"); err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(client).ReadString('\n'); err != nil || line != "HTTP/1.1 204 No Content\r\n" {
			t.Fatalf("TLS %v: the client read %q, %v", useTLS, line, err)
		}
	}
	f(true)
	f(false)
	f(true)
}

// pending is how many connections ln has accepted and not returned.
func pending(ln net.Listener) int {
	l := ln.(*tlsOrPlainListener)
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

// TestTLSOrPlainListenerSilentConnections: a connection that sends nothing
// holds up no connection behind it and is never returned.
func TestTLSOrPlainListenerSilentConnections(t *testing.T) {
	ln, clientCfg := plainTestListener(t, time.Hour)
	silent := dial(t, ln.Addr().String())
	testutil.WaitFor(t, "the silent connection accepted", func() bool { return pending(ln) == 1 })

	raw := dial(t, ln.Addr().String())
	go func() { _ = tls.Client(raw, clientCfg).Handshake() }()
	server := acceptFrom(t, ln, raw, true).(*tls.Conn)
	if err := server.Handshake(); err != nil {
		t.Fatalf("handshake behind a silent connection: %v", err)
	}
	if n := pending(ln); n != 1 {
		t.Fatalf("%d connections pending; want the silent one", n)
	}
	plain := dial(t, ln.Addr().String())
	if _, err := io.WriteString(plain, "G"); err != nil {
		t.Fatal(err)
	}
	acceptFrom(t, ln, plain, false)
	_ = silent.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the silent connection read %v; want it still open, waiting", err)
	}
}

// TestTLSOrPlainListenerFirstByteDeadline: a connection that sends nothing
// before the deadline is closed without a byte and never returned.
func TestTLSOrPlainListenerFirstByteDeadline(t *testing.T) {
	ln, _ := plainTestListener(t, 100*time.Millisecond)
	silent := dial(t, ln.Addr().String())
	if n, err := silent.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("silent connection read %d, %v; want EOF", n, err)
	}
	plain := dial(t, ln.Addr().String())
	if _, err := io.WriteString(plain, "G"); err != nil {
		t.Fatal(err)
	}
	acceptFrom(t, ln, plain, false)
}

// TestTLSOrPlainListenerClose: Close makes a waiting Accept and later ones
// return net.ErrClosed, and closes connections still being sorted.
func TestTLSOrPlainListenerClose(t *testing.T) {
	ln, _ := plainTestListener(t, time.Hour)
	silent := dial(t, ln.Addr().String())
	testutil.WaitFor(t, "the silent connection accepted", func() bool { return pending(ln) == 1 })

	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if c != nil {
			c.Close()
		}
		accepted <- err
	}()
	if err := ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept waiting at Close returned %v; want net.ErrClosed", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close returned %v; want net.ErrClosed", err)
	}
	if n, err := silent.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("connection pending at Close read %d, %v; want EOF", n, err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the port still accepts connections after Close")
	}
}
