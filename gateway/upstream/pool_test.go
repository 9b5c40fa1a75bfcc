package upstream

import (
	"crypto/tls"
	"net/netip"
	"testing"
	"time"
)

func newTestPool(maxInflight, maxEndpoints int) *Pool {
	return NewPool(Options{
		MaxInflight:             maxInflight,
		MaxEndpoints:            maxEndpoints,
		MaxConnsPerEndpoint:     1,
		EndpointIdleTTL:         time.Minute,
		UpstreamIdleConnTimeout: time.Minute,
		DialTimeout:             time.Second,
		MaxConnWait:             time.Second,
		TLSConfig:               func(Key) *tls.Config { return nil },
		OnEvict:                 func() {},
	})
}

func key(port uint16) Key {
	return Key{Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}
}

// TestBeginTakesAndFinishReleases: Begin takes an in-flight slot and the
// endpoint, refuses past -max-inflight, and Finish gives both back.
func TestBeginTakesAndFinishReleases(t *testing.T) {
	p := newTestPool(2, 10)
	deadline := time.Now().Add(time.Minute)
	a, err := p.Begin(key(1), nil, deadline)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Begin(key(1), nil, deadline)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Begin(key(2), nil, deadline); err != ErrTooManyInflight {
		t.Fatalf("a third scrape with -max-inflight=2: %v; want ErrTooManyInflight", err)
	}
	if state, _ := p.State(key(1)); p.Inflight() != 2 || state.Active != 2 || p.Len() != 1 {
		t.Fatalf("two scrapes of one endpoint: inflight %d, active %d, endpoints %d; want 2, 2, 1", p.Inflight(), state.Active, p.Len())
	}
	if n := p.EvictIdle(time.Now().Add(time.Hour)); n != 0 {
		t.Fatalf("evicted %d endpoints with scrapes in flight", n)
	}
	a.Finish()
	b.Abandon()
	if state, _ := p.State(key(1)); p.Inflight() != 0 || state.Active != 0 {
		t.Fatalf("after Finish and Abandon: inflight %d, active %d; want 0, 0", p.Inflight(), state.Active)
	}
	if n := p.EvictIdle(time.Now().Add(time.Hour)); n != 1 || p.Len() != 0 {
		t.Fatalf("EvictIdle past the TTL evicted %d, %d left; want 1, 0", n, p.Len())
	}
}

// TestEndpointsThatNeverAnsweredMakeRoom: with -max-endpoints pooled, a new
// endpoint takes the place of one that could not connect and never
// answered, and is refused when there is none.
func TestEndpointsThatNeverAnsweredMakeRoom(t *testing.T) {
	p := newTestPool(100, 2)
	deadline := time.Now().Add(time.Minute)
	for port := uint16(1); port <= 2; port++ {
		s, err := p.Begin(key(port), nil, deadline)
		if err != nil {
			t.Fatal(err)
		}
		if port == 1 {
			s.ConnectFailed()
		}
		s.Finish()
	}
	s, err := p.Begin(key(3), nil, deadline)
	if err != nil {
		t.Fatalf("a new endpoint with one that never answered pooled: %v; want it to take its place", err)
	}
	s.Finish()
	if _, ok := p.State(key(1)); ok {
		t.Fatal("the endpoint that never answered is still pooled")
	}
	if _, err := p.Begin(key(4), nil, deadline); err != ErrTooManyEndpoints {
		t.Fatalf("a new endpoint with the pool full of others: %v; want ErrTooManyEndpoints", err)
	}
	if p.Inflight() != 0 {
		t.Fatalf("a refused Begin left %d scrapes in flight", p.Inflight())
	}
}

func TestListsToken(t *testing.T) {
	f := func(values []string, token string, want bool) {
		t.Helper()
		bs := make([][]byte, len(values))
		for i, v := range values {
			bs[i] = []byte(v)
		}
		if got := ListsToken(bs, []byte(token)); got != want {
			t.Errorf("ListsToken(%q, %q) = %v; want %v", values, token, got, want)
		}
	}
	f(nil, "close", false)
	f([]string{"close"}, "close", true)
	f([]string{"Keep-Alive, Close"}, "close", true)
	f([]string{"keep-alive", " X-Secret "}, "x-secret", true)
	f([]string{"closed"}, "close", false)
	f([]string{"keep-alive,,"}, "close", false)
}
