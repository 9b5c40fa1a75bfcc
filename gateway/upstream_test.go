package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrapegate/scrapegate/gateway/upstream"
	"github.com/scrapegate/scrapegate/internal/testutil"
)

// rawPod answers each request on its connections with answer(conn index,
// request index on the connection, conn); answer returns false to close
// the connection. It counts the requests it read.
func rawPod(t *testing.T, ip string, answer func(ci, ri int, c net.Conn) bool) (port int, requests *atomic.Int32) {
	t.Helper()
	requests = new(atomic.Int32)
	var conns atomic.Int32
	l := listenRaw(t, ip, func(c net.Conn) {
		ci := int(conns.Add(1)) - 1
		br := bufio.NewReader(c)
		for ri := 0; ; ri++ {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			requests.Add(1)
			if !answer(ci, ri, c) {
				return
			}
		}
	})
	return l.port, requests
}

// idleConns is how many connections to ip:port the gateway has pooled.
func idleConns(g *Gateway, ip string, port int) int {
	state, ok := g.pool.State(upstream.Key{Addr: netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port))})
	if !ok {
		return -1
	}
	return state.IdleConns
}

// endpointState is what g's pool holds for the plain-HTTP endpoint addr,
// which must have a pool.
func endpointState(t *testing.T, g *Gateway, addr netip.AddrPort) upstream.EndpointState {
	t.Helper()
	state, ok := g.pool.State(upstream.Key{Addr: addr})
	if !ok {
		t.Fatalf("no pool for %s", addr)
	}
	return state
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// TestStaleRetryOnlyWithoutResponseBytes: the one retry a scrape gets is for
// a pooled connection the pod closed while it sat idle, never for one that
// brought any of a response.
func TestStaleRetryOnlyWithoutResponseBytes(t *testing.T) {
	f := func(ip, second string, wantStatus int) {
		t.Helper()
		port, requests := rawPod(t, ip, func(ci, ri int, c net.Conn) bool {
			if ci == 0 && ri == 1 { // the second scrape, on the reused connection
				_, _ = io.WriteString(c, second)
				return false
			}
			_, _ = io.WriteString(c, okResponse)
			return true
		})
		_, gw := startGateway(t, testConfig())
		target := fmt.Sprintf("/pods/%s/%d/metrics", ip, port)
		get(t, gw, target)
		if r := get(t, gw, target); r.StatusCode != wantStatus {
			t.Errorf("%q: second scrape %d, want %d", second, r.StatusCode, wantStatus)
		}
		want := int32(2)
		if second == "" {
			want = 3 // closed while idle: retried on a fresh connection
		}
		if n := requests.Load(); n != want {
			t.Errorf("%q: the pod got %d requests for 2 scrapes, want %d", second, n, want)
		}
	}
	f("127.0.0.51", "", 200)
	f("127.0.0.52", "HTTP/1.1 200 OK\r\nContent-Le", 502)
	f("127.0.0.53", "HTTP/1.1 100 Continue\r\n\r\n", 502)
}

// TestConnectionsThePodEndsAreNotPooled: whatever way the pod says a
// connection is done, it does not go back to the pool.
func TestConnectionsThePodEndsAreNotPooled(t *testing.T) {
	f := func(ip, response string, wantStatus int) {
		t.Helper()
		port, _ := rawPod(t, ip, func(_, _ int, c net.Conn) bool {
			_, _ = io.WriteString(c, response)
			return false
		})
		g, gw := startGateway(t, testConfig())
		r := rawGet(t, gw, "GET", fmt.Sprintf("/pods/%s/%d/metrics", ip, port))
		if r.StatusCode != wantStatus {
			t.Errorf("%q: status %d, want %d", response, r.StatusCode, wantStatus)
		}
		if n := idleConns(g, ip, port); n != 0 {
			t.Errorf("%q: %d connections pooled, want 0", response, n)
		}
	}
	f("127.0.0.54", "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok", 200)
	f("127.0.0.55", "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok", 200)
	f("127.0.0.56", "HTTP/1.1 200 OK\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\nok", 200)
	f("127.0.0.57", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n", 502)
	// And one it keeps open is pooled: the checks above can fail.
	port, _ := rawPod(t, "127.0.0.58", func(_, _ int, c net.Conn) bool {
		_, _ = io.WriteString(c, okResponse)
		return true
	})
	g, gw := startGateway(t, testConfig())
	get(t, gw, fmt.Sprintf("/pods/127.0.0.58/%d/metrics", port))
	if n := idleConns(g, "127.0.0.58", port); n != 1 {
		t.Errorf("a kept-alive connection: %d pooled, want 1", n)
	}
}

// TestTLS12CloseNotifyWithTheLastChunk: crypto/tls returns a TLS 1.2
// close_notify together with the record before it; a complete chunked body
// followed by one in the same segment is complete, not truncated.
func TestTLS12CloseNotifyWithTheLastChunk(t *testing.T) {
	ln := testutil.Listen(t, "127.0.0.59")
	line := "some_metric 1\n"
	chunked := strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", len(line), line), 10) + "0\r\n\r\n"
	leaf := testutil.NewCA(t, "pods").IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.59")})
	cfg := &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MaxVersion: tls.VersionTLS12}
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer raw.Close()
				// Records are held back and sent in one write with the
				// close_notify.
				held := &heldWrites{Conn: raw}
				c := tls.Server(held, cfg)
				if err := c.Handshake(); err != nil {
					return
				}
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				held.hold = true
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+chunked)
				_ = c.CloseWrite()
				// CloseWrite leaves a write deadline in the past.
				_ = raw.SetWriteDeadline(time.Time{})
				_, _ = raw.Write(held.buf)
				_, _ = io.Copy(io.Discard, raw)
			}()
		}
	}()
	cfg2 := testConfig()
	cfg2.TargetTLSInsecureSkipVerify = true
	g, gw := startGateway(t, cfg2)
	port := ln.Addr().(*net.TCPAddr).Port
	for range 5 {
		r := rawGet(t, gw, "GET", fmt.Sprintf("/pods/https/127.0.0.59/%d/metrics", port))
		if r.StatusCode != 200 || r.bodyErr != nil || r.body != strings.Repeat(line, 10) {
			t.Fatalf("%d %q %v; want the complete body", r.StatusCode, r.body, r.bodyErr)
		}
	}
	if n := metricValue(t, g, `scrapegate_upstream_errors_total{reason="body_failed"}`); n != 0 {
		t.Fatalf("%g complete bodies counted as failed", n)
	}
}

// heldWrites buffers writes while hold is set.
type heldWrites struct {
	net.Conn
	hold bool
	buf  []byte
}

func (c *heldWrites) Write(p []byte) (int, error) {
	if c.hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}
