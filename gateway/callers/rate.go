package callers

import (
	"math"
	"net/netip"
	"sync"
	"time"
)

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
