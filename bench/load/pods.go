package load

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"
)

const (
	// podShardEnv selects the pod-shard mode of the harness's own binary:
	// it holds the shard's podConfig as JSON.
	podShardEnv = "SCRAPEGATE_LOADBENCH_POD_SHARD"
	// podsPerShard bounds the pods of one process. Each pod is a listener
	// plus the connections the proxy keeps to it, and the hard limit on
	// open files here is 20000.
	podsPerShard = 2500

	expositionContentType = "text/plain; version=0.0.4; charset=utf-8"
	// largeChunkBytes is about the size of the chunk /large repeats.
	largeChunkBytes = 256 << 10
)

// podBase is pod 0's address; pod i is podBase+i, away from 127.0.0.0/16
// where the proxies and the harness listen.
var podBase = netip.AddrFrom4([4]byte{127, 100, 0, 0})

// podConfig is what every pod answers; the harness passes it to its shards.
type podConfig struct {
	Port           int   `json:"port"`
	BodyBytes      int   `json:"body_bytes"`
	Gzip           bool  `json:"gzip"`
	LargeBodyBytes int64 `json:"large_body_bytes"`
}

// podAddr returns pod i's ip:port.
func podAddr(i, port int) netip.AddrPort {
	b := podBase.As4()
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(i))
	return netip.AddrPortFrom(netip.AddrFrom4(b), uint16(port))
}

// podBodies are the bytes every pod serves, built once per process: the
// same for all pods so that 10,000 pods cost one body.
type podBodies struct {
	plain []byte // the exposition, BodyBytes long
	gz    []byte // plain gzip-compressed; nil without Gzip
	chunk []byte // plain repeated, what /large streams over and over
}

func newPodBodies(cfg podConfig) podBodies {
	b := podBodies{plain: exposition(cfg.BodyBytes)}
	if cfg.Gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b.plain)
		_ = zw.Close()
		b.gz = buf.Bytes()
	}
	b.chunk = bytes.Repeat(b.plain, largeChunkBytes/len(b.plain)+1)
	return b
}

// wireBytes is what one /metrics scrape that accepts gzip receives.
func (b podBodies) wireBytes() int {
	if b.gz != nil {
		return len(b.gz)
	}
	return len(b.plain)
}

// exposition returns size bytes of Prometheus text format that look like an
// application's: counters and gauges with labels and histograms, with
// values that vary as much as real ones, so that gzip compresses it as much
// as it would compress a real one.
func exposition(size int) []byte {
	rnd := rand.New(rand.NewPCG(1, 2))
	handlers := []string{"/api/v1/query", "/api/v1/series", "/api/v1/labels", "/metrics", "/healthz", "/api/v1/write"}
	methods := []string{"GET", "POST"}
	buckets := []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}
	var out, family bytes.Buffer
	for f := 0; ; f++ {
		family.Reset()
		sub := fmt.Sprintf("app_subsystem%d", f)
		switch f % 3 {
		case 0:
			fmt.Fprintf(&family, "# HELP %s_requests_total Requests handled, by handler, method and code.\n# TYPE %s_requests_total counter\n", sub, sub)
			for _, h := range handlers {
				for _, m := range methods {
					fmt.Fprintf(&family, "%s_requests_total{code=\"200\",handler=%q,method=%q} %d\n", sub, h, m, rnd.IntN(1e9))
				}
			}
		case 1:
			fmt.Fprintf(&family, "# HELP %s_queue_bytes Bytes waiting in each queue.\n# TYPE %s_queue_bytes gauge\n", sub, sub)
			for q := range 8 {
				fmt.Fprintf(&family, "%s_queue_bytes{queue=\"shard-%d\",zone=\"eu-west-1%c\"} %g\n", sub, q, 'a'+rune(q%3), rnd.Float64()*1e7)
			}
		case 2:
			fmt.Fprintf(&family, "# HELP %s_request_duration_seconds Time to answer a request.\n# TYPE %s_request_duration_seconds histogram\n", sub, sub)
			for _, h := range handlers[:3] {
				n := 0
				for _, le := range buckets {
					n += rnd.IntN(5000)
					fmt.Fprintf(&family, "%s_request_duration_seconds_bucket{handler=%q,le=%q} %d\n", sub, h, le, n)
				}
				fmt.Fprintf(&family, "%s_request_duration_seconds_sum{handler=%q} %g\n", sub, h, rnd.Float64()*float64(n))
				fmt.Fprintf(&family, "%s_request_duration_seconds_count{handler=%q} %d\n", sub, h, n)
			}
		}
		if out.Len()+family.Len() > size {
			break
		}
		out.Write(family.Bytes())
	}
	padComment(&out, size-out.Len())
	return out.Bytes()
}

// padComment appends n bytes that a Prometheus parser ignores: a comment
// line, or an empty line when there is room for nothing else.
func padComment(b *bytes.Buffer, n int) {
	switch {
	case n <= 0:
	case n == 1:
		b.WriteByte('\n')
	default:
		b.WriteString("#" + strings.Repeat(" ", n-2) + "\n")
	}
}

// pods runs simulated pods in child processes (shards) of podsPerShard
// consecutive indices each, started when their first pod is added. Its
// methods must not be called concurrently.
type pods struct {
	cfg    podConfig
	exe    string
	shards map[int]*shard
}

// shard is one child process, driven by lines on its stdin: "add FROM TO"
// and "remove FROM TO" (pods [FROM, TO)), each answered by "ok" or
// "error: ..." on its stdout once done.
type shard struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startPods starts pods 0 to n-1.
func startPods(cfg podConfig, n int) (*pods, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("cannot find the harness's binary to run pods: %w", err)
	}
	p := &pods{cfg: cfg, exe: exe, shards: make(map[int]*shard)}
	if err := p.add(0, n); err != nil {
		_ = p.close()
		return nil, err
	}
	return p, nil
}

// add starts pods [from, to) and returns once they are listening.
func (p *pods) add(from, to int) error {
	for from < to {
		s, err := p.shard(from / podsPerShard)
		if err != nil {
			return err
		}
		end := min(to, (from/podsPerShard+1)*podsPerShard)
		if err := s.do("add", from, end); err != nil {
			return err
		}
		from = end
	}
	return nil
}

// remove kills pod i: its listener and its open connections are closed.
func (p *pods) remove(i int) error {
	s, err := p.shard(i / podsPerShard)
	if err != nil {
		return err
	}
	return s.do("remove", i, i+1)
}

func (p *pods) shard(n int) (*shard, error) {
	if s := p.shards[n]; s != nil {
		return s, nil
	}
	s, err := startShard(p.exe, p.cfg)
	if err != nil {
		return nil, err
	}
	p.shards[n] = s
	return s, nil
}

// close stops every shard: closing its stdin makes it exit.
func (p *pods) close() error {
	var errs []error
	for n, s := range p.shards {
		_ = s.in.Close()
		if err := s.cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("pod shard %d failed: %w", n, err))
		}
	}
	p.shards = nil
	return errors.Join(errs...)
}

func startShard(exe string, cfg podConfig) (*shard, error) {
	env, err := json.Marshal(cfg)
	if err != nil {
		panic("BUG: a podConfig marshals: " + err.Error())
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), podShardEnv+"="+string(env))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("cannot start a pod shard: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("cannot start a pod shard: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start a pod shard: %w", err)
	}
	s := &shard{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	if err := s.reply(); err != nil {
		_ = in.Close()
		_ = cmd.Wait()
		return nil, fmt.Errorf("pod shard did not start: %w", err)
	}
	return s, nil
}

func (s *shard) do(op string, from, to int) error {
	if _, err := fmt.Fprintf(s.in, "%s %d %d\n", op, from, to); err != nil {
		return fmt.Errorf("cannot %s pods %d-%d: %w", op, from, to-1, err)
	}
	if err := s.reply(); err != nil {
		return fmt.Errorf("cannot %s pods %d-%d: %w", op, from, to-1, err)
	}
	return nil
}

// reply reads the shard's answer to its start ("ready") or to a command.
func (s *shard) reply() error {
	if !s.out.Scan() {
		if err := s.out.Err(); err != nil {
			return err
		}
		return errors.New("the pod shard exited")
	}
	switch line := s.out.Text(); line {
	case "ok", "ready":
		return nil
	default:
		return errors.New(strings.TrimPrefix(line, "error: "))
	}
}

// ServePodsIfChild turns the process into a pod shard, and exits when its
// stdin closes, if the harness started it as one (podShardEnv); otherwise
// it returns at once. Programs using the harness call it first thing in
// main, or in TestMain for tests.
func ServePodsIfChild() {
	env, ok := os.LookupEnv(podShardEnv)
	if !ok {
		return
	}
	if err := servePodShard(env, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "pod shard: %s\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func servePodShard(env string, in io.Reader, out io.Writer) error {
	var cfg podConfig
	if err := json.Unmarshal([]byte(env), &cfg); err != nil {
		return fmt.Errorf("cannot parse %s: %w", podShardEnv, err)
	}
	s := newPodServer(cfg)
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.ln) }()
	fmt.Fprintln(out, "ready")
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		if err := s.command(lines.Text()); err != nil {
			fmt.Fprintf(out, "error: %s\n", err)
		} else {
			fmt.Fprintln(out, "ok")
		}
	}
	for i := range s.pods {
		s.kill(i)
	}
	_ = s.ln.Close()
	if err := <-served; err != nil {
		return fmt.Errorf("cannot serve pods: %w", err)
	}
	return lines.Err()
}

// podServer is one shard's pods: a listener each, all served by one
// fasthttp.Server through an aggregating listener.
type podServer struct {
	cfg    podConfig
	bodies podBodies
	ln     *muxListener
	srv    *fasthttp.Server
	pods   map[int]*pod // only the command loop touches it
}

func newPodServer(cfg podConfig) *podServer {
	s := &podServer{
		cfg:    cfg,
		bodies: newPodBodies(cfg),
		ln:     &muxListener{conns: make(chan net.Conn), closed: make(chan struct{})},
		pods:   make(map[int]*pod),
	}
	s.srv = &fasthttp.Server{Handler: s.handle, Name: "loadbench-pod"}
	return s
}

func (s *podServer) command(line string) error {
	f := strings.Fields(line)
	if len(f) != 3 {
		return fmt.Errorf("bad command %q", line)
	}
	from, err1 := strconv.Atoi(f[1])
	to, err2 := strconv.Atoi(f[2])
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("bad command %q: %w", line, err)
	}
	for i := from; i < to; i++ {
		switch f[0] {
		case "add":
			if err := s.add(i); err != nil {
				return err
			}
		case "remove":
			s.kill(i)
		default:
			return fmt.Errorf("bad command %q", line)
		}
	}
	return nil
}

func (s *podServer) add(i int) error {
	if s.pods[i] != nil {
		return fmt.Errorf("pod %d is already running", i)
	}
	addr := podAddr(i, s.cfg.Port)
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		return fmt.Errorf("cannot start pod %d: %w", i, err)
	}
	p := &pod{ln: ln, conns: make(map[*podConn]struct{})}
	s.pods[i] = p
	go p.accept(s.ln)
	return nil
}

// kill stops pod i as a dying pod would: no more connections, and the open
// ones reset.
func (s *podServer) kill(i int) {
	if p := s.pods[i]; p != nil {
		p.kill()
		delete(s.pods, i)
	}
}

func (s *podServer) handle(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/metrics":
		ctx.SetContentType(expositionContentType)
		if s.bodies.gz != nil && ctx.Request.Header.HasAcceptEncoding("gzip") {
			ctx.Response.Header.Set(fasthttp.HeaderContentEncoding, "gzip")
			ctx.Response.SetBodyRaw(s.bodies.gz)
		} else {
			ctx.Response.SetBodyRaw(s.bodies.plain)
		}
	case "/large":
		ctx.SetContentType(expositionContentType)
		ctx.SetBodyStream(&repeatReader{chunk: s.bodies.chunk, left: s.cfg.LargeBodyBytes}, int(s.cfg.LargeBodyBytes))
	default:
		ctx.Error("not found", fasthttp.StatusNotFound)
	}
}

// pod is one listener and the connections accepted on it, so that killing
// it can reset them.
type pod struct {
	ln    *net.TCPListener
	mu    sync.Mutex
	conns map[*podConn]struct{} // nil once killed
}

// accept hands the pod's connections to the shard's server until the pod
// is killed.
func (p *pod) accept(to *muxListener) {
	for {
		c, err := p.ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of file descriptors, most likely: say so, as scrapes
			// of this pod will fail from now on.
			fmt.Fprintf(os.Stderr, "pod %s stopped accepting: %s\n", p.ln.Addr(), err)
			return
		}
		pc := &podConn{TCPConn: c, pod: p}
		p.mu.Lock()
		alive := p.conns != nil
		if alive {
			p.conns[pc] = struct{}{}
		}
		p.mu.Unlock()
		if !alive || !to.hand(pc) {
			_ = c.Close()
			return
		}
	}
}

func (p *pod) kill() {
	_ = p.ln.Close()
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for c := range conns {
		_ = c.SetLinger(0) // close with a reset, not a graceful FIN
		_ = c.TCPConn.Close()
	}
}

type podConn struct {
	*net.TCPConn
	pod *pod
}

func (c *podConn) Close() error {
	c.pod.mu.Lock()
	delete(c.pod.conns, c)
	c.pod.mu.Unlock()
	return c.TCPConn.Close()
}

// muxListener is the single net.Listener the shard's fasthttp.Server
// accepts from: it yields the connections of all the shard's pods.
type muxListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

// hand passes c to the server; false if the listener is closed.
func (l *muxListener) hand(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *muxListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *muxListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *muxListener) Addr() net.Addr { return net.TCPAddrFromAddrPort(podAddr(0, 0)) }

// repeatReader streams left bytes of chunk repeated: a large body that is
// never held in memory.
type repeatReader struct {
	chunk []byte
	off   int
	left  int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.next())
	r.advance(n)
	return n, nil
}

// WriteTo lets fasthttp write the chunk straight to the connection.
func (r *repeatReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for r.left > 0 {
		n, err := w.Write(r.next())
		total += int64(n)
		r.advance(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (r *repeatReader) next() []byte {
	b := r.chunk[r.off:]
	if int64(len(b)) > r.left {
		b = b[:r.left]
	}
	return b
}

func (r *repeatReader) advance(n int) {
	r.off = (r.off + n) % len(r.chunk)
	r.left -= int64(n)
}
