package gateway

import (
	"net/netip"
	"testing"
)

func TestPolicyAllowed(t *testing.T) {
	f := func(allowCIDRs, target string, want bool) {
		t.Helper()
		allow, err := ParseCIDRs(allowCIDRs)
		if err != nil {
			t.Fatalf("ParseCIDRs(%q): %s", allowCIDRs, err)
		}
		if got := NewPolicy(allow).Allowed(netip.MustParseAddrPort(target)); got != want {
			t.Fatalf("allow %s: Allowed(%s) = %v; want %v", allowCIDRs, target, got, want)
		}
	}
	// The defaults: pod networks yes, everything else no.
	f(DefaultAllowCIDRs, "10.1.2.3:9100", true)
	f(DefaultAllowCIDRs, "172.16.0.1:80", true)
	f(DefaultAllowCIDRs, "172.32.0.1:80", false)
	f(DefaultAllowCIDRs, "192.168.1.1:80", true)
	f(DefaultAllowCIDRs, "100.64.0.1:80", true)
	f(DefaultAllowCIDRs, "[fd00::1]:9100", true)
	f(DefaultAllowCIDRs, "8.8.8.8:53", false)
	f(DefaultAllowCIDRs, "127.0.0.1:8080", false)
	f(DefaultAllowCIDRs, "169.254.169.254:80", false)
	f(DefaultAllowCIDRs, "0.0.0.0:80", false)
	f(DefaultAllowCIDRs, "224.0.0.1:80", false)
	f(DefaultAllowCIDRs, "[::1]:80", false)
	f(DefaultAllowCIDRs, "[fe80::1]:80", false)
	f(DefaultAllowCIDRs, "[::]:80", false)
	f(DefaultAllowCIDRs, "[ff02::1]:80", false)
	// IPv4-mapped IPv6 is judged as the IPv4 address it maps to.
	f(DefaultAllowCIDRs, "[::ffff:10.1.2.3]:80", true)
	f(DefaultAllowCIDRs, "[::ffff:127.0.0.1]:80", false)
	f(DefaultAllowCIDRs, "[::ffff:169.254.169.254]:80", false)
	// Port 0 is never a target.
	f(DefaultAllowCIDRs, "10.1.2.3:0", false)
	// A broad CIDR does not unlock special ranges...
	f("0.0.0.0/0,::/0", "8.8.8.8:53", true)
	f("0.0.0.0/0,::/0", "127.0.0.1:80", false)
	f("0.0.0.0/0,::/0", "169.254.169.254:80", false)
	f("0.0.0.0/0,::/0", "0.0.0.0:80", false)
	f("0.0.0.0/0,::/0", "255.255.255.255:80", false)
	f("0.0.0.0/0,::/0", "[::1]:80", false)
	f("0.0.0.0/0,::/0", "[::127.0.0.1]:80", false)
	f("0.0.0.0/0,::/0", "[64:ff9b::a9fe:a9fe]:80", false)
	f("0.0.0.0/0,::/0", "[::ffff:127.0.0.1]:80", false)
	f("0.0.0.0/0,::/0", "[fe80::1]:80", false)
	f("120.0.0.0/5", "127.0.0.1:80", false)
	// ...but a CIDR written for one does.
	f("127.0.0.0/8", "127.0.0.1:80", true)
	f("127.0.0.0/8", "[::ffff:127.0.0.1]:80", true)
	f("127.0.0.2/32", "127.0.0.1:80", false)
	f("169.254.0.0/16", "169.254.169.254:80", true)
	f("::1/128", "[::1]:80", true)
}

func TestParseCIDRs(t *testing.T) {
	bad := func(s string) {
		t.Helper()
		if got, err := ParseCIDRs(s); err == nil {
			t.Fatalf("ParseCIDRs(%q) = %v; want an error", s, got)
		}
	}
	bad("")
	bad(",")
	bad("10.0.0.0")
	bad("10.0.0.1/8")
	bad("10.0.0.0/33")
	bad("example.com/8")
	bad("::ffff:10.0.0.0/104")
	bad("fe80::%eth0/10")
	got, err := ParseCIDRs(" 10.0.0.0/8 , fc00::/7 ")
	if err != nil || len(got) != 2 || got[0].String() != "10.0.0.0/8" || got[1].String() != "fc00::/7" {
		t.Fatalf("ParseCIDRs with spaces = %v, %v", got, err)
	}
}
