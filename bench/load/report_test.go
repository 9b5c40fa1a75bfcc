package load

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testLatency builds a Latency from samples whose quantiles 0.5 and 0.99 are
// exactly p50 and p99 ms, 0.999 is 1.8 × p99 and the rest is a plausible tail.
func testLatency(p50, p99 float64) Latency {
	knots := [][2]float64{{0, 0.6 * p50}, {0.5, p50}, {0.9, p50 + 0.35*(p99-p50)}, {0.99, p99}, {0.999, 1.8 * p99}, {0.9999, 2.6 * p99}, {1, 4 * p99}}
	const n = 100_001
	samples := make([]time.Duration, n)
	for i := range samples {
		q := float64(i) / (n - 1)
		k := 1
		for q > knots[k][0] {
			k++
		}
		a, b := knots[k-1], knots[k]
		ms := a[1] + (q-a[0])/(b[0]-a[0])*(b[1]-a[1])
		samples[i] = time.Duration(math.Round(ms * 1e6))
	}
	return NewLatency(samples)
}

// testRun is a realistic run of every scenario with the four proxies.
func testRun() *Run {
	const mib = 1 << 20
	rate := func(proxy string, p50, p99, cpu float64, rss int64) Result {
		return Result{Scenario: ScenarioRate, Proxy: proxy, AskedPerSec: 2000, AchievedPerSec: 1999.6, Scrapes: 39992,
			Latency: testLatency(p50, p99), CPUPer1000: cpu, PeakRSS: rss}
	}
	sat := func(proxy string, perSec, cpu float64, rss int64) Result {
		return Result{Scenario: ScenarioSaturation, Proxy: proxy, AchievedPerSec: perSec, Scrapes: int64(perSec * 20),
			Latency: testLatency(2, 9), CPUPer1000: cpu, PeakRSS: rss}
	}
	series := func(rss ...int64) []SeriesPoint {
		var s []SeriesPoint
		for i, r := range rss {
			s = append(s, SeriesPoint{Seconds: float64(i), RSS: r * mib, PooledEndpoints: 100, LivePods: 100})
		}
		return s
	}
	return &Run{
		Started: time.Date(2026, 5, 1, 12, 30, 0, 0, time.FixedZone("CEST", 2*3600)),
		Machine: Machine{CPUs: 8, CPUModel: "AMD EPYC 7B13", Kernel: "6.8.0-45-generic", GoVersion: "go1.26.8",
			Nginx: "nginx version: nginx/1.24.0", Commit: "c4e60e0"},
		Settings: Settings{Pods: 1000, BodyBytes: 20 << 10, Gzip: true, WireBytes: 3174, Rate: 2000, Concurrency: 64,
			Jitter: 5 * time.Millisecond, PhaseDuration: 20 * time.Second, ChurnPods: 100, ChurnPerSecond: 10,
			ChurnDuration: time.Minute, LargePods: 1000, LargeBodies: 8, LargeBodyBytes: 64 << 20},
		Results: []Result{
			rate(ProxyDirect, 0.25, 1.2, 0, 0),
			rate(ProxyScrapegate, 0.35, 1.6, 0.04, 30*mib),
			rate(ProxyHTTPUtil, 0.6, 3.5, 0.13, 45*mib),
			rate(ProxyNginx, 0.5, 2.5, 0.07, 20*mib),
			sat(ProxyDirect, 14000, 0, 0),
			sat(ProxyScrapegate, 12000, 0.035, 35*mib),
			sat(ProxyHTTPUtil, 6000, 0.11, 60*mib),
			sat(ProxyNginx, 7000, 0.065, 22*mib),
			{Scenario: ScenarioChurn, Proxy: ProxyScrapegate, Scrapes: 6000, Errors: 2,
				ErrorSamples: []string{"dial tcp 10.0.3.7:9100: connect: connection refused"},
				Series:       series(20, 26, 25, 24),
				Extra:        map[string]float64{"distinct_endpoints": 700, "max_pooled_endpoints": 131, "final_pooled_endpoints": 100, "evicted": 600}},
			{Scenario: ScenarioLarge, Proxy: ProxyScrapegate, Scrapes: 8, PeakRSS: 120 * mib, Series: series(22, 110, 40)},
		},
	}
}

func without(run *Run, scenario, proxy string) *Run {
	var rs []Result
	for _, r := range run.Results {
		if r.Scenario != scenario || r.Proxy != proxy {
			rs = append(rs, r)
		}
	}
	run.Results = rs
	return run
}

func markdown(t *testing.T, run *Run) string {
	t.Helper()
	var b bytes.Buffer
	if err := WriteMarkdown(&b, run, "bench/results/latest.svg"); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// row returns the cells of the first table row, after the line starting with
// section, whose first cell is first.
func row(t *testing.T, md, section, first string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(md, "\n"+section)
	if !ok {
		t.Fatalf("no %q in\n%s", section, md)
	}
	for _, l := range strings.Split(rest, "\n") {
		cells := strings.Split(l, " | ")
		if strings.HasPrefix(l, "| ") && strings.HasPrefix(cells[0][2:], first) {
			cells[0] = cells[0][2:]
			cells[len(cells)-1] = strings.TrimSuffix(cells[len(cells)-1], " |")
			return cells
		}
	}
	t.Fatalf("no row %q under %q in\n%s", first, section, md)
	return nil
}

func TestWriteMarkdownRateTable(t *testing.T) {
	f := func(run *Run, proxy, wantAdded, wantCPU string) {
		t.Helper()
		cells := row(t, markdown(t, run), "**Open loop at 2,000 scrapes/s", proxy)
		if cells[6] != wantAdded {
			t.Errorf("%s: added latency %q, want %q", proxy, cells[6], wantAdded)
		}
		if cells[7] != wantCPU {
			t.Errorf("%s: CPU %q, want %q", proxy, cells[7], wantCPU)
		}
	}
	f(testRun(), ProxyScrapegate, "+0.100 / +0.400 / +0.720", "0.0400")
	f(testRun(), ProxyHTTPUtil, "+0.350 / +2.30 / +4.14", "0.130")
	f(testRun(), ProxyDirect, "—", "—")
	f(without(testRun(), ScenarioRate, ProxyDirect), ProxyScrapegate, "—", "0.0400")

	faster := testRun()
	find(faster, ScenarioRate, ProxyScrapegate).Latency = testLatency(0.2, 1.1)
	f(faster, ProxyScrapegate, "-0.050 / -0.100 / -0.180", "0.0400")
}

func TestWriteMarkdownText(t *testing.T) {
	f := func(run *Run, want, notWant []string) {
		t.Helper()
		md := markdown(t, run)
		for _, s := range want {
			if !strings.Contains(md, s) {
				t.Errorf("no %q in\n%s", s, md)
			}
		}
		for _, s := range notWant {
			if strings.Contains(md, s) {
				t.Errorf("%q in\n%s", s, md)
			}
		}
	}
	f(testRun(), []string{
		"2026-05-01 10:30 UTC, commit `c4e60e0`, 8 CPUs (AMD EPYC 7B13), kernel 6.8.0-45-generic, go1.26.8, nginx/1.24.0. " +
			"1,000 pods, 20 KiB bodies gzip-compressed to 3.1 KiB on the wire, 64 scrapes in flight at most, " +
			"open-loop schedule at 2,000 scrapes/s with ±5 ms jitter, 20 s per phase.\n",
		"| scrapegate | 12,000 | 0.857 | 0.0350 | 0.538 | 0.318 | 35.0 | 0 |",
		"![Scrape latency and CPU per scrape](bench/results/latest.svg)",
		"| scrapegate | 6,000 | 2 | 700 | 131 | 100 | 20.0 / 26.0 / 24.0 | 600 |", // "evicted" listed generically
		"| scrapegate | 8 × 64 MiB | 120.0 | 22.0 / 110.0 | 0 |",
		"- churn, scrapegate: 2 errors, e.g. `dial tcp 10.0.3.7:9100: connect: connection refused`",
		"At equal load (2,000 scrapes/s, open loop) scrapegate's CPU per scrape is 0.571 × nginx's and 0.308 × httputil's.",
	}, nil)
	f(without(testRun(), ScenarioRate, ProxyNginx), []string{"scrapegate's CPU per scrape is 0.308 × httputil's."}, []string{"× nginx's."})
	f(without(testRun(), ScenarioRate, ProxyScrapegate), nil, []string{"At equal load"})
	f(without(without(testRun(), ScenarioChurn, ProxyScrapegate), ScenarioLarge, ProxyScrapegate), nil,
		[]string{"**Churn", "**Large", "**Errors"})
}

func TestTargets(t *testing.T) {
	const mib = 1 << 20
	f := func(target string, change func(*Run), want string) {
		t.Helper()
		run := testRun()
		change(run)
		cells := row(t, markdown(t, run), "**Targets", target)
		ok := cells[2] == want
		if want == "not measured" {
			ok = cells[1] == want && cells[2] == "—"
		}
		if !ok {
			t.Errorf("%s: %q, want %s", target, cells, want)
		}
	}
	set := func(scenario, proxy string, change func(*Result)) func(*Run) {
		return func(run *Run) { change(find(run, scenario, proxy)) }
	}
	drop := func(scenario, proxy string) func(*Run) {
		return func(run *Run) { without(run, scenario, proxy) }
	}

	const cpuNginx = "scrapegate CPU per scrape ≤ 0.6 × nginx"
	f(cpuNginx, set(ScenarioSaturation, ProxyNginx, func(r *Result) { r.CPUPer1000 = 0.0584 }), "✅") // 0.599
	f(cpuNginx, set(ScenarioSaturation, ProxyNginx, func(r *Result) { r.CPUPer1000 = 0.0582 }), "❌") // 0.601
	f(cpuNginx, drop(ScenarioSaturation, ProxyNginx), "not measured")
	f(cpuNginx, set(ScenarioSaturation, ProxyScrapegate, func(r *Result) { r.CPUPer1000 = 0 }), "not measured")

	const cpuHTTPUtil = "scrapegate CPU per scrape ≤ 0.35 × httputil"
	f(cpuHTTPUtil, set(ScenarioSaturation, ProxyHTTPUtil, func(r *Result) { r.CPUPer1000 = 0.101 }), "✅") // 0.347
	f(cpuHTTPUtil, set(ScenarioSaturation, ProxyHTTPUtil, func(r *Result) { r.CPUPer1000 = 0.099 }), "❌") // 0.354
	f(cpuHTTPUtil, drop(ScenarioSaturation, ProxyHTTPUtil), "not measured")

	const tputNginx = "scrapegate throughput at saturation ≥ 1.5 × nginx"
	f(tputNginx, set(ScenarioSaturation, ProxyNginx, func(r *Result) { r.AchievedPerSec = 8000 }), "✅") // 1.5
	f(tputNginx, set(ScenarioSaturation, ProxyNginx, func(r *Result) { r.AchievedPerSec = 8100 }), "❌")
	f(tputNginx, drop(ScenarioSaturation, ProxyNginx), "not measured")

	const tputDirect = "scrapegate throughput at saturation ≥ 0.65 × direct"
	f(tputDirect, set(ScenarioSaturation, ProxyScrapegate, func(r *Result) { r.AchievedPerSec = 9200 }), "✅") // 0.657
	f(tputDirect, set(ScenarioSaturation, ProxyScrapegate, func(r *Result) { r.AchievedPerSec = 9000 }), "❌") // 0.643
	f(tputDirect, drop(ScenarioSaturation, ProxyDirect), "not measured")

	const p99 = "scrapegate added p99 over direct ≤ 1 ms at 2,000 scrapes/s"
	f(p99, set(ScenarioRate, ProxyScrapegate, func(r *Result) { r.Latency = testLatency(0.35, 2.19) }), "✅")
	f(p99, set(ScenarioRate, ProxyScrapegate, func(r *Result) { r.Latency = testLatency(0.35, 2.21) }), "❌")
	f(p99, drop(ScenarioRate, ProxyDirect), "not measured")
	f(p99, set(ScenarioRate, ProxyScrapegate, func(r *Result) { r.Latency = Latency{} }), "not measured")

	const rss = "scrapegate peak RSS ≤ 40 MiB"
	f(rss, func(*Run) {}, "✅")
	f(rss, set(ScenarioSaturation, ProxyScrapegate, func(r *Result) { r.PeakRSS = 41 * mib }), "❌")
	f(rss, set(ScenarioRate, ProxyScrapegate, func(r *Result) { r.PeakRSS = 41 * mib }), "❌") // the max of both counts
	f(rss, drop(ScenarioSaturation, ProxyScrapegate), "✅")
	f(rss, func(run *Run) {
		without(without(run, ScenarioRate, ProxyScrapegate), ScenarioSaturation, ProxyScrapegate)
	}, "not measured")

	const large = "scrapegate peak RSS ≤ 150 MiB with 1,000 endpoints pooled and 8 × 64 MiB bodies"
	f(large, func(*Run) {}, "✅")
	f(large, set(ScenarioLarge, ProxyScrapegate, func(r *Result) { r.PeakRSS = 151 * mib }), "❌")
	f(large, drop(ScenarioLarge, ProxyScrapegate), "not measured")

	// A run of scrapegate alone measures only what needs nothing else.
	alone := func(run *Run) {
		for _, p := range []string{ProxyDirect, ProxyHTTPUtil, ProxyNginx} {
			without(without(run, ScenarioRate, p), ScenarioSaturation, p)
		}
	}
	f(cpuNginx, alone, "not measured")
	f(tputDirect, alone, "not measured")
	f(p99, alone, "not measured")
	f(rss, alone, "✅")
}

// svgShapes decodes an SVG completely and returns its latency lines and CPU
// bars by proxy, failing on any coordinate that is not a number on the canvas.
func svgShapes(t *testing.T, svg []byte) (lines, bars []string) {
	t.Helper()
	onCanvas := func(name, v string, limit float64) {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > limit {
			t.Errorf("%s=%q is off the 960×440 canvas", name, v)
		}
	}
	d := xml.NewDecoder(bytes.NewReader(svg))
	root := true
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG does not decode: %v\n%s", err, svg)
		}
		el, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if root && (el.Name.Local != "svg" || el.Name.Space != "http://www.w3.org/2000/svg") {
			t.Fatalf("root element %v", el.Name)
		}
		root = false
		attr := map[string]string{}
		for _, a := range el.Attr {
			attr[a.Name.Local] = a.Value
		}
		for _, name := range []string{"x", "x1", "x2", "width"} {
			if v, ok := attr[name]; ok && el.Name.Local != "svg" {
				onCanvas(name, v, 960)
			}
		}
		for _, name := range []string{"y", "y1", "y2", "height"} {
			if v, ok := attr[name]; ok && el.Name.Local != "svg" {
				onCanvas(name, v, 440)
			}
		}
		switch {
		case el.Name.Local == "polyline" && attr["class"] == "latency":
			lines = append(lines, attr["data-proxy"])
			for _, pt := range strings.Fields(attr["points"]) {
				x, y, _ := strings.Cut(pt, ",")
				onCanvas("points x", x, 960)
				onCanvas("points y", y, 440)
			}
		case el.Name.Local == "rect" && attr["class"] == "bar":
			bars = append(bars, attr["data-proxy"]+"/"+attr["data-scenario"])
		}
	}
	return lines, bars
}

func TestWriteSVG(t *testing.T) {
	f := func(run *Run, wantLines, wantBars string) {
		t.Helper()
		var a, b bytes.Buffer
		if err := WriteSVG(&a, run); err != nil {
			t.Fatal(err)
		}
		if err := WriteSVG(&b, run); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("two renderings of the same run differ")
		}
		lines, bars := svgShapes(t, a.Bytes())
		if got := strings.Join(lines, " "); got != wantLines {
			t.Errorf("latency lines %q, want %q", got, wantLines)
		}
		if got := strings.Join(bars, " "); got != wantBars {
			t.Errorf("CPU bars %q, want %q", got, wantBars)
		}
	}
	f(testRun(), "direct scrapegate httputil nginx",
		"scrapegate/saturation scrapegate/rate httputil/saturation httputil/rate nginx/saturation nginx/rate")
	f(without(without(testRun(), ScenarioRate, ProxyNginx), ScenarioSaturation, ProxyHTTPUtil), "direct scrapegate httputil",
		"scrapegate/saturation scrapegate/rate httputil/rate nginx/saturation")
	noRate := testRun()
	for _, p := range []string{ProxyDirect, ProxyScrapegate, ProxyHTTPUtil, ProxyNginx} {
		without(noRate, ScenarioRate, p)
	}
	f(noRate, "", "scrapegate/saturation httputil/saturation nginx/saturation")
	f(&Run{}, "", "")

	// A tail 100 times the median switches to a log axis, still on the canvas.
	tail := testRun()
	find(tail, ScenarioRate, ProxyNginx).Latency = testLatency(0.5, 80)
	f(tail, "direct scrapegate httputil nginx",
		"scrapegate/saturation scrapegate/rate httputil/saturation httputil/rate nginx/saturation nginx/rate")
}

func TestUpdateSection(t *testing.T) {
	f := func(readme, section, want string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "operations.md")
		if err := os.WriteFile(path, []byte(readme), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := UpdateSection(path, section); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("got\n%q\nwant\n%q", got, want)
		}
		if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o640 {
			t.Errorf("mode %v (%v), want 0640", info.Mode(), err)
		}
		if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
			t.Errorf("%d files left in the directory, want the page only", len(entries))
		}
	}
	f("# x\n\nintro\n<!-- loadbench:start -->\nold\nold 2\n<!-- loadbench:end -->\n\n## after\r\ntext <!-- loadbench:end -->",
		"new\n",
		"# x\n\nintro\n<!-- loadbench:start -->\nnew\n<!-- loadbench:end -->\n\n## after\r\ntext <!-- loadbench:end -->")
	f("<!-- loadbench:start -->\n<!-- loadbench:end -->", "a\n\nb", "<!-- loadbench:start -->\na\n\nb\n<!-- loadbench:end -->")
	f("a\n<!-- loadbench:start -->\nold\n<!-- loadbench:end -->\nb\n", "", "a\n<!-- loadbench:start -->\n<!-- loadbench:end -->\nb\n")

	fail := func(readme, wantErr string) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "operations.md")
		if err := os.WriteFile(path, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
		err := UpdateSection(path, "new\n")
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("error %v, want one naming %s and saying %q", err, path, wantErr)
		}
		if got, _ := os.ReadFile(path); string(got) != readme {
			t.Errorf("file changed to %q", got)
		}
	}
	fail("# x\n", "no line <!-- loadbench:start -->")
	fail("<!-- loadbench:start -->\nold\n", "no line <!-- loadbench:end -->")
	fail("<!-- loadbench:end -->\n<!-- loadbench:start -->\n", "comes before")
	fail("text <!-- loadbench:start -->\n<!-- loadbench:end -->\n", "no line <!-- loadbench:start -->")
}
