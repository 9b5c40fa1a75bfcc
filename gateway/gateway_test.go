package gateway

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestRouteOf: every request target finds its row from the raw target, as
// the server received it, before anything else is read of the request.
func TestRouteOf(t *testing.T) {
	f := func(uri string, want route) {
		t.Helper()
		if got := routeOf([]byte(uri)); got != want {
			t.Errorf("routeOf(%q) = %s; want %s", uri, routes[got].name, routes[want].name)
		}
	}
	f("/pods/10.0.0.1/9100/metrics", routePods)
	f("/pods/https/10.0.0.1/9100/metrics?x=1", routePods)
	f("/pods", routeOther)
	f("/Pods/10.0.0.1/9100/metrics", routeOther)
	f("/nodes/node-a/metrics/cadvisor", routeNodes)
	f("/services/kube-system/kube-dns/metrics/metrics", routeServices)
	f("/services", routeOther)
	f("/endpoints/kube-system/kube-dns/10.244.0.5/9153/metrics", routeEndpoints)
	f("/endpoints", routeOther)
	f("http://kube-dns.kube-system.svc:9153/metrics", routeProxy)
	f("/sd/pods", routeSD)
	f("/sd", routeOther)
	f("/metrics", routeMetrics)
	f("/metrics?name[]=up", routeMetrics)
	f("/metrics/", routeOther)
	f("//metrics", routeOther)
	f("/./metrics", routeOther)
	f("/%6detrics", routeOther)
	f("/healthz", routeHealthz)
	f("/readyz", routeReadyz)
	// A fragment is no part of a request target (RFC 9112 section 3.2):
	// no page is served for one, least of all an open one.
	f("/healthz#a", routeOther)
	f("/metrics#x", routeOther)
	// Absolute-form names the pod, whatever its path.
	f("http://10.0.0.1:9100/metrics", routeProxy)
	f("http://10.0.0.1:9100/healthz", routeProxy)
	f("*", routeProxy)
	f("", routeOther)
}

// TestRoutesDocListsEveryRoute: docs/routes.md's table has a row for each
// row of the route table, naming its path in the first cell, and says of
// exactly the open ones that anyone may call them.
func TestRoutesDocListsEveryRoute(t *testing.T) {
	doc, err := os.ReadFile("../docs/routes.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows [][2]string // first cell, whole line
	for line := range strings.Lines(string(doc)) {
		if cell, _, ok := strings.Cut(strings.TrimPrefix(line, "| "), " | "); ok && strings.HasPrefix(line, "| ") {
			rows = append(rows, [2]string{cell, line})
		}
	}
	for r, row := range routes {
		if row.pattern == "" {
			continue
		}
		// A path stands alone in its cell: after a backtick or a space,
		// and an exact one before a backtick or a comma.
		end := "(`|,)"
		if strings.HasSuffix(row.pattern, "/") {
			end = ""
		}
		named := regexp.MustCompile("[` ]" + regexp.QuoteMeta(row.pattern) + end)
		var line string
		for _, docRow := range rows {
			if named.MatchString(docRow[0]) {
				line = docRow[1]
				break
			}
		}
		if line == "" {
			t.Errorf("docs/routes.md has no row for route %s (%s)", routes[r].name, row.pattern)
			continue
		}
		saysAnyone := strings.Contains(line, "anyone") || strings.Contains(line, "the same as `/healthz`")
		if saysAnyone != row.open {
			t.Errorf("docs/routes.md's row for %s says anyone may call it: %v; the route table: %v\n%s", row.pattern, saysAnyone, row.open, line)
		}
	}
}
