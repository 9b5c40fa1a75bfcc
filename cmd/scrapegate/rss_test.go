package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// TestLargeBodyKeepsRSSBounded streams 1 GiB from a pod through the real
// binary and checks the gateway process's peak resident memory: a body held
// in memory anywhere on the way would show as 1 GiB.
func TestLargeBodyKeepsRSSBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1 GiB")
	}
	const size = 1 << 30
	const maxPeakRSS = 100 << 20

	// The race detector multiplies memory use: measure a normal build.
	// A slow machine may need long for 1 GiB; the default deadline would
	// (rightly) cut it off.
	gw := startGateway(t, buildGateway(t, false), "--scrape-timeout-default=10m", "--scrape-timeout-max=10m")

	ln := testutil.Listen(t, "127.42.1.1")
	chunk := bytes.Repeat([]byte("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 12345.67\n"), 1000)
	pod := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for left := size; left > 0; {
			n, err := w.Write(chunk[:min(left, len(chunk))])
			if err != nil {
				return
			}
			left -= n
		}
	})}
	go func() { _ = pod.Serve(ln) }()
	t.Cleanup(func() { _ = pod.Close() })

	conn, err := net.Dial("tcp", gw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	podPath := "/pods/" + strings.Replace(ln.Addr().String(), ":", "/", 1) + "/metrics"
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", podPath, gw.addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != size {
		t.Fatalf("status %d, Content-Length %d; want 200, %d", resp.StatusCode, resp.ContentLength, size)
	}
	n, err := io.CopyBuffer(io.Discard, resp.Body, make([]byte, 256<<10))
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v; want %d", n, err, size)
	}

	peak := peakRSS(t, gw.proc.cmd.Process.Pid)
	t.Logf("gateway peak RSS after streaming 1 GiB: %.1f MiB", float64(peak)/(1<<20))
	if peak > maxPeakRSS {
		t.Fatalf("gateway peak RSS %d MiB > %d MiB while streaming 1 GiB", peak>>20, maxPeakRSS>>20)
	}
}

// peakRSS reads a process's peak resident set size (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("cannot read the gateway's memory use: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("cannot parse VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
