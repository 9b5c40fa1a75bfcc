package load

import (
	"bytes"
	"container/heap"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// Prometheus's scrape request headers (scrape/scrape.go, 3.x defaults).
	scrapeAccept    = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
	scrapeUserAgent = "Prometheus/3.5.0"
	// scrapeTimeout is every /metrics scrape's deadline, as Prometheus's
	// default scrape_timeout and the header that announces it.
	scrapeTimeout = 10 * time.Second
	// largeTimeout is a /large scrape's deadline, announced in the same
	// header: what a job scraping hundreds of MiB would set, and
	// scrapegate's default -scrape-timeout-max.
	largeTimeout = 2 * time.Minute
	// lateAfter is how long after its time a scrape may start before it
	// counts as late.
	lateAfter = 10 * time.Millisecond
	// maxErrorSamples is how many distinct error messages a Result keeps.
	maxErrorSamples = 5
)

// podTarget is one pod as the scheduler sees it.
type podTarget struct {
	pod  int
	addr netip.AddrPort
	// offset is the target's fixed place in the interval: Prometheus
	// spreads targets over the interval by a hash of the target.
	offset time.Duration

	gone    atomic.Bool // removed from the live set: its failures are expected
	pending atomic.Bool // a scrape is queued or in flight
	scraped atomic.Bool // a scrape succeeded at least once
}

func newPodTarget(pod, port int, interval time.Duration) *podTarget {
	addr := podAddr(pod, port)
	h := fnv.New64a()
	_, _ = h.Write([]byte(addr.String()))
	return &podTarget{pod: pod, addr: addr, offset: time.Duration(h.Sum64() % uint64(interval))}
}

func newPodTargets(pods, port int, interval time.Duration) []*podTarget {
	ts := make([]*podTarget, pods)
	for i := range ts {
		ts[i] = newPodTarget(i, port, interval)
	}
	return ts
}

// client sends scrapes as Prometheus does (scrape/scrape.go): Go's net/http
// client with the keep-alive pool Prometheus configures, reading each body
// whole into a buffer. It neither decompresses nor parses what it read: that
// is Prometheus's own cost whatever the path, and would only dilute the
// comparison. So measured, nginx and httputil.ReverseProxy serve about the
// share of direct scrapes/s issue 5's reference quotes (0.42 and 0.37).
type client struct {
	via     string // the proxy's address; empty: pods directly
	path    string
	want    int64 // body bytes on the wire of a good scrape
	stream  bool  // discard the body as it arrives instead of keeping it
	timeout time.Duration
	http    *http.Client
}

// newMetricsClient scrapes /metrics.
func newMetricsClient(via string, want int64) *client {
	return newClient(&client{via: via, path: "/metrics", want: want, timeout: scrapeTimeout})
}

// newLargeClient scrapes /large, discarding the bodies as they arrive.
func newLargeClient(via string, want int64) *client {
	return newClient(&client{via: via, path: "/large", want: want, stream: true, timeout: largeTimeout})
}

func newClient(c *client) *client {
	// prometheus/common's config.NewRoundTripperFromConfig.
	c.http = &http.Client{Transport: &http.Transport{
		MaxIdleConns:        20000,
		MaxIdleConnsPerHost: 1000,
		DisableCompression:  true, // Prometheus asks for gzip and decompresses itself
		IdleConnTimeout:     5 * time.Minute,
	}}
	return c
}

// close drops the client's idle connections, so that a proxy about to stop
// sees its callers leave.
func (c *client) close() { c.http.CloseIdleConnections() }

// url is t's scrape URL: psystrike's /pods/ path through a proxy.
func (c *client) url(t *podTarget) string {
	if c.via != "" {
		return "http://" + c.via + "/pods/" + t.addr.Addr().String() + "/" + strconv.Itoa(int(t.addr.Port())) + c.path
	}
	return "http://" + t.addr.String() + c.path
}

var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// scrape scrapes t once and returns how long it took from sending the
// request to reading the body's last byte. buf is
// scratch space for discarded bodies.
func (c *client) scrape(t *podTarget, buf []byte) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(t), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", scrapeAccept)
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("User-Agent", scrapeUserAgent)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.Itoa(int(c.timeout/time.Second)))
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	wire := &countingReader{r: resp.Body}
	err = c.readBody(wire, buf)
	took := time.Since(start)
	switch {
	case err != nil:
		return 0, fmt.Errorf("cannot read the body: %w", err)
	case resp.StatusCode != http.StatusOK:
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	case wire.n != c.want:
		return 0, fmt.Errorf("got %d body bytes, want %d", wire.n, c.want)
	}
	return took, nil
}

func (c *client) readBody(r io.Reader, buf []byte) error {
	if c.stream {
		_, err := io.CopyBuffer(io.Discard, r, buf)
		return err
	}
	b := bodyBuffers.Get().(*bytes.Buffer)
	defer bodyBuffers.Put(b)
	b.Reset()
	_, err := b.ReadFrom(r)
	return err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// tally collects a phase's scrapes.
type tally struct {
	mu        sync.Mutex
	latencies []time.Duration
	scrapes   int64
	errors    int64
	samples   []string
	late      atomic.Int64
	missed    atomic.Int64 // slots skipped: the target's previous scrape was not done
	vanished  atomic.Int64 // failures of targets removed from the live set
}

func (tl *tally) record(t *podTarget, took time.Duration, err error) {
	if err != nil && t.gone.Load() {
		tl.vanished.Add(1)
		return
	}
	if err == nil {
		t.scraped.Store(true)
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if err == nil {
		tl.scrapes++
		tl.latencies = append(tl.latencies, took)
		return
	}
	tl.errors++
	tl.sample(err.Error())
}

// sample keeps msg if it is new and there is room.
func (tl *tally) sample(msg string) {
	if len(tl.samples) >= maxErrorSamples {
		return
	}
	for _, s := range tl.samples {
		if s == msg {
			return
		}
	}
	tl.samples = append(tl.samples, msg)
}

// result summarises the tally as a Result over elapsed.
func (tl *tally) result(scenario, proxy string, asked float64, elapsed time.Duration) Result {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return Result{
		Scenario:       scenario,
		Proxy:          proxy,
		AskedPerSec:    asked,
		AchievedPerSec: float64(tl.scrapes) / elapsed.Seconds(),
		Scrapes:        tl.scrapes,
		Errors:         tl.errors,
		ErrorSamples:   tl.samples,
		Late:           tl.late.Load(),
		Latency:        NewLatency(tl.latencies),
		Extra:          map[string]float64{},
		samples:        tl.latencies,
		elapsed:        elapsed,
	}
}

// scheduler scrapes a changing set of targets as Prometheus does: each once
// per interval at its own offset, open loop, whatever the previous scrapes'
// latency, with at most workers scrapes in flight.
type scheduler struct {
	c        *client
	interval time.Duration
	jitter   time.Duration
	workers  int
	start    time.Time // every target's slot k is at start + k·interval + offset

	mu    sync.Mutex
	rnd   *rand.Rand
	slots slotHeap
	wake  chan struct{} // a target was added: its slot may be the next one
}

// slot is one scheduled scrape.
type slot struct {
	due        time.Time // base ± jitter
	base       time.Time // start + k·interval + offset
	dispatched time.Time // handed to the workers
	t          *podTarget
}

func newScheduler(c *client, targets []*podTarget, interval, jitter time.Duration, workers int) *scheduler {
	s := &scheduler{
		c:        c,
		interval: interval,
		jitter:   jitter,
		workers:  workers,
		start:    time.Now(),
		rnd:      rand.New(rand.NewPCG(3, 4)),
		wake:     make(chan struct{}, 1),
	}
	for _, t := range targets {
		s.add(t)
	}
	return s
}

// add schedules t from its next slot on.
func (s *scheduler) add(t *podTarget) {
	s.mu.Lock()
	k := (time.Since(s.start) - t.offset + s.interval - 1) / s.interval
	s.push(t, s.start.Add(max(k, 0)*s.interval+t.offset))
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// remove takes t out of the live set: its slots are dropped and its
// failures from now on are expected ones.
func (s *scheduler) remove(t *podTarget) {
	t.gone.Store(true)
}

// push schedules t's slot at base. s.mu must be held.
func (s *scheduler) push(t *podTarget, base time.Time) {
	due := base
	if s.jitter > 0 {
		due = due.Add(time.Duration(s.rnd.Int64N(int64(2*s.jitter+1))) - s.jitter)
	}
	heap.Push(&s.slots, slot{due: due, base: base, t: t})
}

// run scrapes every slot due before until, then waits for the scrapes in
// flight. Sleeping per scrape would be too coarse at thousands a second:
// it sleeps until the next slot and dispatches all that are due.
func (s *scheduler) run(ctx context.Context, until time.Time, tl *tally) {
	jobs := make(chan slot, 1024)
	var wg sync.WaitGroup
	for range s.workers {
		wg.Go(func() { s.work(jobs, tl) })
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		due, next := s.due(time.Now(), until, tl)
		for _, sl := range due {
			jobs <- sl
		}
		if next.IsZero() || !next.Before(until) {
			break
		}
		timer.Reset(time.Until(next))
		select {
		case <-timer.C:
		case <-s.wake:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(jobs)
	wg.Wait()
}

// due pops the slots due at now and before until, schedules their targets'
// next ones, and returns them with the time of the next slot (zero if
// none). A target whose previous scrape is not done skips the slot, as a
// Prometheus scrape loop does.
func (s *scheduler) due(now, until time.Time, tl *tally) ([]slot, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []slot
	for len(s.slots) > 0 {
		sl := s.slots[0]
		if sl.due.After(now) || !sl.due.Before(until) {
			return due, sl.due
		}
		heap.Pop(&s.slots)
		if sl.t.gone.Load() {
			continue
		}
		s.push(sl.t, sl.base.Add(s.interval))
		if !sl.t.pending.CompareAndSwap(false, true) {
			tl.missed.Add(1)
			continue
		}
		sl.dispatched = now
		due = append(due, sl)
	}
	return due, time.Time{}
}

// work scrapes the slots it is handed. A scrape that waited for a worker,
// because Concurrency scrapes were in flight, is charged the wait in its
// latency (an open-loop schedule does not wait for slow answers: leaving
// the wait out would hide exactly the slowness that caused it), and counted
// as late if it started more than lateAfter after its time.
func (s *scheduler) work(jobs <-chan slot, tl *tally) {
	buf := s.c.scratch()
	for sl := range jobs {
		waited := time.Since(sl.dispatched)
		if time.Since(sl.due) > lateAfter {
			tl.late.Add(1)
		}
		took, err := s.c.scrape(sl.t, buf)
		took += waited
		sl.t.pending.Store(false)
		tl.record(sl.t, took, err)
	}
}

// scratch returns a buffer for a worker to read streamed bodies into.
func (c *client) scratch() []byte {
	if !c.stream {
		return nil
	}
	return make([]byte, 256<<10)
}

// closedLoop runs workers that each scrape next()'s target, one after the
// other as fast as they go, until next returns nil.
func closedLoop(c *client, workers int, next func() *podTarget, tl *tally) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := c.scratch()
			for t := next(); t != nil; t = next() {
				took, err := c.scrape(t, buf)
				tl.record(t, took, err)
			}
		})
	}
	wg.Wait()
}

// eachOnce returns a next for closedLoop that yields each target once.
func eachOnce(targets []*podTarget) func() *podTarget {
	var i atomic.Int64
	return func() *podTarget {
		if n := i.Add(1) - 1; n < int64(len(targets)) {
			return targets[n]
		}
		return nil
	}
}

// roundRobin returns a next for closedLoop that cycles through the targets
// until until.
func roundRobin(targets []*podTarget, until time.Time) func() *podTarget {
	var i atomic.Int64
	return func() *podTarget {
		if !time.Now().Before(until) {
			return nil
		}
		return targets[(i.Add(1)-1)%int64(len(targets))]
	}
}

// slotHeap orders slots by due time (container/heap).
type slotHeap []slot

func (h slotHeap) Len() int           { return len(h) }
func (h slotHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h slotHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *slotHeap) Push(x any)        { *h = append(*h, x.(slot)) }
func (h *slotHeap) Pop() any {
	old := *h
	sl := old[len(old)-1]
	*h = old[:len(old)-1]
	return sl
}
