package target

import (
	"bytes"
	"errors"
	"testing"
)

func TestParsePodPath(t *testing.T) {
	ok := func(uri, wantAddr, wantPath, wantQuery string) {
		t.Helper()
		got, err := ParsePodPath([]byte(uri))
		if err != nil {
			t.Fatalf("ParsePodPath(%q): unexpected error: %s", uri, err)
		}
		if got.Addr.String() != wantAddr || string(got.Path) != wantPath || string(got.Query) != wantQuery {
			t.Fatalf("ParsePodPath(%q) = %s %q %q; want %s %q %q", uri, got.Addr, got.Path, got.Query, wantAddr, wantPath, wantQuery)
		}
	}
	ok("/pods/10.1.2.3/9100/metrics", "10.1.2.3:9100", "/metrics", "")
	ok("/pods/10.1.2.3/9100/metrics?a=1&b=%20", "10.1.2.3:9100", "/metrics", "a=1&b=%20")
	ok("/pods/10.1.2.3/9100", "10.1.2.3:9100", "/", "")
	ok("/pods/10.1.2.3/9100/", "10.1.2.3:9100", "/", "")
	ok("/pods/10.1.2.3/9100?x", "10.1.2.3:9100", "/", "x")
	// Raw: never unescaped, never normalised.
	ok("/pods/10.1.2.3/80/a%41b/c//d", "10.1.2.3:80", "/a%41b/c//d", "")
	ok("/pods/10.1.2.3/80/a.b/.c/..d/c..", "10.1.2.3:80", "/a.b/.c/..d/c..", "")
	ok("/pods/10.1.2.3/80/m?q=%09x%2F.%2e%C3%A9", "10.1.2.3:80", "/m", "q=%09x%2F.%2e%C3%A9")
	ok("/pods/10.1.2.3/80/probe?target=http://x/y?z", "10.1.2.3:80", "/probe", "target=http://x/y?z")
	ok("/pods/10.1.2.3/65535/m", "10.1.2.3:65535", "/m", "")
	// IPv6, bare and bracketed (what the psystrike relabel rule produces).
	ok("/pods/fd00::1/9100/metrics", "[fd00::1]:9100", "/metrics", "")
	ok("/pods/[fd00::1]/9100/metrics", "[fd00::1]:9100", "/metrics", "")
	ok("/pods/::ffff:10.0.0.1/80/m", "10.0.0.1:80", "/m", "")

	bad := func(uri string) {
		t.Helper()
		got, err := ParsePodPath([]byte(uri))
		if !errors.Is(err, errBadTarget) {
			t.Fatalf("ParsePodPath(%q) = %s, %v; want a bad-target error", uri, got.Addr, err)
		}
	}
	bad("/pods/")
	bad("/pods/10.1.2.3")
	bad("/pods/10.1.2.3/")
	bad("/pods/10.1.2.3//metrics")
	bad("/pods//9100/metrics")
	bad("/metrics")
	// Only canonical IP literals: these all mean 127.0.0.1 to some resolver.
	bad("/pods/127.1/80/m")
	bad("/pods/0x7f.0.0.1/80/m")
	bad("/pods/0x7f000001/80/m")
	bad("/pods/2130706433/80/m")
	bad("/pods/0177.0.0.1/80/m")
	bad("/pods/127.000.000.001/80/m")
	bad("/pods/127.0.0.1./80/m")
	bad("/pods/localhost/80/m")
	bad("/pods/example.com/80/m")
	bad("/pods/%31%32%37.0.0.1/80/m")
	bad("/pods/user@10.0.0.1/80/m")
	bad("/pods/10.0.0.1:80/80/m")
	// Zones, raw or escaped.
	bad("/pods/fe80::1%eth0/80/m")
	bad("/pods/fe80::1%25eth0/80/m")
	bad("/pods/[fe80::1%25eth0]/80/m")
	bad("/pods/[fd00::1/80/m")
	// Ports.
	bad("/pods/10.0.0.1/0/m")
	bad("/pods/10.0.0.1/65536/m")
	bad("/pods/10.0.0.1/09100/m")
	bad("/pods/10.0.0.1/+80/m")
	bad("/pods/10.0.0.1/-1/m")
	bad("/pods/10.0.0.1/8o/m")
	bad("/pods/10.0.0.1/123456/m")
	bad("/pods/10.0.0.1/0x50/m")
	bad("/pods/10.1.2.3/80/m#frag")
	// Paths a pod could read differently from the policy, and injections.
	bad("/pods/10.1.2.3/80/a/../admin")
	bad("/pods/10.1.2.3/80/..")
	bad("/pods/10.1.2.3/80/a/.")
	bad("/pods/10.1.2.3/80/./m")
	bad("/pods/10.1.2.3/80/%2e%2e/admin")
	bad("/pods/10.1.2.3/80/%2E./admin")
	bad("/pods/10.1.2.3/80/a%2Fb")
	bad("/pods/10.1.2.3/80/a%5cb")
	bad("/pods/10.1.2.3/80/a\\b")
	bad("/pods/10.1.2.3/80/a%252e%252e")
	bad("/pods/10.1.2.3/80/m%0d%0aX-Injected:%201")
	bad("/pods/10.1.2.3/80/m%00")
	bad("/pods/10.1.2.3/80/m\x00")
	bad("/pods/10.1.2.3/80/m\r\nX: 1")
	bad("/pods/10.1.2.3/80/m\xff")
	bad("/pods/10.1.2.3/80/m%")
	bad("/pods/10.1.2.3/80/m%4")
	bad("/pods/10.1.2.3/80/m%zz")
	bad("/pods/10.1.2.3/80/m?a=%0d%0aX:1")
	bad("/pods/10.1.2.3/80/m?a=%00")
	bad("/pods/10.1.2.3/80/m?a=b c")
	bad("/pods/10.1.2.3/80/m?a=%4")
	bad("/pods/https:10.1.2.3/80/m")
	bad("/pods/ftp/10.1.2.3/80/m")
	bad("/pods/https/https/10.1.2.3/80/m")
}

func TestParseTargetScheme(t *testing.T) {
	f := func(uri string, parse func([]byte) (Target, error), wantAddr string, wantTLS bool) {
		t.Helper()
		got, err := parse([]byte(uri))
		if err != nil {
			t.Fatalf("%q: unexpected error: %s", uri, err)
		}
		if got.Addr.String() != wantAddr || got.TLS != wantTLS {
			t.Fatalf("%q = %s tls=%v; want %s tls=%v", uri, got.Addr, got.TLS, wantAddr, wantTLS)
		}
	}
	f("/pods/10.1.2.3/9100/metrics", ParsePodPath, "10.1.2.3:9100", false)
	f("/pods/http/10.1.2.3/9100/metrics", ParsePodPath, "10.1.2.3:9100", false)
	f("/pods/https/10.1.2.3/9100/metrics", ParsePodPath, "10.1.2.3:9100", true)
	f("/pods/https/[fd00::1]/443", ParsePodPath, "[fd00::1]:443", true)
	f("http://10.1.2.3/m", ParseAbsoluteURI, "10.1.2.3:80", false)
	f("https://10.1.2.3/m", ParseAbsoluteURI, "10.1.2.3:443", true)
	f("HTTPS://10.1.2.3:8443/m", ParseAbsoluteURI, "10.1.2.3:8443", true)
}

func TestParseAbsoluteURI(t *testing.T) {
	ok := func(uri, wantAddr, wantPath, wantQuery string) {
		t.Helper()
		got, err := ParseAbsoluteURI([]byte(uri))
		if err != nil {
			t.Fatalf("ParseAbsoluteURI(%q): unexpected error: %s", uri, err)
		}
		if got.Addr.String() != wantAddr || string(got.Path) != wantPath || string(got.Query) != wantQuery {
			t.Fatalf("ParseAbsoluteURI(%q) = %s %q %q; want %s %q %q", uri, got.Addr, got.Path, got.Query, wantAddr, wantPath, wantQuery)
		}
	}
	ok("http://10.1.2.3:9100/metrics", "10.1.2.3:9100", "/metrics", "")
	ok("HTTP://10.1.2.3:9100/metrics?x=1", "10.1.2.3:9100", "/metrics", "x=1")
	ok("http://10.1.2.3/metrics", "10.1.2.3:80", "/metrics", "")
	ok("http://10.1.2.3:9100", "10.1.2.3:9100", "/", "")
	ok("http://10.1.2.3:9100?a=b/c", "10.1.2.3:9100", "/", "a=b/c")
	ok("http://10.1.2.3:9100/a%41b//c", "10.1.2.3:9100", "/a%41b//c", "")
	ok("http://[fd00::1]:9100/metrics", "[fd00::1]:9100", "/metrics", "")
	ok("http://[fd00::1]/metrics", "[fd00::1]:80", "/metrics", "")

	bad := func(uri string) {
		t.Helper()
		got, err := ParseAbsoluteURI([]byte(uri))
		if !errors.Is(err, errBadTarget) {
			t.Fatalf("ParseAbsoluteURI(%q) = %s, %v; want a bad-target error", uri, got.Addr, err)
		}
	}
	bad("10.1.2.3:9100")
	bad("*")
	bad("http://10.1.2.3:9100/a/../b")
	bad("https://10.1.2.3:9100/a%2fb")
	bad("ftp://10.1.2.3/x")
	bad("file:///etc/passwd")
	bad("gopher://10.1.2.3:70/x")
	bad("http://")
	bad("http:///metrics")
	bad("http://user@10.1.2.3:9100/metrics")
	bad("http://user:pw@10.1.2.3:9100/metrics")
	bad("http://localhost:9100/metrics")
	bad("http://127.1:9100/metrics")
	bad("http://2130706433/metrics")
	bad("http://10.1.2.3:/metrics")
	bad("http://10.1.2.3:0/metrics")
	bad("http://10.1.2.3:99999/metrics")
	bad("http://fd00::1:9100/metrics")
	bad("http://[fd00::1]:/metrics")
	bad("http://[fd00::1]x/metrics")
	bad("http://[fd00::1/metrics")
	bad("http://[fe80::1%25eth0]:80/metrics")
	bad("http://10.1.2.3:9100/m#f")
}

// checkParsedTarget asserts the parsers' invariants on arbitrary input: every
// accepted target is one the policy can judge and the upstream request can
// carry (path starts with '/', no zone, non-zero port), and its path and query
// pass the checks that keep pods from reading them differently.
func checkParsedTarget(t *testing.T, uri []byte, tg Target, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, errBadTarget) {
			t.Fatalf("%q: error %v is not a bad-target error", uri, err)
		}
		return
	}
	if !tg.Addr.IsValid() || tg.Addr.Port() == 0 || tg.Addr.Addr().Zone() != "" || tg.Addr.Addr().Is4In6() {
		t.Fatalf("%q: accepted invalid address %s", uri, tg.Addr)
	}
	if len(tg.Path) == 0 || tg.Path[0] != '/' {
		t.Fatalf("%q: accepted path %q not starting with '/'", uri, tg.Path)
	}
	if bytes.ContainsAny(tg.Path, "?#\\ \r\n\x00") || bytes.ContainsAny(tg.Query, "# \r\n\x00") {
		t.Fatalf("%q: path %q or query %q carries a delimiter or control byte", uri, tg.Path, tg.Query)
	}
	if bytes.Contains(tg.Path, []byte("/../")) || bytes.HasSuffix(tg.Path, []byte("/..")) || bytes.Contains(tg.Path, []byte("/./")) {
		t.Fatalf("%q: accepted dot segments in %q", uri, tg.Path)
	}
	if checkPath(tg.Path) != nil || CheckQuery(tg.Query) != nil {
		t.Fatalf("%q: accepted a path or query its own checks refuse", uri)
	}
}

var targetSeeds = []string{
	"/pods/10.1.2.3/9100/metrics", "/pods/[fd00::1]/9100/metrics?x=1", "/pods/fd00::1/80", "/pods/https/10.0.0.1/443/m",
	"/pods/127.1/80/m", "/pods/fe80::1%25eth0/80/m", "/pods/10.0.0.1/65536/m", "/pods/10.0.0.1/80/%2e%2e/x",
	"http://10.1.2.3:9100/metrics", "http://[fd00::1]/m?q", "http://user@10.0.0.1/", "https://10.0.0.1/",
	"/pods/::ffff:127.0.0.1/80/x", "http://[::ffff:169.254.169.254]:80/", "/pods/\x00/1/", "",
	"/pods/10.0.0.1/80/m?a=%0d%0a", "gopher://10.0.0.1:70/_x", "file:///etc/passwd",
}

func FuzzParsePodPath(f *testing.F) {
	for _, s := range targetSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, uri []byte) {
		tg, err := ParsePodPath(uri)
		checkParsedTarget(t, uri, tg, err)
	})
}

func FuzzParseAbsoluteURI(f *testing.F) {
	for _, s := range targetSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, uri []byte) {
		tg, err := ParseAbsoluteURI(uri)
		checkParsedTarget(t, uri, tg, err)
	})
}

// TestSplitAbsoluteURI: the host of an absolute-form target is handed over
// as written, for the gateway to judge; everything else is checked as
// ParseAbsoluteURI checks it, since ParseAbsoluteURI is built on it.
func TestSplitAbsoluteURI(t *testing.T) {
	ok := func(uri, wantHost string, wantPort uint16, wantTLS bool, wantPath, wantQuery string) {
		t.Helper()
		u, err := SplitAbsoluteURI([]byte(uri))
		if err != nil {
			t.Fatalf("SplitAbsoluteURI(%q): unexpected error: %s", uri, err)
		}
		if string(u.Host) != wantHost || u.Port != wantPort || u.TLS != wantTLS || string(u.Path) != wantPath || string(u.Query) != wantQuery {
			t.Fatalf("SplitAbsoluteURI(%q) = %q %d tls=%v %q %q; want %q %d tls=%v %q %q", uri,
				u.Host, u.Port, u.TLS, u.Path, u.Query, wantHost, wantPort, wantTLS, wantPath, wantQuery)
		}
	}
	ok("http://kube-state-metrics.kube-system.svc.cluster.local:8080/metrics", "kube-state-metrics.kube-system.svc.cluster.local", 8080, false, "/metrics", "")
	ok("https://node-exporter.monitoring.svc/metrics?x=1", "node-exporter.monitoring.svc", 443, true, "/metrics", "x=1")
	ok("http://a.b.svc", "a.b.svc", 80, false, "/", "")
	ok("http://[fd00::1]:9100/m", "[fd00::1]", 9100, false, "/m", "")
	ok("http://Upper.Case.SVC./m", "Upper.Case.SVC.", 80, false, "/m", "") // names are the gateway's to judge

	bad := func(uri string) {
		t.Helper()
		if u, err := SplitAbsoluteURI([]byte(uri)); !errors.Is(err, errBadTarget) {
			t.Fatalf("SplitAbsoluteURI(%q) = %q, %v; want a bad-target error", uri, u.Host, err)
		}
	}
	bad("http://a.b.svc:0/metrics")
	bad("http://a.b.svc:65536/metrics")
	bad("http://a.b.svc:/metrics")
	bad("http://a.b.svc:80/m/../x")
	bad("http://a.b.svc:80/m?x=%0a")
	bad("http://user@a.b.svc/m")
	bad("http://a.b.svc/m#f")
	bad("ftp://a.b.svc/m")
}

func TestParseIPPort(t *testing.T) {
	f := func(ip, port, want string) {
		t.Helper()
		got, err := ParseIPPort([]byte(ip), []byte(port))
		switch {
		case want == "" && !errors.Is(err, errBadTarget):
			t.Errorf("ParseIPPort(%q, %q) = %s, %v; want a bad-target error", ip, port, got, err)
		case want != "" && (err != nil || got.String() != want):
			t.Errorf("ParseIPPort(%q, %q) = %s, %v; want %s", ip, port, got, err, want)
		}
	}
	f("10.244.1.5", "8080", "10.244.1.5:8080")
	f("[fd00::5]", "8080", "[fd00::5]:8080")
	f("fd00::5", "8080", "[fd00::5]:8080")
	f("::ffff:10.244.1.5", "8080", "10.244.1.5:8080")
	f("10.244.1.5", "08080", "")
	f("10.244.1.5", "65536", "")
	f("10.244.1.5", "", "")
	f("10.244.01.5", "8080", "")
	f("fe80::1%25eth0", "8080", "")
	f("pod.ns.svc", "8080", "")
}
