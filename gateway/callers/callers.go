// Package callers owns the limits the gateway puts on each caller, counted
// by caller address (Key: an IPv4 address or an IPv6 /64): the listener that
// closes connections from callers outside -allow-caller-cidrs and past
// -max-conns-per-caller, and the per-caller token buckets (RateLimiter) of
// -caller-rate-limit and of failed logins.
package callers

import (
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Key is the unit the per-caller limits count by: an IPv4 address, or
// an IPv6 /64, since one host commonly owns a whole /64 and could otherwise
// use a fresh address for every connection.
func Key(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.WithZone("").Prefix(64)
		return p.Addr()
	}
	return ip
}

// listener is NewListener's: it counts each caller's open connections.
type listener struct {
	net.Listener
	allow    []netip.Prefix
	maxConns int
	log      zerolog.Logger // sampled
	onReject func(r Rejection)

	mu    sync.Mutex
	conns map[netip.Addr]int
}

// NewListener returns a listener that closes, right after accepting them and
// before any byte (or TLS handshake) is read, connections from callers
// outside allow (-allow-caller-cidrs; none if empty) and a caller's
// connections past maxConns open at once (-max-conns-per-caller; none if
// <= 0). It reports each to onReject and logs it on log, which should be
// sampled: refusals can come in floods.
func NewListener(inner net.Listener, allow []netip.Prefix, maxConns int, log zerolog.Logger, onReject func(Rejection)) net.Listener {
	return &listener{
		Listener: inner,
		allow:    allow,
		maxConns: maxConns,
		log:      log,
		onReject: onReject,
		conns:    make(map[netip.Addr]int),
	}
}

// Rejection is why a connection was closed unserved; its String is the
// reason label of scrapegate_rejected_connections_total.
type Rejection int

const (
	// NotAllowed: the caller is outside -allow-caller-cidrs.
	NotAllowed Rejection = iota
	// TooManyConns: the caller has -max-conns-per-caller connections open.
	TooManyConns
	// ClientCertUntrusted: the caller's TLS certificate does not verify
	// against -tls-client-ca-file. The TLS layer reports it; it is counted
	// here so that one metric holds every connection closed unserved.
	ClientCertUntrusted
	// ClientCertNameNotAllowed: the caller's TLS certificate carries none of
	// -tls-client-allowed-names.
	ClientCertNameNotAllowed
	// NumRejections is the number of Rejections, for arrays indexed by them.
	NumRejections
)

var rejectionNames = [NumRejections]string{"caller_not_allowed", "too_many_conns", "client_cert_untrusted", "client_cert_name_not_allowed"}

// String returns r's metric label value.
func (r Rejection) String() string { return rejectionNames[r] }

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if len(l.allow) > 0 && !containsIP(l.allow, ip) {
			l.reject(c, ip, NotAllowed, "caller address is not in -allow-caller-cidrs")
			continue
		}
		if l.maxConns <= 0 {
			return c, nil
		}
		key := Key(ip)
		l.mu.Lock()
		n := l.conns[key]
		if n >= l.maxConns {
			l.mu.Unlock()
			l.reject(c, ip, TooManyConns, "caller has -max-conns-per-caller connections open")
			continue
		}
		l.conns[key] = n + 1
		l.mu.Unlock()
		return &conn{Conn: c, l: l, key: key}, nil
	}
}

func (l *listener) reject(c net.Conn, ip netip.Addr, r Rejection, why string) {
	_ = c.Close()
	l.onReject(r)
	if e := l.log.Warn(); e.Enabled() {
		e.Str("caller", ip.String()).Str("reason", r.String()).Msg("connection refused: " + why)
	}
}

func (l *listener) release(key netip.Addr) {
	l.mu.Lock()
	if n := l.conns[key] - 1; n > 0 {
		l.conns[key] = n
	} else {
		delete(l.conns, key)
	}
	l.mu.Unlock()
}

// conn gives its caller's slot back when it closes.
type conn struct {
	net.Conn
	l      *listener
	key    netip.Addr
	closed atomic.Bool
}

func (c *conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.key)
	}
	return c.Conn.Close()
}

// NetConn returns the connection underneath, for checking its socket.
func (c *conn) NetConn() net.Conn { return c.Conn }

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

// RateLimiter is a token bucket per caller: each caller may spend burst
// tokens at once and rate per second on average.
type RateLimiter struct {
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
	// refused is when Allow last refused a token, in Unix nanoseconds; 0:
	// never.
	refused int64
}

// maxRateBuckets bounds the rate limiter's memory: about 64 bytes a caller.
const maxRateBuckets = 100_000

// limitedWindow is how long after its last refusal a caller counts as
// limited: longer than the usual scrape interval of the gateway's own
// metrics, so that a caller limited between two scrapes is seen.
const limitedWindow = time.Minute

// NewRateLimiter returns a RateLimiter letting each caller spend burst tokens
// at once and perSecond on average, or nil (no limit) if perSecond <= 0.
func NewRateLimiter(perSecond float64, burst int) *RateLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &RateLimiter{
		rate:     perSecond / float64(time.Second),
		burst:    float64(burst),
		buckets:  make(map[netip.Addr]bucket),
		overflow: bucket{tokens: float64(burst)},
	}
}

// Allow takes one token from ip's bucket. When there is none, it returns how
// long until there will be.
func (l *RateLimiter) Allow(ip netip.Addr, now int64) (bool, time.Duration) {
	key := Key(ip)
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

// Wait returns how long until ip's bucket holds a token, 0 if it holds one
// now, without taking it.
func (l *RateLimiter) Wait(ip netip.Addr, now int64) time.Duration {
	key := Key(ip)
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

func (l *RateLimiter) refill(b *bucket, now int64) {
	if now > b.last { // a clock stepping back gives nothing and takes nothing
		b.tokens = math.Min(l.burst, b.tokens+float64(now-b.last)*l.rate)
		b.last = now
	}
}

func (l *RateLimiter) untilToken(b *bucket) time.Duration {
	return time.Duration((1 - b.tokens) / l.rate)
}

// Limited counts the callers refused a token within the last limitedWindow;
// the callers sharing the overflow bucket count as one.
func (l *RateLimiter) Limited(now int64) int {
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

// Sweep forgets callers whose buckets have refilled and who are not counted
// as limited: they are indistinguishable from callers never seen.
func (l *RateLimiter) Sweep(now int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range l.buckets {
		if b.tokens+float64(now-b.last)*l.rate >= l.burst && !refusedRecently(&b, now) {
			delete(l.buckets, k)
		}
	}
}
