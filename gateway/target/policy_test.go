package target

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"unicode"
)

func TestPolicyAllowed(t *testing.T) {
	f := func(allowCIDRs, target string, want bool) {
		t.Helper()
		allow, err := ParseCIDRs(allowCIDRs)
		if err != nil {
			t.Fatalf("ParseCIDRs(%q): %s", allowCIDRs, err)
		}
		if got := NewPolicy(Rules{AllowCIDRs: allow}).checkAddr(netip.MustParseAddrPort(target)) == VerdictAllowed; got != want {
			t.Fatalf("allow %s: %s allowed = %v; want %v", allowCIDRs, target, got, want)
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
	mustParseCIDRs := func(s string) []netip.Prefix {
		t.Helper()
		ps, err := ParseCIDRs(s)
		if err != nil {
			t.Fatal(err)
		}
		return ps
	}
	rules := Rules{
		AllowCIDRs:        mustParseCIDRs("10.0.0.0/8,127.0.0.0/8,fd00::/8"),
		DenyCIDRs:         mustParseCIDRs("10.9.0.0/16,127.0.0.0/8"),
		AllowPathPrefixes: []string{"/metrics", "/federate", "/probe/"},
		DenyPathPrefixes:  []string{"/metrics/private"},
	}
	mustSet := func(v interface{ Set(string) error }, s string) {
		t.Helper()
		if err := v.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	mustSet(&rules.AllowPorts, "80,9000-9199,10250")
	mustSet(&rules.DenyPorts, "10250")
	p := NewPolicy(rules)
	p.AddSelf(&net.TCPAddr{IP: net.ParseIP("10.1.1.1"), Port: 9100})
	p.AddSelf(&net.TCPAddr{IP: net.ParseIP("::ffff:10.1.1.2"), Port: 9101})
	p.AddSelf(&net.TCPAddr{IP: net.IPv6unspecified, Port: 9102})

	f := func(uri string, want Verdict) {
		t.Helper()
		tg, err := ParsePodPath([]byte(uri))
		if err != nil {
			t.Fatalf("%q: %s", uri, err)
		}
		if got := p.Check(&tg); got != want {
			t.Fatalf("Check(%q) = %q; want %q", uri, got, want)
		}
	}
	f("/pods/10.1.2.3/9100/metrics", VerdictAllowed)
	f("/pods/10.1.2.3/9100/metrics/cadvisor", VerdictAllowed)
	f("/pods/10.1.2.3/80/federate?match[]=up", VerdictAllowed)
	f("/pods/10.1.2.3/80/probe/x", VerdictAllowed)
	f("/pods/fd00::1/80/metrics", VerdictAllowed)
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
	f("/pods/10.1.2.3/80/metrics/a.b/c", VerdictAllowed)
	f("/pods/10.1.2.3/80/metrics/", VerdictAllowed)
	f("/pods/10.1.2.3/80/metrics/private", verdictPathDenied)
	f("/pods/10.1.2.3/80/metrics/private/x", verdictPathDenied)
	f("/pods/10.1.2.3/80/metrics/PRIVATE", verdictPathDenied)
	f("/pods/10.1.2.3/80/metrics/privateer", verdictPathDenied)
	// The gateway's own addresses.
	f("/pods/10.1.1.1/9100/metrics", verdictSelf)
	f("/pods/10.1.1.2/9101/metrics", verdictSelf)
	f("/pods/10.1.1.1/9101/metrics", VerdictAllowed)
	// Listening on all addresses: all of loopback, not only 127.0.0.1.
	rules.DenyCIDRs = nil
	rules.AllowCIDRs = append(rules.AllowCIDRs, netip.MustParsePrefix("::1/128"))
	p2 := NewPolicy(rules)
	p2.AddSelf(&net.TCPAddr{IP: net.IPv4zero, Port: 9100})
	for _, self := range []string{"127.0.0.1:9100", "127.0.0.2:9100", "[::1]:9100"} {
		if v := p2.checkAddr(netip.MustParseAddrPort(self)); v != verdictSelf {
			t.Fatalf("listening on 0.0.0.0:9100, %s is %q; want the gateway itself", self, v)
		}
	}
}

func TestPortRanges(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		var r PortRanges
		err := r.Set(in)
		got := r.String()
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Fatalf("PortRanges.Set(%q) = %q; want %q", in, got, want)
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
		// An empty list is no CIDRs, as an empty flag value is.
		parseCIDRs := func(s string) ([]netip.Prefix, error) {
			if strings.TrimSpace(s) == "" {
				return nil, nil
			}
			return ParseCIDRs(s)
		}
		var rules Rules
		var errAllow, errDeny error
		rules.AllowCIDRs, errAllow = parseCIDRs(allow)
		rules.DenyCIDRs, errDeny = parseCIDRs(deny)
		if errAllow != nil || errDeny != nil {
			return
		}
		if denyPath != "" && denyPath[0] == '/' {
			rules.DenyPathPrefixes = []string{denyPath}
		}
		self := netip.MustParseAddrPort("10.1.1.1:8080")
		p := NewPolicy(rules)
		p.AddSelf(net.TCPAddrFromAddrPort(self))
		tg, err := ParsePodPath(uri)
		if err != nil {
			return
		}
		if p.Check(&tg) != VerdictAllowed {
			return
		}
		ip := tg.Addr.Addr()
		if tg.Addr == self {
			t.Fatalf("%q: allowed the gateway's own address", uri)
		}
		for _, d := range rules.DenyCIDRs {
			if d.Contains(ip) {
				t.Fatalf("%q: allowed %s inside -deny-cidrs %s", uri, ip, d)
			}
		}
		if special, ok := specialRangeOf(ip); ok {
			writtenFor := false
			for _, a := range rules.AllowCIDRs {
				writtenFor = writtenFor || a.Contains(ip) && a.Bits() >= special.Bits()
			}
			if !writtenFor {
				t.Fatalf("%q: allowed %s in special range %s without a CIDR written for it", uri, ip, special)
			}
		}
		if len(rules.DenyPathPrefixes) > 0 && (!IsPlainPath(tg.Path) || hasFoldPrefix(tg.Path, strings.TrimRight(denyPath, "/"))) {
			t.Fatalf("%q: allowed a path under -deny-path-prefixes %q", uri, denyPath)
		}
	})
}

// TestPolicyMetadataAddresses checks every cloud metadata or platform
// address of the special-range table: refused under the default
// -allow-cidrs and under 0.0.0.0/0,::/0, allowed only by a CIDR written for
// it, and its neighbours judged like any address.
func TestPolicyMetadataAddresses(t *testing.T) {
	f := func(allowCIDRs, target string, want bool) {
		t.Helper()
		allow, err := ParseCIDRs(allowCIDRs)
		if err != nil {
			t.Fatalf("ParseCIDRs(%q): %s", allowCIDRs, err)
		}
		addr := netip.AddrPortFrom(netip.MustParseAddr(target), 80)
		if got := NewPolicy(Rules{AllowCIDRs: allow}).checkAddr(addr) == VerdictAllowed; got != want {
			t.Fatalf("allow %s: %s allowed = %v; want %v", allowCIDRs, addr, got, want)
		}
	}
	// metadata checks an address that only a CIDR inside writtenFor unlocks.
	metadata := func(target, writtenFor string) {
		t.Helper()
		f(DefaultAllowCIDRs, target, false)
		f("0.0.0.0/0,::/0", target, false)
		f(writtenFor, target, true)
	}
	metadata("fd20:ce::254", "fd20:ce::254/128")             // GCP
	metadata("fd00:c1::a9fe:a9fe", "fd00:c1::a9fe:a9fe/128") // Oracle Cloud
	metadata("fd00:42::42", "fd00:42::42/128")               // Scaleway
	metadata("fd00:a9fe:a9fe::1", "fd00:a9fe:a9fe::1/128")   // Akamai (Linode)
	metadata("fd00:ec2::254", "fd00:ec2::/32")               // AWS instance metadata
	metadata("fd00:ec2::254", "fd00:ec2::254/128")
	metadata("fd00:ec2::23", "fd00:ec2::/32")         // EKS Pod Identity
	metadata("fd00:ec2::253", "fd00:ec2::/32")        // Route 53 Resolver
	metadata("fd00:ec2::123", "fd00:ec2::/32")        // Amazon Time Sync
	metadata("168.63.129.16", "168.63.129.16/32")     // Azure WireServer
	metadata("192.0.0.192", "192.0.0.192/32")         // Oracle Cloud Classic
	metadata("100.100.100.200", "100.100.100.200/32") // Alibaba Cloud
	metadata("192.0.0.1", "192.0.0.0/24")             // the rest of IETF protocol assignments
	metadata("192.0.0.255", "192.0.0.0/24")
	metadata("192.0.0.170", "192.0.0.168/29")
	// A CIDR around a metadata address is not one written for it: a pod
	// range, 192.0.0.0/24 or a /64 of the same network leaves it refused.
	f("fd00::/8", "fd20:ce::254", false)
	f("fd20:ce::/64", "fd20:ce::254", false)
	f("fd00:c1::/64", "fd00:c1::a9fe:a9fe", false)
	f("fd00:42::/48", "fd00:42::42", false)
	f("fd00:ec2::/48", "fd00:ec2::254", true) // inside AWS's /32, so written for it
	f("fd00::/16", "fd00:ec2::254", false)
	f("168.63.0.0/16", "168.63.129.16", false)
	f("192.0.0.0/24", "192.0.0.192", false)
	f("100.64.0.0/10", "100.100.100.200", false)
	// IPv4-mapped and NAT64 spellings of them stay refused.
	f("0.0.0.0/0,::/0", "::ffff:168.63.129.16", false)
	f("0.0.0.0/0,::/0", "::ffff:192.0.0.192", false)
	f("0.0.0.0/0,::/0", "64:ff9b::a83f:8110", false)
	// Neighbours. The GCP, Oracle, Scaleway and Akamai entries are single
	// addresses, because the ULA space around them can be the customer's own
	// (GCP hands out VPC ranges from fd20::/20, Oracle takes any ULA prefix):
	// the address next door is an ordinary pod address.
	f(DefaultAllowCIDRs, "fd20:ce::253", true)
	f(DefaultAllowCIDRs, "fd20:ce::1:254", true)
	f(DefaultAllowCIDRs, "fd00:c1::a9fe:a9ff", true)
	f(DefaultAllowCIDRs, "fd00:42::43", true)
	f(DefaultAllowCIDRs, "fd00:a9fe:a9fe::2", true)
	f(DefaultAllowCIDRs, "100.100.100.199", true)
	// AWS's entry is its whole /32, where it puts several host-local services.
	f(DefaultAllowCIDRs, "fd00:ec2::1", false)
	f(DefaultAllowCIDRs, "fd00:ec2:ffff::1", false)
	f(DefaultAllowCIDRs, "fd00:ec3::254", true)
	// Outside the default ranges anyway; only 0.0.0.0/0 reaches them.
	f(DefaultAllowCIDRs, "168.63.129.17", false)
	f("0.0.0.0/0", "168.63.129.17", true)
	f("0.0.0.0/0", "192.0.1.192", true)
	f("0.0.0.0/0", "191.255.255.255", true)
}

// TestSpecialRangesDocumented checks that docs/security.md shows every special
// range as the code has it, with its sources.
func TestSpecialRangesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := bytes.Cut(doc, []byte("\n### Special address ranges\n"))
	section, _, _ = bytes.Cut(section, []byte("\n## "))
	if rows := bytes.Count(section, []byte("\n| `")); rows != len(specialRanges) {
		t.Errorf("docs/security.md's special address ranges have %d rows; the code has %d ranges", rows, len(specialRanges))
	}
	for _, r := range specialRanges {
		if r.what == "" || r.source == "" {
			t.Errorf("special range %s: want what it is and its source", r.prefix)
		}
		row := fmt.Sprintf("| `%s` | %s |", r.prefix, r.what)
		i := bytes.Index(doc, []byte(row))
		if i < 0 {
			t.Errorf("docs/security.md has no row starting %q", row)
			continue
		}
		line, _, _ := bytes.Cut(doc[i:], []byte("\n"))
		for _, src := range strings.Split(r.source, ", ") {
			if !bytes.Contains(line, []byte(src)) {
				t.Errorf("docs/security.md's row for %s does not cite %s", r.prefix, src)
			}
		}
	}
}

// TestPolicyPathPrefixes judges paths under -deny-path-prefixes and
// -allow-path-prefixes: a deny prefix refuses every spelling a common server
// routes to the handler it names, an allow prefix admits only its own
// segments.
func TestPolicyPathPrefixes(t *testing.T) {
	words := map[Verdict]string{
		VerdictAllowed:        "allowed",
		verdictPathDenied:     "denied",
		verdictPathNotAllowed: "not allowed",
		verdictPathNotPlain:   "not plain",
	}
	f := func(deny, allow, path, want string) {
		t.Helper()
		var rules Rules
		if deny != "" {
			rules.DenyPathPrefixes = []string{deny}
		}
		if allow != "" {
			rules.AllowPathPrefixes = []string{allow}
		}
		got := "malformed"
		if tg, err := ParsePodPath([]byte("/pods/10.1.2.3/9100" + path)); err == nil {
			got = words[NewPolicy(rules).checkPath(tg.Path)]
		}
		if got != want {
			t.Fatalf("-deny-path-prefixes=%s -allow-path-prefixes=%s: %s is %s; want %s", deny, allow, path, got, want)
		}
	}
	// The bypasses: a suffix on the last segment.
	f("/actuator/env", "", "/actuator/env.json", "denied")
	f("/actuator/env", "", "/actuator/env;x", "not plain")
	f("/actuator/env", "/actuator", "/actuator/env.json", "denied")
	f("/debug/pprof", "", "/debug/pprofx", "denied")
	f("/debug/pprof", "/debug", "/debug/pprofx", "denied")
	// The prefix itself, below it, and other spellings of it.
	f("/actuator/env", "", "/actuator/env", "denied")
	f("/actuator/env", "", "/actuator/env/", "denied")
	f("/actuator/env", "", "/actuator/env/x", "denied")
	f("/actuator/env", "", "/actuator/envx/y", "denied")
	f("/actuator/env", "", "/ACTUATOR/ENV", "denied")
	f("/actuator/env", "", "/Actuator/Env.JSON", "denied")
	f("/Actuator/Env", "", "/actuator/env", "denied")
	f("/actuator/env", "", "/actuator/%65nv", "not plain")
	f("/actuator/env", "", "/actuator/%45NV", "not plain")
	f("/actuator/env", "", "/actuator/env%2ejson", "malformed")
	f("/actuator/env", "", "/actuator%2fenv", "malformed")
	f("/actuator/env", "", "/actuator/env.", "not plain")
	f("/actuator/env", "", "/actuator./env", "not plain")
	f("/actuator/env", "", "/actuator/env..", "not plain")
	f("/actuator/env", "", "//actuator/env", "not plain")
	f("/actuator/env", "", "/actuator//env", "not plain")
	f("/actuator/env", "", "/actuator/env//", "not plain")
	f("/actuator/env", "", "/actuator;x/env", "not plain")
	f("/actuator/env", "", "/actuator/.;/env", "not plain")
	f("/actuator/env", "", "/actuator/x/../env", "malformed")
	// A trailing '/' on a deny prefix does not spare the path without it:
	// servers route /debug/pprof and /debug/pprof/ to one handler (Go's
	// ServeMux by redirect).
	f("/debug/pprof/", "", "/debug/pprof", "denied")
	f("/debug/pprof/", "", "/debug/pprof/heap", "denied")
	f("/debug/pprof/", "", "/debug/pprofx", "denied")
	f("/", "", "/metrics", "denied")
	// What the prefix does not name passes.
	f("/actuator/env", "", "/actuator/en", "allowed")
	f("/actuator/env", "", "/actuator", "allowed")
	f("/actuator/env", "", "/actuator/health", "allowed")
	f("/actuator/env", "", "/actuatorenv", "allowed")
	f("/debug/pprof", "", "/debug/ppro", "allowed")
	f("/debug/pprof", "", "/metrics", "allowed")
	// Allow prefixes match at a '/' boundary, case-sensitively; deny wins.
	f("", "/metrics", "/metrics", "allowed")
	f("", "/metrics", "/metrics/", "allowed")
	f("", "/metrics", "/metrics/cadvisor", "allowed")
	f("", "/metrics", "/metricsx", "not allowed")
	f("", "/metrics", "/metrics.json", "not allowed")
	f("", "/metrics", "/Metrics", "not allowed")
	f("", "/metrics", "/", "not allowed")
	f("", "/probe/", "/probe", "not allowed")
	f("", "/probe/", "/probe/x", "allowed")
	f("", "/metrics", "/metrics;x", "not plain")
	f("", "/metrics", "/metrics/%70", "not plain")
	f("/metrics/private", "/metrics", "/metrics/private", "denied")
	f("/metrics/private", "/metrics", "/metrics/privateer", "denied")
	f("/metrics/private", "/metrics", "/metrics/PRIVATE.json", "denied")
	f("/metrics/private", "/metrics", "/metrics/privat", "allowed")
	f("/metrics/private", "/metrics", "/metrics/public", "allowed")
	f("/metrics", "/metrics/private", "/metrics/private", "denied")
}

// routeKey is the path as the most lenient of common servers reads it when
// it picks a handler: percent-decoded (every server), ';' parameters cut
// from each segment (Tomcat, Jetty, Spring), dot segments resolved and empty
// segments dropped (nginx's merge_slashes, Go's ServeMux), trailing dots and
// spaces trimmed (IIS), the trailing '/' ignored (Spring's trailing-slash
// match, Express) and letters folded (IIS, case-insensitive Spring). A
// handler for prefix d may serve any path whose key starts with d's key
// (Spring's suffix patterns serve /env.json from /env).
func routeKey(path string) string {
	decoded := make([]byte, 0, len(path))
	for i := 0; i < len(path); i++ {
		if path[i] == '%' && i+2 < len(path) && isHex(path[i+1]) && isHex(path[i+2]) {
			decoded = append(decoded, unhex(path[i+1])<<4|unhex(path[i+2]))
			i += 2
			continue
		}
		decoded = append(decoded, path[i])
	}
	var segs []string
	for _, seg := range strings.Split(string(decoded), "/") {
		seg, _, _ = strings.Cut(seg, ";")
		switch seg {
		case ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			if seg = strings.TrimRight(seg, ". "); seg != "" {
				segs = append(segs, seg)
			}
		}
	}
	return strings.ToLower("/" + strings.Join(segs, "/"))
}

// FuzzPathPrefixes fuzzes -deny-path-prefixes against -allow-path-prefixes:
// no path, nor any respelling of a deny prefix followed by anything, that a
// lenient server would route to the denied handler is allowed, whatever the
// allow list; a path denied alone stays denied with the allow list; and an
// allowed path lies under an allow prefix at a '/' boundary.
func FuzzPathPrefixes(f *testing.F) {
	f.Add("/actuator/env", "", "/actuator/env.json")
	f.Add("/actuator/env", "/actuator", "/actuator/env;x")
	f.Add("/debug/pprof", "/debug", "/debug/pprofx")
	f.Add("/debug/pprof/", "", "/debug/pprof")
	f.Add("/Metrics/Private", "/metrics", "/metrics/PRIVATE.")
	f.Add("/actuator/env", "/", "/actuator/%65nv")
	f.Add("/actuator/env", "/actuator/", "//actuator/env")
	f.Add("/a", "/a/b", "/a/b/c")
	f.Add("/metrics/x", "/metrics", "/metrics/y")
	f.Fuzz(func(t *testing.T, deny, allow, path string) {
		var both, denyOnly, allowOnly Rules
		both.DenyPathPrefixes, denyOnly.DenyPathPrefixes = []string{deny}, []string{deny}
		if allow != "" {
			both.AllowPathPrefixes, allowOnly.AllowPathPrefixes = []string{allow}, []string{allow}
		}
		// Only what the gateway's config validation accepts: prefixes that
		// start with '/' and are plain.
		validPrefix := func(p string) bool { return strings.HasPrefix(p, "/") && IsPlainPath([]byte(p)) }
		if !validPrefix(deny) || allow != "" && !validPrefix(allow) {
			return
		}
		pBoth, pDeny, pAllow := NewPolicy(both), NewPolicy(denyOnly), NewPolicy(allowOnly)
		// Respellings of the deny prefix: the case folded both ways, its
		// first letter percent-encoded, its first '/' doubled, a trailing
		// dot or a ';' parameter; each followed by path.
		variants := []string{path, deny + path, strings.ToUpper(deny) + path, strings.ToLower(deny) + path,
			strings.Replace(deny, "/", "//", 1) + path, deny + "." + path, deny + ";x" + path}
		if i := strings.IndexFunc(deny, unicode.IsLetter); i >= 0 {
			variants = append(variants, fmt.Sprintf("%s%%%02X%s%s", deny[:i], deny[i], deny[i+1:], path))
		}
		for _, v := range variants {
			tg, err := ParsePodPath([]byte("/pods/10.1.2.3/9100" + v))
			if err != nil {
				continue // refused before the policy
			}
			got := pBoth.checkPath(tg.Path)
			if got == VerdictAllowed && strings.HasPrefix(routeKey(string(tg.Path)), routeKey(deny)) {
				t.Fatalf("-deny-path-prefixes=%s -allow-path-prefixes=%s: allowed %q, which a server may route to %s", deny, allow, tg.Path, deny)
			}
			if pDeny.checkPath(tg.Path) == verdictPathDenied && got != verdictPathDenied {
				t.Fatalf("-deny-path-prefixes=%s: %q is denied, but with -allow-path-prefixes=%s it is %q", deny, tg.Path, allow, got)
			}
			if got == VerdictAllowed && allow != "" {
				p := string(tg.Path)
				if !(p == allow || strings.HasPrefix(p, allow) && (strings.HasSuffix(allow, "/") || p[len(allow)] == '/')) {
					t.Fatalf("-allow-path-prefixes=%s: allowed %q, not under it at a '/' boundary", allow, p)
				}
				if pAllow.checkPath(tg.Path) != VerdictAllowed {
					t.Fatalf("-allow-path-prefixes=%s: %q is allowed only with -deny-path-prefixes=%s", allow, p, deny)
				}
			}
		}
	})
}

// noLivePods is a synced cluster with no live pod at all.
type noLivePods struct{}

func (noLivePods) Synced() bool                    { return true }
func (noLivePods) HasEndpoint(netip.AddrPort) bool { return false }

// TestServiceTargetSkipsLivePodRule: with the kubernetes policy a Service
// target's endpoint need not be a live pod's container port (its
// EndpointSlice vouches for it), but every other rule still applies.
func TestServiceTargetSkipsLivePodRule(t *testing.T) {
	p := NewPolicy(Rules{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, DenyPorts: PortRanges{{10250, 10250}}})
	p.SetLivePods(noLivePods{})
	f := func(addr string, service bool, want Verdict) {
		t.Helper()
		tg := Target{Addr: netip.MustParseAddrPort(addr), Path: []byte("/metrics"), Service: service}
		if got := p.Check(&tg); got != want {
			t.Errorf("Check(%s, service=%v) = %q; want %q", addr, service, got, want)
		}
	}
	f("10.244.1.5:8080", false, verdictNotPod)
	f("10.244.1.5:8080", true, VerdictAllowed)
	f("10.244.1.5:10250", true, verdictPortDenied)
	f("192.168.1.5:8080", true, verdictIPNotAllowed)
}

// TestCheckAPIServer: an API server endpoint is judged by neither the CIDR
// nor the port rules, but is never the gateway itself nor in a special
// range that -allow-cidrs does not name.
func TestCheckAPIServer(t *testing.T) {
	var denyPorts PortRanges
	if err := denyPorts.Set(DefaultDenyPorts); err != nil {
		t.Fatal(err)
	}
	p := NewPolicy(Rules{
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("127.0.0.0/8")},
		DenyCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
		DenyPorts:  denyPorts,
		AllowPorts: PortRanges{{9100, 9100}},
	})
	p.AddSelf(&net.TCPAddr{IP: net.IPv4(10, 244, 0, 9), Port: 8080})
	f := func(addr string, want Verdict) {
		t.Helper()
		if v := p.CheckAPIServer(netip.MustParseAddrPort(addr)); v != want {
			t.Errorf("CheckAPIServer(%s) = %q, want %q", addr, v, want)
		}
	}
	f("10.250.0.1:6443", VerdictAllowed) // outside -allow-cidrs, a -deny-ports port
	f("10.96.0.1:443", VerdictAllowed)   // inside -deny-cidrs
	f("203.0.113.7:443", VerdictAllowed) // a managed cluster's public endpoint
	f("[fd00::1]:6443", VerdictAllowed)
	f("127.0.0.5:6443", VerdictAllowed) // loopback named by -allow-cidrs
	f("[::1]:6443", verdictSpecial)
	f("169.254.169.254:80", verdictSpecial)
	f("168.63.129.16:443", verdictSpecial)
	f("10.244.0.9:8080", verdictSelf)
	f("10.244.0.9:6443", VerdictAllowed)
}
