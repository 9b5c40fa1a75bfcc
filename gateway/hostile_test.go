package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/scrapegate/scrapegate/gateway/target"
	"github.com/scrapegate/scrapegate/internal/testutil"
)

// This file throws hostile request targets and headers at the gateway and
// checks, for each one, the exact status it answers and that no connection
// reached an address it must not reach:
//
//   - gateway A runs the production policy (DefaultConfig): every spelling of
//     loopback and of the metadata address must be refused;
//   - gateway B allows exactly one "pod", 127.0.0.9:P, under /metrics but not
//     /metrics/secret: requests aimed at it that are malformed, traverse, are
//     too large or use another method must be refused before any connection;
//   - gateway C allows loopback and is aimed at itself.
//
// Canaries listen on 127.0.0.1:P, [::1]:P and 127.0.0.9:P. 0.0.0.0:P and
// [::]:P connect to them too. The metadata address cannot be bound; every case
// therefore also checks that the gateway created no endpoint pool, which it
// does only for a target that passed the policy, before any dial.
//
// No case sleeps. A refusal is answered synchronously, after any dial the
// gateway would have made, and the kernel queues accepted connections in
// order: after the whole table, a marker connection that turns out to be the
// first one a canary accepted proves that the gateway never connected to it.

// statusClosed stands for "the connection was closed without a response".
const statusClosed = -1

// hostileCanary is a raw TCP listener that records the order in which it
// accepted connections, by their remote address, and closes each at once.
type hostileCanary struct {
	addr string

	mu      sync.Mutex
	remotes []string
	notify  chan struct{} // capacity 1: "remotes has grown"
}

func newHostileCanary(ln net.Listener) *hostileCanary {
	c := &hostileCanary{addr: ln.Addr().String(), notify: make(chan struct{}, 1)}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.remotes = append(c.remotes, conn.RemoteAddr().String())
			c.mu.Unlock()
			select {
			case c.notify <- struct{}{}:
			default:
			}
			// Closing at once: a gateway that got here gets no HTTP answer,
			// and the close happens after the accept was recorded.
			_ = conn.Close()
		}
	}()
	return c
}

func (c *hostileCanary) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.remotes)
}

// connsBeforeMarker connects to the canary and returns the connections the
// canary accepted before that marker connection.
func (c *hostileCanary) connsBeforeMarker(t *testing.T) []string {
	t.Helper()
	conn, err := net.Dial("tcp", c.addr)
	if err != nil {
		t.Fatalf("cannot connect to canary %s: %s", c.addr, err)
	}
	defer conn.Close()
	marker := conn.LocalAddr().String()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		c.mu.Lock()
		i := slices.Index(c.remotes, marker)
		before := slices.Clone(c.remotes[:max(i, 0)])
		c.mu.Unlock()
		if i >= 0 {
			return before
		}
		select {
		case <-c.notify:
		case <-timeout.C:
			t.Fatalf("canary %s never accepted the marker connection from %s", c.addr, marker)
		}
	}
}

// startHostileCanaries listens on 127.0.0.1, [::1] and 127.0.0.9 on one port.
func startHostileCanaries(t *testing.T) (port int, canaries map[string]*hostileCanary) {
	t.Helper()
	for range 50 {
		ln9, err := net.Listen("tcp", "127.0.0.9:0")
		if err != nil {
			t.Fatal(err)
		}
		port = ln9.Addr().(*net.TCPAddr).Port
		ln1, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			ln9.Close()
			continue
		}
		ln6, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(port)))
		if err != nil {
			ln9.Close()
			ln1.Close()
			continue
		}
		lns := map[string]net.Listener{"127.0.0.9": ln9, "127.0.0.1": ln1, "::1": ln6}
		canaries = map[string]*hostileCanary{}
		for name, ln := range lns {
			t.Cleanup(func() { ln.Close() })
			canaries[name] = newHostileCanary(ln)
		}
		return port, canaries
	}
	t.Fatal("cannot find a port free on 127.0.0.9, 127.0.0.1 and ::1 at once")
	return 0, nil
}

// rawExchange writes raw to a new connection to gw and reads up to n
// responses. It returns their status codes, or [statusClosed] when the
// connection ended before any response, and the first response's body. The
// write runs concurrently with the read: a server that refuses a huge request
// may answer and close before taking all of it.
func rawExchange(t *testing.T, gw, method, raw string, n int) (statuses []int, firstBody string) {
	t.Helper()
	conn, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	written := make(chan struct{})
	go func() {
		defer close(written)
		_, _ = io.WriteString(conn, raw)
	}()
	defer func() {
		conn.Close()
		<-written
	}()
	cr := &countingReader{r: conn}
	br := bufio.NewReader(cr)
	for len(statuses) < n {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			if len(statuses) > 0 {
				break // closed after the responses read so far
			}
			var ne net.Error
			if cr.n == 0 && !(errors.As(err, &ne) && ne.Timeout()) {
				return []int{statusClosed}, ""
			}
			t.Fatalf("cannot read a response to %q: %s (%d bytes received)", truncateString(raw), err, cr.n)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("cannot read the body of the response to %q: %s", truncateString(raw), err)
		}
		resp.Body.Close()
		if len(statuses) == 0 {
			firstBody = string(body)
		}
		statuses = append(statuses, resp.StatusCode)
	}
	return statuses, firstBody
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func truncateString(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// requestsTotal sums every scrapegate_requests_total series of g.
func requestsTotal(t *testing.T, g *Gateway) float64 {
	t.Helper()
	var bb bytes.Buffer
	g.metrics.writePrometheus(&bb)
	sum := 0.0
	for _, line := range strings.Split(bb.String(), "\n") {
		if !strings.HasPrefix(line, "scrapegate_requests_total{") {
			continue
		}
		_, v, _ := strings.Cut(line, "} ")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("%q: %s", line, err)
		}
		sum += f
	}
	return sum
}

func TestHostileInputs(t *testing.T) {
	port, canaries := startHostileCanaries(t)
	P := strconv.Itoa(port)

	cfgA := DefaultConfig()
	cfgA.DrainDelay = 0
	gA, addrA := startGateway(t, cfgA)

	cfgB := DefaultConfig()
	cfgB.DrainDelay = 0
	cfgB.AllowCIDRs = mustParsePrefixes("127.0.0.9/32")
	cfgB.AllowPorts = target.PortRanges{{uint16(port), uint16(port)}}
	cfgB.AllowPathPrefixes = []string{"/metrics"}
	cfgB.DenyPathPrefixes = []string{"/metrics/secret"}
	cfgB.MaxURIBytes = 256
	cfgB.MaxRequestHeaderBytes = 2048
	gB, addrB := startGateway(t, cfgB)

	cases := 0
	// seen is how many connections each canary is known to have accepted:
	// none until the marker check.
	seen := map[string]int{}
	// nothingReached checks that no canary accepted a connection and that g
	// created no endpoint pool.
	nothingReached := func(t *testing.T, g *Gateway, name string) {
		t.Helper()
		if v := metricValue(t, g, "scrapegate_pooled_endpoints"); v != 0 {
			t.Fatalf("%s: the gateway created %v upstream endpoint(s)", name, v)
		}
		for ip, c := range canaries {
			if n := c.count() - seen[ip]; n != 0 {
				t.Fatalf("%s: canary %s accepted %d connection(s)", name, ip, n)
			}
		}
	}
	// send sends one raw request and checks the status of the first response
	// (or statusClosed), and that nothing reached a canary or the pool; it
	// returns the response's body.
	send := func(t *testing.T, g *Gateway, gw, name, method, raw string, want int) string {
		t.Helper()
		cases++
		if want == http.StatusOK || want == http.StatusBadGateway || want == http.StatusGatewayTimeout {
			t.Fatalf("%s: a hostile case must not expect %d", name, want)
		}
		statuses, body := rawExchange(t, gw, method, raw, 1)
		got := statuses[0]
		if got != want {
			t.Errorf("%s: %q: got status %d, want %d; body: %s", name, truncateString(raw), got, want, body)
		}
		// Who answered: the gateway's refusal names its reason, fasthttp's
		// parse errors say "cannot parse request".
		who, _, _ := strings.Cut(strings.TrimPrefix(body, "scrapegate: "), ":")
		t.Logf("%-55s -> %d (%s)", name, got, who)
		nothingReached(t, g, name)
		return body
	}
	request := func(gw, method, target string, headers []string) string {
		var sb strings.Builder
		sb.WriteString(method + " " + target + " HTTP/1.1\r\n")
		hasHost := false
		for _, h := range headers {
			if len(h) >= 5 && strings.EqualFold(h[:5], "Host:") {
				hasHost = true
			}
		}
		if !hasHost {
			sb.WriteString("Host: " + gw + "\r\n")
		}
		for _, h := range headers {
			sb.WriteString(h + "\r\n")
		}
		sb.WriteString("\r\n")
		return sb.String()
	}

	t.Run("A-production-policy", func(t *testing.T) {
		f := func(name, requestTarget string, wantStatus int, headers ...string) {
			t.Helper()
			send(t, gA, addrA, name, "GET", request(addrA, "GET", requestTarget, headers), wantStatus)
		}
		pods := func(host string) string { return "/pods/" + host + "/" + P + "/metrics" }
		abs := func(host string) string { return "http://" + host + ":" + P + "/metrics" }

		// Loopback and metadata encodings, /pods/ form. Non-canonical
		// spellings never parse (400); canonical ones parse and are refused by
		// the special ranges (403).
		f("pods 127.0.0.1", pods("127.0.0.1"), 403)
		f("pods 127.1", pods("127.1"), 400)
		f("pods 127.0.1", pods("127.0.1"), 400)
		f("pods 0x7f.0.0.1", pods("0x7f.0.0.1"), 400)
		f("pods 0x7f000001", pods("0x7f000001"), 400)
		f("pods 2130706433", pods("2130706433"), 400)
		f("pods 017700000001", pods("017700000001"), 400)
		f("pods 0177.0.0.1", pods("0177.0.0.1"), 400)
		f("pods 127.000.000.001", pods("127.000.000.001"), 400)
		f("pods 127.0.0.1. trailing dot", pods("127.0.0.1."), 400)
		f("pods localhost", pods("localhost"), 400)
		f("pods localhost.", pods("localhost."), 400)
		f("pods 0", pods("0"), 400)
		f("pods 0.0.0.0", pods("0.0.0.0"), 403)
		f("pods [::]", pods("[::]"), 403)
		f("pods :: bare", pods("::"), 403)
		f("pods [::1]", pods("[::1]"), 403)
		f("pods ::1 bare", pods("::1"), 403)
		f("pods [::ffff:127.0.0.1]", pods("[::ffff:127.0.0.1]"), 403)
		f("pods ::ffff:7f00:1 bare", pods("::ffff:7f00:1"), 403)
		f("pods [::127.0.0.1] v4-compatible", pods("[::127.0.0.1]"), 403)
		f("pods [0:0:0:0:0:0:0:1]", pods("[0:0:0:0:0:0:0:1]"), 403)
		f("pods [::1%25lo] zone", pods("[::1%25lo]"), 400)
		f("pods fe80::1%25eth0 zone", pods("fe80::1%25eth0"), 400)
		f("pods [fe80::1] link-local", pods("[fe80::1]"), 403)
		f("pods 169.254.169.254", pods("169.254.169.254"), 403)
		f("pods https 169.254.169.254", "/pods/https/169.254.169.254/443/", 403)
		f("pods [::ffff:169.254.169.254]", pods("[::ffff:169.254.169.254]"), 403)
		f("pods [::ffff:a9fe:a9fe]", pods("[::ffff:a9fe:a9fe]"), 403)
		f("pods [::169.254.169.254] v4-compatible", pods("[::169.254.169.254]"), 403)
		f("pods 0xa9fea9fe", pods("0xa9fea9fe"), 400)
		f("pods 2852039166", pods("2852039166"), 400)
		f("pods 169.254.169.254. trailing dot", pods("169.254.169.254."), 400)
		f("pods [64:ff9b::a9fe:a9fe] NAT64", pods("[64:ff9b::a9fe:a9fe]"), 403)
		f("pods [64:ff9b::127.0.0.1] NAT64", pods("[64:ff9b::127.0.0.1]"), 403)
		f("pods [2002:7f00:1::] 6to4", pods("[2002:7f00:1::]"), 403)
		f("pods metadata.google.internal", "/pods/metadata.google.internal/80/computeMetadata/v1/", 400)
		f("pods %31%32%37.0.0.1 percent-encoded", pods("%31%32%37.0.0.1"), 400)
		f("pods 127.0.0.1%00", pods("127.0.0.1%00"), 400)
		f("pods fullwidth digits", pods("１２７.０.０.１"), 400)
		f("pods [127.0.0.1] bracketed v4", pods("[127.0.0.1]"), 403)
		f("pods https 127.0.0.1", "/pods/https/127.0.0.1/"+P+"/metrics", 403)
		f("pods 255.255.255.255", pods("255.255.255.255"), 403)
		f("pods 224.0.0.1", pods("224.0.0.1"), 403)
		f("pods [ff02::1]", pods("[ff02::1]"), 403)
		f("pods user@127.0.0.1", pods("user@127.0.0.1"), 400)
		f("pods example.com", "/pods/example.com/80/metrics", 400)
		f("pods .. as ip", "/pods/../127.0.0.1/"+P+"/metrics", 400)
		f("pods no port", "/pods/127.0.0.1", 400)
		f("pods empty ip", "/pods//"+P+"/metrics", 400)
		// Spellings of the /pods/ prefix that the fast path does not take
		// must not reach the proxy through the router either.
		f("Pods uppercase prefix", "/Pods/127.0.0.1/"+P+"/metrics", 404)
		f("pods encoded prefix", "/%70ods/127.0.0.1/"+P+"/metrics", 404)
		f("pods dot-segment prefix", "/./pods/127.0.0.1/"+P+"/metrics", 404)
		f("pods double-slash prefix", "//pods/127.0.0.1/"+P+"/metrics", 404)

		// Absolute form.
		f("abs 127.0.0.1", abs("127.0.0.1"), 403)
		f("abs 127.0.0.1 default port", "http://127.0.0.1/metrics", 403)
		f("abs 127.1", abs("127.1"), 400)
		f("abs 127.0.1", abs("127.0.1"), 400)
		f("abs 0x7f.0.0.1", abs("0x7f.0.0.1"), 400)
		f("abs 0x7f000001", abs("0x7f000001"), 400)
		f("abs 2130706433", abs("2130706433"), 400)
		f("abs 017700000001", abs("017700000001"), 400)
		f("abs 0177.0.0.1", abs("0177.0.0.1"), 400)
		f("abs 127.000.000.001", abs("127.000.000.001"), 400)
		f("abs 127.0.0.1. trailing dot", abs("127.0.0.1."), 400)
		f("abs localhost", abs("localhost"), 400)
		f("abs localhost.", abs("localhost."), 400)
		f("abs 0", abs("0"), 400)
		f("abs 0.0.0.0", abs("0.0.0.0"), 403)
		f("abs [::]", abs("[::]"), 403)
		f("abs [::1]", abs("[::1]"), 403)
		f("abs ::1 bare with port", abs("::1"), 400)
		f("abs ::1 bare", "http://::1/metrics", 400)
		f("abs [::ffff:127.0.0.1]", abs("[::ffff:127.0.0.1]"), 403)
		f("abs [::ffff:7f00:1]", abs("[::ffff:7f00:1]"), 403)
		f("abs [::127.0.0.1] v4-compatible", abs("[::127.0.0.1]"), 403)
		f("abs [0:0:0:0:0:0:0:1]", abs("[0:0:0:0:0:0:0:1]"), 403)
		f("abs [::1%25lo] zone", abs("[::1%25lo]"), 400)
		f("abs [fe80::1%25eth0] zone", abs("[fe80::1%25eth0]"), 400)
		f("abs 169.254.169.254", "http://169.254.169.254/latest/meta-data/", 403)
		f("abs https 169.254.169.254", "https://169.254.169.254/", 403)
		f("abs [::ffff:169.254.169.254]", "http://[::ffff:169.254.169.254]/latest/meta-data/", 403)
		f("abs [::ffff:a9fe:a9fe]", "http://[::ffff:a9fe:a9fe]/", 403)
		f("abs 0xa9fea9fe", "http://0xa9fea9fe/", 400)
		f("abs 2852039166", "http://2852039166/", 400)
		f("abs 169.254.169.254. trailing dot", "http://169.254.169.254./", 400)
		f("abs [64:ff9b::a9fe:a9fe] NAT64", "http://[64:ff9b::a9fe:a9fe]/", 403)
		f("abs metadata.google.internal", "http://metadata.google.internal/computeMetadata/v1/", 400)
		f("abs %31%32%37.0.0.1 percent-encoded", abs("%31%32%37.0.0.1"), 400)
		f("abs 127.0.0.1%00", abs("127.0.0.1%00"), 400)
		f("abs fullwidth digits", abs("１２７.０.０.１"), 400)
		// fasthttp parses the host of an absolute-form target itself, and
		// refuses an IPv4 address in brackets before the handler runs.
		f("abs [127.0.0.1] bracketed v4", abs("[127.0.0.1]"), 400)
		f("abs example.com", "http://example.com/metrics", 400)
		f("abs HTTP uppercase scheme", "HTTP://127.0.0.1:"+P+"/metrics", 403)
		f("abs HtTpS mixed-case scheme", "HtTpS://169.254.169.254/", 403)

		// Userinfo.
		f("abs user:pass@127.0.0.1", "http://user:pass@127.0.0.1:"+P+"/", 400)
		f("abs 10.0.0.1@127.0.0.1", "http://10.0.0.1@127.0.0.1:"+P+"/", 400)
		f("abs @127.0.0.1 empty userinfo", "http://@127.0.0.1:"+P+"/", 400)
		f("abs 127.0.0.1#@10.0.0.1", "http://127.0.0.1:"+P+"#@10.0.0.1/", 400)
		f(`abs 127.0.0.1\@10.0.0.1`, "http://127.0.0.1:"+P+`\@10.0.0.1/`, 400)

		// Other schemes and target forms.
		f("file", "file:///etc/passwd", 400)
		f("gopher", "gopher://127.0.0.1:"+P+"/_GET%20/", 400)
		f("ftp", "ftp://127.0.0.1:"+P+"/", 400)
		f("dict", "dict://127.0.0.1:"+P+"/info", 400)
		f("ws", "ws://127.0.0.1:"+P+"/metrics", 400)
		f("scheme-relative", "//127.0.0.1:"+P+"/metrics", 404)
		f("http:/ single slash", "http:/127.0.0.1:"+P+"/metrics", 400)
		f(`http:\\ backslashes`, `http:\\127.0.0.1:`+P+`\metrics`, 400)
		f("asterisk", "*", 400)
		f("authority form without CONNECT", "127.0.0.1:"+P, 400)

		// Loop and size limits are checked before the target is parsed.
		f("Via loop", pods("127.0.0.1"), 508, "Via: 1.1 scrapegate")
		long := "/pods/127.0.0.1/" + P + "/"
		f("uri one byte over -max-uri-bytes", long+strings.Repeat("a", cfgA.MaxURIBytes+1-len(long)), 414)
	})

	t.Run("B-one-pod-allowed", func(t *testing.T) {
		pod := "/pods/127.0.0.9/" + P
		absPod := "http://127.0.0.9:" + P
		f := func(name, requestTarget string, wantStatus int, headers ...string) {
			t.Helper()
			send(t, gB, addrB, name, "GET", request(addrB, "GET", requestTarget, headers), wantStatus)
		}
		fm := func(name, method, requestTarget string, wantStatus int, headers ...string) {
			t.Helper()
			send(t, gB, addrB, name, method, request(addrB, method, requestTarget, headers), wantStatus)
		}
		fraw := func(name, raw string, wantStatus int) {
			t.Helper()
			send(t, gB, addrB, name, "GET", raw, wantStatus)
		}
		host := "Host: " + addrB + "\r\n"

		// Other addresses than the pod.
		f("other loopback address", "/pods/127.0.0.1/"+P+"/metrics", 403)
		f("neighbour address", "/pods/127.0.0.10/"+P+"/metrics", 403)
		f("[::1]", "/pods/[::1]/"+P+"/metrics", 403)
		f("[::ffff:127.0.0.1]", "/pods/[::ffff:127.0.0.1]/"+P+"/metrics", 403)

		// Ports.
		f("port 0", "/pods/127.0.0.9/0/metrics", 400)
		f("port 65536", "/pods/127.0.0.9/65536/metrics", 400)
		f("port 2^32+P wraps", "/pods/127.0.0.9/"+strconv.Itoa(1<<32+port)+"/metrics", 400)
		f("port 2^16+P wraps", "/pods/127.0.0.9/"+strconv.Itoa(1<<16+port)+"/metrics", 400)
		f("port leading zero", "/pods/127.0.0.9/0"+P+"/metrics", 400)
		f("port +P", "/pods/127.0.0.9/+"+P+"/metrics", 400)
		f("port -P", "/pods/127.0.0.9/-"+P+"/metrics", 400)
		f("port 0x hex", "/pods/127.0.0.9/0x"+strconv.FormatInt(int64(port), 16)+"/metrics", 400)
		f("port empty", "/pods/127.0.0.9//metrics", 400)
		f("port not allowed", "/pods/127.0.0.9/"+strconv.Itoa(port+1)+"/metrics", 403)
		f("abs port 0", "http://127.0.0.9:0/metrics", 400)
		f("abs port 65536", "http://127.0.0.9:65536/metrics", 400)
		f("abs port leading zero", "http://127.0.0.9:0"+P+"/metrics", 400)
		f("abs port +P", "http://127.0.0.9:+"+P+"/metrics", 400)
		f("abs port empty", "http://127.0.0.9:/metrics", 400)
		f("abs default port 80", "http://127.0.0.9/metrics", 403)
		f("abs [v4-mapped] empty port", "http://[::ffff:127.0.0.9]:/metrics", 400)
		f("abs [v4-mapped] junk after bracket", "http://[::ffff:127.0.0.9]x/metrics", 400)

		// CR, LF and NUL, raw and encoded.
		fraw("raw CRLF in request line", "GET "+pod+"/metrics\r\nX-Injected: 1 HTTP/1.1\r\n"+host+"\r\n", 400)
		fraw("raw LF in request line", "GET "+pod+"/metrics\nHost: evil HTTP/1.1\r\n"+host+"\r\n", 400)
		fraw("raw CR in request target", "GET "+pod+"/metrics\rX HTTP/1.1\r\n"+host+"\r\n", 400)
		fraw("raw NUL in path", "GET "+pod+"/met\x00rics HTTP/1.1\r\n"+host+"\r\n", 400)
		fraw("raw NUL in query", "GET "+pod+"/metrics?a=\x00 HTTP/1.1\r\n"+host+"\r\n", 400)
		fraw("raw TAB in path", "GET "+pod+"/metrics\tX HTTP/1.1\r\n"+host+"\r\n", 400)
		fraw("raw DEL in path", "GET "+pod+"/metrics\x7f HTTP/1.1\r\n"+host+"\r\n", 400)
		fraw("space in path", "GET "+pod+"/metrics X HTTP/1.1\r\n"+host+"\r\n", 400)
		fraw("no HTTP version", "GET "+pod+"/metrics\r\n"+host+"\r\n", 400)
		fraw("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 405)
		fraw("TLS ClientHello on the plain port", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 "+pod+"/metrics HTTP/1.1\r\n\r\n", 400)
		fraw("NUL before the method", "\x00GET "+pod+"/metrics HTTP/1.1\r\n"+host+"\r\n", 400)
		fraw("HTTP/1.1 with a huge minor version", "GET "+pod+"/admin HTTP/1.9\r\n"+host+"\r\n", 403)
		f("%0d%0a in path", pod+"/metrics%0d%0aHost:%20evil", 400)
		f("header smuggling in path", pod+"/metrics%20HTTP/1.1%0d%0aX-Evil:%201", 400)
		f("%0d%0a in query", pod+"/metrics?x=%0d%0aHost:%20evil", 400)
		f("%0a in query", pod+"/metrics?x=%0a", 400)
		f("%00 in path", pod+"/metrics%00", 400)
		f("%00 in query", pod+"/metrics?x=%00", 400)
		f("%7f in query", pod+"/metrics?x=%7f", 400)
		f("abs %0d%0a in path", absPod+"/metrics%0d%0aX:%20y", 400)
		f("abs %0d%0a in query", absPod+"/metrics?%0d%0aX:%20y", 400)
		f("abs %00 in path", absPod+"/metrics%00", 400)
		f("bad escape in path", pod+"/metrics%zz", 400)
		f("truncated escape in path", pod+"/metrics%", 400)
		f("truncated escape in query", pod+"/metrics?a=%4", 400)
		f("raw non-ASCII in path", pod+"/metrics/\xc0\xae\xc0\xae/secret", 400)
		f("raw non-ASCII in query", pod+"/metrics?x=\xff", 400)
		f("encoded overlong UTF-8 dots", pod+"/metrics/%c0%ae%c0%ae/secret", 400)
		f("fragment", pod+"/metrics#x", 400)
		f("abs fragment", absPod+"/metrics#x", 400)

		// Path traversal past the allow- and deny-lists.
		f("/metrics/../admin", pod+"/metrics/../admin", 400)
		f("/metrics/%2e%2e/admin", pod+"/metrics/%2e%2e/admin", 400)
		f("/metrics/%2E%2E%2Fadmin", pod+"/metrics/%2E%2E%2Fadmin", 400)
		f("/metrics/..%2fadmin", pod+"/metrics/..%2fadmin", 400)
		f("/metrics%2f..%2fadmin", pod+"/metrics%2f..%2fadmin", 400)
		f("/metrics/.%2e/admin", pod+"/metrics/.%2e/admin", 400)
		f(`/metrics\..\admin`, pod+`/metrics\..\admin`, 400)
		f("/metrics/%5c..%5cadmin", pod+"/metrics/%5c..%5cadmin", 400)
		f("/metrics/%252e%252e/admin double encoding", pod+"/metrics/%252e%252e/admin", 400)
		f("/metrics/./secret", pod+"/metrics/./secret", 400)
		f("/metrics/..", pod+"/metrics/..", 400)
		f("abs /metrics/../admin", absPod+"/metrics/../admin", 400)
		f("abs /metrics/%2e%2e/admin", absPod+"/metrics/%2e%2e/admin", 400)
		f("/%6detrics/secret encoded letter", pod+"/%6detrics/secret", 403)
		f("/metrics/SECRET case", pod+"/metrics/SECRET", 403)
		f("/metrics/%53ecret encoded case", pod+"/metrics/%53ecret", 403)
		f("/metrics/secre%74 encoded letter", pod+"/metrics/secre%74", 403)
		f("/metrics/%c5%bfecret encoded long s", pod+"/metrics/%c5%bfecret", 400)
		f("/metrics/secret", pod+"/metrics/secret", 403)
		f("/metrics/secret/", pod+"/metrics/secret/", 403)
		f("/metrics/secret/x?y", pod+"/metrics/secret/x?y", 403)
		f("abs /metrics/secret", absPod+"/metrics/secret", 403)
		f("/metricsfoo prefix boundary", pod+"/metricsfoo", 403)
		f("/metrics-x prefix boundary", pod+"/metrics-x", 403)
		f("/METRICS allow is case-sensitive", pod+"/METRICS", 403)
		f("/admin", pod+"/admin", 403)
		f("no path", pod, 403)
		f("root path", pod+"/", 403)
		f("abs /admin", absPod+"/admin", 403)

		// Sizes.
		f("path over -max-uri-bytes", pod+"/metrics/"+strings.Repeat("a", cfgB.MaxURIBytes), 414)
		f("query over -max-uri-bytes", pod+"/metrics?"+strings.Repeat("a", cfgB.MaxURIBytes), 414)
		f("abs over -max-uri-bytes", absPod+"/metrics/"+strings.Repeat("a", cfgB.MaxURIBytes), 414)
		f("request line over -max-request-header-bytes", pod+"/metrics/"+strings.Repeat("a", cfgB.MaxRequestHeaderBytes), 431)
		f("header block over -max-request-header-bytes", pod+"/metrics", 431, "X-Big: "+strings.Repeat("a", cfgB.MaxRequestHeaderBytes))
		f("thousands of headers", pod+"/metrics", 431, slices.Repeat([]string{"X-H: 1"}, 5000)...)
		f("one 1 MiB header", pod+"/metrics", 431, "X-Huge: "+strings.Repeat("a", 1<<20))

		// Schemes and target forms aimed at the pod.
		f("gopher", "gopher://127.0.0.9:"+P+"/_GET%20/metrics/secret", 400)
		f("ftp", "ftp://127.0.0.9:"+P+"/metrics", 400)
		f("dict", "dict://127.0.0.9:"+P+"/info", 400)
		f("ws", "ws://127.0.0.9:"+P+"/metrics", 400)
		f("file", "file:///etc/passwd", 400)
		f("file with host", "file://127.0.0.9/etc/passwd", 400)
		f("HTTP uppercase scheme, refused path", "HTTP://127.0.0.9:"+P+"/admin", 403)
		f("scheme-relative", "//127.0.0.9:"+P+"/metrics", 404)
		f("asterisk", "*", 400)
		f("authority form without CONNECT", "127.0.0.9:"+P, 400)

		// Methods.
		fm("CONNECT authority form", "CONNECT", "127.0.0.9:"+P, 405)
		fm("CONNECT absolute form", "CONNECT", absPod+"/metrics", 405)
		fm("CONNECT /pods/", "CONNECT", pod+"/metrics", 405)
		fm("POST", "POST", pod+"/metrics", 405)
		fm("PUT", "PUT", pod+"/metrics", 405)
		fm("DELETE", "DELETE", pod+"/metrics", 405)
		fm("PATCH", "PATCH", pod+"/metrics", 405)
		fm("TRACE", "TRACE", pod+"/metrics", 405)
		fm("OPTIONS", "OPTIONS", pod+"/metrics", 405)
		fm("OPTIONS *", "OPTIONS", "*", 405)
		fm("TRACE absolute form", "TRACE", absPod+"/metrics", 405)
		fm("POST absolute form", "POST", absPod+"/metrics", 405)
		fm("lowercase get", "get", pod+"/metrics", 405)
		fm("PROPFIND", "PROPFIND", pod+"/metrics", 405)
		fraw("POST with a body", "POST "+pod+"/metrics HTTP/1.1\r\n"+host+"Content-Length: 5\r\n\r\nhello", 405)

		// Headers.
		f("Host: metadata on a refused path", pod+"/admin", 403, "Host: 169.254.169.254")
		f("Host: metadata on a denied path", pod+"/metrics/secret", 403, "Host: 169.254.169.254:80")
		f("Host: the pod on an absolute-form metadata target", "http://169.254.169.254/latest/meta-data/", 403, "Host: 127.0.0.9:"+P)
		f("X-Forwarded-Host: the pod on a refused address", "/pods/127.0.0.1/"+P+"/metrics", 403, "X-Forwarded-Host: 127.0.0.9:"+P)
		f("Via: 1.1 scrapegate", pod+"/metrics", 508, "Via: 1.1 scrapegate")
		f("Via: list with ScrapeGate", pod+"/metrics", 508, "Via: 1.0 squid, 1.1 ScrapeGate")
		f("Via: second header", pod+"/metrics", 508, "Via: 1.1 squid", "Via: 1.1 scrapegate")
		f("Via: absolute form", absPod+"/metrics", 508, "Via: 1.1 scrapegate")
		f("two Host headers", pod+"/metrics", 400, "Host: a", "Host: b")
		fraw("two Content-Length headers", "GET "+pod+"/metrics HTTP/1.1\r\n"+host+"Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello", 400)
		fraw("two Transfer-Encoding headers", "GET "+pod+"/metrics HTTP/1.1\r\n"+host+"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400)
		fraw("Transfer-Encoding: gzip", "GET "+pod+"/metrics HTTP/1.1\r\n"+host+"Transfer-Encoding: gzip\r\n\r\n", 400)
		fraw("Transfer-Encoding on HTTP/1.0", "GET "+pod+"/metrics HTTP/1.0\r\n"+host+"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400)
		fraw("space before colon", "GET "+pod+"/metrics HTTP/1.1\r\n"+host+"X-A : b\r\n\r\n", 400)
		fraw("NUL in a header value", "GET "+pod+"/metrics HTTP/1.1\r\n"+host+"X-A: b\x00c\r\n\r\n", 400)
		fraw("chunked body on GET to a refused path", "GET "+pod+"/admin HTTP/1.1\r\n"+host+"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 403)

		// Request smuggling: Content-Length and Transfer-Encoding disagree
		// about where the first request ends. The gateway answers the first
		// and closes the connection: a request with a body is never
		// followed by another on the same connection.
		cases++
		smuggle := "GET " + pod + "/admin HTTP/1.1\r\n" + host + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"0\r\n\r\n" + "GET " + pod + "/metrics/secret HTTP/1.1\r\n" + host + "\r\n"
		if got, _ := rawExchange(t, addrB, "GET", smuggle, 2); !slices.Equal(got, []int{403}) && !slices.Equal(got, []int{400}) {
			t.Errorf("CL.TE smuggling: got statuses %v, want [403] or [400] and the connection closed", got)
		} else {
			t.Logf("CL.TE smuggling: statuses %v", got)
		}
		nothingReached(t, gB, "CL.TE smuggling")
	})

	// Gateway D watches a cluster with no Services: a name Kubernetes
	// could have is unknown (404), any other is refused with the rule it
	// breaks (400). Either way nothing is looked up by DNS or dialled.
	cfgD := DefaultConfig()
	cfgD.DrainDelay = 0
	cfgD.Kubernetes = true
	cfgD.KubeletTokenFile, cfgD.KubeletCAFile = "", ""
	cfgD.ControlPlaneTokenFile, cfgD.ControlPlaneCAFile = "", ""
	cfgD.AllowCIDRs = mustParsePrefixes("127.0.0.9/32")
	gD, addrD := startKubeGateway(t, cfgD, fake.NewClientset())
	t.Run("D-service-names", func(t *testing.T) {
		f := func(name, requestTarget string, wantStatus int, wantInBody string) {
			t.Helper()
			body := send(t, gD, addrD, name, "GET", request(addrD, "GET", requestTarget, nil), wantStatus)
			if !strings.Contains(body, wantInBody) {
				t.Errorf("%s: %q: the answer %q does not say %q", name, requestTarget, body, wantInBody)
			}
		}
		svc := func(ns, service, port string) string {
			return "/services/" + ns + "/" + service + "/" + port + "/metrics"
		}
		ep := func(ns, service, ip, port string) string {
			return "/endpoints/" + ns + "/" + service + "/" + ip + "/" + port + "/metrics"
		}
		abs := func(host string) string { return "http://" + host + ":" + P + "/metrics" }

		f("services unknown by number", svc("mon", "kube-dns", P), 404, "no Service mon/kube-dns in the watched namespaces")
		f("services unknown by name", svc("mon", "kube-dns", "metrics"), 404, "no Service mon/kube-dns in the watched namespaces")
		f("services upper-case service", svc("mon", "Kube-DNS", P), 400, "upper case")
		f("services upper-case namespace", svc("Mon", "kube-dns", P), 400, "upper case")
		f("services trailing dot", svc("mon", "kube-dns.", P), 400, "contains '.'")
		f("services dotted name", svc("mon", "kube-dns.mon", P), 400, "contains '.'")
		f("services ..", svc("mon", "..", P), 400, "dot segment")
		f("services .", svc("mon", ".", P), 400, "dot segment")
		f("services .. namespace", svc("..", "kube-dns", P), 400, "dot segment")
		f("services percent-encoded", svc("mon", "kube%2ddns", P), 400, "percent-encoded")
		f("services percent-encoded slash", svc("mon", "kube-dns%2f..%2fx", P), 400, "percent-encoded")
		f("services underscore", svc("mon", "kube_dns", P), 400, "only have a-z, 0-9 and '-'")
		f("services 64 characters", svc("mon", strings.Repeat("a", 64), P), 400, "longer than 63")
		f("services digit first", svc("mon", "1dns", P), 400, "start with a letter")
		f("services dash last", svc("mon", "dns-", P), 400, "start and end with a letter or digit")
		f("services empty service", svc("mon", "", P), 400, "the service is empty")
		f("services empty namespace", svc("", "kube-dns", P), 400, "the namespace is empty")
		f("services no port", "/services/mon/kube-dns", 400, "want /services/{namespace}/{service}/{port}/{path}")
		f("services port 0", svc("mon", "kube-dns", "0"), 400, "out of range")
		f("services port 65536", svc("mon", "kube-dns", "65536"), 400, "out of range")
		f("services port 2^32+P", svc("mon", "kube-dns", strconv.Itoa(1<<32+port)), 400, "out of range")
		f("services port leading zero", svc("mon", "kube-dns", "0"+P), 400, "out of range")
		f("services port -P", svc("mon", "kube-dns", "-"+P), 400, "must not start or end with '-'")
		f("services port +P", svc("mon", "kube-dns", "+"+P), 400, "only have a-z, 0-9 and '-'")
		f("services port name upper case", svc("mon", "kube-dns", "METRICS"), 400, "upper case")
		f("services port name 16 characters", svc("mon", "kube-dns", "abcdefghijklmnop"), 400, "longer than 15")
		f("services port name --", svc("mon", "kube-dns", "dns--tcp"), 400, "two in a row")
		f("services port percent-encoded", svc("mon", "kube-dns", "%3"+P), 400, "percent-encoded")
		f("services path traversal", "/services/mon/kube-dns/"+P+"/metrics/../admin", 400, "'..' segment")
		f("services encoded traversal", "/services/mon/kube-dns/"+P+"/metrics/%2e%2e/admin", 400, "encoded")
		f("services fragment", "/services/mon/kube-dns/"+P+"/metrics#x", 400, "'#'")
		f("Services upper-case prefix", "/Services/mon/kube-dns/"+P+"/metrics", 404, "not found")

		f("endpoints unknown", ep("mon", "kube-dns", "127.0.0.9", P), 404, "no Service mon/kube-dns in the watched namespaces")
		f("endpoints metadata address", ep("mon", "kube-dns", "169.254.169.254", "80"), 404, "no Service mon/kube-dns in the watched namespaces")
		f("endpoints upper case", ep("mon", "Kube-DNS", "127.0.0.9", P), 400, "upper case")
		f("endpoints ..", ep("mon", "..", "127.0.0.9", P), 400, "dot segment")
		f("endpoints percent-encoded", ep("mon", "kube%2ddns", "127.0.0.9", P), 400, "percent-encoded")
		f("endpoints 127.1", ep("mon", "kube-dns", "127.1", P), 400, "not an IP literal")
		f("endpoints localhost", ep("mon", "kube-dns", "localhost", P), 400, "not an IP literal")
		f("endpoints a Service name as ip", ep("mon", "kube-dns", "kube-dns.mon.svc", P), 400, "not an IP literal")
		f("endpoints zone", ep("mon", "kube-dns", "[::1%25lo]", P), 400, "zone")
		f("endpoints port 65536", ep("mon", "kube-dns", "127.0.0.9", "65536"), 400, "port must be")
		f("endpoints port name", ep("mon", "kube-dns", "127.0.0.9", "metrics"), 400, "port must be")
		f("endpoints no port", "/endpoints/mon/kube-dns/127.0.0.9", 400, "want /endpoints/")

		f("abs .svc unknown", abs("kube-dns.mon.svc"), 404, "no Service mon/kube-dns in the watched namespaces")
		f("abs .svc.cluster.local unknown", abs("kube-dns.mon.svc.cluster.local"), 404, "no Service mon/kube-dns in the watched namespaces")
		f("abs .svc default port", "http://kube-dns.mon.svc/metrics", 404, "no Service mon/kube-dns in the watched namespaces")
		f("abs .svc.evil.example", abs("kube-dns.mon.svc.evil.example"), 400, "is not a Service name: it must be {service}.{namespace}.svc")
		f("abs .svc.cluster.local.evil.example", abs("kube-dns.mon.svc.cluster.local.evil.example"), 400, "-kubernetes-cluster-domain=cluster.local")
		f("abs .svc.other.domain", abs("kube-dns.mon.svc.cluster.example"), 400, "is not a Service name")
		f("abs .svc trailing dot", abs("kube-dns.mon.svc."), 400, "trailing dot")
		f("abs .svc.cluster.local trailing dot", abs("kube-dns.mon.svc.cluster.local."), 400, "trailing dot")
		f("abs .svc upper case", abs("Kube-DNS.mon.svc"), 400, "upper case")
		f("abs .SVC upper case", abs("kube-dns.mon.SVC"), 400, "upper case")
		f("abs .svc empty label", abs("kube-dns..svc"), 400, "empty label")
		f("abs .svc ..", abs("...svc"), 400, "empty label")
		// fasthttp parses an absolute-form host itself and refuses this one
		// before the handler runs.
		f("abs .svc percent-encoded", abs("kube%2ddns.mon.svc"), 400, "cannot parse")
		f("abs .svc underscore", abs("kube_dns.mon.svc"), 400, "only have a-z, 0-9 and '-'")
		f("abs .svc digit first", abs("1dns.mon.svc"), 400, "start with a letter")
		f("abs .svc too many labels", abs("a.kube-dns.mon.svc"), 400, "is not a Service name")
		f("abs svc.cluster.local", abs("svc.cluster.local"), 400, "is not a Service name")
		f("abs ip.svc", abs("127.0.0.9.svc"), 400, "is not a Service name")
		f("abs .svc port 0", "http://kube-dns.mon.svc:0/metrics", 400, "port must be")
		f("abs .svc port 65536", "http://kube-dns.mon.svc:65536/metrics", 400, "port must be")
		f("abs .svc in brackets", "http://[kube-dns.mon.svc]:"+P+"/metrics", 400, "")
		f("abs .svc userinfo", "http://user@kube-dns.mon.svc:"+P+"/metrics", 400, "userinfo")
		f("abs .svc traversal", abs("kube-dns.mon.svc")+"/../admin", 400, "'..' segment")
		f("abs other name", abs("kube-dns.mon.example"), 400, "target host is not an IP literal")
		f("abs localhost", abs("localhost"), 400, "target host is not an IP literal")
	})

	// Gateway E scrapes the API servers: the one endpoint of
	// default/kubernetes, 127.0.0.20:6443, has no listener, and every case
	// aims the control-plane token elsewhere or at another path. It scrapes
	// the components too, all at the canaries' port: no node runs one
	// that may be scraped (cp-1, a canary's address, runs only another
	// namespace's look-alike; lo's scheduler is Pending; ghost is no node).
	cfgE := testConfig()
	cfgE.KubeSchedulerPort, cfgE.KubeControllerManagerPort, cfgE.EtcdPort, cfgE.KubeProxyPort = uint16(port), uint16(port), uint16(port), uint16(port)
	cfgE.Kubernetes = true
	cfgE.KubeletTokenFile, cfgE.KubeletCAFile = "", ""
	cfgE.ControlPlaneTokenFile = testutil.TempFile(t, "control-plane-token", []byte("cp-token\n"))
	cfgE.ControlPlaneCAFile = testutil.WriteCABundle(t, testutil.NewCA(t, "cluster CA"))
	apiServer := netip.MustParseAddrPort("127.0.0.20:6443")
	canary9 := netip.MustParseAddrPort("127.0.0.9:" + P)
	gE, addrE := startKubeGateway(t, cfgE, fake.NewClientset(
		apiServerSlice("default", "kubernetes", "kubernetes", apiServer),
		apiServerSlice("mon", "kubernetes", "kubernetes", canary9),
		apiServerSlice("default", "web", "web", canary9),
		podObject("mon", "pod", canary9),
		controlPlaneNodeAt("cp-1", "127.0.0.9"), controlPlaneNodeAt("lo", "127.0.0.1"),
		componentPod("mon", "kube-scheduler", "cp-1", canary9.Addr()),
		componentPod("kube-system", "kube-scheduler", "lo", netip.MustParseAddr("127.0.0.1"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
		componentPod("kube-system", "etcd", "ghost", canary9.Addr())))
	testutil.WaitFor(t, "the components' pods to be listed", gE.kube.cluster.ComponentsSynced)
	t.Run("E-apiservers", func(t *testing.T) {
		f := func(name, requestTarget string, wantStatus int, wantInBody string) {
			t.Helper()
			body := send(t, gE, addrE, name, "GET", request(addrE, "GET", requestTarget, nil), wantStatus)
			if !strings.Contains(body, wantInBody) {
				t.Errorf("%s: %q: the answer %q does not say %q", name, requestTarget, body, wantInBody)
			}
		}
		api := func(ip, port, path string) string { return "/apiservers/" + ip + "/" + port + path }
		const notAPIServer = "is not an endpoint of the default/kubernetes Service"
		f("apiservers a pod", api("127.0.0.9", P, "/metrics"), 403, notAPIServer)
		f("apiservers loopback", api("127.0.0.1", P, "/metrics"), 403, notAPIServer)
		f("apiservers ::1", api("[::1]", P, "/metrics"), 403, notAPIServer)
		f("apiservers ::1 unbracketed", api("::1", P, "/metrics"), 403, notAPIServer)
		f("apiservers mapped", api("[::ffff:127.0.0.9]", P, "/metrics"), 403, notAPIServer)
		f("apiservers metadata", api("169.254.169.254", "80", "/metrics"), 403, notAPIServer)
		f("apiservers another port", api("127.0.0.20", P, "/metrics"), 403, notAPIServer)
		f("apiservers 0.0.0.0", api("0.0.0.0", "6443", "/metrics"), 403, notAPIServer)
		f("apiservers 127.1", api("127.1", "6443", "/metrics"), 400, "not an IP literal")
		f("apiservers a name", api("kubernetes.default.svc", "443", "/metrics"), 400, "not an IP literal")
		f("apiservers zone", api("[fe80::1%25lo]", "6443", "/metrics"), 400, "zone")
		f("apiservers port leading zero", api("127.0.0.20", "06443", "/metrics"), 400, "port must be")
		f("apiservers port 65536", api("127.0.0.20", "65536", "/metrics"), 400, "port must be")
		f("apiservers port name", api("127.0.0.20", "https", "/metrics"), 400, "port must be")
		f("apiservers the API", api("127.0.0.20", "6443", "/api/v1/secrets"), 400, "must be one of /metrics, /metrics/slis")
		f("apiservers traversal", api("127.0.0.20", "6443", "/metrics/../api/v1/secrets"), 400, "must be one of")
		f("apiservers encoded traversal", api("127.0.0.20", "6443", "/metrics/%2e%2e/api"), 400, "must be one of")
		f("apiservers encoded path", api("127.0.0.20", "6443", "/%6detrics"), 400, "must be one of")
		f("apiservers upper case", api("127.0.0.20", "6443", "/METRICS"), 400, "must be one of")
		f("apiservers trailing slash", api("127.0.0.20", "6443", "/metrics/slis/"), 400, "must be one of")
		f("apiservers double slash", api("127.0.0.20", "6443", "//metrics"), 400, "must be one of")
		f("apiservers params", api("127.0.0.20", "6443", "/metrics;x"), 400, "must be one of")
		f("apiservers no path", api("127.0.0.20", "6443", ""), 400, "want /apiservers/{ip}/{port}/{path}")
		f("apiservers no port", "/apiservers/127.0.0.20", 400, "want /apiservers/{ip}/{port}/{path}")
		f("apiservers fragment", api("127.0.0.20", "6443", "/metrics#x"), 400, "")
		f("Apiservers upper-case prefix", "/Apiservers/127.0.0.20/6443/metrics", 404, "not found")
	})
	t.Run("E-components", func(t *testing.T) {
		f := func(name, requestTarget string, wantStatus int, wantInBody string) {
			t.Helper()
			body := send(t, gE, addrE, name, "GET", request(addrE, "GET", requestTarget, nil), wantStatus)
			if !strings.Contains(body, wantInBody) {
				t.Errorf("%s: %q: the answer %q does not say %q", name, requestTarget, body, wantInBody)
			}
		}
		const mustBe = "the kube-scheduler path must be one of /metrics, /metrics/slis"
		f("components another namespace's look-alike", "/components/kube-scheduler/cp-1/metrics", 404, "no pod of kube-scheduler")
		f("components no such component on the node", "/components/kube-controller-manager/cp-1/metrics", 404, "unknown_component")
		f("components Pending", "/components/kube-scheduler/lo/metrics", 503, "not Running")
		f("components unknown node", "/components/etcd/ghost/metrics", 404, `no node "ghost"`)
		f("components node as IP", "/components/kube-scheduler/127.0.0.9/metrics", 404, "unknown_component")
		f("components node encoded", "/components/kube-scheduler/cp%2d1/metrics", 404, "unknown_component")
		f("components node traversal", "/components/kube-scheduler/../metrics", 404, "unknown_component")
		f("components the API server", "/components/kube-apiserver/cp-1/metrics", 400, "the component must be one of")
		f("components upper case", "/components/Kube-Scheduler/cp-1/metrics", 400, "the component must be one of")
		f("components encoded name", "/components/kube%2dscheduler/cp-1/metrics", 400, "the component must be one of")
		f("components another path", "/components/kube-scheduler/cp-1/configz", 400, mustBe)
		f("components traversal", "/components/kube-scheduler/cp-1/metrics/../configz", 400, mustBe)
		f("components encoded traversal", "/components/kube-scheduler/cp-1/metrics/%2e%2e/configz", 400, mustBe)
		f("components encoded path", "/components/kube-scheduler/cp-1/%6detrics", 400, mustBe)
		f("components trailing slash", "/components/kube-scheduler/cp-1/metrics/", 400, mustBe)
		f("components double slash", "/components/kube-scheduler/cp-1//metrics", 400, mustBe)
		f("components params", "/components/kube-scheduler/cp-1/metrics;x", 400, mustBe)
		f("components fragment", "/components/kube-scheduler/cp-1/metrics#x", 400, "")
		f("components etcd slis", "/components/etcd/cp-1/metrics/slis", 400, "the etcd path must be one of /metrics")
		f("components bad query", "/components/kube-scheduler/cp-1/metrics?x=%00", 400, "query")
		f("components no path", "/components/kube-scheduler/cp-1", 400, "want /components/{component}/{node}/{path}")
		f("components empty node", "/components/kube-scheduler//metrics", 400, "want /components/{component}/{node}/{path}")
		f("components no node", "/components/kube-scheduler", 400, "want /components/{component}/{node}/{path}")
		f("Components upper-case prefix", "/Components/kube-scheduler/cp-1/metrics", 404, "not found")
	})

	// The kernel-level check: a marker connection made now must be the first
	// connection each canary ever accepted.
	for ip, c := range canaries {
		if before := c.connsBeforeMarker(t); len(before) > 0 {
			t.Errorf("canary %s accepted %d connection(s) before the marker: %v", ip, len(before), before)
		}
		seen[ip] = c.count()
	}

	// Gateway C allows loopback and is aimed at itself.
	cfgC := testConfig()
	gC, addrC := startGateway(t, cfgC)
	G := addrC[strings.LastIndexByte(addrC, ':')+1:]
	t.Run("C-self", func(t *testing.T) {
		f := func(name, requestTarget string, wantStatus int, headers ...string) {
			t.Helper()
			send(t, gC, addrC, name, "GET", request(addrC, "GET", requestTarget, headers), wantStatus)
		}
		f("self /pods/", "/pods/127.0.0.1/"+G+"/metrics", 403)
		f("self /pods/https/", "/pods/https/127.0.0.1/"+G+"/metrics", 403)
		f("self [::ffff:127.0.0.1]", "/pods/[::ffff:127.0.0.1]/"+G+"/metrics", 403)
		f("self absolute form", "http://127.0.0.1:"+G+"/metrics", 403)
		f("self absolute form to /pods/", "http://127.0.0.1:"+G+"/pods/127.0.0.1/"+P+"/metrics", 403)
		if n := requestsTotal(t, gC); n != 5 {
			t.Errorf("gateway C answered %v requests, want 5: a target led back to it", n)
		}
	})

	// Positive controls: the canaries do see a connection the policy allows.
	// They close it at once, so the gateway answers 502.
	control := func(g *Gateway, gw, target, canaryIP string) {
		t.Helper()
		before := canaries[canaryIP].count()
		r := get(t, gw, target, "X-Prometheus-Scrape-Timeout-Seconds: 2")
		if r.StatusCode != http.StatusBadGateway {
			t.Errorf("control %s: got status %d, want 502; body: %s", target, r.StatusCode, r.body)
		}
		if n := canaries[canaryIP].count() - before; n != 1 {
			t.Errorf("control %s: canary %s accepted %d connection(s), want 1", target, canaryIP, n)
		}
	}
	control(gB, addrB, "/pods/127.0.0.9/"+P+"/metrics", "127.0.0.9")
	if v := metricValue(t, gB, "scrapegate_pooled_endpoints"); v != 1 {
		t.Errorf("control: gateway B has %v endpoints, want 1", v)
	}
	control(gC, addrC, "/pods/127.0.0.1/"+P+"/metrics", "127.0.0.1")
	control(gC, addrC, "/pods/[::1]/"+P+"/metrics", "::1")

	t.Logf("%d hostile cases", cases)
}

// TestHostileNormalisedPathsAndSelf holds hostile inputs found while writing
// TestHostileInputs that got through before the path rules required plain
// paths and the self check covered all of loopback.
func TestHostileNormalisedPathsAndSelf(t *testing.T) {
	t.Run("path-forms-pods-normalise", func(t *testing.T) {
		// The path is forwarded verbatim, and common pod servers normalise
		// it:
		// nginx and Apache merge "//", Tomcat, Jetty and Spring drop ";..."
		// path parameters (so "..;" is "..") and IIS trims trailing dots and
		// spaces. Each of these reaches /metrics/secret or /admin on such a
		// pod while the policy saw a path under /metrics that is not denied.
		pod := startPod(t, "127.0.0.9", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "secret\n") })
		cfg := testConfig()
		cfg.AllowCIDRs = mustParsePrefixes("127.0.0.9/32")
		cfg.AllowPathPrefixes = []string{"/metrics"}
		cfg.DenyPathPrefixes = []string{"/metrics/secret"}
		g, gw := startGateway(t, cfg)
		f := func(path string) {
			t.Helper()
			conns, endpoints := pod.conns.Load(), metricValue(t, g, "scrapegate_pooled_endpoints")
			r := get(t, gw, pod.podPath(path))
			if r.StatusCode != http.StatusBadRequest && r.StatusCode != http.StatusForbidden {
				t.Errorf("%s: got status %d, want 400 or 403", path, r.StatusCode)
			}
			if n := pod.conns.Load() - conns; n != 0 {
				t.Errorf("%s: the pod accepted %d connection(s)", path, n)
			}
			if v := metricValue(t, g, "scrapegate_pooled_endpoints") - endpoints; v != 0 {
				t.Errorf("%s: the gateway created %v endpoint(s)", path, v)
			}
		}
		f("/metrics//secret")
		f("/metrics///secret")
		f("/metrics/secret;x")
		f("/metrics/secret;jsessionid=1")
		f("/metrics/secret%3bx")
		f("/metrics/.;/secret")
		f("/metrics/..;/admin")
		f("/metrics/secret.")
		f("/metrics/secret%20")
		f("/metrics/secret%23")
		// Spring's suffix patterns serve /metrics/secret.json from the
		// /metrics/secret handler; IIS and others ignore case.
		f("/metrics/secret.json")
		f("/metrics/secretx")
		f("/metrics/SECRET")
	})

	t.Run("self-on-all-addresses", func(t *testing.T) {
		// Listening on all addresses, every loopback address reaches the
		// gateway, not only its interface addresses. (The Via check would
		// refuse the second hop, but not for /healthz and /readyz, which
		// skip it.)
		g, err := New(testConfig(), zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		serveGatewayOn(t, g, ln)
		G := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		gw := "127.0.0.1:" + G
		for _, target := range []string{"/pods/127.0.0.2/" + G + "/healthz", "http://127.0.0.2:" + G + "/readyz", "/pods/127.0.0.2/" + G + "/metrics"} {
			before := requestsTotal(t, g)
			if r := get(t, gw, target); r.StatusCode != http.StatusForbidden {
				t.Errorf("%s: got status %d, want 403 (the gateway itself)", target, r.StatusCode)
			}
			if n := requestsTotal(t, g) - before; n != 1 {
				t.Errorf("%s: the gateway answered %v requests for it, want 1", target, n)
			}
		}
	})
}
