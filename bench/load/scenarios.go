// Package load is scrapegate's load harness: it simulates a cluster's pods
// on one machine and runs the same Prometheus-like scrape schedule against
// them directly, through scrapegate, through httputil.ReverseProxy and
// through nginx, one after the other, measuring each proxy's throughput,
// latency, CPU and memory. bench/cmd/loadbench runs it; the report
// renders its Run.
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxies and Scenarios are every proxy and scenario, in run order.
var (
	Proxies   = []string{ProxyDirect, ProxyScrapegate, ProxyHTTPUtil, ProxyNginx}
	Scenarios = []string{ScenarioRate, ScenarioSaturation, ScenarioChurn, ScenarioLarge}
	// largeProxies are the proxies the large scenario compares: a pod
	// scraped directly holds no pool.
	largeProxies = []string{ProxyScrapegate, ProxyNginx, ProxyHTTPUtil}
)

// Options are a run's Settings and what the run needs besides.
type Options struct {
	Settings  Settings
	Proxies   []string // which of Proxies to run
	Scenarios []string // which of Scenarios to run
	Binaries  Binaries
	PodPort   int // the port every pod listens on
	// WarmUp is how long each proxy runs the rate schedule before its rate
	// and saturation phases are measured.
	WarmUp time.Duration
	// ChurnEndpointIdleTTL is scrapegate's -endpoint-idle-ttl in the churn
	// scenario: how long a vanished pod's pool may stay.
	ChurnEndpointIdleTTL time.Duration
	Progress             io.Writer // progress lines
}

// harness is one run in progress.
type harness struct {
	Options
	pod  podConfig
	wire int64 // bytes of a good /metrics scrape
	log  func(format string, args ...any)
}

// Execute runs the selected scenarios through the selected proxies and
// returns the Run. It fails at the first proxy or pod that fails; scrape
// errors are counted in the Results instead.
func Execute(ctx context.Context, o Options) (*Run, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	h := &harness{
		Options: o,
		pod:     podConfig{Port: o.PodPort, BodyBytes: o.Settings.BodyBytes, Gzip: o.Settings.Gzip, LargeBodyBytes: o.Settings.LargeBodyBytes},
		log:     func(format string, args ...any) { fmt.Fprintf(o.Progress, format+"\n", args...) },
	}
	h.wire = int64(newPodBodies(h.pod).wireBytes())
	run := &Run{Started: time.Now(), Machine: DescribeMachine(o.Binaries.Nginx), Settings: o.Settings}
	run.Settings.WireBytes = int(h.wire)
	h.log("%d CPUs (%s), %s, %s, scrapegate %s", run.Machine.CPUs, run.Machine.CPUModel, run.Machine.GoVersion, run.Machine.Nginx, run.Machine.Commit)
	for _, step := range []struct {
		scenarios []string
		run       func(context.Context) ([]Result, error)
	}{
		{[]string{ScenarioRate, ScenarioSaturation}, h.rateAndSaturation},
		{[]string{ScenarioChurn}, h.churn},
		{[]string{ScenarioLarge}, h.large},
	} {
		if !slices.ContainsFunc(step.scenarios, h.wants) {
			continue
		}
		results, err := step.run(ctx)
		run.Results = append(run.Results, results...)
		if err != nil {
			return run, err
		}
	}
	return run, nil
}

func (o *Options) validate() error {
	s := o.Settings
	for _, name := range o.Proxies {
		if !slices.Contains(Proxies, name) {
			return fmt.Errorf("unknown proxy %q: want some of %s", name, strings.Join(Proxies, ","))
		}
	}
	for _, name := range o.Scenarios {
		if !slices.Contains(Scenarios, name) {
			return fmt.Errorf("unknown scenario %q: want some of %s", name, strings.Join(Scenarios, ","))
		}
	}
	switch {
	case s.Pods <= 0 || s.ChurnPods <= 0 || s.LargePods <= 0:
		return errors.New("every scenario needs pods")
	case s.BodyBytes <= 0 || s.LargeBodyBytes <= 0:
		return errors.New("bodies must not be empty")
	case s.Rate <= 0 || s.Concurrency <= 0 || s.LargeBodies <= 0:
		return errors.New("the rate, the concurrency and the large bodies must be positive")
	case s.LargeBodies > s.LargePods:
		return errors.New("the large bodies come from different pods: no more of them than large pods")
	case s.Jitter < 0 || s.ChurnPerSecond < 0:
		return errors.New("the jitter and the churn must not be negative")
	}
	return nil
}

func (h *harness) wants(scenario string) bool { return slices.Contains(h.Scenarios, scenario) }

// proxies returns those of names the run selected, in that order.
func (h *harness) proxies(names []string) []string {
	var selected []string
	for _, name := range names {
		if slices.Contains(h.Proxies, name) {
			selected = append(selected, name)
		}
	}
	return selected
}

// interval is the scrape interval that makes pods targets asked for at
// Rate scrapes a second.
func (h *harness) interval(pods int) time.Duration {
	return time.Duration(float64(pods) / h.Settings.Rate * float64(time.Second))
}

// startPhasePods starts n pods for the named phase, saying so in the log.
func (h *harness) startPhasePods(phase string, n int) (*pods, error) {
	h.log("%s: starting %d pods", phase, n)
	return startPods(h.pod, n)
}

// rateAndSaturation runs the rate and saturation phases through each proxy
// in turn, each proxy started fresh and warmed up.
func (h *harness) rateAndSaturation(ctx context.Context) ([]Result, error) {
	s := h.Settings
	pods, err := h.startPhasePods("rate and saturation", s.Pods)
	if err != nil {
		return nil, err
	}
	// The machine drifts (its other tenants, the kernel's caches): each
	// proxy runs Rounds times, the order reversed every other round, and
	// its rounds are pooled, so that no proxy gets only the good minutes.
	order := h.proxies(Proxies)
	rounds := map[string][]Result{} // by proxy and scenario
	for round := range max(s.Rounds, 1) {
		names := slices.Clone(order)
		if round%2 == 1 {
			slices.Reverse(names)
		}
		for _, name := range names {
			rs, err := h.ratePhases(ctx, name)
			for _, r := range rs {
				rounds[r.Proxy+"/"+r.Scenario] = append(rounds[r.Proxy+"/"+r.Scenario], r)
			}
			if err != nil {
				return append(rs, pooledRounds(order, rounds)...), errors.Join(err, pods.close())
			}
		}
	}
	results := pooledRounds(order, rounds)
	if s.Rounds > 1 {
		for i := range results {
			h.log("pooled %s", progressLine(&results[i]))
		}
	}
	return results, pods.close()
}

// pooledRounds pools each proxy's rounds of each scenario, in order.
func pooledRounds(order []string, rounds map[string][]Result) []Result {
	var results []Result
	for _, name := range order {
		for _, scenario := range []string{ScenarioRate, ScenarioSaturation} {
			if rs := rounds[name+"/"+scenario]; len(rs) > 0 {
				results = append(results, poolRounds(rs))
			}
		}
	}
	return results
}

func (h *harness) ratePhases(ctx context.Context, name string) (results []Result, err error) {
	s := h.Settings
	interval := h.interval(s.Pods)
	targets := newPodTargets(s.Pods, h.PodPort, interval)
	p, err := startProxy(name, h.Binaries, nil, targets[0], h.wire)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, h.stop(p)) }()
	c := newMetricsClient(p.addr, h.wire)
	defer c.close()

	h.log("%s: warming up: every pod once, then %s at %g/s", name, h.WarmUp, s.Rate)
	warm := &tally{}
	closedLoop(c, s.Concurrency, eachOnce(targets), warm)
	sched := newScheduler(c, targets, interval, s.Jitter, s.Concurrency)
	sched.run(ctx, time.Now().Add(h.WarmUp), warm)
	if warm.errors > 0 {
		h.log("%s: %d errors while warming up, e.g. %s", name, warm.errors, warm.samples[0])
	}
	if h.wants(ScenarioRate) {
		r, err := h.measure(p, ScenarioRate, s.Rate, func(tl *tally) {
			sched.run(ctx, time.Now().Add(s.PhaseDuration), tl)
		})
		results = append(results, r)
		h.log("%s", progressLine(&r))
		if err != nil {
			return results, err
		}
	}
	if h.wants(ScenarioSaturation) {
		r, err := h.measure(p, ScenarioSaturation, 0, func(tl *tally) {
			closedLoop(c, s.Concurrency, roundRobin(targets, time.Now().Add(s.PhaseDuration)), tl)
		})
		results = append(results, r)
		h.log("%s", progressLine(&r))
		if err != nil {
			return results, err
		}
	}
	return results, ctx.Err()
}

// stop stops p and shows what it wrote to stderr, if anything: warnings
// explain numbers.
func (h *harness) stop(p *proxy) error {
	err := p.stop()
	if p.stderr != nil {
		if tail := strings.TrimSpace(p.stderr.String()); tail != "" {
			h.log("%s's stderr ends with:\n%s", p.name, tail)
		}
	}
	return err
}

// measure runs phase and returns its Result, with the proxy's CPU over the
// phase and its peak memory so far.
func (h *harness) measure(p *proxy, scenario string, asked float64, phase func(*tally)) (Result, error) {
	cpu0, err := p.cpu()
	if err != nil {
		return Result{}, err
	}
	tl := &tally{}
	start := time.Now()
	phase(tl)
	elapsed := time.Since(start)
	r := tl.result(scenario, p.name, asked, elapsed)
	if scenario == ScenarioRate || scenario == ScenarioChurn {
		r.Extra["missed_slots"] = float64(tl.missed.Load())
	}
	if scenario == ScenarioChurn {
		r.Extra["vanished_pod_errors"] = float64(tl.vanished.Load())
	}
	if err := p.check(); err != nil {
		return r, err
	}
	if p.cmd != nil {
		cpu1, err := p.cpu()
		if err != nil {
			return r, err
		}
		r.cpuSeconds = cpu1 - cpu0
		if r.Scrapes > 0 {
			r.CPUPer1000 = r.cpuSeconds * 1000 / float64(r.Scrapes)
		}
		if _, r.PeakRSS, err = p.memory(); err != nil {
			return r, err
		}
	}
	return r, nil
}

// progressLine is a Result's progress line.
func progressLine(r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s %-10s asked %6.0f/s  achieved %7.1f/s  scrapes %7d  errors %d  late %d  latency p50 %s p99 %s max %s",
		r.Scenario, r.Proxy, r.AskedPerSec, r.AchievedPerSec, r.Scrapes, r.Errors, r.Late,
		roundSeconds(r.Latency.At(0.5)), roundSeconds(r.Latency.At(0.99)), roundSeconds(r.Latency.At(1)))
	if r.PeakRSS > 0 {
		fmt.Fprintf(&b, "  CPU %.3f s/1000  peak RSS %.1f MiB", r.CPUPer1000, float64(r.PeakRSS)/(1<<20))
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range r.Extra {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "  %s %g", k, r.Extra[k])
	}
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(&b, "\n    error: %s", e)
	}
	return b.String()
}

func roundSeconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond).String()
}

// churn replaces ChurnPerSecond pods a second by pods at new addresses
// while scrapegate scrapes the live ones on the rate schedule, to show that
// its pools follow the live set instead of accumulating.
func (h *harness) churn(ctx context.Context) (results []Result, err error) {
	s := h.Settings
	if !slices.Contains(h.Proxies, ProxyScrapegate) {
		return nil, nil
	}
	pods, err := h.startPhasePods("churn", s.ChurnPods)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, pods.close()) }()
	interval := h.interval(s.ChurnPods)
	live := newPodTargets(s.ChurnPods, h.PodPort, interval)
	p, err := startProxy(ProxyScrapegate, h.Binaries, []string{fmt.Sprintf("-endpoint-idle-ttl=%s", h.ChurnEndpointIdleTTL)}, live[0], h.wire)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, h.stop(p)) }()
	c := newMetricsClient(p.addr, h.wire)
	defer c.close()
	closedLoop(c, s.Concurrency, eachOnce(live), &tally{})
	sched := newScheduler(c, live, interval, s.Jitter, s.Concurrency)
	ch := &churner{pods: pods, sched: sched, live: live, all: slices.Clone(live), next: s.ChurnPods, port: h.PodPort, interval: interval}
	r, err := h.churnPhase(ctx, p, ch)
	if err != nil {
		return nil, err
	}
	return []Result{r}, nil
}

// churnPhase measures scrapegate while ch replaces pods.
func (h *harness) churnPhase(ctx context.Context, p *proxy, ch *churner) (Result, error) {
	s := h.Settings
	h.log("churn: %d pods, %g replaced a second, for %s", s.ChurnPods, s.ChurnPerSecond, s.ChurnDuration)
	ch.liveCount.Store(int64(len(ch.live)))
	var series []SeriesPoint
	var churnErr, seriesErr error
	r, err := h.measure(p, ScenarioChurn, s.Rate, func(tl *tally) {
		smp := startSampler(p, &ch.liveCount)
		until := time.Now().Add(s.ChurnDuration)
		var wg sync.WaitGroup
		wg.Go(func() { ch.sched.run(ctx, until, tl) })
		churnErr = ch.run(ctx, s.ChurnPerSecond, until)
		wg.Wait()
		series, seriesErr = smp.finish()
	})
	if err := errors.Join(err, churnErr, seriesErr); err != nil {
		return r, err
	}
	r.Series = series
	r.Extra["distinct_endpoints"] = float64(ch.scraped())
	r.Extra["replaced_pods"] = float64(ch.next - s.ChurnPods)
	r.Extra["endpoint_idle_ttl_seconds"] = h.ChurnEndpointIdleTTL.Seconds()
	for _, pt := range series {
		r.Extra["max_pooled_endpoints"] = max(r.Extra["max_pooled_endpoints"], pt.PooledEndpoints)
	}
	if len(series) > 0 {
		r.Extra["final_pooled_endpoints"] = series[len(series)-1].PooledEndpoints
	}
	h.log("%s", progressLine(&r))
	return r, nil
}

// churner replaces live pods by pods at new addresses, the new pod first,
// as a rolling update does.
type churner struct {
	pods      *pods
	sched     *scheduler
	live      []*podTarget
	all       []*podTarget // every target ever live
	next      int          // the next new pod's index
	port      int
	interval  time.Duration
	liveCount atomic.Int64
}

func (ch *churner) run(ctx context.Context, perSecond float64, until time.Time) error {
	if perSecond == 0 {
		select {
		case <-time.After(time.Until(until)):
		case <-ctx.Done():
		}
		return ctx.Err()
	}
	rnd := rand.New(rand.NewPCG(5, 6))
	tick := time.NewTicker(time.Duration(float64(time.Second) / perSecond))
	defer tick.Stop()
	for {
		select {
		case now := <-tick.C:
			if !now.Before(until) {
				return nil
			}
			if err := ch.replace(rnd.IntN(len(ch.live))); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// replace starts a new pod, then kills live pod i.
func (ch *churner) replace(i int) error {
	if err := ch.pods.add(ch.next, ch.next+1); err != nil {
		return err
	}
	t := newPodTarget(ch.next, ch.port, ch.interval)
	ch.next++
	ch.all = append(ch.all, t)
	ch.sched.add(t)
	ch.liveCount.Add(1)

	old := ch.live[i]
	ch.live[i] = t
	// Its failures are expected from here on, before they can happen.
	ch.sched.remove(old)
	ch.liveCount.Add(-1)
	return ch.pods.remove(old.pod)
}

// scraped counts the targets ever scraped successfully.
func (ch *churner) scraped() int {
	n := 0
	for _, t := range ch.all {
		if t.scraped.Load() {
			n++
		}
	}
	return n
}

// large has each proxy pool LargePods endpoints, then stream LargeBodies
// large bodies at once, to show what its memory does.
func (h *harness) large(ctx context.Context) ([]Result, error) {
	s := h.Settings
	pods, err := h.startPhasePods("large", s.LargePods)
	if err != nil {
		return nil, err
	}
	var results []Result
	for _, name := range h.proxies(largeProxies) {
		if err := ctx.Err(); err != nil {
			return results, errors.Join(err, pods.close())
		}
		r, err := h.largeBodies(name)
		results = append(results, r)
		if err != nil {
			return results, errors.Join(err, pods.close())
		}
	}
	return results, pods.close()
}

func (h *harness) largeBodies(name string) (r Result, err error) {
	s := h.Settings
	targets := newPodTargets(s.LargePods, h.PodPort, time.Second)
	p, err := startProxy(name, h.Binaries, nil, targets[0], h.wire)
	if err != nil {
		return Result{}, err
	}
	defer func() { err = errors.Join(err, h.stop(p)) }()
	smp := startSampler(p, nil)

	h.log("%s: scraping each of %d pods once", name, s.LargePods)
	c := newMetricsClient(p.addr, h.wire)
	defer c.close()
	prime := &tally{}
	closedLoop(c, s.Concurrency, eachOnce(targets), prime)

	h.log("%s: %d scrapes of %d MiB at once", name, s.LargeBodies, s.LargeBodyBytes>>20)
	picked := make([]*podTarget, s.LargeBodies)
	for i := range picked {
		picked[i] = targets[i*(s.LargePods/s.LargeBodies)]
	}
	lc := newLargeClient(p.addr, s.LargeBodyBytes)
	defer lc.close()
	r, err = h.measure(p, ScenarioLarge, 0, func(tl *tally) {
		closedLoop(lc, s.LargeBodies, eachOnce(picked), tl)
	})
	series, seriesErr := smp.finish()
	if err := errors.Join(err, seriesErr); err != nil {
		return r, err
	}
	r.Series = series
	r.Errors += prime.errors
	for _, e := range prime.samples {
		r.ErrorSamples = append(r.ErrorSamples, "scraping each pod once: "+e)
	}
	r.Extra["primed_endpoints"] = float64(prime.scrapes)
	if name == ProxyScrapegate {
		n, err := p.pooledEndpoints()
		if err != nil {
			return r, err
		}
		r.Extra["pooled_endpoints"] = n
	}
	h.log("%s", progressLine(&r))
	return r, nil
}

// sampler records a proxy's Series once a second.
type sampler struct {
	p      *proxy
	live   *atomic.Int64 // live pods; nil when they do not change
	start  time.Time
	stop   chan struct{}
	done   chan struct{}
	points []SeriesPoint
	err    error
}

func startSampler(p *proxy, live *atomic.Int64) *sampler {
	s := &sampler{p: p, live: live, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *sampler) run() {
	defer close(s.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for s.sample() {
		select {
		case <-tick.C:
		case <-s.stop:
			return
		}
	}
}

// sample records one point; false once sampling failed.
func (s *sampler) sample() bool {
	pt := SeriesPoint{Seconds: time.Since(s.start).Seconds()}
	pt.RSS, _, s.err = s.p.memory()
	if s.err == nil && s.p.name == ProxyScrapegate {
		pt.PooledEndpoints, s.err = s.p.pooledEndpoints()
	}
	if s.live != nil {
		pt.LivePods = int(s.live.Load())
	}
	if s.err != nil {
		return false
	}
	s.points = append(s.points, pt)
	return true
}

// finish stops sampling, records a last point and returns the series.
func (s *sampler) finish() ([]SeriesPoint, error) {
	close(s.stop)
	<-s.done
	if s.err == nil {
		s.sample()
	}
	return s.points, s.err
}

// DescribeMachine says where the run happens; what cannot be found out is
// left empty.
func DescribeMachine(nginx string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := exec.Command(nginx, "-v").CombinedOutput(); err == nil {
		m.Nginx = strings.TrimPrefix(strings.TrimSpace(string(b)), "nginx version: ")
	}
	if b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(b))
		if st, err := exec.Command("git", "status", "--porcelain").Output(); err == nil && len(st) > 0 {
			m.Commit += "-dirty"
		}
	}
	return m
}
