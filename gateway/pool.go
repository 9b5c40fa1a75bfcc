package gateway

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// endpoint is one pod ip:port and its connection pool.
type endpoint struct {
	client *fasthttp.HostClient

	// active counts scrapes using this endpoint, from acquire until their
	// body is fully sent or aborted. An endpoint is evicted only at zero.
	active atomic.Int32
	// lastUsed is when the last scrape ended, in Unix nanoseconds.
	lastUsed atomic.Int64

	// errLog rate-limits the error log for this endpoint, so a dead pod
	// scraped every second logs once per interval, not once per scrape.
	lastErrLog    atomic.Int64
	suppressedErr atomic.Int64
}

// endpointKey names one pool: a pod ip:port, reached over TLS or not.
type endpointKey struct {
	addr netip.AddrPort
	tls  bool
}

// pool maps pod endpoints to their HostClients, creating them on first use
// and dropping those idle for longer than ttl so that pod churn does not
// accumulate clients.
type pool struct {
	ttl       time.Duration
	newClient func(endpointKey) *fasthttp.HostClient
	onEvict   func()

	mu        sync.RWMutex
	endpoints map[endpointKey]*endpoint
}

func newPool(ttl time.Duration, newClient func(endpointKey) *fasthttp.HostClient, onEvict func()) *pool {
	return &pool{
		ttl:       ttl,
		newClient: newClient,
		onEvict:   onEvict,
		endpoints: make(map[endpointKey]*endpoint),
	}
}

// acquire returns the endpoint for key, marked active until release.
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
		ep = &endpoint{client: p.newClient(key)}
		ep.lastUsed.Store(time.Now().UnixNano())
		p.endpoints[key] = ep
	}
	ep.active.Add(1)
	return ep
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
