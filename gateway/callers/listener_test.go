package callers

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

func TestCallerListener(t *testing.T) {
	inner := testutil.Listen(t, "127.0.0.1")
	var rejected [NumRejections]int
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("127.0.0.3/32")}
	l := NewListener(inner, allow, 2, zerolog.Nop(), func(r Rejection) { rejected[r]++ }).(*listener)
	dialFrom := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// accept returns the next connection the listener lets through; the ones
	// it refuses in between are counted in rejected.
	accept := func() net.Conn {
		t.Helper()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// refusedRead asserts the client side sees its connection closed.
	refusedRead := func(c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("a refused connection read %d bytes", n)
		}
	}

	dialFrom("127.0.0.1")
	first := accept()
	dialFrom("127.0.0.1")
	accept()
	// A third from the same caller and one from outside the CIDRs are
	// closed; a connection from another allowed caller is served.
	third := dialFrom("127.0.0.1")
	outsider := dialFrom("127.0.0.2")
	dialFrom("127.0.0.3")
	if got := accept(); remoteIP(got) != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("accepted %s; want 127.0.0.3", got.RemoteAddr())
	}
	refusedRead(third)
	refusedRead(outsider)
	if rejected[TooManyConns] != 1 || rejected[NotAllowed] != 1 {
		t.Fatalf("rejections %v; want 1 too_many_conns and 1 caller_not_allowed", rejected)
	}
	// Closing a connection frees its caller's slot.
	first.Close()
	dialFrom("127.0.0.1")
	got := accept()
	if remoteIP(got) != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("accepted %s; want the caller whose slot was freed", got.RemoteAddr())
	}
	// Closing twice frees one slot only.
	got.Close()
	got.Close()
	l.mu.Lock()
	n := l.conns[netip.MustParseAddr("127.0.0.1")]
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d connections from 127.0.0.1 counted; want 1", n)
	}
}
