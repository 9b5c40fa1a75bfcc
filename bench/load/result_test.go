package load

import (
	"testing"
	"time"
)

func TestPoolRounds(t *testing.T) {
	round := func(scrapes int64, elapsed time.Duration, cpu float64, rss int64, latency time.Duration) Result {
		samples := make([]time.Duration, scrapes)
		for i := range samples {
			samples[i] = latency
		}
		return Result{Scenario: ScenarioSaturation, Proxy: ProxyScrapegate, Scrapes: scrapes, Errors: 1,
			ErrorSamples: []string{"status 502"}, PeakRSS: rss, samples: samples, elapsed: elapsed, cpuSeconds: cpu,
			Extra: map[string]float64{"missed_slots": 2}}
	}
	// A slow round and a fast one: the pool is their sum, not the mean of
	// their ratios.
	r := poolRounds([]Result{round(1000, time.Second, 0.1, 30<<20, time.Millisecond), round(3000, time.Second, 0.1, 20<<20, 3*time.Millisecond)})
	f := func(what string, got, want float64) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %g, want %g", what, got, want)
		}
	}
	f("scrapes", float64(r.Scrapes), 4000)
	f("errors", float64(r.Errors), 2)
	f("achieved/s", r.AchievedPerSec, 2000)
	f("CPU s per 1000", r.CPUPer1000, 0.05)
	f("peak RSS", float64(r.PeakRSS), 30<<20)
	f("p50", r.Latency.At(0.5), 0.003)
	f("min", r.Latency.At(0), 0.001)
	f("rounds", r.Extra["rounds"], 2)
	f("missed slots", r.Extra["missed_slots"], 4)
	if len(r.ErrorSamples) != 1 {
		t.Errorf("error samples %q, want the one message once", r.ErrorSamples)
	}
}
