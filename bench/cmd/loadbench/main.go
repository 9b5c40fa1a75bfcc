// Command loadbench runs scrapegate's load harness (package bench/load):
// the same Prometheus-like scrape schedule against simulated pods directly,
// through scrapegate, through httputil.ReverseProxy and through nginx. It
// writes the Run to bench/results/latest.json, renders latest.md and
// latest.svg beside it, and updates the Performance section of
// docs/operations.md. Run it from the repository's root after `make build`.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/scrapegate/scrapegate/bench/load"
)

func main() {
	// The harness runs its pods in copies of this binary.
	load.ServePodsIfChild()
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "loadbench: %s\n", err)
		os.Exit(1)
	}
}

type flags struct {
	opts       load.Options
	proxies    string
	scenarios  string
	out        string
	doc        string
	largeBytes int64
}

func parseFlags() *flags {
	f := &flags{}
	s := &f.opts.Settings
	b := &f.opts.Binaries
	flag.IntVar(&s.Pods, "pods", 1000, "Pods in the rate and saturation scenarios.")
	flag.IntVar(&s.BodyBytes, "body-bytes", 20<<10, "Uncompressed size of each pod's /metrics body.")
	flag.BoolVar(&s.Gzip, "gzip", true, "Pods answer gzip-compressed bodies to scrapes that accept them, as Prometheus's do.")
	flag.Float64Var(&s.Rate, "rate", 2000, "Scrapes a second asked of the rate and churn scenarios: the scrape interval is pods/rate.")
	flag.IntVar(&s.Concurrency, "concurrency", 64, "Scrapes in flight at most on the schedule; also the saturation scenario's closed-loop scrapers.")
	flag.DurationVar(&s.Jitter, "jitter", 5*time.Millisecond, "Each scrape happens up to this much before or after its target's fixed time in the interval.")
	flag.DurationVar(&s.PhaseDuration, "phase", 10*time.Second, "Measured time of each rate and saturation phase.")
	flag.IntVar(&s.Rounds, "rounds", 3, "Rate and saturation phases per proxy, in alternating order (direct first, then last, ...): each proxy's rounds are pooled, so that drift of the machine does not favour one.")
	flag.DurationVar(&f.opts.WarmUp, "warm-up", 2*time.Second, "Rate schedule run through each proxy, after scraping every pod once, before measuring.")
	flag.IntVar(&s.ChurnPods, "churn-pods", 1000, "Live pods in the churn scenario.")
	flag.Float64Var(&s.ChurnPerSecond, "churn-per-second", 50, "Pods replaced a second by pods at new addresses in the churn scenario.")
	flag.DurationVar(&s.ChurnDuration, "churn-duration", 60*time.Second, "Length of the churn scenario.")
	flag.DurationVar(&f.opts.ChurnEndpointIdleTTL, "churn-endpoint-idle-ttl", 5*time.Second, "scrapegate's -endpoint-idle-ttl in the churn scenario: how long a vanished pod's pool may stay.")
	flag.IntVar(&s.LargePods, "large-pods", 10000, "Pods each scraped once through the proxy before the large bodies, so that it holds that many endpoints.")
	flag.IntVar(&s.LargeBodies, "large-bodies", 64, "Large bodies scraped at once, from different pods.")
	flag.Int64Var(&f.largeBytes, "large-body-mib", 256, "Size of each large body in MiB.")
	flag.IntVar(&f.opts.PodPort, "pod-port", 9100, "Port every pod listens on, each on its own 127.100.x.y address.")
	flag.StringVar(&f.proxies, "proxies", strings.Join(load.Proxies, ","), "Comma-separated proxies to run, of "+strings.Join(load.Proxies, ",")+".")
	flag.StringVar(&f.scenarios, "scenarios", strings.Join(load.Scenarios, ","), "Comma-separated scenarios to run, of "+strings.Join(load.Scenarios, ",")+". Churn runs scrapegate only; large all proxies but direct.")
	flag.StringVar(&b.Scrapegate, "scrapegate-bin", "bin/scrapegate", "scrapegate binary to measure (make build).")
	flag.StringVar(&b.HTTPUtilProxy, "httputil-bin", "", "bench/cmd/httputilproxy binary. Empty: build it into a temporary directory.")
	flag.StringVar(&b.Nginx, "nginx-bin", "nginx", "nginx binary.")
	flag.StringVar(&b.NginxConf, "nginx-conf", "bench/nginx.conf", "nginx config template.")
	flag.StringVar(&f.out, "out", "bench/results", "Directory to write latest.json, latest.md and latest.svg to.")
	flag.StringVar(&f.doc, "doc", "docs/operations.md", "Markdown page whose lines between "+load.SectionStart+" and "+load.SectionEnd+" to replace with the results. Empty: leave it alone.")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: loadbench [flags]\n\nRuns scrapegate's load harness from the repository's root and writes its results.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	s.LargeBodyBytes = f.largeBytes << 20
	f.opts.Proxies = strings.Split(f.proxies, ",")
	f.opts.Scenarios = strings.Split(f.scenarios, ",")
	f.opts.Progress = os.Stderr
	return f
}

func run() error {
	f := parseFlags()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if f.opts.Binaries.HTTPUtilProxy == "" {
		dir, err := os.MkdirTemp("", "loadbench-")
		if err != nil {
			return fmt.Errorf("cannot build httputilproxy: %w", err)
		}
		defer os.RemoveAll(dir)
		f.opts.Binaries.HTTPUtilProxy = filepath.Join(dir, "httputilproxy")
		if err := load.GoBuild("github.com/scrapegate/scrapegate/bench/cmd/httputilproxy", f.opts.Binaries.HTTPUtilProxy); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	started := time.Now()
	r, err := load.Execute(ctx, f.opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "done in %s\n", time.Since(started).Round(time.Second))
	return write(r, f.out, f.doc)
}

// write saves the run and its renderings, then the page's section.
func write(r *load.Run, out, doc string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("cannot write the results: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("cannot encode the results: %w", err)
	}
	var md, svg, section bytes.Buffer
	if err := load.WriteMarkdown(&md, r, "latest.svg"); err != nil {
		return fmt.Errorf("cannot render the results: %w", err)
	}
	if err := load.WriteSVG(&svg, r); err != nil {
		return fmt.Errorf("cannot render the chart: %w", err)
	}
	for name, b := range map[string][]byte{"latest.json": append(js, '\n'), "latest.md": md.Bytes(), "latest.svg": svg.Bytes()} {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return fmt.Errorf("cannot write the results: %w", err)
		}
	}
	if doc == "" {
		return nil
	}
	// The page links the chart relative to its own directory.
	chart, err := filepath.Rel(filepath.Dir(doc), filepath.Join(out, "latest.svg"))
	if err != nil {
		return fmt.Errorf("cannot link the chart from %s: %w", doc, err)
	}
	if err := load.WriteMarkdown(&section, r, filepath.ToSlash(chart)); err != nil {
		return fmt.Errorf("cannot render the results: %w", err)
	}
	if err := load.UpdateSection(doc, section.String()); err != nil {
		return fmt.Errorf("cannot update %s: %w", doc, err)
	}
	return nil
}
