// Package upstream owns the gateway's side of the pods: one connection pool
// per pod endpoint, the dialer (plain and TLS, with its own deadlines), the
// limit on scrapes in flight, and each scrape from its request to the last
// byte of the pod's body streamed to the caller. A scrape is taken with
// Pool.Begin, and everything it holds (its in-flight slot, the endpoint,
// the pooled connection, the copy buffer) is released in one place,
// Scrape.Finish; how a streamed body ended is told to the Reporter. Pools
// of endpoints idle past their TTL are dropped, so pod churn does not
// accumulate them.
package upstream

import (
	"crypto/tls"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scrapegate/scrapegate/gateway/target"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// Options configure a Pool; each is the flag of the same name.
type Options struct {
	MaxInflight             int           // -max-inflight
	MaxEndpoints            int           // -max-endpoints
	MaxConnsPerEndpoint     int           // -max-conns-per-endpoint
	EndpointIdleTTL         time.Duration // -endpoint-idle-ttl
	UpstreamIdleConnTimeout time.Duration // -upstream-idle-conn-timeout
	DialTimeout             time.Duration // -dial-timeout
	// MaxConnWait caps a scrape's wait for a busy endpoint's connection
	// (-scrape-timeout-max: a scrape's own deadline is never longer).
	MaxConnWait          time.Duration
	MaxResponseBodyBytes int64 // -max-response-body-bytes; 0: none

	// TLSConfig returns the TLS configuration for an endpoint whose Key
	// has TLS set or a Kind other than target.KindPod.
	TLSConfig func(Key) *tls.Config
	// Reporter is told how each streamed body ended.
	Reporter Reporter
	// OnEvict is called for every endpoint dropped from the pool.
	OnEvict func()
}

// Reporter hears how each scrape whose body was handed to the server
// ended. It is called from Scrape.CloseWithError, before the scrape
// releases what it holds.
type Reporter interface {
	// BodyEnded reports the body sent in full (readErr and writeErr nil),
	// the pod failing mid-body (readErr), or the caller (writeErr).
	BodyEnded(s *Scrape, readErr, writeErr error)
}

// Key names one pool: a pod ip:port, reached over TLS or not, a kubelet,
// or an API server. A kubelet's or an API server's pool is its own even
// where a hostNetwork pod serves on the same address: only its connections
// carry its token, and verify its certificate as its own.
type Key struct {
	Addr netip.AddrPort
	TLS  bool
	Kind target.Kind
}

// endpoint is one pod ip:port and its connection pool.
type endpoint struct {
	client *fasthttp.HostClient
	// active counts scrapes using this endpoint, from Begin until their
	// body is fully sent or aborted. An endpoint is evicted only at zero.
	active atomic.Int32
	// lastUsed is when the last scrape ended, in Unix nanoseconds.
	lastUsed atomic.Int64
	// answered is set once a scrape got a response; queuedAsFailed once the
	// endpoint is in Pool.neverAnswered.
	answered       atomic.Bool
	queuedAsFailed atomic.Bool
	// lastErrLog rate-limits the error log for this endpoint, so a dead
	// pod scraped every second logs once per interval, not once per scrape.
	lastErrLog    atomic.Int64
	suppressedErr atomic.Int64
	// conns are the connections client dialled, closed ones included
	// until CloseDeadIdleConns drops them: fasthttp does not show its idle
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

// Pool maps pod endpoints to their HostClients, creating them on first use
// and dropping those idle for longer than the TTL.
type Pool struct {
	opts     Options
	dialer   *fasthttp.TCPDialer
	inflight atomic.Int64
	// nextEviction is when Maintain next evicts idle endpoints.
	nextEviction time.Time

	mu        sync.RWMutex
	endpoints map[Key]*endpoint
	// neverAnswered queues endpoints whose scrapes failed to connect before
	// any succeeded: the ones to drop first when the pool is full.
	neverAnswered []Key
}

// NewPool returns an empty pool.
func NewPool(opts Options) *Pool {
	return &Pool{
		opts: opts,
		dialer: &fasthttp.TCPDialer{
			Concurrency:          opts.MaxInflight,
			DisableDNSResolution: true, // targets are IP literals by construction
		},
		endpoints: make(map[Key]*endpoint),
	}
}

// end releases what Begin took for a scrape.
func (p *Pool) end(ep *endpoint) {
	ep.lastUsed.Store(time.Now().UnixNano())
	ep.active.Add(-1)
	p.inflight.Add(-1)
}

// Inflight is how many scrapes hold a slot: from Begin until their body is
// sent or abandoned.
func (p *Pool) Inflight() int64 { return p.inflight.Load() }

// acquire returns the endpoint for key, marked active until end, or nil
// if key is new and the pool already holds its maximum of endpoints.
func (p *Pool) acquire(key Key) *endpoint {
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
		if len(p.endpoints) >= p.opts.MaxEndpoints && !p.dropNeverAnswered() {
			return nil
		}
		ep = &endpoint{}
		ep.client = p.newHostClient(key, ep)
		ep.lastUsed.Store(time.Now().UnixNano())
		p.endpoints[key] = ep
	}
	ep.active.Add(1)
	return ep
}

// failed records that a scrape of ep failed to connect. An endpoint that
// never answered is the first to go when the pool is full, so that scanning
// closed ports cannot crowd out real pods.
func (p *Pool) failed(key Key, ep *endpoint) {
	if ep.answered.Load() || !ep.queuedAsFailed.CompareAndSwap(false, true) {
		return
	}
	p.mu.Lock()
	p.neverAnswered = append(p.neverAnswered, key)
	p.mu.Unlock()
}

// dropNeverAnswered drops one endpoint that never answered and has no scrape
// in progress, if there is one. p.mu must be held.
func (p *Pool) dropNeverAnswered() bool {
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
		p.opts.OnEvict()
		return true
	}
	return false
}

// EvictIdle drops endpoints with no active scrape that were last used more
// than the TTL before now, closing their idle connections. Maintain calls
// it periodically.
func (p *Pool) EvictIdle(now time.Time) int {
	cutoff := now.Add(-p.opts.EndpointIdleTTL).UnixNano()
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
		p.opts.OnEvict()
	}
	return len(evicted)
}

// MaintainInterval is how often Maintain must run: how often pooled idle
// connections are checked for having been closed by their pod.
const MaintainInterval = time.Second

// Maintain does the pool's periodic work, and must be called every
// MaintainInterval: it closes dead idle connections each time, and evicts
// idle endpoints every quarter of the TTL (at least a second, at most a
// minute). Only one goroutine may call it.
func (p *Pool) Maintain(now time.Time) {
	p.CloseDeadIdleConns()
	if now.Before(p.nextEviction) {
		return
	}
	if !p.nextEviction.IsZero() {
		p.EvictIdle(now)
	}
	p.nextEviction = now.Add(min(max(p.opts.EndpointIdleTTL/4, time.Second), time.Minute))
}

// CloseDeadIdleConns closes the idle connections of every endpoint at which
// one idle connection was closed by the pod, or brought bytes nobody asked
// for. Pods close keep-alive connections that idle longer than their own
// timeout (Go's http.Server IdleTimeout, many exporters), often shorter than
// the scrape interval; fasthttp would keep them, half closed (CLOSE-WAIT),
// until its idle timeout or their next use. One poll(2) call checks them
// all. The endpoint's other idle connections go too: they idled as long.
// Maintain calls it every MaintainInterval.
func (p *Pool) CloseDeadIdleConns() {
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

// CloseIdle closes every pooled idle connection; used at shutdown.
func (p *Pool) CloseIdle() {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, ep := range p.endpoints {
		ep.client.CloseIdleConnections()
	}
}

// Len is how many endpoints have a pool.
func (p *Pool) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.endpoints)
}

// EndpointState is what the pool holds for one endpoint.
type EndpointState struct {
	Active    int // scrapes between Begin and their end
	Conns     int // connections open, idle or not
	IdleConns int // connections pooled for reuse
}

// State reports what the pool holds for key; ok is false if key has no
// pool. The gateway's tests check with it that scrapes release what they
// took.
func (p *Pool) State(key Key) (s EndpointState, ok bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ep := p.endpoints[key]
	if ep == nil {
		return s, false
	}
	return EndpointState{Active: int(ep.active.Load()), Conns: ep.client.ConnsCount(), IdleConns: ep.client.IdleConnsCount()}, true
}
