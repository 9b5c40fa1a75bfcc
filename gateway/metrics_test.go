package gateway

import (
	"os"
	"regexp"
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

// TestOperationsDocListsEveryMetric: docs/operations.md's table has one row
// per metric family the gateway defines, and no row for one it does not.
func TestOperationsDocListsEveryMetric(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(scrapegate_[a-z_]+)[{`]").FindAllSubmatch(doc, -1) {
		documented[string(m[1])] = true
	}
	for name := range metricHelp {
		if !documented[name] {
			t.Errorf("docs/operations.md has no row for %s", name)
		}
	}
	for name := range documented {
		if metricHelp[name] == "" {
			t.Errorf("docs/operations.md documents %s, which the gateway does not define", name)
		}
	}
}
