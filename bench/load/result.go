package load

import (
	"slices"
	"sort"
	"time"
)

// Run is one harness run: where it ran, what it asked for, and one Result
// per scenario per proxy. It is written to bench/results/latest.json and
// rendered by WriteMarkdown and WriteSVG.
type Run struct {
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Results  []Result  `json:"results"`
}

// Machine describes where the run happened, so numbers are never quoted
// without it.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	Nginx     string `json:"nginx"`  // `nginx -v` output
	Commit    string `json:"commit"` // scrapegate commit measured, from git
}

// Settings are the knobs of a run (cmd/loadbench flags).
type Settings struct {
	Pods           int           `json:"pods"`             // pods in the rate and saturation scenarios
	BodyBytes      int           `json:"body_bytes"`       // uncompressed exposition size per pod
	Gzip           bool          `json:"gzip"`             // pods answer gzip-compressed bodies
	WireBytes      int           `json:"wire_bytes"`       // bytes actually sent per scrape (compressed size when gzip)
	Rate           float64       `json:"rate"`             // scrapes/s asked in the rate scenario
	Concurrency    int           `json:"concurrency"`      // scrapes in flight at most (Prometheus-like scheduler), and the saturation scenario's scrapers
	Jitter         time.Duration `json:"jitter"`           // ± per scrape around its target's fixed offset in the interval
	PhaseDuration  time.Duration `json:"phase_duration"`   // measured time of each rate/saturation phase, after warm-up
	Rounds         int           `json:"rounds"`           // rate and saturation phases per proxy, in alternating order, pooled
	ChurnPods      int           `json:"churn_pods"`       // live pods at any time in the churn scenario
	ChurnPerSecond float64       `json:"churn_per_second"` // pods replaced by new ones (new IPs) per second
	ChurnDuration  time.Duration `json:"churn_duration"`
	LargePods      int           `json:"large_pods"`       // endpoints pooled before the large-body scrapes
	LargeBodies    int           `json:"large_bodies"`     // concurrent large-body scrapes
	LargeBodyBytes int64         `json:"large_body_bytes"` // size of each large body
}

// Result is one proxy in one scenario.
type Result struct {
	Scenario string `json:"scenario"` // ScenarioRate, ScenarioSaturation, ScenarioChurn or ScenarioLarge
	Proxy    string `json:"proxy"`    // ProxyDirect, ProxyScrapegate, ProxyHTTPUtil or ProxyNginx

	AskedPerSec    float64 `json:"asked_per_sec"` // 0: as fast as Concurrency scrapers go
	AchievedPerSec float64 `json:"achieved_per_sec"`
	Scrapes        int64   `json:"scrapes"` // successful: status 200 and the whole body
	Errors         int64   `json:"errors"`
	// ErrorSamples holds up to 5 distinct error messages, to say what failed.
	ErrorSamples []string `json:"error_samples,omitempty"`
	// Late counts scrapes that started more than 10 ms after their scheduled
	// time because Concurrency scrapes were already in flight.
	Late int64 `json:"late"`

	// Latency of successful scrapes, request sent to last body byte read;
	// on the open-loop schedule, plus any wait for one of Concurrency
	// workers.
	Latency Latency `json:"latency"`

	// CPUPer1000 is the proxy's user+system CPU seconds (all its processes,
	// from /proc) per 1,000 scrapes over the measured phase; 0 for direct.
	CPUPer1000 float64 `json:"cpu_seconds_per_1000"`
	// PeakRSS is the proxy's peak resident set (VmHWM; for nginx the sum
	// over master and workers) at the end of the scenario, in bytes.
	PeakRSS int64 `json:"peak_rss_bytes"`

	// Series samples the proxy over the scenario (churn and large: once a
	// second) to show what stays bounded.
	Series []SeriesPoint `json:"series,omitempty"`
	// Extra holds scenario-specific numbers, e.g. "distinct_endpoints",
	// "max_pooled_endpoints", "final_pooled_endpoints".
	Extra map[string]float64 `json:"extra,omitempty"`

	// What pooling rounds needs: the latency samples, the measured time and
	// the proxy's CPU seconds.
	samples    []time.Duration
	elapsed    time.Duration
	cpuSeconds float64
}

// poolRounds merges one proxy's Results of one scenario over the rounds of
// a run, as if they were one phase: every scrape counts once, CPU per scrape
// is total CPU over total scrapes, and the peak is the highest.
func poolRounds(rounds []Result) Result {
	r := rounds[0]
	r.Extra = map[string]float64{"rounds": float64(len(rounds))}
	r.Scrapes, r.Errors, r.Late, r.ErrorSamples, r.samples, r.elapsed, r.cpuSeconds = 0, 0, 0, nil, nil, 0, 0
	for _, round := range rounds {
		r.Scrapes += round.Scrapes
		r.Errors += round.Errors
		r.Late += round.Late
		for _, e := range round.ErrorSamples {
			if len(r.ErrorSamples) < maxErrorSamples && !slices.Contains(r.ErrorSamples, e) {
				r.ErrorSamples = append(r.ErrorSamples, e)
			}
		}
		r.samples = append(r.samples, round.samples...)
		r.elapsed += round.elapsed
		r.cpuSeconds += round.cpuSeconds
		r.PeakRSS = max(r.PeakRSS, round.PeakRSS)
		for k, v := range round.Extra {
			r.Extra[k] += v
		}
	}
	r.AchievedPerSec = float64(r.Scrapes) / r.elapsed.Seconds()
	if r.Scrapes > 0 && r.cpuSeconds > 0 {
		r.CPUPer1000 = r.cpuSeconds * 1000 / float64(r.Scrapes)
	}
	r.Latency = NewLatency(r.samples)
	return r
}

// SeriesPoint is one sample of a proxy during a scenario.
type SeriesPoint struct {
	Seconds         float64 `json:"t"`                          // since the scenario started
	RSS             int64   `json:"rss_bytes"`                  // VmRSS now
	PooledEndpoints float64 `json:"pooled_endpoints,omitempty"` // scrapegate_pooled_endpoints, scrapegate only
	LivePods        int     `json:"live_pods,omitempty"`
}

const (
	ScenarioRate       = "rate"
	ScenarioSaturation = "saturation"
	ScenarioChurn      = "churn"
	ScenarioLarge      = "large"

	ProxyDirect     = "direct"
	ProxyScrapegate = "scrapegate"
	ProxyHTTPUtil   = "httputil"
	ProxyNginx      = "nginx"
)

// Latency is a latency distribution as quantiles.
type Latency struct {
	// Quantiles are at LatencyQuantiles, ascending; Seconds[i] is the
	// latency at LatencyQuantiles[i].
	Seconds []float64 `json:"seconds"`
}

// LatencyQuantiles are the quantiles every Latency holds: enough points to
// draw the distribution, including the ones the table quotes.
var LatencyQuantiles = []float64{0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1}

// NewLatency summarises samples, which it sorts.
func NewLatency(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	l := Latency{Seconds: make([]float64, len(LatencyQuantiles))}
	for i, q := range LatencyQuantiles {
		idx := int(q*float64(len(samples)-1) + 0.5)
		l.Seconds[i] = samples[idx].Seconds()
	}
	return l
}

// At returns the latency at quantile q, which must be one of
// LatencyQuantiles; 0 when there were no samples.
func (l Latency) At(q float64) float64 {
	for i, lq := range LatencyQuantiles {
		if lq == q && i < len(l.Seconds) {
			return l.Seconds[i]
		}
	}
	if len(l.Seconds) == 0 {
		return 0
	}
	panic("BUG: quantile not in LatencyQuantiles")
}
