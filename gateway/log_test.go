package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

func TestUpstreamErrorLogIsRateLimitedPerEndpoint(t *testing.T) {
	var logs testutil.LogBuffer
	log, err := NewLogger(&logs, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	_, gw := startGatewayWithLog(t, testConfig(), log)
	dead := testutil.FreeAddr(t, "127.0.0.30").String()
	other := testutil.FreeAddr(t, "127.0.0.31").String()
	for range 5 {
		get(t, gw, "http://"+dead+"/metrics")
	}
	get(t, gw, "http://"+other+"/metrics")
	lines := logs.Lines(`"scrape failed"`)
	if len(lines) != 2 || !strings.Contains(lines[0], `"target":"`+dead+`"`) || !strings.Contains(lines[0], `"reason":"connect_refused"`) ||
		!strings.Contains(lines[1], `"target":"`+other+`"`) {
		t.Fatalf("5 failures of one dead pod and 1 of another logged:\n%s\nwant one line each, with target and reason", strings.Join(lines, "\n"))
	}
	// An interval later the dead pod logs again, with what was suppressed.
	later := time.Now().Add(time.Minute + time.Second)
	timeNow = func() time.Time { return later }
	t.Cleanup(func() { timeNow = time.Now })
	get(t, gw, "http://"+dead+"/metrics")
	lines = logs.Lines(`"scrape failed"`)
	if len(lines) != 3 || !strings.Contains(lines[2], `"suppressed_since_last":4`) {
		t.Fatalf("after the interval:\n%s\nwant a third line reporting 4 suppressed", strings.Join(lines, "\n"))
	}
}

func TestAccessLog(t *testing.T) {
	f := func(enabled bool, want int) {
		t.Helper()
		var logs testutil.LogBuffer
		log, err := NewLogger(&logs, "json", "info")
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig()
		cfg.AccessLog = enabled
		_, gw := startGatewayWithLog(t, cfg, log)
		get(t, gw, "/healthz")
		get(t, gw, "/pods/8.8.8.8/53/x")
		lines := logs.Lines(`"message":"request"`)
		if len(lines) != want {
			t.Fatalf("access log %v: %d lines; want %d:\n%s", enabled, len(lines), want, strings.Join(lines, "\n"))
		}
		if want > 0 && (!strings.Contains(lines[1], `"status":403`) || !strings.Contains(lines[1], `"uri":"/pods/8.8.8.8/53/x"`)) {
			t.Fatalf("access log line lacks status or uri: %s", lines[1])
		}
	}
	f(false, 0)
	f(true, 2)
}
