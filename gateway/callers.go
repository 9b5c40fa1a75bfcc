package gateway

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// callerKey is the unit the per-caller limits count by: an IPv4 address, or
// an IPv6 /64, since one host commonly owns a whole /64 and could otherwise
// use a fresh address for every connection.
func callerKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.WithZone("").Prefix(64)
		return p.Addr()
	}
	return ip
}

// callerListener closes, right after accepting them, connections from
// callers outside -allow-caller-cidrs and connections past
// -max-conns-per-caller, before any byte (or TLS handshake) is read.
type callerListener struct {
	net.Listener
	allow    []netip.Prefix
	maxConns int
	log      zerolog.Logger // sampled
	onReject func(r connRejection)

	mu    sync.Mutex
	conns map[netip.Addr]int
}

// connRejection is why a connection was closed unserved.
type connRejection int

const (
	connCallerNotAllowed connRejection = iota
	connTooManyFromCaller
	connClientCertUntrusted
	connClientCertName
	numConnRejections
)

var connRejectionNames = [numConnRejections]string{"caller_not_allowed", "too_many_conns", "client_cert_untrusted", "client_cert_name_not_allowed"}

func (r connRejection) String() string { return connRejectionNames[r] }

func (l *callerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if len(l.allow) > 0 && !containsIP(l.allow, ip) {
			l.reject(c, ip, connCallerNotAllowed, "caller address is not in -allow-caller-cidrs")
			continue
		}
		if l.maxConns <= 0 {
			return c, nil
		}
		key := callerKey(ip)
		l.mu.Lock()
		n := l.conns[key]
		if n >= l.maxConns {
			l.mu.Unlock()
			l.reject(c, ip, connTooManyFromCaller, "caller has -max-conns-per-caller connections open")
			continue
		}
		l.conns[key] = n + 1
		l.mu.Unlock()
		return &callerConn{Conn: c, l: l, key: key}, nil
	}
}

func (l *callerListener) reject(c net.Conn, ip netip.Addr, r connRejection, why string) {
	_ = c.Close()
	l.onReject(r)
	if e := l.log.Warn(); e.Enabled() {
		e.Str("caller", ip.String()).Str("reason", r.String()).Msg("connection refused: " + why)
	}
}

func (l *callerListener) release(key netip.Addr) {
	l.mu.Lock()
	if n := l.conns[key] - 1; n > 0 {
		l.conns[key] = n
	} else {
		delete(l.conns, key)
	}
	l.mu.Unlock()
}

// callerConn gives its caller's slot back when it closes.
type callerConn struct {
	net.Conn
	l      *callerListener
	key    netip.Addr
	closed atomic.Bool
}

func (c *callerConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.key)
	}
	return c.Conn.Close()
}

// NetConn returns the connection underneath, for checking its socket.
func (c *callerConn) NetConn() net.Conn { return c.Conn }

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func containsIP(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// rateLimiter is a token bucket per caller: each caller may spend burst
// tokens at once and rate per second on average.
type rateLimiter struct {
	rate  float64 // tokens per nanosecond
	burst float64

	mu      sync.Mutex
	buckets map[netip.Addr]bucket
	// overflow is shared by new callers while buckets is full, so that a
	// caller spraying addresses can neither grow memory without bound nor
	// escape the limit.
	overflow bucket
}

type bucket struct {
	tokens float64
	last   int64 // Unix nanoseconds of the last refill
	// refused is when allow last refused a token, in Unix nanoseconds; 0:
	// never.
	refused int64
}

// maxRateBuckets bounds the rate limiter's memory: about 64 bytes a caller.
const maxRateBuckets = 100_000

// limitedWindow is how long after its last refusal a caller counts as
// limited: longer than the usual scrape interval of the gateway's own
// metrics, so that a caller limited between two scrapes is seen.
const limitedWindow = time.Minute

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &rateLimiter{
		rate:     perSecond / float64(time.Second),
		burst:    float64(burst),
		buckets:  make(map[netip.Addr]bucket),
		overflow: bucket{tokens: float64(burst)},
	}
}

// allow takes one token from ip's bucket. When there is none, it returns how
// long until there will be.
func (l *rateLimiter) allow(ip netip.Addr, now int64) (bool, time.Duration) {
	key := callerKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	useOverflow := false
	switch {
	case ok:
	case len(l.buckets) < maxRateBuckets:
		b = bucket{tokens: l.burst, last: now}
	default:
		b, useOverflow = l.overflow, true
	}
	l.refill(&b, now)
	granted := b.tokens >= 1
	if granted {
		b.tokens--
	} else {
		b.refused = now
	}
	if useOverflow {
		l.overflow = b
	} else {
		l.buckets[key] = b
	}
	if granted {
		return true, 0
	}
	return false, l.untilToken(&b)
}

// wait returns how long until ip's bucket holds a token, 0 if it holds one
// now, without taking it.
func (l *rateLimiter) wait(ip netip.Addr, now int64) time.Duration {
	key := callerKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	switch {
	case ok:
	case len(l.buckets) < maxRateBuckets:
		return 0 // a new caller's bucket is full
	default:
		b = l.overflow
	}
	l.refill(&b, now)
	if b.tokens >= 1 {
		return 0
	}
	return l.untilToken(&b)
}

func (l *rateLimiter) refill(b *bucket, now int64) {
	if now > b.last { // a clock stepping back gives nothing and takes nothing
		b.tokens = math.Min(l.burst, b.tokens+float64(now-b.last)*l.rate)
		b.last = now
	}
}

func (l *rateLimiter) untilToken(b *bucket) time.Duration {
	return time.Duration((1 - b.tokens) / l.rate)
}

// limited counts the callers refused a token within the last limitedWindow;
// the callers sharing the overflow bucket count as one.
func (l *rateLimiter) limited(now int64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, b := range l.buckets {
		if refusedRecently(&b, now) {
			n++
		}
	}
	if refusedRecently(&l.overflow, now) {
		n++
	}
	return n
}

func refusedRecently(b *bucket, now int64) bool {
	return b.refused != 0 && now-b.refused < int64(limitedWindow)
}

// sweep forgets callers whose buckets have refilled and who are not counted
// as limited: they are indistinguishable from callers never seen.
func (l *rateLimiter) sweep(now int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range l.buckets {
		if b.tokens+float64(now-b.last)*l.rate >= l.burst && !refusedRecently(&b, now) {
			delete(l.buckets, k)
		}
	}
}
