package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	// readyTimeout bounds how long a proxy may take to answer its first
	// scrape.
	readyTimeout = 15 * time.Second
	// stopTimeout bounds how long a proxy may take to exit after SIGTERM.
	stopTimeout = 30 * time.Second
	// stderrTail is how much of a proxy's stderr is kept to explain a
	// failure.
	stderrTail = 2 << 10
)

// Binaries are the programs the harness runs as proxies.
type Binaries struct {
	Scrapegate    string // scrapegate's binary
	HTTPUtilProxy string // bench/cmd/httputilproxy's binary
	Nginx         string // nginx's binary
	NginxConf     string // the nginx config template, bench/nginx.conf
}

// GoBuild builds the package pkg of this module (an import path) into out.
func GoBuild(pkg, out string) error {
	b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cannot build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// proxy is one proxy process under test; for ProxyDirect, no process at
// all and an empty addr.
type proxy struct {
	name   string
	addr   string
	cmd    *exec.Cmd
	dir    string // nginx's config and temp files
	stderr *tailWriter
	exited chan struct{} // closed once the process has exited; waitErr is set
	// waitErr is the process's exit status.
	waitErr error
}

// startProxy starts the named proxy with extra flags (scrapegate only) and
// returns once it has proxied a scrape of probe.
func startProxy(name string, bins Binaries, extra []string, probe *podTarget, want int64) (*proxy, error) {
	if name == ProxyDirect {
		return &proxy{name: name}, nil
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := &proxy{name: name, addr: addr, stderr: &tailWriter{}, exited: make(chan struct{})}
	switch name {
	case ProxyScrapegate:
		p.cmd = exec.Command(bins.Scrapegate, append([]string{
			"-listen=" + addr,
			"-allow-cidrs=127.0.0.0/8",
			// One caller sends everything here: keep the per-caller
			// limiter on the path, but out of the way.
			"-caller-rate-limit=1000000",
			"-caller-rate-burst=1000000",
			"-drain-delay=0",
			"-log-level=warn",
		}, extra...)...)
	case ProxyHTTPUtil:
		p.cmd = exec.Command(bins.HTTPUtilProxy, "-listen="+addr)
	case ProxyNginx:
		if p.dir, err = renderNginxConf(bins.NginxConf, addr); err != nil {
			return nil, err
		}
		p.cmd = exec.Command(nginxPath(bins.Nginx), "-c", filepath.Join(p.dir, "nginx.conf"))
	default:
		return nil, fmt.Errorf("unknown proxy %q", name)
	}
	p.cmd.Stderr = p.stderr
	// A harness that dies must not leave proxies behind; SIGTERM lets
	// nginx's master take its workers down.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		p.removeDir()
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitReady(probe, want); err != nil {
		_ = p.stop()
		return nil, err
	}
	return p, nil
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("cannot find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// renderNginxConf writes the config for nginx to listen on addr into a new
// directory, which also holds its pid file, error log and temp files.
func renderNginxConf(templatePath, addr string) (string, error) {
	tmpl, err := template.ParseFiles(templatePath)
	if err != nil {
		return "", fmt.Errorf("cannot read the nginx config template: %w", err)
	}
	dir, err := os.MkdirTemp("", "loadbench-nginx-")
	if err != nil {
		return "", fmt.Errorf("cannot create nginx's directory: %w", err)
	}
	// Started as root, nginx's workers run as nobody and must reach the
	// temp paths in here.
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("cannot create nginx's directory: %w", err)
	}
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, struct{ Listen, Dir string }{addr, dir}); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("cannot render the nginx config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), conf.Bytes(), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("cannot write the nginx config: %w", err)
	}
	return dir, nil
}

// waitReady polls until the proxy has answered a scrape of probe: nothing
// signals that a proxy (or nginx's workers) is ready otherwise.
func (p *proxy) waitReady(probe *podTarget, want int64) error {
	c := newMetricsClient(p.addr, want)
	defer c.close()
	deadline := time.Now().Add(readyTimeout)
	for {
		_, err := c.scrape(probe, nil)
		if err == nil {
			return nil
		}
		if err := p.check(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not proxy a scrape within %s: %w", p.name, readyTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// check returns an error if the proxy has died.
func (p *proxy) check() error {
	if p.cmd == nil {
		return nil
	}
	select {
	case <-p.exited:
		return fmt.Errorf("%s died: %v; its stderr ends with:\n%s", p.name, p.waitErr, p.stderr)
	default:
		return nil
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proxy) stop() error {
	if p.cmd == nil {
		return nil
	}
	defer p.removeDir()
	if err := p.check(); err != nil {
		return err
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("cannot stop %s: %w", p.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not exit within %s of SIGTERM; its stderr ends with:\n%s", p.name, stopTimeout, p.stderr)
	}
	if p.waitErr != nil {
		return fmt.Errorf("%s did not exit cleanly after SIGTERM: %w; its stderr ends with:\n%s", p.name, p.waitErr, p.stderr)
	}
	return nil
}

func (p *proxy) removeDir() {
	if p.dir != "" {
		_ = os.RemoveAll(p.dir)
	}
}

// pids returns the proxy's processes: the one started, and its children
// (nginx's workers).
func (p *proxy) pids() ([]int, error) {
	if p.cmd == nil {
		return nil, nil
	}
	kids, err := children(p.cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	return append([]int{p.cmd.Process.Pid}, kids...), nil
}

// cpu returns the CPU seconds the proxy's processes have used.
func (p *proxy) cpu() (float64, error) {
	pids, err := p.pids()
	if err != nil {
		return 0, err
	}
	return cpuSeconds(pids)
}

// memory returns the proxy's resident set now and at its peak.
func (p *proxy) memory() (rss, peak int64, err error) {
	pids, err := p.pids()
	if err != nil {
		return 0, 0, err
	}
	return memory(pids)
}

// pooledEndpoints reads scrapegate_pooled_endpoints from scrapegate's
// /metrics.
func (p *proxy) pooledEndpoints() (float64, error) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + p.addr + "/metrics")
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		return 0, fmt.Errorf("cannot read scrapegate's metrics: %w", err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return 0, fmt.Errorf("cannot read scrapegate's metrics: status %d", resp.StatusCode())
	}
	lines := bufio.NewScanner(bytes.NewReader(resp.Body()))
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), "scrapegate_pooled_endpoints "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("cannot parse scrapegate_pooled_endpoints: %w", err)
			}
			return n, nil
		}
	}
	return 0, errors.New("scrapegate's metrics have no scrapegate_pooled_endpoints")
}

// tailWriter keeps the last stderrTail bytes written to it.
type tailWriter struct {
	mu sync.Mutex
	b  []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if extra := len(w.b) - stderrTail; extra > 0 {
		w.b = append(w.b[:0], w.b[extra:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

// nginxPath finds nginx: Debian installs it in /usr/sbin, which is not on
// every user's PATH.
func nginxPath(name string) string {
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	if _, err := os.Stat("/usr/sbin/" + name); err == nil && !strings.ContainsRune(name, '/') {
		return "/usr/sbin/" + name
	}
	return name
}
