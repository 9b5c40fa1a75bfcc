package load

import (
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestMain lets the test binary serve pods: the harness runs its pod
// shards as copies of its own binary.
func TestMain(m *testing.M) {
	ServePodsIfChild()
	os.Exit(m.Run())
}

// TestHarness runs every scenario through every proxy with tiny settings
// and checks that the numbers hold together: every scrape succeeds, every
// proxy's CPU and memory are read, the schedule keeps its rate, scrapegate's
// pools follow the churning pods, and large bodies stream through.
func TestHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("runs nginx and builds and loads every proxy; skipped with -short")
	}
	nginx, err := exec.LookPath(nginxPath("nginx"))
	if err != nil {
		t.Fatalf("nginx is needed to compare against it (make test-deps installs it): %s", err)
	}
	dir := t.TempDir()
	bins := Binaries{
		Scrapegate:    filepath.Join(dir, "scrapegate"),
		HTTPUtilProxy: filepath.Join(dir, "httputilproxy"),
		Nginx:         nginx,
		NginxConf:     "../nginx.conf",
	}
	for pkg, out := range map[string]string{
		"github.com/scrapegate/scrapegate/cmd/scrapegate":          bins.Scrapegate,
		"github.com/scrapegate/scrapegate/bench/cmd/httputilproxy": bins.HTTPUtilProxy,
	} {
		if err := GoBuild(pkg, out); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{
		Settings: Settings{
			Pods:           40,
			BodyBytes:      4 << 10,
			Gzip:           true,
			Rate:           400,
			Concurrency:    16,
			Jitter:         5 * time.Millisecond,
			PhaseDuration:  time.Second,
			ChurnPods:      20,
			ChurnPerSecond: 20,
			ChurnDuration:  4 * time.Second,
			LargePods:      50,
			LargeBodies:    4,
			LargeBodyBytes: 32 << 20,
			Rounds:         2,
		},
		Proxies:              Proxies,
		Scenarios:            Scenarios,
		Binaries:             bins,
		PodPort:              freePodPort(t),
		WarmUp:               500 * time.Millisecond,
		ChurnEndpointIdleTTL: 500 * time.Millisecond,
		Progress:             testWriter{t},
	}
	run, err := Execute(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}

	s := run.Settings
	if s.WireBytes <= 0 || s.WireBytes >= s.BodyBytes {
		t.Errorf("WireBytes = %d, want gzip's size of %d bytes", s.WireBytes, s.BodyBytes)
	}
	var got []string
	for i := range run.Results {
		r := &run.Results[i]
		got = append(got, r.Scenario+"/"+r.Proxy)
		checkResult(t, r, s)
	}
	var want []string
	for _, sc := range []string{ScenarioRate, ScenarioSaturation} {
		for _, p := range Proxies {
			want = append(want, sc+"/"+p)
		}
	}
	want = append(want, ScenarioChurn+"/"+ProxyScrapegate)
	for _, p := range largeProxies {
		want = append(want, ScenarioLarge+"/"+p)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("results for %v, want %v", got, want)
	}

	// What the report does with a real run.
	if _, err := json.Marshal(run); err != nil {
		t.Errorf("the run does not encode: %s", err)
	}
	if err := WriteMarkdown(io.Discard, run, "latest.svg"); err != nil {
		t.Errorf("WriteMarkdown: %s", err)
	}
	if err := WriteSVG(io.Discard, run); err != nil {
		t.Errorf("WriteSVG: %s", err)
	}
}

func checkResult(t *testing.T, r *Result, s Settings) {
	t.Helper()
	name := r.Scenario + "/" + r.Proxy
	if r.Scrapes <= 0 || r.Errors != 0 || len(r.Latency.Seconds) == 0 {
		t.Errorf("%s: %d scrapes, %d errors %q; want scrapes and no errors", name, r.Scrapes, r.Errors, r.ErrorSamples)
	}
	if r.Proxy != ProxyDirect && (r.CPUPer1000 <= 0 || r.PeakRSS <= 0) {
		t.Errorf("%s: CPU %g s per 1000 scrapes, peak RSS %d bytes; want both read from /proc", name, r.CPUPer1000, r.PeakRSS)
	}
	if pooled := r.Scenario == ScenarioRate || r.Scenario == ScenarioSaturation; pooled && r.Extra["rounds"] != float64(s.Rounds) {
		t.Errorf("%s: %g rounds pooled, want %d", name, r.Extra["rounds"], s.Rounds)
	}
	switch r.Scenario {
	case ScenarioRate:
		// Generous: a loaded machine delays scrapes, it does not drop the
		// schedule.
		if r.AchievedPerSec < 0.6*r.AskedPerSec || r.AchievedPerSec > 1.4*r.AskedPerSec {
			t.Errorf("%s: achieved %.1f/s, asked %.1f/s", name, r.AchievedPerSec, r.AskedPerSec)
		}
	case ScenarioChurn:
		checkChurn(t, r, s)
	case ScenarioLarge:
		if r.Scrapes != int64(s.LargeBodies) {
			t.Errorf("%s: %d large bodies completed, want %d", name, r.Scrapes, s.LargeBodies)
		}
		if r.Extra["primed_endpoints"] != float64(s.LargePods) {
			t.Errorf("%s: %g pods scraped before the large bodies, want %d", name, r.Extra["primed_endpoints"], s.LargePods)
		}
		if r.Proxy == ProxyScrapegate && r.Extra["pooled_endpoints"] < float64(s.LargePods) {
			t.Errorf("%s: %g pooled endpoints, want at least %d", name, r.Extra["pooled_endpoints"], s.LargePods)
		}
		if len(r.Series) == 0 {
			t.Errorf("%s: no RSS series", name)
		}
	}
}

// checkChurn checks that scrapegate scraped the new pods and dropped the
// vanished ones' pools: a pool outlives its pod by the idle TTL, plus up to
// a second until scrapegate's next sweep (every max(ttl/4, 1s)), plus the
// interval since its last scrape.
func checkChurn(t *testing.T, r *Result, s Settings) {
	t.Helper()
	if d := r.Extra["distinct_endpoints"]; d <= float64(s.ChurnPods) {
		t.Errorf("churn: %g distinct endpoints scraped, want more than the %d pods live at once", d, s.ChurnPods)
	}
	interval := float64(s.ChurnPods) / s.Rate
	const slack = 1.0 // seconds: a busy machine delays sweeps and samples
	bound := float64(s.ChurnPods) + s.ChurnPerSecond*(r.Extra["endpoint_idle_ttl_seconds"]+1+interval+slack)
	if bound >= r.Extra["distinct_endpoints"] {
		t.Fatalf("churn: the bound on pooled endpoints (%g) would not show evictions (%g endpoints in all): churn for longer", bound, r.Extra["distinct_endpoints"])
	}
	if len(r.Series) < 3 {
		t.Errorf("churn: %d points in the series, want one a second", len(r.Series))
	}
	for _, pt := range r.Series {
		if pt.PooledEndpoints > bound || pt.LivePods < s.ChurnPods {
			t.Errorf("churn at %.1fs: %g pooled endpoints, %d live pods; want at most %g and at least %d", pt.Seconds, pt.PooledEndpoints, pt.LivePods, bound, s.ChurnPods)
		}
	}
}

// freePodPort returns a port free on the pods' addresses, so that the test
// does not collide with a loadbench run on the default port.
func freePodPort(t *testing.T) int {
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(podAddr(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// testWriter sends the harness's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p[:len(p)-min(len(p), 1)]))
	return len(p), nil
}
