package load

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
)

// proxyColours keeps a proxy's colour the same in every chart; scrapegate's
// is the one that stands out, direct (the floor) is grey.
var proxyColours = map[string]string{
	ProxyDirect:     "#8c8c8c",
	ProxyScrapegate: "#d62728",
	ProxyHTTPUtil:   "#1f77b4",
	ProxyNginx:      "#2ca02c",
}

func colour(proxy string) string {
	if c, ok := proxyColours[proxy]; ok {
		return c
	}
	return "#ff7f0e"
}

// box is a plot area in SVG pixels; y grows downwards.
type box struct{ x0, y0, x1, y1 float64 }

// WriteSVG draws run's rate-scenario latency distributions and the CPU per
// scrape of each proxy as a self-contained SVG. The output depends only on
// run, so an unchanged run gives an unchanged file.
func WriteSVG(w io.Writer, run *Run) error {
	var b bytes.Buffer
	b.WriteString(`<svg xmlns="http://www.w3.org/2000/svg" width="960" height="440" viewBox="0 0 960 440" font-family="sans-serif" font-size="12" fill="#222">` + "\n")
	b.WriteString(`<rect width="960" height="440" fill="#fff"/>` + "\n")
	latencyPanel(&b, run, box{70, 50, 520, 380})
	cpuPanel(&b, run, box{640, 70, 935, 380})
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// latencyPanel plots each proxy's latency against the quantile on a nines
// scale, x = -log10(1-q), where the tail, which proxies make worse, gets
// as much room as the median. q=0 and q=1 have no place on it.
func latencyPanel(b *bytes.Buffer, run *Run, p box) {
	title := "Scrape latency (open loop)"
	if rate := scenarioRate(run); rate > 0 {
		title = fmt.Sprintf("Scrape latency at %s scrapes/s (open loop)", commas(rate))
	}
	text(b, (p.x0+p.x1)/2, 28, "middle", 15, "bold", title)
	var rs []*Result
	lo, hi := math.Inf(1), 0.0
	for _, r := range results(run, ScenarioRate) {
		if len(r.Latency.Seconds) != len(LatencyQuantiles) {
			continue
		}
		rs = append(rs, r)
		for i, q := range LatencyQuantiles {
			if v := r.Latency.Seconds[i] * 1e3; q > 0 && q < 1 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if len(rs) == 0 || hi <= 0 {
		text(b, (p.x0+p.x1)/2, (p.y0+p.y1)/2, "middle", 13, "normal", "no latencies in this run")
		return
	}

	const maxNines = 4 // 99.99%
	fx := func(q float64) float64 { return p.x0 + -math.Log10(1-q)/maxNines*(p.x1-p.x0) }
	var fy func(ms float64) float64
	var ticks []float64
	// A linear axis from 0 shows how much a proxy adds; when the tail is
	// more than 50 times the fastest scrape it would flatten everything
	// else, so the axis turns logarithmic.
	if lo > 0 && hi/lo > 50 {
		bottom, top := math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
		fy = func(ms float64) float64 {
			return p.y1 - math.Log10(max(ms, bottom)/bottom)/math.Log10(top/bottom)*(p.y1-p.y0)
		}
		for d := bottom; d < top*1.01; d *= 10 {
			for _, m := range []float64{1, 2, 5} {
				if m*d <= top*1.0001 {
					ticks = append(ticks, m*d)
				}
			}
		}
	} else {
		step := niceStep(hi / 5)
		top := math.Ceil(hi/step) * step
		fy = func(ms float64) float64 { return p.y1 - ms/top*(p.y1-p.y0) }
		for i := 0.0; i*step <= top*1.0001; i++ {
			ticks = append(ticks, i*step)
		}
	}
	for _, t := range ticks {
		y := fy(t)
		line(b, p.x0, y, p.x1, y, "#e4e4e4", 1)
		text(b, p.x0-6, y+4, "end", 11, "normal", tickLabel(t))
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 0.9999} {
		x := fx(q)
		line(b, x, p.y0, x, p.y1, "#e4e4e4", 1)
		text(b, x, p.y1+17, "middle", 11, "normal", strconv.FormatFloat(q*100, 'g', 6, 64)+"%")
	}
	line(b, p.x0, p.y1, p.x1, p.y1, "#444", 1)
	line(b, p.x0, p.y0, p.x0, p.y1, "#444", 1)
	text(b, (p.x0+p.x1)/2, p.y1+36, "middle", 12, "normal", "quantile (nines scale)")
	fmt.Fprintf(b, `<text x="20" y="%.1f" text-anchor="middle" font-size="12" transform="rotate(-90 20 %.1f)">latency (ms)</text>`+"\n", (p.y0+p.y1)/2, (p.y0+p.y1)/2)

	// The legend goes top left, where latencies are lowest; its backing
	// keeps it readable if a line passes under it anyway.
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="270" height="%d" fill="#fff" fill-opacity="0.85"/>`+"\n", p.x0+6, p.y0+3, 18*len(rs)+4)
	for i, r := range rs {
		var pts bytes.Buffer
		for j, q := range LatencyQuantiles {
			if q > 0 && q < 1 {
				fmt.Fprintf(&pts, "%.1f,%.1f ", fx(q), fy(r.Latency.Seconds[j]*1e3))
			}
		}
		width := 2.0
		if r.Proxy == ProxyScrapegate {
			width = 3
		}
		fmt.Fprintf(b, `<polyline class="latency" data-proxy="%s" fill="none" stroke="%s" stroke-width="%.0f" stroke-linejoin="round" points="%s"/>`+"\n",
			esc(r.Proxy), colour(r.Proxy), width, bytes.TrimSpace(pts.Bytes()))
		y := p.y0 + 16 + float64(i)*18
		line(b, p.x0+12, y-4, p.x0+34, y-4, colour(r.Proxy), width)
		text(b, p.x0+40, y, "start", 12, "normal", fmt.Sprintf("%s: p50 %s, p99 %s ms", r.Proxy, millis(r.Latency.At(0.5), false), millis(r.Latency.At(0.99), false)))
	}
}

// cpuPanel draws CPU ms per scrape (CPU s per 1,000 scrapes) per proxy, a
// solid bar at saturation next to a light one in the rate scenario.
func cpuPanel(b *bytes.Buffer, run *Run, p box) {
	text(b, (p.x0+p.x1)/2, 28, "middle", 15, "bold", "CPU per scrape (lower is better)")
	scenarios := []struct{ name, label, opacity string }{
		{ScenarioSaturation, "at saturation", "1"},
		{ScenarioRate, "at " + commas(scenarioRate(run)) + " scrapes/s", "0.4"},
	}
	var proxies []string
	top := 0.0
	for _, r := range append(results(run, ScenarioSaturation), results(run, ScenarioRate)...) {
		if r.Proxy == ProxyDirect || r.CPUPer1000 <= 0 {
			continue
		}
		top = max(top, r.CPUPer1000)
		known := false
		for _, q := range proxies {
			known = known || q == r.Proxy
		}
		if !known {
			proxies = append(proxies, r.Proxy)
		}
	}
	if len(proxies) == 0 {
		text(b, (p.x0+p.x1)/2, (p.y0+p.y1)/2, "middle", 13, "normal", "no CPU measurements in this run")
		return
	}
	// Saturation results come first, so a proxy measured only in the rate
	// scenario is out of order; sort by the same rank as the tables.
	for i := 1; i < len(proxies); i++ {
		for j := i; j > 0 && rank(proxies[j]) < rank(proxies[j-1]); j-- {
			proxies[j], proxies[j-1] = proxies[j-1], proxies[j]
		}
	}

	step := niceStep(top * 1.1 / 5) // 10% headroom for the value labels
	top = math.Ceil(top*1.1/step) * step
	fy := func(v float64) float64 { return p.y1 - v/top*(p.y1-p.y0) }
	for i := 0.0; i*step <= top*1.0001; i++ {
		y := fy(i * step)
		line(b, p.x0, y, p.x1, y, "#e4e4e4", 1)
		text(b, p.x0-6, y+4, "end", 11, "normal", tickLabel(i*step))
	}
	line(b, p.x0, p.y1, p.x1, p.y1, "#444", 1)
	line(b, p.x0, p.y0, p.x0, p.y1, "#444", 1)
	fmt.Fprintf(b, `<text x="585" y="%.1f" text-anchor="middle" font-size="12" transform="rotate(-90 585 %.1f)">CPU ms per scrape</text>`+"\n", (p.y0+p.y1)/2, (p.y0+p.y1)/2)
	for i, s := range scenarios {
		x := p.x0 + 10 + float64(i)*135
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="14" height="12" fill="#555" fill-opacity="%s" stroke="#555"/>`+"\n", x, p.y0-28, s.opacity)
		text(b, x+19, p.y0-18, "start", 12, "normal", s.label)
	}

	group := (p.x1 - p.x0) / float64(len(proxies))
	bar := min(group*0.34, 60)
	for i, proxy := range proxies {
		mid := p.x0 + group*(float64(i)+0.5)
		text(b, mid, p.y1+17, "middle", 12, "normal", proxy)
		for j, s := range scenarios {
			r := find(run, s.name, proxy)
			if r == nil || r.CPUPer1000 <= 0 {
				continue
			}
			x, y := mid-bar-2+float64(j)*(bar+4), fy(r.CPUPer1000)
			fmt.Fprintf(b, `<rect class="bar" data-proxy="%s" data-scenario="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" fill-opacity="%s" stroke="%s"/>`+"\n",
				esc(proxy), s.name, x, y, bar, p.y1-y, colour(proxy), s.opacity, colour(proxy))
			text(b, x+bar/2, y-5, "middle", 11, "normal", strconv.FormatFloat(r.CPUPer1000, 'g', 2, 64))
		}
	}
}

// niceStep is the smallest of 1, 2 or 5 times a power of ten that is at least v.
func niceStep(v float64) float64 {
	d := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5} {
		if m*d >= v*0.9999 {
			return m * d
		}
	}
	return 10 * d
}

// tickLabel drops the float noise of summed steps: 0.3, not 0.30000000000000004.
func tickLabel(v float64) string {
	return strconv.FormatFloat(v, 'g', 6, 64)
}

func line(b *bytes.Buffer, x0, y0, x1, y1 float64, stroke string, width float64) {
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%g"/>`+"\n", x0, y0, x1, y1, stroke, width)
}

func text(b *bytes.Buffer, x, y float64, anchor string, size int, weight, s string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d" font-weight="%s">%s</text>`+"\n", x, y, anchor, size, weight, esc(s))
}

func esc(s string) string {
	var b bytes.Buffer
	xml.EscapeText(&b, []byte(s)) // writes to a bytes.Buffer cannot fail
	return b.String()
}
