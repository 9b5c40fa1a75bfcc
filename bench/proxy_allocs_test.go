package bench

import (
	"strings"
	"testing"
)

// TestScrapeAllocatesNothing guards bench/README.md's figure: a proxied
// scrape of a typical body makes 0 allocations. The pod and the client
// allocate nothing, so every allocation counted is the gateway's.
func TestScrapeAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are not counted under the race detector; make test and make unit run this test without it")
	}
	f := func(name string, size int, gzipped bool) {
		t.Helper()
		payload := exposition(size, gzipped)
		pod := startPod(t, payload, gzipped)
		gw := startScrapegate(t)
		c, err := dialScraper(gw)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		request := scrapeRequest(gw, "/pods/"+strings.Replace(pod, ":", "/", 1)+"/metrics")
		var scrapeErr error
		once := func() {
			if err := c.scrape(request, len(payload)); err != nil && scrapeErr == nil {
				scrapeErr = err
			}
		}
		for range 100 { // the endpoint's pool, the server's and the gateway's own pools
			once()
		}
		allocs := testing.AllocsPerRun(1000, once)
		if scrapeErr != nil {
			t.Fatalf("%s: %s", name, scrapeErr)
		}
		if allocs > 0 {
			t.Fatalf("%s: %v allocations per proxied scrape; bench/README.md says 0", name, allocs)
		}
	}
	f("4KiB", 4<<10, false)
	f("64KiB-gzip", 64<<10, true)
}
