package gateway

import (
	"net"
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
		if got := NewPolicy(&Config{AllowCIDRs: allow}).Allowed(netip.MustParseAddrPort(target)); got != want {
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
	// Metadata services inside the default pod ranges.
	f(DefaultAllowCIDRs, "100.100.100.200:80", false)
	f(DefaultAllowCIDRs, "100.100.100.201:80", true)
	f(DefaultAllowCIDRs, "[fd00:ec2::254]:80", false)
	f(DefaultAllowCIDRs, "[fd00:ec2::23]:80", false)
	f("fd00:ec2::254/128", "[fd00:ec2::254]:80", true)
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
	// The most specific special range counts: ::/96 does not unlock ::1.
	f("::/96", "[::1]:80", false)
	f("::/96", "[::127.0.0.1]:80", true)
	f("::/0", "[64:ff9b:1::a9fe:a9fe]:80", false)
	f("::/0", "[::ffff:0:a9fe:a9fe]:80", false)
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

func TestPolicyCheck(t *testing.T) {
	cfg := Config{AllowCIDRs: mustParsePrefixes("10.0.0.0/8", "127.0.0.0/8", "fd00::/8")}
	mustSet := func(v interface{ Set(string) error }, s string) {
		t.Helper()
		if err := v.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	mustSet((*cidrList)(&cfg.DenyCIDRs), "10.9.0.0/16,127.0.0.0/8")
	mustSet(&cfg.AllowPorts, "80,9000-9199,10250")
	mustSet(&cfg.DenyPorts, "10250")
	mustSet((*stringList)(&cfg.AllowPathPrefixes), "/metrics,/federate,/probe/")
	mustSet((*stringList)(&cfg.DenyPathPrefixes), "/metrics/private")
	p := NewPolicy(&cfg)
	p.addSelf(selfAddrs(&net.TCPAddr{IP: net.ParseIP("10.1.1.1"), Port: 9100})...)
	p.addSelf(selfAddrs(&net.TCPAddr{IP: net.ParseIP("::ffff:10.1.1.2"), Port: 9101})...)
	p.addSelf(selfAddrs(&net.TCPAddr{IP: net.IPv6unspecified, Port: 9102})...)

	f := func(uri string, want verdict) {
		t.Helper()
		tg, err := parsePodPath([]byte(uri))
		if err != nil {
			t.Fatalf("%q: %s", uri, err)
		}
		if got := p.Check(&tg); got != want {
			t.Fatalf("Check(%q) = %q; want %q", uri, got, want)
		}
	}
	f("/pods/10.1.2.3/9100/metrics", verdictAllowed)
	f("/pods/10.1.2.3/9100/metrics/cadvisor", verdictAllowed)
	f("/pods/10.1.2.3/80/federate?match[]=up", verdictAllowed)
	f("/pods/10.1.2.3/80/probe/x", verdictAllowed)
	f("/pods/fd00::1/80/metrics", verdictAllowed)
	// Deny-lists win over allow-lists, including a special range allowed on purpose.
	f("/pods/10.9.0.1/9100/metrics", verdictIPDenied)
	f("/pods/127.0.0.1/9100/metrics", verdictIPDenied)
	f("/pods/::ffff:10.9.0.1/9100/metrics", verdictIPDenied)
	f("/pods/11.0.0.1/9100/metrics", verdictIPNotAllowed)
	f("/pods/10.1.2.3/10250/metrics", verdictPortDenied)
	f("/pods/10.1.2.3/9200/metrics", verdictPortNotAllowed)
	f("/pods/10.1.2.3/22/metrics", verdictPortNotAllowed)
	// Paths match at a '/' boundary, and must be plain: anything a pod could
	// normalise into another path is refused.
	f("/pods/10.1.2.3/80/metricsfoo", verdictPathNotAllowed)
	f("/pods/10.1.2.3/80/probe", verdictPathNotAllowed)
	f("/pods/10.1.2.3/80/", verdictPathNotAllowed)
	f("/pods/10.1.2.3/80/debug/pprof", verdictPathNotAllowed)
	f("/pods/10.1.2.3/80/%6detrics", verdictPathNotPlain)
	f("/pods/10.1.2.3/80/%64ebug", verdictPathNotPlain)
	f("/pods/10.1.2.3/80/metrics//private", verdictPathNotPlain)
	f("/pods/10.1.2.3/80/metrics/private;x", verdictPathNotPlain)
	f("/pods/10.1.2.3/80/metrics/private.", verdictPathNotPlain)
	f("/pods/10.1.2.3/80/metrics/a.b/c", verdictAllowed)
	f("/pods/10.1.2.3/80/metrics/", verdictAllowed)
	f("/pods/10.1.2.3/80/metrics/private", verdictPathDenied)
	f("/pods/10.1.2.3/80/metrics/private/x", verdictPathDenied)
	f("/pods/10.1.2.3/80/metrics/PRIVATE", verdictPathDenied)
	f("/pods/10.1.2.3/80/metrics/privateer", verdictAllowed)
	// The gateway's own addresses.
	f("/pods/10.1.1.1/9100/metrics", verdictSelf)
	f("/pods/10.1.1.2/9101/metrics", verdictSelf)
	f("/pods/10.1.1.1/9101/metrics", verdictAllowed)
	// Listening on all addresses: all of loopback, not only 127.0.0.1.
	cfg.DenyCIDRs = nil
	cfg.AllowCIDRs = append(cfg.AllowCIDRs, netip.MustParsePrefix("::1/128"))
	p2 := NewPolicy(&cfg)
	p2.addSelf(selfAddrs(&net.TCPAddr{IP: net.IPv4zero, Port: 9100})...)
	for _, self := range []string{"127.0.0.1:9100", "127.0.0.2:9100", "[::1]:9100"} {
		if v := p2.checkAddr(netip.MustParseAddrPort(self)); v != verdictSelf {
			t.Fatalf("listening on 0.0.0.0:9100, %s is %q; want the gateway itself", self, v)
		}
	}
}

func TestPortRanges(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		var r portRanges
		err := r.Set(in)
		got := r.String()
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Fatalf("portRanges.Set(%q) = %q; want %q", in, got, want)
		}
	}
	f("80", "80")
	f(" 80 , 9000-9100 ,", "80,9000-9100")
	f("", "")
	f("0", "error")
	f("65536", "error")
	f("90-80", "error")
	f("80-", "error")
	f("-80", "error")
	f("http", "error")
}

// FuzzPolicy checks that the policy never allows what its lists forbid,
// whatever the target: the deny-lists, the special ranges and the gateway's
// own address always win.
func FuzzPolicy(f *testing.F) {
	f.Add([]byte("/pods/10.1.2.3/9100/metrics"), "0.0.0.0/0,::/0", "10.9.0.0/16", "/metrics")
	f.Add([]byte("/pods/127.0.0.1/80/m"), "127.0.0.0/8", "", "")
	f.Add([]byte("/pods/::ffff:169.254.169.254/80/"), "0.0.0.0/0", "", "/")
	f.Add([]byte("/pods/10.9.1.1/80/metrics/%70"), "10.0.0.0/8", "10.9.0.0/16", "/metrics/p")
	f.Fuzz(func(t *testing.T, uri []byte, allow, deny, denyPath string) {
		cfg := Config{}
		if (*cidrList)(&cfg.AllowCIDRs).Set(allow) != nil || (*cidrList)(&cfg.DenyCIDRs).Set(deny) != nil {
			return
		}
		if denyPath != "" && denyPath[0] == '/' {
			cfg.DenyPathPrefixes = []string{denyPath}
		}
		self := netip.MustParseAddrPort("10.1.1.1:8080")
		p := NewPolicy(&cfg)
		p.addSelf(selfAddrs(net.TCPAddrFromAddrPort(self))...)
		tg, err := parsePodPath(uri)
		if err != nil {
			return
		}
		if p.Check(&tg) != verdictAllowed {
			return
		}
		ip := tg.Addr.Addr()
		if tg.Addr == self {
			t.Fatalf("%q: allowed the gateway's own address", uri)
		}
		for _, d := range cfg.DenyCIDRs {
			if d.Contains(ip) {
				t.Fatalf("%q: allowed %s inside -deny-cidrs %s", uri, ip, d)
			}
		}
		if special, ok := specialRangeOf(ip); ok {
			writtenFor := false
			for _, a := range cfg.AllowCIDRs {
				writtenFor = writtenFor || a.Contains(ip) && a.Bits() >= special.Bits()
			}
			if !writtenFor {
				t.Fatalf("%q: allowed %s in special range %s without a CIDR written for it", uri, ip, special)
			}
		}
		if len(cfg.DenyPathPrefixes) > 0 && (!isPlainPath(tg.Path) || hasPathPrefix(tg.Path, denyPath, true)) {
			t.Fatalf("%q: allowed a path under -deny-path-prefixes %q", uri, denyPath)
		}
	})
}
