package load

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The lines of docs/operations.md between which UpdateSection puts the
// report.
const (
	SectionStart = "<!-- loadbench:start -->"
	SectionEnd   = "<!-- loadbench:end -->"
)

// WriteMarkdown writes run as Markdown: the run's settings, the rate,
// saturation, churn and large-body tables, the targets and the errors.
// imagePath is the chart's path relative to where the Markdown is read
// ("latest.svg" for bench/results/latest.md, "../bench/results/latest.svg"
// for docs/operations.md). Sections are bold paragraphs, not headings, so the
// same text fits under any heading level of the page it goes into.
func WriteMarkdown(w io.Writer, run *Run, imagePath string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\n\n", describeRun(run))

	if rs := results(run, ScenarioRate); len(rs) > 0 {
		direct := find(run, ScenarioRate, ProxyDirect)
		fmt.Fprintf(&b, "**Open loop at %s scrapes/s**\n\n", commas(scenarioRate(run)))
		b.WriteString("| proxy | asked/s | achieved/s | p50 ms | p99 ms | p99.9 ms | added p50 / p99 / p99.9 ms | CPU s per 1,000 scrapes | peak RSS MiB | late | errors |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, r := range rs {
			added := "—"
			if r.Proxy != ProxyDirect && direct != nil && len(direct.Latency.Seconds) > 0 && len(r.Latency.Seconds) > 0 {
				var cells []string
				for _, q := range []float64{0.5, 0.99, 0.999} {
					cells = append(cells, millis(r.Latency.At(q)-direct.Latency.At(q), true))
				}
				added = strings.Join(cells, " / ")
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				r.Proxy, commas(r.AskedPerSec), commas(r.AchievedPerSec),
				latencyCell(r, 0.5), latencyCell(r, 0.99), latencyCell(r, 0.999), added,
				cpuCell(r), rssCell(r.PeakRSS), commas(float64(r.Late)), commas(float64(r.Errors)))
		}
		b.WriteString("\n")
	}

	if rs := results(run, ScenarioSaturation); len(rs) > 0 {
		direct := find(run, ScenarioSaturation, ProxyDirect)
		nginx := find(run, ScenarioSaturation, ProxyNginx)
		httputil := find(run, ScenarioSaturation, ProxyHTTPUtil)
		fmt.Fprintf(&b, "**Saturation: %d scrapers as fast as they go**\n\n", run.Settings.Concurrency)
		b.WriteString("| proxy | scrapes/s | × direct | CPU s per 1,000 scrapes | × nginx | × httputil | peak RSS MiB | errors |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, r := range rs {
			xDirect := "—"
			if direct != nil && direct.AchievedPerSec > 0 {
				xDirect = sig3(r.AchievedPerSec / direct.AchievedPerSec)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
				r.Proxy, commas(r.AchievedPerSec), xDirect, cpuCell(r),
				cpuRatio(r, nginx), cpuRatio(r, httputil), rssCell(r.PeakRSS), commas(float64(r.Errors)))
		}
		b.WriteString("\n")
	}

	fmt.Fprintf(&b, "![Scrape latency and CPU per scrape](%s)\n\n", imagePath)

	b.WriteString("**Targets for scrapegate**\n\n| target | measured | met |\n|---|---|:-:|\n")
	for _, t := range targets(run) {
		switch {
		case !t.measured:
			fmt.Fprintf(&b, "| %s | not measured | — |\n", t.name)
		case t.met:
			fmt.Fprintf(&b, "| %s | %s | ✅ |\n", t.name, t.value)
		default:
			fmt.Fprintf(&b, "| %s | %s | ❌ |\n", t.name, t.value)
		}
	}
	b.WriteString("\n")
	writeEqualLoadCPU(&b, run)

	if rs := results(run, ScenarioChurn); len(rs) > 0 {
		s := run.Settings
		fmt.Fprintf(&b, "**Churn: %s live pods, %s replaced per second by pods at new addresses, for %s**\n\n",
			commas(float64(s.ChurnPods)), trim1(s.ChurnPerSecond), duration(s.ChurnDuration))
		known := []string{"distinct_endpoints", "max_pooled_endpoints", "final_pooled_endpoints"}
		extra := extraKeys(rs, known)
		b.WriteString("| proxy | scrapes | errors | distinct endpoints | max pooled endpoints | final pooled endpoints | RSS start / max / end MiB |")
		writeExtraHeader(&b, extra, 7)
		for _, r := range rs {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |", r.Proxy, commas(float64(r.Scrapes)), commas(float64(r.Errors)),
				extraCell(r, known[0]), extraCell(r, known[1]), extraCell(r, known[2]), seriesCell(r, true))
			writeExtraCells(&b, r, extra)
		}
		b.WriteString("\n")
	}

	if rs := results(run, ScenarioLarge); len(rs) > 0 {
		s := run.Settings
		fmt.Fprintf(&b, "**Large bodies: %s endpoints pooled, then %d concurrent scrapes of %s bodies**\n\n",
			commas(float64(s.LargePods)), s.LargeBodies, size(s.LargeBodyBytes))
		extra := extraKeys(rs, nil)
		b.WriteString("| proxy | bodies × size | peak RSS MiB | RSS at start / max MiB | errors |")
		writeExtraHeader(&b, extra, 5)
		for _, r := range rs {
			fmt.Fprintf(&b, "| %s | %d × %s | %s | %s | %s |", r.Proxy, s.LargeBodies, size(s.LargeBodyBytes),
				rssCell(r.PeakRSS), seriesCell(r, false), commas(float64(r.Errors)))
			writeExtraCells(&b, r, extra)
		}
		b.WriteString("\n")
	}

	var failed []string
	for _, r := range run.Results {
		if r.Errors == 0 && len(r.ErrorSamples) == 0 {
			continue
		}
		line := fmt.Sprintf("- %s, %s: %s errors", r.Scenario, r.Proxy, commas(float64(r.Errors)))
		for i, e := range r.ErrorSamples {
			sep := "; "
			if i == 0 {
				sep = ", e.g. "
			}
			// Messages go into inline code, which neither a backquote nor a newline may break.
			line += sep + "`" + strings.NewReplacer("`", "'", "\n", " ", "\r", " ").Replace(e) + "`"
		}
		failed = append(failed, line)
	}
	if len(failed) > 0 {
		fmt.Fprintf(&b, "**Errors**\n\n%s\n\n", strings.Join(failed, "\n"))
	}

	_, err := w.Write(bytes.TrimRight(b.Bytes(), "\n"))
	if err == nil {
		_, err = io.WriteString(w, "\n")
	}
	return err
}

// describeRun is the report's first line: when, what, where and how.
func describeRun(run *Run) string {
	var where []string
	if !run.Started.IsZero() {
		where = append(where, run.Started.UTC().Format("2006-01-02 15:04 UTC"))
	}
	m := run.Machine
	if m.Commit != "" {
		where = append(where, "commit `"+m.Commit+"`")
	}
	if m.CPUs > 0 {
		cpus := fmt.Sprintf("%d CPUs", m.CPUs)
		if m.CPUModel != "" {
			cpus += " (" + m.CPUModel + ")"
		}
		where = append(where, cpus)
	}
	if m.Kernel != "" {
		where = append(where, "kernel "+m.Kernel)
	}
	if m.GoVersion != "" {
		where = append(where, m.GoVersion)
	}
	if n := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(m.Nginx), "nginx version:")); n != "" {
		where = append(where, n)
	}

	s := run.Settings
	bodies := size(int64(s.BodyBytes)) + " bodies"
	if s.Gzip {
		bodies += " gzip-compressed to " + size(int64(s.WireBytes)) + " on the wire"
	}
	how := fmt.Sprintf("%s pods, %s, %s scrapes in flight at most, open-loop schedule at %s scrapes/s with ±%s jitter, %s per phase%s.",
		commas(float64(s.Pods)), bodies, commas(float64(s.Concurrency)), commas(s.Rate), duration(s.Jitter), duration(s.PhaseDuration), roundsNote(s.Rounds))
	if len(where) == 0 {
		return how
	}
	return strings.Join(where, ", ") + ". " + how
}

type target struct {
	name     string
	measured bool
	value    string
	met      bool
}

// targets checks scrapegate against its goals; a goal whose inputs the run
// lacks (e.g. -proxies=scrapegate) is not measured rather than failed.
func targets(run *Run) []target {
	s := run.Settings
	sat := func(p string) *Result { return find(run, ScenarioSaturation, p) }
	var ts []target

	cpu := func(limit float64, other string) {
		t := target{name: fmt.Sprintf("scrapegate CPU per scrape ≤ %s × %s's (saturation)", strconv.FormatFloat(limit, 'f', -1, 64), other)}
		sg, o := sat(ProxyScrapegate), sat(other)
		if sg != nil && o != nil && sg.CPUPer1000 > 0 && o.CPUPer1000 > 0 {
			x := sg.CPUPer1000 / o.CPUPer1000
			t.measured, t.met = true, x <= limit
			t.value = fmt.Sprintf("%s × (%s vs %s CPU s per 1,000 scrapes)", sig3(x), sig3(sg.CPUPer1000), sig3(o.CPUPer1000))
		}
		ts = append(ts, t)
	}
	cpu(0.6, ProxyNginx)
	cpu(0.35, ProxyHTTPUtil)

	throughput := func(limit float64, other string) {
		t := target{name: fmt.Sprintf("scrapegate throughput at saturation ≥ %s × %s's", strconv.FormatFloat(limit, 'f', -1, 64), other)}
		sg, o := sat(ProxyScrapegate), sat(other)
		if sg != nil && o != nil && o.AchievedPerSec > 0 {
			x := sg.AchievedPerSec / o.AchievedPerSec
			t.measured, t.met = true, x >= limit
			t.value = fmt.Sprintf("%s × (%s vs %s scrapes/s)", sig3(x), commas(sg.AchievedPerSec), commas(o.AchievedPerSec))
		}
		ts = append(ts, t)
	}
	throughput(1.5, ProxyNginx)
	throughput(0.65, ProxyDirect)

	t := target{name: fmt.Sprintf("scrapegate added p99 over direct ≤ 1 ms at %s scrapes/s", commas(scenarioRate(run)))}
	if sg, d := find(run, ScenarioRate, ProxyScrapegate), find(run, ScenarioRate, ProxyDirect); sg != nil && d != nil &&
		len(sg.Latency.Seconds) > 0 && len(d.Latency.Seconds) > 0 {
		added := sg.Latency.At(0.99) - d.Latency.At(0.99)
		t.measured, t.met = true, added <= 0.001
		t.value = fmt.Sprintf("%s ms (p99 %s vs %s ms)", millis(added, true), millis(sg.Latency.At(0.99), false), millis(d.Latency.At(0.99), false))
	}
	ts = append(ts, t)

	t = target{name: "scrapegate peak RSS ≤ 40 MiB (rate and saturation)"}
	var peak int64
	for _, sc := range []string{ScenarioRate, ScenarioSaturation} {
		if r := find(run, sc, ProxyScrapegate); r != nil && r.PeakRSS > peak {
			peak = r.PeakRSS
		}
	}
	if peak > 0 {
		t.measured, t.met, t.value = true, peak <= 40<<20, mib(peak)+" MiB"
	}
	ts = append(ts, t)

	t = target{name: fmt.Sprintf("scrapegate peak RSS ≤ 150 MiB with %s endpoints pooled and %d × %s bodies",
		commas(float64(s.LargePods)), s.LargeBodies, size(s.LargeBodyBytes))}
	if r := find(run, ScenarioLarge, ProxyScrapegate); r != nil && r.PeakRSS > 0 {
		t.measured, t.met, t.value = true, r.PeakRSS <= 150<<20, mib(r.PeakRSS)+" MiB"
	}
	return append(ts, t)
}

// find returns the result of proxy in scenario, nil if the run has none.
func find(run *Run, scenario, proxy string) *Result {
	for i := range run.Results {
		if r := &run.Results[i]; r.Scenario == scenario && r.Proxy == proxy {
			return r
		}
	}
	return nil
}

var proxyRank = map[string]int{ProxyDirect: 1, ProxyScrapegate: 2, ProxyHTTPUtil: 3, ProxyNginx: 4}

// results returns scenario's results in a fixed proxy order, so reports of
// different runs line up; proxies the harness does not know come last.
func results(run *Run, scenario string) []*Result {
	var rs []*Result
	for i := range run.Results {
		if run.Results[i].Scenario == scenario {
			rs = append(rs, &run.Results[i])
		}
	}
	sort.SliceStable(rs, func(i, j int) bool {
		ri, rj := rank(rs[i].Proxy), rank(rs[j].Proxy)
		if ri != rj {
			return ri < rj
		}
		return rs[i].Proxy < rs[j].Proxy
	})
	return rs
}

func rank(proxy string) int {
	if r, ok := proxyRank[proxy]; ok {
		return r
	}
	return len(proxyRank) + 1
}

// scenarioRate is the rate the rate scenario asked for.
func scenarioRate(run *Run) float64 {
	if run.Settings.Rate > 0 {
		return run.Settings.Rate
	}
	for _, r := range results(run, ScenarioRate) {
		if r.AskedPerSec > 0 {
			return r.AskedPerSec
		}
	}
	return 0
}

func latencyCell(r *Result, q float64) string {
	if len(r.Latency.Seconds) == 0 {
		return "—"
	}
	return millis(r.Latency.At(q), false)
}

func cpuCell(r *Result) string {
	if r.Proxy == ProxyDirect || r.CPUPer1000 <= 0 {
		return "—"
	}
	return sig3(r.CPUPer1000)
}

func cpuRatio(r, base *Result) string {
	if r.Proxy == ProxyDirect || r.CPUPer1000 <= 0 || base == nil || base.CPUPer1000 <= 0 {
		return "—"
	}
	return sig3(r.CPUPer1000 / base.CPUPer1000)
}

func rssCell(b int64) string {
	if b <= 0 {
		return "—"
	}
	return mib(b)
}

// seriesCell is the RSS at the start and the highest of r's series, and the
// end with withEnd.
func seriesCell(r *Result, withEnd bool) string {
	if len(r.Series) == 0 {
		return "—"
	}
	top := r.Series[0].RSS
	for _, p := range r.Series {
		top = max(top, p.RSS)
	}
	cell := mib(r.Series[0].RSS) + " / " + mib(top)
	if withEnd {
		cell += " / " + mib(r.Series[len(r.Series)-1].RSS)
	}
	return cell
}

// extraKeys are the Extra keys of rs not in known, sorted, to list as columns.
func extraKeys(rs []*Result, known []string) []string {
	seen := map[string]bool{}
	for _, k := range known {
		seen[k] = true
	}
	var keys []string
	for _, r := range rs {
		for k := range r.Extra {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}

func writeExtraHeader(b *bytes.Buffer, keys []string, columns int) {
	for _, k := range keys {
		b.WriteString(" " + strings.ReplaceAll(k, "_", " ") + " |")
	}
	b.WriteString("\n|---|" + strings.Repeat("--:|", columns-1+len(keys)) + "\n")
}

func writeExtraCells(b *bytes.Buffer, r *Result, keys []string) {
	for _, k := range keys {
		b.WriteString(" " + extraCell(r, k) + " |")
	}
	b.WriteString("\n")
}

func extraCell(r *Result, key string) string {
	v, ok := r.Extra[key]
	switch {
	case !ok:
		return "—"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return commas(v)
	default:
		return sig3(v)
	}
}

// commas rounds v to an integer with thousands separators: 12,345.
func commas(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return sign + s
}

// sig3 formats v with 3 significant digits and no exponent: 0.0350, 1.71, 123.
func sig3(v float64) string {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	d := max(0, 2-int(math.Floor(math.Log10(math.Abs(v)))))
	return strconv.FormatFloat(v, 'f', d, 64)
}

// millis formats seconds as milliseconds to the microsecond below 1 ms and to
// 3 significant digits above: 0.412, 1.60, 12.3; signed shows + too.
func millis(sec float64, signed bool) string {
	ms := sec * 1e3
	d := 0
	switch a := math.Abs(ms); {
	case a < 1:
		d = 3
	case a < 10:
		d = 2
	case a < 100:
		d = 1
	}
	s := strconv.FormatFloat(ms, 'f', d, 64)
	if signed && !strings.HasPrefix(s, "-") {
		s = "+" + s
	}
	return s
}

func mib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) }

// trim1 rounds to one decimal and drops a trailing ".0".
func trim1(v float64) string {
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
}

// size formats bytes in the largest binary unit that keeps it ≥ 1: 3.1 KiB.
func size(b int64) string {
	v, unit := float64(b), "B"
	for _, u := range []string{"KiB", "MiB", "GiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return trim1(v) + " " + unit
}

func duration(d time.Duration) string {
	if d >= time.Second {
		return trim1(d.Seconds()) + " s"
	}
	return trim1(float64(d)/float64(time.Millisecond)) + " ms"
}

// UpdateSection replaces the lines between SectionStart and SectionEnd in the
// file at path with section, leaving the markers and everything else as they
// were. It replaces the file by renaming a complete copy over it, so a
// failure never leaves a half-written page.
func UpdateSection(path, section string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// Offsets of the start marker's line, of the line after it and of the
	// first end marker's line after it.
	start, afterStart, end, endBefore := -1, -1, -1, false
	for off := 0; off < len(data) && end < 0; {
		next := bytes.IndexByte(data[off:], '\n') + off + 1
		if next == off {
			next = len(data)
		}
		switch strings.TrimSpace(string(data[off:next])) {
		case SectionStart:
			if start < 0 {
				start, afterStart = off, next
			}
		case SectionEnd:
			if start >= 0 {
				end = off
			} else {
				endBefore = true
			}
		}
		off = next
	}
	switch {
	case start < 0:
		return fmt.Errorf("%s: no line %s", path, SectionStart)
	case end < 0 && endBefore:
		return fmt.Errorf("%s: %s comes before %s", path, SectionEnd, SectionStart)
	case end < 0:
		return fmt.Errorf("%s: no line %s after %s", path, SectionEnd, SectionStart)
	}
	if section != "" && !strings.HasSuffix(section, "\n") {
		section += "\n"
	}
	var out bytes.Buffer
	out.Write(data[:afterStart])
	out.WriteString(section)
	out.Write(data[end:])

	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	if _, err := f.Write(out.Bytes()); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(info.Mode().Perm()); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// roundsNote says how the rate and saturation phases were repeated.
func roundsNote(rounds int) string {
	if rounds <= 1 {
		return ""
	}
	return fmt.Sprintf(", %d rounds per proxy in alternating order, pooled", rounds)
}

// writeEqualLoadCPU puts the CPU targets, which the issue sets at
// saturation where each proxy runs at its own rate, beside the same ratios
// at equal load: per-scrape cost falls as load rises, so saturation favours
// the fastest proxy.
func writeEqualLoadCPU(b *bytes.Buffer, run *Run) {
	sg := find(run, ScenarioRate, ProxyScrapegate)
	if sg == nil || sg.CPUPer1000 <= 0 {
		return
	}
	var parts []string
	for _, other := range []string{ProxyNginx, ProxyHTTPUtil} {
		if o := find(run, ScenarioRate, other); o != nil && o.CPUPer1000 > 0 {
			parts = append(parts, fmt.Sprintf("%s × %s's", sig3(sg.CPUPer1000/o.CPUPer1000), other))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(b, "At equal load (%s scrapes/s, open loop) scrapegate's CPU per scrape is %s.\n\n",
			commas(scenarioRate(run)), strings.Join(parts, " and "))
	}
}
