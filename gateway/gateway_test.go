package gateway

import "testing"

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
