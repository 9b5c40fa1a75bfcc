package gateway

import (
	"runtime"
	"strings"
	"testing"
)

func TestBuildInfoMetric(t *testing.T) {
	_, gw := startGateway(t, testConfig())
	r := get(t, gw, "/metrics")
	for _, want := range []string{
		"# HELP scrapegate_build_info A metric with a constant '1' value labelled by the version",
		"# TYPE scrapegate_build_info gauge",
		// go test stamps no version or revision; the Makefile's -ldflags do.
		`scrapegate_build_info{version="devel",revision="unknown",goversion="` + runtime.Version() + `"} 1`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
