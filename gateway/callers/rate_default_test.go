package callers_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/scrapegate/scrapegate/gateway"
	"github.com/scrapegate/scrapegate/gateway/callers"
)

// With no flag set, one Prometheus scraping 10,000 pods every second, from
// one address, is never refused: 10 seconds of it, and as one burst.
func TestDefaultRateLimitAdmitsTheHeadlineCase(t *testing.T) {
	cfg := gateway.DefaultConfig()
	l := callers.NewRateLimiter(cfg.CallerRateLimit, cfg.CallerRateBurst)
	if l == nil {
		return // off: nothing is refused
	}
	prometheus := netip.MustParseAddr("10.0.0.1")
	start := time.Unix(1000, 0).UnixNano()
	for i := range 100_000 {
		if ok, _ := l.Allow(prometheus, start+int64(i)*int64(time.Second/10_000)); !ok {
			t.Fatalf("request %d at 10,000/s refused by the default -caller-rate-limit=%v -caller-rate-burst=%d", i, cfg.CallerRateLimit, cfg.CallerRateBurst)
		}
	}
	later := start + int64(time.Hour)
	for i := range 20_000 {
		if ok, _ := l.Allow(prometheus, later); !ok {
			t.Fatalf("request %d of a burst of 20,000 refused by the default -caller-rate-limit=%v -caller-rate-burst=%d", i, cfg.CallerRateLimit, cfg.CallerRateBurst)
		}
	}
}
