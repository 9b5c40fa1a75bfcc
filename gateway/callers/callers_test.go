package callers

import (
	"net/netip"
	"testing"
)

func TestCallerKey(t *testing.T) {
	f := func(ip, want string) {
		t.Helper()
		if got := Key(netip.MustParseAddr(ip)).String(); got != want {
			t.Fatalf("Key(%s) = %s; want %s", ip, got, want)
		}
	}
	f("10.1.2.3", "10.1.2.3")
	f("::ffff:10.1.2.3", "10.1.2.3")
	f("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::")
	f("2001:db8:1:2:ffff::1", "2001:db8:1:2::")
	f("fe80::1%eth0", "fe80::")
}
