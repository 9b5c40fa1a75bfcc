package testutil

import (
	"net"
	"net/netip"
	"testing"
)

// Listen listens on a port the kernel picks at ip, which must be a loopback
// address, until the test ends.
func Listen(t testing.TB, ip string) net.Listener {
	t.Helper()
	ln := listen(t, net.JoinHostPort(ip, "0"))
	t.Cleanup(func() { ln.Close() })
	return ln
}

// FreeAddr returns an address at ip, which must be a loopback address, that
// nothing listened on a moment ago: one that refuses connections, or for a
// program that cannot be told to listen on port 0.
func FreeAddr(t testing.TB, ip string) netip.AddrPort {
	t.Helper()
	ln := listen(t, net.JoinHostPort(ip, "0"))
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String())
}

// listen listens on addr, "ip:port", failing the test unless ip is a
// loopback address: tests reach nothing beyond this machine.
func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("cannot listen on %q: %s", addr, err)
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		t.Fatalf("cannot listen on %q: tests listen on loopback addresses only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
