package main

// End-to-end test: the real scrapegate binary between a real Prometheus and
// many fake pods, scraped both ways existing users configure it (psystrike
// /pods/ relabeling, and proxy_url).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

const (
	e2eNumPods = 60
	// e2ePodNet is the /24 the fake pods listen in: 127.42.0.1, 127.42.0.2...
	// Linux routes all of 127.0.0.0/8 to lo, so binding needs no setup.
	e2ePodNet = "127.42.0."

	// Generous bounds for a loaded 2-core CI machine. Each one bounds a poll
	// for a condition; none is used as a sleep.
	e2eStartTimeout    = 60 * time.Second // a process becoming ready
	e2eScrapeTimeout   = 90 * time.Second // every target of both jobs up, then scraped a few times
	e2eShutdownTimeout = 45 * time.Second // gateway exit after SIGTERM (its own -shutdown-timeout is 30s)
	e2ePollInterval    = 200 * time.Millisecond

	// e2eMinScrapes is how many successful scrapes of each target to wait
	// for before checking what they stored.
	e2eMinScrapes = 3

	jobPsystrike = "psystrike"
	jobProxy     = "proxy"
)

var e2eJobs = []string{jobPsystrike, jobProxy}

func TestEndToEndPrometheus(t *testing.T) {
	begin, promBin, gatewayBin := startPrometheusE2E(t)

	pods := startFakePods(t, e2eNumPods)
	gw := startGateway(t, gatewayBin)
	prom := startPrometheus(t, promBin, prometheusConfig(gw.addr, pods))
	t.Logf("%d pods on %s*:%s, gateway on %s, Prometheus on %s; ready after %s",
		len(pods), e2ePodNet, pods[0].port, gw.addr, prom.addr, time.Since(begin).Round(time.Millisecond))
	procs := []*process{gw.proc, prom.proc}

	// 1. Every target of both jobs is up, and psystrike targets really are
	// scraped through the gateway's /pods/ route.
	waitFor(t, e2eScrapeTimeout, "all targets of both jobs to be up", procs, func() error {
		return checkTargets(prom, gw.addr, pods)
	})
	t.Logf("all %d targets up after %s", len(pods)*len(e2eJobs), time.Since(begin).Round(time.Millisecond))

	// 2. up == 1 for every pod of every job, after a few successful scrapes
	// each, so that later scrapes reuse pooled and kept-alive connections.
	// Targets report health just before their samples are committed, so
	// this too is polled.
	waitFor(t, e2eScrapeTimeout, fmt.Sprintf("up == 1 and %d successful scrapes for every pod of both jobs", e2eMinScrapes), procs, func() error {
		now := time.Now()
		if err := checkPerTarget(prom, "up", now, pods, func(_ *fakePod, s promSample) error {
			if s.value != 1 {
				return fmt.Errorf("up is %v", s.value)
			}
			return nil
		}); err != nil {
			return err
		}
		return checkPerTarget(prom, "sum_over_time(up[1h])", now, pods, func(_ *fakePod, s promSample) error {
			if s.value < e2eMinScrapes {
				return fmt.Errorf("%v successful scrapes so far", s.value)
			}
			return nil
		})
	})
	t.Logf("%d scrapes of every target after %s", e2eMinScrapes, time.Since(begin).Round(time.Millisecond))

	// 3. Each pod's own series arrived under its own instance, in every
	// scrape so far (min and max over the whole run), so a gateway that
	// mixes pods up, even once, fails here.
	at := time.Now()
	for _, fn := range []string{"min_over_time", "max_over_time"} {
		q := fn + "(fake_pod_value[1h])"
		if err := checkPerTarget(prom, q, at, pods, func(p *fakePod, s promSample) error {
			if s.value != float64(p.n) {
				return fmt.Errorf("got %v, want the pod's own number %d", s.value, p.n)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	if err := checkPerTarget(prom, "last_over_time(fake_pod_info[1h])", at, pods, func(p *fakePod, s promSample) error {
		if s.labels["pod"] != p.name || s.value != 1 {
			return fmt.Errorf("got fake_pod_info{pod=%q} %v, want {pod=%q} 1", s.labels["pod"], s.value, p.name)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	// 4. Every successful scrape carried the whole body: fake_pod_value is
	// the body's last line, after some padding, so a body cut short at a
	// line boundary (which Prometheus would accept) shows up as fewer
	// fake_pod_value samples than successful scrapes. One expression, so
	// both sides see the same snapshot of the database.
	if err := checkPerTarget(prom, "sum_over_time(up[1h]) - count_over_time(fake_pod_value[1h])", at, pods,
		func(_ *fakePod, s promSample) error {
			if s.value != 0 {
				return fmt.Errorf("%v successful scrapes lack the body's last line", s.value)
			}
			return nil
		}); err != nil {
		t.Error(err)
	}

	// 5. The gateway counted the scrapes of both routes: each pod was
	// scraped successfully at least e2eMinScrapes times through each.
	counts := gatewayRequestCounts(t, gw)
	for _, route := range []string{"pods", "proxy"} {
		key := `route="` + route + `",code="200"`
		if got, want := counts[key], float64(e2eMinScrapes*len(pods)); got < want {
			t.Errorf("gateway /metrics: scrapegate_requests_total{%s} = %v, want at least %v; all request counts: %v",
				key, got, want, counts)
		}
	}
	var requests, conns int64
	for _, p := range pods {
		requests += p.requests.Load()
		conns += p.conns.Load()
	}
	t.Logf("gateway request counts: %v; the pods served %d requests on %d connections", counts, requests, conns)

	// 6. SIGTERM: the gateway drains, stops and exits 0, while Prometheus
	// keeps scraping through it. (A -race binary lingers 1s at exit, the
	// race runtime's default GORACE atexit_sleep_ms.)
	stopStart := time.Now()
	gw.proc.signal(t, syscall.SIGTERM)
	gw.proc.wantExitZero(t, "SIGTERM")
	t.Logf("gateway exited %s after SIGTERM; whole test took %s",
		time.Since(stopStart).Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
}

// prometheusBinary returns the Prometheus to test against: $PROMETHEUS_BIN, or
// prometheus on $PATH.
// startPrometheusE2E skips an end-to-end test against a real Prometheus
// under -short. Otherwise it returns when the test began, the Prometheus
// binary and the gateway built for the test.
func startPrometheusE2E(t *testing.T) (begin time.Time, promBin, gatewayBin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test against a real Prometheus; skipped with -short")
	}
	begin = time.Now()
	promBin = prometheusBinary(t)
	gatewayBin = buildGateway(t, raceEnabled())
	t.Logf("built gateway in %s", time.Since(begin).Round(time.Millisecond))
	return begin, promBin, gatewayBin
}

func prometheusBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("PROMETHEUS_BIN"); bin != "" {
		return bin
	}
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("this end-to-end test needs a prometheus binary (set PROMETHEUS_BIN or put it on PATH); "+
			"run `make test`, which installs it, or skip this test with -short: %v", err)
	}
	return bin
}

// buildGateway builds this package's binary, with the race detector if race
// is set: tests that run with it pass raceEnabled(), so that races in the real
// binary fail them (a race makes the process exit 66 instead of 0).
func buildGateway(t *testing.T, race bool) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "scrapegate")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, ".")
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("cannot find the go command to build the gateway: %v", err)
	}
	cmd := exec.Command(goBin, args...) // in the package directory; GOFLAGS etc. come from the environment
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// fakePod is one pod: an HTTP server on its own loopback address serving
// series that name it.
type fakePod struct {
	n       int
	name    string // pod-N
	ip      string
	port    string
	addr    string // ip:port, also its instance label in both jobs
	metrics []byte

	requests atomic.Int64 // for /metrics
	conns    atomic.Int64 // accepted
}

// startFakePods starts n pods on 127.42.0.1..n, all on the same port as pods
// in a cluster would be, so only the IP tells them apart.
func startFakePods(t *testing.T, n int) []*fakePod {
	t.Helper()
	return startPodServers(t, e2ePodNet, n, func(p *fakePod) *fakePod { return p })
}

// podServer is a fake pod's HTTP handler that counts its connections.
type podServer interface {
	http.Handler
	connState(net.Conn, http.ConnState)
}

// startPodServers starts n fake pods on <podNet>1..n, all on one port, each
// serving as describe makes it.
func startPodServers[P podServer](t *testing.T, podNet string, n int, describe func(*fakePod) P) []P {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		lns, err := listenPods(podNet, n)
		if err != nil {
			lastErr = err
			continue // another process took the port on some address; pick another
		}
		pods := make([]P, n)
		for i, ln := range lns {
			p := describe(newFakePod(i+1, ln.Addr().(*net.TCPAddr)))
			srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ConnState: p.connState}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { _ = srv.Close() })
			pods[i] = p
		}
		return pods
	}
	t.Fatalf("cannot start %d fake pods on %s*: %v", n, podNet, lastErr)
	return nil
}

func listenPods(podNet string, n int) ([]net.Listener, error) {
	first, err := net.Listen("tcp4", podNet+"1:0")
	if err != nil {
		return nil, err
	}
	lns := []net.Listener{first}
	port := strconv.Itoa(first.Addr().(*net.TCPAddr).Port)
	for i := 2; i <= n; i++ {
		ln, err := net.Listen("tcp4", net.JoinHostPort(podNet+strconv.Itoa(i), port))
		if err != nil {
			for _, l := range lns {
				_ = l.Close()
			}
			return nil, err
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func newFakePod(n int, addr *net.TCPAddr) *fakePod {
	p := &fakePod{
		n:    n,
		name: fmt.Sprintf("pod-%d", n),
		ip:   addr.IP.String(),
		port: strconv.Itoa(addr.Port),
		addr: addr.String(),
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# HELP fake_pod_info Identifies the fake pod.\n# TYPE fake_pod_info gauge\n")
	fmt.Fprintf(&b, "fake_pod_info{pod=%q} 1\n", p.name)
	// Padding, so that the body spans several of the gateway's buffers.
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&b, "# padding line %03d of %s, to make the body larger than a buffer\n", i, p.name)
	}
	fmt.Fprintf(&b, "# HELP fake_pod_value The fake pod's number.\n# TYPE fake_pod_value gauge\n")
	fmt.Fprintf(&b, "fake_pod_value %d\n", n)
	p.metrics = b.Bytes()
	return p
}

func (p *fakePod) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/metrics" {
		http.Error(w, p.name+": only /metrics is served, got "+r.URL.Path, http.StatusNotFound)
		return
	}
	p.requests.Add(1)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(p.metrics)
}

func (p *fakePod) connState(_ net.Conn, state http.ConnState) {
	if state == http.StateNew {
		p.conns.Add(1)
	}
}

// process is a subprocess whose output is kept, and shown if the test fails.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *testutil.LogBuffer
	done chan struct{} // closed once the process has exited
}

// startProcess starts bin. Environment variables whose names start with one
// of dropEnv are not passed on. The process is killed when the test ends.
func startProcess(t *testing.T, name, bin string, args []string, dropEnv ...string) *process {
	t.Helper()
	p := &process{name: name, cmd: exec.Command(bin, args...), out: &testutil.LogBuffer{}, done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(dropEnv, func(prefix string) bool { return strings.HasPrefix(kv, prefix) }) {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s (%s) output:\n%s", name, p.cmd.ProcessState, p.out.String())
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wantExitZero waits up to e2eShutdownTimeout for the process to exit after
// what (a signal), and fails the test unless it exited 0.
func (p *process) wantExitZero(t *testing.T, what string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(e2eShutdownTimeout):
		t.Fatalf("%s still running %s after %s", p.name, e2eShutdownTimeout, what)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited with %s after %s; want exit code 0", p.name, p.cmd.ProcessState, what)
	}
}

func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("cannot send %s to %s: %v", sig, p.name, err)
	}
}

type gatewayProc struct {
	proc *process
	addr string // host:port it serves on
}

// e2eGatewayArgs are the flags of a plain-HTTP test gateway: on a port the
// kernel picks, scraping loopback, logging JSON, stopping without delay.
var e2eGatewayArgs = []string{
	"--listen=127.0.0.1:0",
	"--allow-cidrs=127.0.0.0/8",
	"--drain-delay=0s",
	"--log-format=json",
	"--log-level=info",
}

// startGateway starts the gateway with e2eGatewayArgs and extraArgs, learns
// its port from its "serving" log line, and waits until /readyz answers 200.
func startGateway(t *testing.T, bin string, extraArgs ...string) *gatewayProc {
	t.Helper()
	gw := awaitServing(t, startProcess(t, "gateway", bin, slices.Concat(e2eGatewayArgs, extraArgs), "SCRAPEGATE_"))
	waitFor(t, e2eStartTimeout, "the gateway's /readyz to answer 200", []*process{gw.proc}, func() error {
		_, err := httpGet("http://" + gw.addr + "/readyz")
		return err
	})
	return gw
}

// awaitServing waits for the "serving" log line of the gateway proc and
// returns the gateway at the address it names.
func awaitServing(t *testing.T, proc *process) *gatewayProc {
	t.Helper()
	gw := &gatewayProc{proc: proc}
	procs := []*process{proc}
	waitFor(t, e2eStartTimeout, "the gateway's \"serving\" log line", procs, func() error {
		addr, ok := servingAddr(proc.out.String())
		if !ok {
			return errors.New(`no JSON log line with "message":"serving" and a "listen" address yet`)
		}
		gw.addr = addr
		return nil
	})
	return gw
}

func servingAddr(log string) (string, bool) {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var line struct {
			Message string `json:"message"`
			Listen  string `json:"listen"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Message == "serving" && line.Listen != "" {
			return line.Listen, true
		}
	}
	return "", false
}

type promProc struct {
	proc *process
	addr string
}

// startPrometheus starts a throwaway Prometheus scraping every pod through the
// gateway twice, once per job, and waits until it is ready.
func startPrometheus(t *testing.T, bin, config string) *promProc {
	t.Helper()
	return startPrometheusAt(t, "prometheus", bin, testutil.FreeAddr(t, "127.0.0.1").String(), config)
}

// startPrometheusAt is startPrometheus listening on addr, for a
// configuration that names Prometheus's own address, and logging as name.
func startPrometheusAt(t *testing.T, name, bin, addr, config string) *promProc {
	t.Helper()
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "prometheus.yml")
	testutil.WriteFile(t, cfgFile, []byte(config))
	proc := startProcess(t, name, bin, []string{
		"--config.file=" + cfgFile,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
		"--log.level=info",
	},
		// Whether the Prometheus scrape client honours these depends on
		// its version; no job may go through anything but the gateway.
		"HTTP_PROXY=", "HTTPS_PROXY=", "NO_PROXY=", "http_proxy=", "https_proxy=", "no_proxy=")
	prom := &promProc{proc: proc, addr: addr}
	waitFor(t, e2eStartTimeout, "Prometheus's /-/ready to answer 200", []*process{proc}, func() error {
		_, err := httpGet("http://" + addr + "/-/ready")
		return err
	})
	return prom
}

// prometheusConfig returns a configuration with the two ways users scrape
// through the gateway. Debian's Prometheus has no Kubernetes service
// discovery, so the psystrike job gets the labels kubernetes_sd_configs would
// give a pod from static_configs.
func prometheusConfig(gatewayAddr string, pods []*fakePod) string {
	targets := make([]string, len(pods))
	for i, p := range pods {
		targets[i] = strconv.Quote(p.addr)
	}
	list := "[" + strings.Join(targets, ", ") + "]"
	return fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: %[1]s
    static_configs:
      - targets: %[3]s
        labels:
          __meta_kubernetes_pod_annotation_prometheus_io_port: %[4]q
          __meta_kubernetes_pod_annotation_prometheus_io_path: "/metrics"
    relabel_configs:
      - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port, __meta_kubernetes_pod_annotation_prometheus_io_path]
        action: replace
        target_label: __metrics_path__
        regex: (.+)(?::\d+);(\d+);(.*)
        replacement: /pods/$1/$2$3
      - source_labels: [__address__]
        target_label: instance
      - target_label: __address__
        replacement: %[5]s
  - job_name: %[2]s
    proxy_url: http://%[5]s
    static_configs:
      - targets: %[3]s
`, jobPsystrike, jobProxy, list, pods[0].port, gatewayAddr)
}

// checkTargets returns an error unless Prometheus has exactly the expected
// targets in both jobs, all up, psystrike ones scraping the gateway's
// /pods/{ip}/{port}/metrics for their own pod.
func checkTargets(prom *promProc, gatewayAddr string, pods []*fakePod) error {
	return checkActiveTargets(prom, keyedTargets(podTargets(pods)), func(key string, pt podTarget, tg promTarget) []string {
		p := pt.pod
		var problems []string
		if tg.ScrapePool == jobPsystrike {
			if wantURL := "http://" + gatewayAddr + "/pods/" + p.ip + "/" + p.port + "/metrics"; tg.ScrapeURL != wantURL {
				problems = append(problems, fmt.Sprintf("target %s scrapes %s, want %s", key, tg.ScrapeURL, wantURL))
			}
		}
		if tg.Health != "up" {
			problems = append(problems, fmt.Sprintf("target %s (%s) is %q: lastError %q", key, tg.ScrapeURL, tg.Health, tg.LastError))
		}
		return problems
	})
}

// promTarget is one of Prometheus's active targets (/api/v1/targets).
type promTarget struct {
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	Labels           map[string]string `json:"labels"`
	ScrapePool       string            `json:"scrapePool"`
	ScrapeURL        string            `json:"scrapeUrl"`
	LastError        string            `json:"lastError"`
	Health           string            `json:"health"`
}

func promActiveTargets(prom *promProc) ([]promTarget, error) {
	var resp struct {
		ActiveTargets []promTarget `json:"activeTargets"`
	}
	err := promAPI(prom, "/api/v1/targets?state=active", &resp)
	return resp.ActiveTargets, err
}

// checkActiveTargets returns an error unless Prometheus's active targets,
// keyed by job and instance, are exactly those of want, and check finds no
// problem with any of them.
func checkActiveTargets[T any](prom *promProc, want map[string]T, check func(key string, want T, got promTarget) []string) error {
	active, err := promActiveTargets(prom)
	if err != nil {
		return err
	}
	var problems []string
	seen := map[string]bool{}
	for _, tg := range active {
		key := tg.ScrapePool + "/" + tg.Labels["instance"]
		w, ok := want[key]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("unexpected target %s (%s, %s)", key, tg.ScrapeURL, tg.Health))
			continue
		case seen[key]:
			problems = append(problems, "duplicate target "+key)
		}
		seen[key] = true
		problems = append(problems, check(key, w, tg)...)
	}
	for key := range want {
		if !seen[key] {
			problems = append(problems, "missing target "+key)
		}
	}
	return problemsErr(fmt.Sprintf("/api/v1/targets: %d active targets", len(active)), problems)
}

// keyedTargets maps targets by their job/instance key.
func keyedTargets[T seriesTarget](targets []T) map[string]T {
	m := make(map[string]T, len(targets))
	for _, t := range targets {
		m[t.key()] = t
	}
	return m
}

// checkScrape checks that a target scrapes scrapeURL and is up, or with
// wantErr set, down with an error that mentions it.
func checkScrape(name, scrapeURL, wantErr string, tg promTarget) []string {
	var problems []string
	if tg.ScrapeURL != scrapeURL {
		problems = append(problems, fmt.Sprintf("target %s scrapes %s, want %s", name, tg.ScrapeURL, scrapeURL))
	}
	switch {
	case wantErr == "" && tg.Health != "up":
		problems = append(problems, fmt.Sprintf("target %s is %q, want up: lastError %q", name, tg.Health, tg.LastError))
	case wantErr != "" && (tg.Health != "down" || !strings.Contains(tg.LastError, wantErr)):
		problems = append(problems, fmt.Sprintf("target %s is %q with lastError %q, want down with an error mentioning %q", name, tg.Health, tg.LastError, wantErr))
	}
	return problems
}

type promSample struct {
	labels map[string]string
	value  float64
}

// podTarget is one pod in one job of TestEndToEndPrometheus.
type podTarget struct {
	job string
	pod *fakePod
}

func (pt podTarget) key() string { return pt.job + "/" + pt.pod.addr }

func (pt podTarget) String() string { return pt.key() + " (" + pt.pod.name + ")" }

// podTargets returns every pod in every job of e2eJobs.
func podTargets(pods []*fakePod) []podTarget {
	var targets []podTarget
	for _, job := range e2eJobs {
		for _, p := range pods {
			targets = append(targets, podTarget{job, p})
		}
	}
	return targets
}

// checkPerTarget is checkEachTarget for every pod in every job of e2eJobs.
func checkPerTarget(prom *promProc, query string, at time.Time, pods []*fakePod, check func(*fakePod, promSample) error) error {
	return checkEachTarget(prom, query, at, podTargets(pods), func(pt podTarget, s promSample) error { return check(pt.pod, s) })
}

// seriesTarget is a target an end-to-end test expects one series for; key
// is its "job/instance".
type seriesTarget interface {
	key() string
	String() string
}

// checkEachTarget runs an instant query at time at, which must return
// exactly one sample for each of targets, keyed by job and instance, and
// calls check on each.
func checkEachTarget[T seriesTarget](prom *promProc, query string, at time.Time, targets []T, check func(T, promSample) error) error {
	samples, err := promQuery(prom, query, at)
	if err != nil {
		return err
	}
	want := keyedTargets(targets)
	var problems []string
	seen := map[string]bool{}
	for _, s := range samples {
		key := s.labels["job"] + "/" + s.labels["instance"]
		st, ok := want[key]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("unexpected series %v = %v", s.labels, s.value))
			continue
		case seen[key]:
			problems = append(problems, fmt.Sprintf("more than one series for %s: %v = %v", key, s.labels, s.value))
		}
		seen[key] = true
		if err := check(st, s); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", st, err))
		}
	}
	for key, st := range want {
		if !seen[key] {
			problems = append(problems, "no series for "+st.String())
		}
	}
	return problemsErr(fmt.Sprintf("query %q: %d series", query, len(samples)), problems)
}

// problemsErr summarises problems in one error, or returns nil if there are none.
func problemsErr(context string, problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	slices.Sort(problems)
	n := len(problems)
	const maxShown = 15
	more := ""
	if n > maxShown {
		more = fmt.Sprintf("\n\t... and %d more", n-maxShown)
		problems = problems[:maxShown]
	}
	return fmt.Errorf("%s, %d problems:\n\t%s%s", context, n, strings.Join(problems, "\n\t"), more)
}

func promQuery(prom *promProc, query string, at time.Time) ([]promSample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	q := url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1e3, 'f', 3, 64)}}
	if err := promAPI(prom, "/api/v1/query?"+q.Encode(), &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %q, want vector", query, data.ResultType)
	}
	samples := make([]promSample, len(data.Result))
	for i, r := range data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: bad sample value %v: %v", query, r.Value, err)
		}
		samples[i] = promSample{labels: r.Metric, value: v}
	}
	return samples, nil
}

// promAPI gets a Prometheus API path and decodes the data of a successful
// answer into data.
func promAPI(prom *promProc, path string, data any) error {
	body, err := httpGet("http://" + prom.addr + path)
	if err != nil {
		return err
	}
	var resp struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if resp.Status != "success" {
		return fmt.Errorf("%s: status %q: %s", path, resp.Status, resp.Error)
	}
	if err := json.Unmarshal(resp.Data, data); err != nil {
		return fmt.Errorf("%s: cannot decode data: %v", path, err)
	}
	return nil
}

// gatewayRequestCounts returns the gateway's scrapegate_requests_total
// counters, keyed by their labels as written, e.g. `route="pods",code="200"`.
func gatewayRequestCounts(t *testing.T, gw *gatewayProc) map[string]float64 {
	t.Helper()
	body, err := httpGet("http://" + gw.addr + "/metrics")
	if err != nil {
		t.Fatalf("gateway /metrics: %v", err)
	}
	counts := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "scrapegate_requests_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(value, 64)
		if !ok || err != nil {
			t.Fatalf("gateway /metrics: cannot parse %q", line)
		}
		counts[labels] = v
	}
	return counts
}

var httpClient = &http.Client{
	Timeout: 10 * time.Second,
	// No proxy from the environment, and no connections kept open that
	// would outlive the test or linger in the gateway's shutdown.
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// httpGet returns the body of a 200 answer, and an error for anything else.
func httpGet(u string) ([]byte, error) {
	resp, err := httpClient.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading body: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// waitFor polls cond until it returns nil, failing the test with cond's last
// error after timeout, or at once if one of procs exits.
func waitFor(t *testing.T, timeout time.Duration, what string, procs []*process, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		for _, p := range procs {
			if p.exited() {
				t.Fatalf("%s exited (%s) while waiting for %s; last check: %v", p.name, p.cmd.ProcessState, what, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last check: %v", timeout, what, err)
		}
		time.Sleep(e2ePollInterval)
	}
}
