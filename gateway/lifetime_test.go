package gateway

import (
	"bufio"
	"bytes"
	"context"
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

// These tests pin down a scrape's lifetime: what it holds (an in-flight
// slot, a pod connection) is released by its deadline whatever the caller
// does, and whatever the pod does the caller can tell a failed scrape from
// one that was never processed.

// bigBodyPod streams an endless body until its connection breaks, then
// closes writeFailed. Its body is far larger than any socket buffer, so a
// caller that stops reading stalls the gateway's writes.
func bigBodyPod(t *testing.T, ip string) (*testPod, <-chan struct{}) {
	t.Helper()
	writeFailed := make(chan struct{})
	var once atomic.Bool
	pod := startPod(t, ip, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery == "short" {
			fmt.Fprint(w, "ok")
			return
		}
		chunk := bytes.Repeat([]byte("metric 1\n"), 4000)
		for {
			if _, err := w.Write(chunk); err != nil {
				if once.CompareAndSwap(false, true) {
					close(writeFailed)
				}
				return
			}
		}
	})
	return pod, writeFailed
}

func TestStalledCallerIsCutAtTheDeadline(t *testing.T) {
	pod, podWriteFailed := bigBodyPod(t, "127.0.0.61")
	cfg := testConfig()
	cfg.MaxConnsPerEndpoint = 1
	g, gw := startGateway(t, cfg)

	// A caller that asks for a 1 s scrape and never reads a byte.
	conn := dialGateway(t, gw)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nX-Prometheus-Scrape-Timeout-Seconds: 1\r\n\r\n", pod.podPath("/metrics"))

	// Before the fix the write side was bounded only by -scrape-timeout-max
	// plus 10 s (130 s): the pod connection, the endpoint's only one here,
	// stayed taken long after this wait gives up.
	select {
	case <-podWriteFailed:
	case <-time.After(30 * time.Second):
		t.Fatal("the pod connection of a stalled caller stayed open past the scrape deadline")
	}
	testutil.WaitFor(t, "the stalled scrape to be released and counted", func() bool {
		return g.pool.Inflight() == 0 &&
			metricValue(t, g, `scrapegate_client_aborts_total{reason="caller_stalled"}`) == 1
	})
	if v := metricValue(t, g, `scrapegate_requests_total{route="pods",code="200"}`); v != 0 {
		t.Fatalf("a stalled scrape was counted as a 200 success (%v)", v)
	}
	// The endpoint's connection was closed, not pooled mid-body, and the
	// endpoint serves the next caller.
	if r := get(t, gw, pod.podPath("/metrics?short")); r.StatusCode != 200 || r.body != "ok" {
		t.Fatalf("next scrape: %d %q", r.StatusCode, r.body)
	}
	if n := pod.conns.Load(); n != 2 {
		t.Fatalf("the pod saw %d connections; want 2: the stalled one must not be reused", n)
	}
}

func TestCallerGoneBeforeTheAnswerReleasesThePod(t *testing.T) {
	ca := testutil.NewCA(t, "gateway CA")
	serverCert := ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	certFile, keyFile := serverCert.CertFile, serverCert.KeyFile
	f := func(name string, useTLS bool) {
		t.Helper()
		arrived := make(chan struct{}, 1)
		podSawClose := make(chan struct{})
		pod := startPod(t, "127.0.0.62", func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			// net/http cancels the request's context when the gateway
			// closes the connection.
			<-r.Context().Done()
			close(podSawClose)
		})
		cfg := testConfig()
		if useTLS {
			cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
		}
		g, gw := startGateway(t, cfg)
		var conn net.Conn
		var err error
		if useTLS {
			// Its close_notify arrives before the FIN: unread bytes the
			// gateway must see past.
			conn, err = tls.Dial("tcp", gw, &tls.Config{RootCAs: ca.Pool()})
		} else {
			conn, err = net.Dial("tcp", gw)
		}
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nX-Prometheus-Scrape-Timeout-Seconds: 100\r\n\r\n", pod.podPath("/metrics"))
		<-arrived
		conn.Close()
		// Before the fix the pod connection stayed until the deadline: 100 s
		// minus the margin, longer than this wait.
		select {
		case <-podSawClose:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the pod connection stayed open after its caller hung up", name)
		}
		testutil.WaitFor(t, name+": the scrape to be released and counted", func() bool {
			return g.pool.Inflight() == 0 &&
				metricValue(t, g, `scrapegate_client_aborts_total{reason="client_gone"}`) == 1
		})
		if v := metricValue(t, g, `scrapegate_upstream_errors_total{reason="timeout"}`); v != 0 {
			t.Fatalf("%s: a caller hanging up was counted as a pod timeout (%v)", name, v)
		}
	}
	f("plain", false)
	f("TLS", true)
}

// TestPodFailuresAreNeverRetriedByTheCaller scrapes through the gateway with
// net/http's Transport, as Prometheus does. The Transport re-sends a GET on
// a new connection when a reused one closes without a byte of a response:
// were the gateway to answer a pod's failure that way, the pod would be
// scraped twice and the failure would look like a success.
func TestPodFailuresAreNeverRetriedByTheCaller(t *testing.T) {
	lines := strings.Repeat("partial_metric 1\n", 100)
	f := func(name, answer string, rst bool) {
		t.Helper()
		port, requests := rawPod(t, "127.0.0.63", func(_, _ int, c net.Conn) bool {
			_, _ = io.WriteString(c, answer)
			if rst {
				_ = c.(*net.TCPConn).SetLinger(0)
			}
			return false // and the pod dies
		})
		goodPod := startPod(t, "127.0.0.63", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
		g, gw := startGateway(t, testConfig())
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
		defer client.CloseIdleConnections()
		// A good scrape first, so that the failing one goes out on a
		// reused connection to the gateway: the one the Transport retries.
		resp, err := client.Get("http://" + gw + goodPod.podPath("/metrics"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()

		resp, err = client.Get(fmt.Sprintf("http://%s/pods/127.0.0.63/%d/metrics", gw, port))
		if err == nil {
			body, readErr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if readErr == nil && resp.StatusCode == 200 {
				t.Fatalf("%s: a failed body read as a complete 200 (%d bytes)", name, len(body))
			}
		}
		if n := requests.Load(); n != 1 {
			t.Fatalf("%s: the pod was asked %d times; want 1 (err %v)", name, n, err)
		}
		if v := metricValue(t, g, `scrapegate_requests_total{route="pods",code="200"}`); v != 1 {
			t.Fatalf("%s: %v scrapes counted as code 200; want only the good one", name, v)
		}
		testutil.WaitFor(t, name+": the failure to be counted", func() bool {
			return metricValue(t, g, `scrapegate_upstream_errors_total{reason="body_failed"}`) == 1
		})
	}
	const cl, chunked = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	f("content-length, cut mid-body", cl+lines, false)
	f("content-length, no body", cl, false)
	f("content-length, reset mid-body", cl+lines, true)
	f("chunked, cut inside a chunk", chunked+"1000\r\n"+lines, false)
	f("chunked, cut between chunks", chunked+fmt.Sprintf("%x\r\n%s\r\n", len(lines), lines), false)
	f("chunked, no body", chunked, false)
	f("chunked, reset mid-body", chunked+"1000\r\n"+lines, true)
}

// http10Until sends an HTTP/1.0 GET of target and reads the answer until
// it holds want, returning the connection (closed when the test ends) and
// what was read.
func http10Until(t *testing.T, gw, target, want string) (net.Conn, []byte) {
	t.Helper()
	conn := dialGateway(t, gw)
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", target)
	var raw []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(raw, []byte(want)) {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("HTTP/1.0 %s: %s after %q", target, err, raw)
		}
		raw = append(raw, buf[:n]...)
	}
	return conn, raw
}

func TestHTTP10CallersGetNoChunkedBody(t *testing.T) {
	// The pod sends the first part of its body, and the rest only once the
	// caller has the first: the gateway has committed to a framing by then.
	f := func(name, head, part1, part2, want string, wantHeader string) {
		t.Helper()
		release := make(chan struct{})
		port, _ := rawPod(t, "127.0.0.64", func(_, _ int, c net.Conn) bool {
			_, _ = io.WriteString(c, head+part1)
			if part2 != "" {
				<-release
				_, _ = io.WriteString(c, part2)
			}
			return false
		})
		_, gw := startGateway(t, testConfig())
		conn, raw := http10Until(t, gw, fmt.Sprintf("/pods/127.0.0.64/%d/metrics", port), "metric 1\n")
		close(release)
		rest, err := io.ReadAll(conn) // to EOF: the gateway closes the connection
		if err != nil {
			t.Fatalf("%s: %s", name, err)
		}
		head, body, _ := strings.Cut(string(append(raw, rest...)), "\r\n\r\n")
		if !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || !strings.Contains(head, wantHeader) {
			t.Fatalf("%s: header\n%s\nwant a 200 with %q", name, head, wantHeader)
		}
		if strings.Contains(strings.ToLower(head), "transfer-encoding") {
			t.Fatalf("%s: an HTTP/1.0 caller got Transfer-Encoding:\n%s", name, head)
		}
		if body != want {
			t.Fatalf("%s: body %q; want %q", name, body, want)
		}
	}
	const body = "metric 1\nmetric 2\n"
	f("chunked pod", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "9\r\nmetric 1\n\r\n", "9\r\nmetric 2\n\r\n0\r\n\r\n",
		body, "Connection: close")
	f("close-delimited pod", "HTTP/1.0 200 OK\r\n\r\n", "metric 1\n", "metric 2\n", body, "Connection: close")
	// With a Content-Length the body needs no delimiting by the close.
	f("content-length pod", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body)), body, "",
		body, fmt.Sprintf("Content-Length: %d", len(body)))
}

func TestCloseDelimitedPodKeepsTheCallerConnection(t *testing.T) {
	// Python prometheus_client's start_http_server answers HTTP/1.0 with
	// no Content-Length, and closes. Whole, the body goes out with its
	// length; still arriving when the headers go out, chunked.
	const part1, part2 = "python_metric 1\n", "python_metric 2\n"
	release := make(chan struct{})
	port, requests := rawPod(t, "127.0.0.65", func(ci, _ int, c net.Conn) bool {
		_, _ = io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"+part1)
		if ci == 0 {
			<-release
		}
		_, _ = io.WriteString(c, part2)
		return false
	})
	_, gw := startGateway(t, testConfig())
	conn := dialGateway(t, gw)
	br := bufio.NewReader(conn)
	for i := range 3 {
		fmt.Fprintf(conn, "GET /pods/127.0.0.65/%d/metrics HTTP/1.1\r\nHost: x\r\n\r\n", port)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("scrape %d on one caller connection: %s", i, err)
		}
		if i == 0 {
			// The pod holds back its second line until the caller has the
			// first: only chunked can have sent that.
			if te := resp.TransferEncoding; len(te) != 1 || te[0] != "chunked" {
				t.Fatalf("scrape %d: Transfer-Encoding %q; want chunked", i, te)
			}
			first := make([]byte, len(part1))
			if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != part1 {
				t.Fatalf("scrape %d: first line %q, %v", i, first, err)
			}
			close(release)
			rest, err := io.ReadAll(resp.Body)
			if err != nil || string(rest) != part2 || resp.Close {
				t.Fatalf("scrape %d: %q, %v, Connection: close %v; want the rest on a kept-alive connection", i, rest, err, resp.Close)
			}
			continue
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || string(got) != part1+part2 || resp.Close {
			t.Fatalf("scrape %d: %q, %v, Connection: close %v; want the body on a kept-alive connection", i, got, err, resp.Close)
		}
	}
	if n := requests.Load(); n != 3 {
		t.Fatalf("the pod got %d requests; want 3", n)
	}
}

func TestPodsClosingIdleConnectionsNeverFailAScrape(t *testing.T) {
	// Go's http.Server closes a keep-alive connection idle for IdleTimeout,
	// as many exporters and sidecars do between two scrapes.
	closed := make(chan struct{}, 16)
	var requests atomic.Int32
	ln := testutil.Listen(t, "127.0.0.66")
	port := ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{
		IdleTimeout: 50 * time.Millisecond,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			fmt.Fprint(w, "ok")
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				closed <- struct{}{}
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	target := fmt.Sprintf("/pods/127.0.0.66/%d/metrics", port)

	g, gw := startGateway(t, testConfig())
	for i := range 5 {
		if r := get(t, gw, target); r.StatusCode != 200 || r.body != "ok" {
			t.Fatalf("scrape %d after the pod closed the idle connection: %d %q", i, r.StatusCode, r.body)
		}
		<-closed // the pod closed the pooled connection while it idled
		// The gateway notices without waiting for the next scrape: no
		// socket lingers in CLOSE-WAIT.
		g.pool.CloseDeadIdleConns()
		if n := idleConns(g, "127.0.0.66", port); n != 0 {
			t.Fatalf("scrape %d: %d idle connections the pod had closed are still pooled", i, n)
		}
	}
	if n := requests.Load(); n != 5 {
		t.Fatalf("the pod served %d requests; want 5", n)
	}
	if v := metricValue(t, g, `scrapegate_upstream_errors_total{reason="connection_reset"}`); v != 0 {
		t.Fatalf("%v scrapes failed on connections the pod had closed", v)
	}
}

func TestResponsesWhileDrainingCloseTheConnection(t *testing.T) {
	// A scrape that arrived before the drain began and is answered during
	// it must also move its caller on.
	pod, arrived, release := heldPod(t, "127.0.0.67", "ok")
	cfg := testConfig()
	cfg.DrainDelay = time.Hour
	g, gw := startGateway(t, cfg)
	scrape := make(chan rawResponse)
	go func() { scrape <- get(t, gw, pod.podPath("/metrics")) }()
	<-arrived
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shutdown := make(chan error)
	go func() { shutdown <- g.Shutdown(ctx) }()
	testutil.WaitFor(t, "draining", func() bool { return g.state.Load() == stateDraining })
	close(release)
	if r := <-scrape; r.StatusCode != 200 || !r.Close {
		t.Fatalf("scrape answered while draining: %d, Connection: close %v; want 200 and close", r.StatusCode, r.Close)
	}
	cancel()
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
}

func TestWholeChunkedBodyGoesOutWithALength(t *testing.T) {
	// A chunked body that arrived whole with its headers is sent with a
	// Content-Length: in one write, and no chunk framing.
	f := func(chunks, want string) {
		t.Helper()
		port, _ := rawPod(t, "127.0.0.68", func(_, _ int, c net.Conn) bool {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+chunks)
			return true
		})
		_, gw := startGateway(t, testConfig())
		r := get(t, gw, fmt.Sprintf("/pods/127.0.0.68/%d/metrics", port))
		if r.StatusCode != 200 || r.body != want || r.ContentLength != int64(len(want)) || len(r.TransferEncoding) != 0 {
			t.Fatalf("%q: %d %q, Content-Length %d, Transfer-Encoding %q; want %q with its length", chunks, r.StatusCode, r.body, r.ContentLength, r.TransferEncoding, want)
		}
	}
	f("0\r\n\r\n", "")
	f("9\r\nmetric 1\n\r\n9\r\nmetric 2\n\r\n0\r\n\r\n", "metric 1\nmetric 2\n")
}

func TestHTTP10ScrapeEndsWhenTheServerDropsTheConnection(t *testing.T) {
	// An HTTP/1.0 caller pipelines /healthz and a scrape, then resets its
	// connection. The server, flushing the /healthz answer before handing
	// the connection over for the close-delimited scrape, fails and drops
	// it: the scrape must still end at its deadline, not hold its slot and
	// pod connection for good.
	arrived, answer, hold := make(chan struct{}), make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(hold) })
	port, _ := rawPod(t, "127.0.0.69", func(_, _ int, c net.Conn) bool {
		close(arrived)
		<-answer
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nmetric 1\n\r\n")
		<-hold // and the rest never comes
		return false
	})
	g, gw := startGateway(t, testConfig())
	conn, err := net.Dial("tcp", gw)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"+
		"GET /pods/127.0.0.69/%d/metrics HTTP/1.0\r\nConnection: keep-alive\r\nX-Prometheus-Scrape-Timeout-Seconds: 1\r\n\r\n", port)
	<-arrived
	_ = conn.(*net.TCPConn).SetLinger(0)
	conn.Close() // a reset
	close(answer)
	// Whichever way the gateway saw the caller go, the scrape is over by
	// its deadline (0.75 s) plus the grace.
	testutil.WaitFor(t, "the scrape's slot and endpoint to be released", func() bool {
		return endpointState(t, g, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.69"), uint16(port))).Active == 0 &&
			g.pool.Inflight() == 0
	})
}

func TestShutdownWaitsForHTTP10Scrapes(t *testing.T) {
	release := make(chan struct{})
	port, _ := rawPod(t, "127.0.0.70", func(_, _ int, c net.Conn) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nmetric 1\n\r\n")
		<-release
		_, _ = io.WriteString(c, "9\r\nmetric 2\n\r\n0\r\n\r\n")
		return false
	})
	g, gw := startGateway(t, testConfig())
	conn, raw := http10Until(t, gw, fmt.Sprintf("/pods/127.0.0.70/%d/metrics", port), "metric 1\n")
	// The scrape streams on a connection the server let go of.
	type result struct {
		err      error
		inflight int64
	}
	shutdown := make(chan result, 1)
	go func() {
		err := g.Shutdown(context.Background())
		shutdown <- result{err, g.pool.Inflight()}
	}()
	testutil.WaitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", gw)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	rest, err := io.ReadAll(conn)
	if err != nil || !strings.HasSuffix(string(append(raw, rest...)), "metric 1\nmetric 2\n") {
		t.Fatalf("the scrape in flight during shutdown: %q, %v", append(raw, rest...), err)
	}
	if r := <-shutdown; r.err != nil || r.inflight != 0 {
		t.Fatalf("Shutdown returned %v with %d scrapes in flight; want nil after the scrape finished", r.err, r.inflight)
	}
}

func TestBadRequestAfterAScrapeIsAnswered(t *testing.T) {
	// A scrape's write deadline must not outlive it on a kept-alive
	// connection: the server sets none for the answers it writes itself
	// to requests it cannot parse.
	port, _ := rawPod(t, "127.0.0.71", func(_, _ int, c net.Conn) bool {
		_, _ = io.WriteString(c, okResponse)
		return true
	})
	_, gw := startGateway(t, testConfig())
	conn := dialGateway(t, gw)
	br := bufio.NewReader(conn)
	// A 0.2 s scrape: a 0.1 s deadline, so its write deadline passes 1.1 s on.
	sent := time.Now()
	fmt.Fprintf(conn, "GET /pods/127.0.0.71/%d/metrics HTTP/1.1\r\nHost: x\r\nX-Prometheus-Scrape-Timeout-Seconds: 0.2\r\n\r\n", port)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	// What is tested is a deadline passing: there is no signal but time.
	time.Sleep(time.Until(sent.Add(100*time.Millisecond + upstream.CallerWriteGrace + 200*time.Millisecond)))
	fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("a malformed request after a scrape: %v, %v; want a 400", resp, err)
	}
}

func TestStaleRetryOnlyForAnImmediateFailure(t *testing.T) {
	// The pod reads the second scrape on its kept-alive connection, works
	// on it, and dies before answering: that scrape failed and is not
	// sent again, though no byte of an answer came back.
	port, requests := rawPod(t, "127.0.0.72", func(_, ri int, c net.Conn) bool {
		if ri == 1 {
			time.Sleep(3 * upstream.HangupCheckInterval) // busy with the scrape
			return false
		}
		_, _ = io.WriteString(c, okResponse)
		return true
	})
	_, gw := startGateway(t, testConfig())
	target := fmt.Sprintf("/pods/127.0.0.72/%d/metrics", port)
	if r := get(t, gw, target); r.StatusCode != 200 {
		t.Fatalf("first scrape: %d %q", r.StatusCode, r.body)
	}
	if r := get(t, gw, target); r.StatusCode != 502 || !strings.Contains(r.body, "connection_reset") {
		t.Fatalf("a pod dying mid-scrape: %d %q; want 502 connection_reset", r.StatusCode, r.body)
	}
	if n := requests.Load(); n != 2 {
		t.Fatalf("the pod got %d requests; want 2: the failed scrape was sent again", n)
	}
}
