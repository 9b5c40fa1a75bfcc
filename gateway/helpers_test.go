package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// testConfig allows loopback, where the tests' pods listen.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.AllowCIDRs = mustParsePrefixes("127.0.0.0/8", "::1/128")
	cfg.DrainDelay = 0
	return cfg
}

func mustParsePrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// startGateway serves a Gateway on a loopback port until the test ends.
func startGateway(t testing.TB, cfg Config) (*Gateway, string) {
	t.Helper()
	return startGatewayWithLog(t, cfg, zerolog.Nop())
}

func startGatewayWithLog(t testing.TB, cfg Config, log zerolog.Logger) (*Gateway, string) {
	t.Helper()
	g, err := New(cfg, log)
	if err != nil {
		t.Fatalf("New: %s", err)
	}
	return g, serveGateway(t, g)
}

// serveGateway serves g on a loopback port until the test ends and returns
// that address.
func serveGateway(t testing.TB, g *Gateway) string {
	t.Helper()
	return serveGatewayOn(t, g, testutil.Listen(t, "127.0.0.1"))
}

// serveGatewayOn serves g on ln until the test ends and returns its address.
func serveGatewayOn(t testing.TB, g *Gateway, ln net.Listener) string {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- g.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %s", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %s", err)
		}
	})
	return ln.Addr().String()
}

// testPod is a fake pod: a net/http server on a loopback address that
// counts the TCP connections it accepted.
type testPod struct {
	addr  netip.AddrPort
	conns atomic.Int32
}

func startPod(t *testing.T, ip string, h http.HandlerFunc) *testPod {
	t.Helper()
	ln := testutil.Listen(t, ip)
	p := &testPod{addr: netip.MustParseAddrPort(ln.Addr().String())}
	srv := &http.Server{
		Handler: h,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				p.conns.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// heldPod starts a pod for one scrape, held in the pod: arrived is closed
// when the scrape comes in, and the pod answers body once release is closed.
func heldPod(t *testing.T, ip, body string) (pod *testPod, arrived <-chan struct{}, release chan<- struct{}) {
	t.Helper()
	came, answer := make(chan struct{}), make(chan struct{})
	pod = startPod(t, ip, func(w http.ResponseWriter, r *http.Request) {
		close(came)
		<-answer
		fmt.Fprint(w, body)
	})
	return pod, came, answer
}

// podPath is the /pods/ URI of a pod path.
func (p *testPod) podPath(path string) string {
	return fmt.Sprintf("/pods/%s/%d%s", p.addr.Addr(), p.addr.Port(), path)
}

// rawResponse is what a raw HTTP/1.1 exchange returned.
type rawResponse struct {
	*http.Response
	body    string
	bodyErr error
}

// rawGet sends one request with exactly the given request target and extra
// header lines, without any client-side normalisation, and reads the answer.
func rawGet(t *testing.T, gw, method, target string, headerLines ...string) rawResponse {
	t.Helper()
	conn, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	req := method + " " + target + " HTTP/1.1\r\nHost: " + gw + "\r\n"
	for _, h := range headerLines {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: cannot read response: %s", method, target, err)
	}
	body, bodyErr := io.ReadAll(resp.Body)
	return rawResponse{Response: resp, body: string(body), bodyErr: bodyErr}
}

// dialGateway opens a caller connection to gw, closed when the test ends,
// with a generous deadline for everything on it.
func dialGateway(t *testing.T, gw string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	return conn
}

// getUnread sends GET target to gw on a new connection, closed when the
// test ends, and returns the response with its body still to be read, for
// tests that watch the body arrive. There is no deadline: moving a large
// body may take minutes.
func getUnread(t *testing.T, gw, target string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// get is rawGet for a request that must complete.
func get(t *testing.T, gw, target string, headerLines ...string) rawResponse {
	t.Helper()
	r := rawGet(t, gw, "GET", target, headerLines...)
	if r.bodyErr != nil {
		t.Fatalf("GET %s: cannot read body: %s", target, r.bodyErr)
	}
	return r
}

// metricValue returns the value of one exact series of g's /metrics.
func metricValue(t *testing.T, g *Gateway, series string) float64 {
	t.Helper()
	var bb bytes.Buffer
	g.metrics.writePrometheus(&bb)
	for _, line := range strings.Split(bb.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("series %s: %s", series, err)
			}
			return f
		}
	}
	return 0
}

// rawListener is a TCP listener that hands each connection to a handler, for
// pods that misbehave below HTTP, and counts what it accepted.
type rawListener struct {
	port     int
	accepted atomic.Int32
}

func listenRaw(t *testing.T, ip string, handle func(net.Conn)) *rawListener {
	t.Helper()
	ln := testutil.Listen(t, ip)
	l := &rawListener{port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			l.accepted.Add(1)
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("cannot count file descriptors: %s", err)
	}
	return len(fds)
}
