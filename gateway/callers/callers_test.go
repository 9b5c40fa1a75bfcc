package callers

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestCallerKey(t *testing.T) {
	f := func(ip, want string) {
		t.Helper()
		if got := Key(netip.MustParseAddr(ip)).String(); got != want {
			t.Fatalf("Key(%s) = %s; want %s", ip, got, want)
		}
	}
	f("10.1.2.3", "10.1.2.3")
	f("::ffff:10.1.2.3", "10.1.2.3")
	f("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::")
	f("2001:db8:1:2:ffff::1", "2001:db8:1:2::")
	f("fe80::1%eth0", "fe80::")
}

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

func TestCallerListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	var rejected [NumRejections]int
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("127.0.0.3/32")}
	l := NewListener(inner, allow, 2, zerolog.Nop(), func(r Rejection) { rejected[r]++ }).(*listener)
	dialFrom := func(src string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// accept returns the next connection the listener lets through; the ones
	// it refuses in between are counted in rejected.
	accept := func() net.Conn {
		t.Helper()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// refusedRead asserts the client side sees its connection closed.
	refusedRead := func(c net.Conn) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("a refused connection read %d bytes", n)
		}
	}

	dialFrom("127.0.0.1")
	first := accept()
	dialFrom("127.0.0.1")
	accept()
	// A third from the same caller and one from outside the CIDRs are
	// closed; a connection from another allowed caller is served.
	third := dialFrom("127.0.0.1")
	outsider := dialFrom("127.0.0.2")
	dialFrom("127.0.0.3")
	if got := accept(); remoteIP(got) != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("accepted %s; want 127.0.0.3", got.RemoteAddr())
	}
	refusedRead(third)
	refusedRead(outsider)
	if rejected[TooManyConns] != 1 || rejected[NotAllowed] != 1 {
		t.Fatalf("rejections %v; want 1 too_many_conns and 1 caller_not_allowed", rejected)
	}
	// Closing a connection frees its caller's slot.
	first.Close()
	dialFrom("127.0.0.1")
	got := accept()
	if remoteIP(got) != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("accepted %s; want the caller whose slot was freed", got.RemoteAddr())
	}
	// Closing twice frees one slot only.
	got.Close()
	got.Close()
	l.mu.Lock()
	n := l.conns[netip.MustParseAddr("127.0.0.1")]
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d connections from 127.0.0.1 counted; want 1", n)
	}
}
