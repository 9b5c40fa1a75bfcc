package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// endpoint is one pod ip:port and its connection pool.
type endpoint struct {
	client *fasthttp.HostClient

	// active counts scrapes using this endpoint, from acquire until their
	// body is fully sent or aborted. An endpoint is evicted only at zero.
	active atomic.Int32
	// lastUsed is when the last scrape ended, in Unix nanoseconds.
	lastUsed atomic.Int64

	// answered is set once a scrape got a response; queuedAsFailed once the
	// endpoint is in pool.neverAnswered.
	answered       atomic.Bool
	queuedAsFailed atomic.Bool

	// errLog rate-limits the error log for this endpoint, so a dead pod
	// scraped every second logs once per interval, not once per scrape.
	lastErrLog    atomic.Int64
	suppressedErr atomic.Int64

	// conns are the connections client dialled, closed ones included
	// until closeDeadIdleConns drops them: fasthttp does not show its idle
	// connections to anyone.
	connsMu sync.Mutex
	conns   []*upstreamConn
}

// track records a connection the endpoint's client dialled.
func (ep *endpoint) track(uc *upstreamConn) *upstreamConn {
	ep.connsMu.Lock()
	ep.conns = append(ep.conns, uc)
	ep.connsMu.Unlock()
	return uc
}

// endpointKey names one pool: a pod ip:port, reached over TLS or not, or a
// kubelet. A kubelet's pool is its own even where a hostNetwork pod serves
// on the same address: only kubelet connections carry the kubelet token.
type endpointKey struct {
	addr    netip.AddrPort
	tls     bool
	kubelet bool
}

// pool maps pod endpoints to their HostClients, creating them on first use
// and dropping those idle for longer than ttl so that pod churn does not
// accumulate clients.
type pool struct {
	ttl       time.Duration
	max       int // endpoints at most; past it acquire refuses new ones
	newClient func(endpointKey, *endpoint) *fasthttp.HostClient
	onEvict   func()

	mu        sync.RWMutex
	endpoints map[endpointKey]*endpoint
	// neverAnswered queues endpoints whose scrapes failed to connect before
	// any succeeded: the ones to drop first when the pool is full.
	neverAnswered []endpointKey
}

func newPool(ttl time.Duration, max int, newClient func(endpointKey, *endpoint) *fasthttp.HostClient, onEvict func()) *pool {
	return &pool{
		ttl:       ttl,
		max:       max,
		newClient: newClient,
		onEvict:   onEvict,
		endpoints: make(map[endpointKey]*endpoint),
	}
}

// acquire returns the endpoint for key, marked active until release, or nil
// if key is new and the pool already holds its maximum of endpoints.
func (p *pool) acquire(key endpointKey) *endpoint {
	// Incrementing under the read lock orders it before any eviction, which
	// holds the write lock and only evicts endpoints with no active scrape.
	p.mu.RLock()
	ep := p.endpoints[key]
	if ep != nil {
		ep.active.Add(1)
	}
	p.mu.RUnlock()
	if ep != nil {
		return ep
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if ep = p.endpoints[key]; ep == nil {
		if len(p.endpoints) >= p.max && !p.dropNeverAnswered() {
			return nil
		}
		ep = &endpoint{}
		ep.client = p.newClient(key, ep)
		ep.lastUsed.Store(time.Now().UnixNano())
		p.endpoints[key] = ep
	}
	ep.active.Add(1)
	return ep
}

// failed records that a scrape of ep failed to connect. An endpoint that
// never answered is the first to go when the pool is full, so that scanning
// closed ports cannot crowd out real pods.
func (p *pool) failed(key endpointKey, ep *endpoint) {
	if ep.answered.Load() || !ep.queuedAsFailed.CompareAndSwap(false, true) {
		return
	}
	p.mu.Lock()
	p.neverAnswered = append(p.neverAnswered, key)
	p.mu.Unlock()
}

// dropNeverAnswered drops one endpoint that never answered and has no scrape
// in progress, if there is one. p.mu must be held.
func (p *pool) dropNeverAnswered() bool {
	for len(p.neverAnswered) > 0 {
		key := p.neverAnswered[0]
		p.neverAnswered = p.neverAnswered[1:]
		ep := p.endpoints[key]
		if ep == nil {
			continue
		}
		if ep.answered.Load() || ep.active.Load() != 0 {
			ep.queuedAsFailed.Store(false)
			continue
		}
		delete(p.endpoints, key)
		ep.client.CloseIdleConnections()
		p.onEvict()
		return true
	}
	return false
}

func (p *pool) release(ep *endpoint) {
	ep.lastUsed.Store(time.Now().UnixNano())
	ep.active.Add(-1)
}

// evictIdle drops endpoints with no active scrape that were last used more
// than ttl before now, closing their idle connections.
func (p *pool) evictIdle(now time.Time) int {
	cutoff := now.Add(-p.ttl).UnixNano()
	var evicted []*endpoint
	p.mu.Lock()
	for key, ep := range p.endpoints {
		if ep.active.Load() == 0 && ep.lastUsed.Load() < cutoff {
			delete(p.endpoints, key)
			evicted = append(evicted, ep)
		}
	}
	p.mu.Unlock()
	for _, ep := range evicted {
		ep.client.CloseIdleConnections()
		p.onEvict()
	}
	return len(evicted)
}

// runEvictions evicts idle endpoints periodically until stop is closed.
func (p *pool) runEvictions(stop <-chan struct{}) {
	every(min(max(p.ttl/4, time.Second), time.Minute), stop, func(now time.Time) { p.evictIdle(now) })
}

// idleCheckInterval is how often pooled idle connections are checked for
// having been closed by their pod.
const idleCheckInterval = time.Second

// closeDeadIdleConns closes the idle connections of every endpoint at which
// one idle connection was closed by the pod, or brought bytes nobody asked
// for. Pods close keep-alive connections that idle longer than their own
// timeout (Go's http.Server IdleTimeout, many exporters), often shorter than
// the scrape interval; fasthttp would keep them, half closed (CLOSE-WAIT),
// until its idle timeout or their next use. One poll(2) call checks them
// all. The endpoint's other idle connections go too: they idled as long.
func (p *pool) closeDeadIdleConns() {
	p.mu.RLock()
	endpoints := make([]*endpoint, 0, len(p.endpoints))
	for _, ep := range p.endpoints {
		endpoints = append(endpoints, ep)
	}
	p.mu.RUnlock()

	var fds []unix.PollFd
	var idle []*upstreamConn
	var owners []*endpoint
	for _, ep := range endpoints {
		ep.connsMu.Lock()
		open := ep.conns[:0]
		for _, uc := range ep.conns {
			if uc.closed.Load() {
				continue
			}
			open = append(open, uc)
			if !uc.inUse.Load() && uc.fd >= 0 {
				fds = append(fds, unix.PollFd{Fd: int32(uc.fd), Events: unix.POLLIN | unix.POLLRDHUP})
				idle, owners = append(idle, uc), append(owners, ep)
			}
		}
		clear(ep.conns[len(open):])
		ep.conns = open
		ep.connsMu.Unlock()
	}
	if len(fds) == 0 {
		return
	}
	if _, err := unix.Poll(fds, 0); err != nil {
		return // EINTR or ENOMEM: the next round checks again
	}
	var last *endpoint
	for i, fd := range fds {
		// A connection closed since it was listed may have had its
		// descriptor reused: what poll saw is then another socket's. One
		// a scrape took meanwhile is not idle any more and stays open: it
		// fails at worst like a stale one.
		if fd.Revents&(unix.POLLIN|unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) == 0 ||
			idle[i].closed.Load() || idle[i].inUse.Load() || owners[i] == last {
			continue
		}
		owners[i].client.CloseIdleConnections()
		last = owners[i]
	}
}

// every calls f with the time every interval until stop is closed.
func every(interval time.Duration, stop <-chan struct{}, f func(now time.Time)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// closeIdle closes every pooled idle connection; used at shutdown.
func (p *pool) closeIdle() {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, ep := range p.endpoints {
		ep.client.CloseIdleConnections()
	}
}

func (p *pool) len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.endpoints)
}
