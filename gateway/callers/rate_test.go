package callers

import (
	"net/netip"
	"testing"
	"time"
)

func TestRateLimiter(t *testing.T) {
	l := NewRateLimiter(10, 3) // a token every 100ms, 3 at once
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	now := time.Unix(1000, 0).UnixNano()
	take := func(ip netip.Addr, at int64, want bool) time.Duration {
		t.Helper()
		ok, wait := l.Allow(ip, at)
		if ok != want {
			t.Fatalf("Allow(%s, +%s) = %v; want %v", ip, time.Duration(at-now), ok, want)
		}
		return wait
	}
	take(a, now, true)
	take(a, now, true)
	take(a, now, true)
	if wait := take(a, now, false); wait <= 0 || wait > 100*time.Millisecond {
		t.Fatalf("Retry-After basis %s; want within the next token's 100ms", wait)
	}
	// Another caller has its own bucket.
	take(b, now, true)
	// One token back after 100ms, not two.
	take(a, now+int64(100*time.Millisecond), true)
	take(a, now+int64(100*time.Millisecond), false)
	// A clock that steps back takes nothing away and gives nothing.
	take(a, now, false)

	// Refilled buckets are swept unless refused within limitedWindow;
	// others are kept: at +150ms b (2 tokens left at +0) is full again, a
	// (empty at +100ms) is not; at +1s a is full, but counts as limited.
	if n := len(l.buckets); n != 2 {
		t.Fatalf("%d buckets; want 2", n)
	}
	l.Sweep(now + int64(150*time.Millisecond))
	if n := len(l.buckets); n != 1 {
		t.Fatalf("after an early sweep %d buckets; want 1", n)
	}
	l.Sweep(now + int64(time.Second))
	if n := len(l.buckets); n != 1 {
		t.Fatalf("after a sweep within limitedWindow %d buckets; want 1", n)
	}
	l.Sweep(now + int64(limitedWindow))
	if n := len(l.buckets); n != 0 {
		t.Fatalf("after a late sweep %d buckets; want 0", n)
	}
	if NewRateLimiter(0, 10) != nil {
		t.Fatal("a zero rate must mean no limiter")
	}
}

func TestRateLimiterBoundedMemory(t *testing.T) {
	l := NewRateLimiter(1, 1)
	now := time.Now().UnixNano()
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := range maxRateBuckets {
		ip := base
		ip[1], ip[2], ip[3] = byte(i>>16), byte(i>>8), byte(i)
		l.Allow(netip.AddrFrom4(ip), now)
	}
	// Past the bound, new callers share one bucket: the first gets its
	// token, the next is refused, and memory does not grow.
	if ok, _ := l.Allow(netip.MustParseAddr("11.0.0.1"), now); !ok {
		t.Fatal("the first caller past the bound must use the shared bucket")
	}
	if ok, _ := l.Allow(netip.MustParseAddr("11.0.0.2"), now); ok {
		t.Fatal("callers past the bound must share one bucket, not get fresh ones")
	}
	if n := len(l.buckets); n != maxRateBuckets {
		t.Fatalf("%d buckets; want the bound %d", n, maxRateBuckets)
	}
}

// Wait tells how long until a token without taking one.
func TestRateLimiterWait(t *testing.T) {
	l := NewRateLimiter(10, 2) // a token every 100ms
	a := netip.MustParseAddr("10.0.0.1")
	now := time.Unix(1000, 0).UnixNano()
	f := func(at time.Duration, want time.Duration) {
		t.Helper()
		if got := l.Wait(a, now+int64(at)); got != want {
			t.Fatalf("Wait(+%s) = %s; want %s", at, got, want)
		}
	}
	f(0, 0) // never seen: a full bucket
	if len(l.buckets) != 0 {
		t.Fatal("Wait made a bucket for a caller never seen")
	}
	l.Allow(a, now)
	f(0, 0)
	l.Allow(a, now)
	f(0, 100*time.Millisecond)
	f(0, 100*time.Millisecond) // Wait takes nothing
	f(40*time.Millisecond, 60*time.Millisecond)
	f(100*time.Millisecond, 0)
}

// scrapegate_rate_limited_callers counts the callers refused within the
// last limitedWindow, not the callers that sent anything.
func TestRateLimiterLimited(t *testing.T) {
	l := NewRateLimiter(10, 3)
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")
	now := time.Unix(1000, 0).UnixNano()
	f := func(at time.Duration, want int) {
		t.Helper()
		if got := l.Limited(now + int64(at)); got != want {
			t.Fatalf("Limited(+%s) = %d; want %d", at, got, want)
		}
	}
	f(0, 0)
	for range 3 {
		l.Allow(a, now)
	}
	l.Allow(b, now)
	f(0, 0) // allowed traffic only
	if ok, _ := l.Allow(a, now); ok {
		t.Fatal("a fourth request within the burst of 3 was allowed")
	}
	f(0, 1)
	f(limitedWindow-1, 1)
	f(limitedWindow, 0)
	// The callers sharing the overflow bucket count as one.
	l = NewRateLimiter(10, 1)
	for i := range maxRateBuckets {
		l.Allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	l.Allow(netip.MustParseAddr("11.0.0.1"), now)
	l.Allow(netip.MustParseAddr("11.0.0.2"), now)
	l.Allow(netip.MustParseAddr("11.0.0.3"), now)
	f(0, 1)
}
