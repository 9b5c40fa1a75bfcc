package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// TestSIGTERMLetsAnInflightScrapeFinish sends SIGTERM to the real binary while
// a scrape waits on a slow pod, and checks the scrape still completes and the
// process exits 0.
func TestSIGTERMLetsAnInflightScrapeFinish(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	gw := startGateway(t, buildGateway(t, raceEnabled()), "--shutdown-timeout=1m")

	inPod := make(chan struct{})
	release := make(chan struct{})
	ln := testutil.Listen(t, "127.42.2.1")
	pod := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inPod)
		<-release
		fmt.Fprint(w, "slow_metric 1\n")
	})}
	go func() { _ = pod.Serve(ln) }()
	t.Cleanup(func() { _ = pod.Close() })

	type result struct {
		status int
		body   string
		err    error
	}
	scrape := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + gw.addr + "/pods/" + strings.Replace(ln.Addr().String(), ":", "/", 1) + "/metrics")
		if err != nil {
			scrape <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		scrape <- result{resp.StatusCode, string(body), err}
	}()
	<-inPod

	gw.proc.signal(t, syscall.SIGTERM)
	// The listener closing shows the shutdown is under way with the scrape
	// still held by the pod.
	waitFor(t, e2eShutdownTimeout, "the gateway to stop accepting connections", nil, func() error {
		c, err := net.Dial("tcp", gw.addr)
		if err != nil {
			return nil
		}
		c.Close()
		return fmt.Errorf("%s still accepts connections", gw.addr)
	})
	if gw.proc.exited() {
		t.Fatalf("the gateway exited (%s) with a scrape in flight", gw.proc.cmd.ProcessState)
	}
	close(release)

	r := <-scrape
	if r.err != nil || r.status != 200 || r.body != "slow_metric 1\n" {
		t.Fatalf("scrape in flight at SIGTERM: %d %q %v; want 200 and the whole body", r.status, r.body, r.err)
	}
	gw.proc.wantExitZero(t, "SIGTERM")
}
