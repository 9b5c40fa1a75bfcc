package gateway

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"

	"github.com/scrapegate/scrapegate/gateway/auth"
	"github.com/scrapegate/scrapegate/gateway/buildinfo"
	"github.com/scrapegate/scrapegate/gateway/callers"
)

// metricHelp is the HELP text of every metric family the gateway defines; it is
// the one list of what /metrics exposes beyond Go and process metrics.
var metricHelp = map[string]string{
	"scrapegate_requests_total":                 "Requests answered in full, by route and HTTP status code (a pod's own status for proxied scrapes); a scrape cut off mid-body counts only under its failure reason.",
	"scrapegate_rejected_requests_total":        "Requests refused before reaching a pod, by reason.",
	"scrapegate_upstream_errors_total":          "Scrapes that failed between the gateway and a pod, by reason.",
	"scrapegate_client_aborts_total":            "Scrapes cut off on the caller's side, by reason: the caller hung up (client_gone), or stopped reading until the scrape's deadline passed (caller_stalled).",
	"scrapegate_upstream_response_seconds":      "Time from a scrape's admission until the pod's response headers arrived, of scrapes that got a response: waiting for a busy endpoint's connection, dialling and the TLS handshake included.",
	"scrapegate_response_bytes_total":           "Body bytes read from pods for responses passed on to callers; a caller that hung up mid-body did not receive them all.",
	"scrapegate_upstream_inflight_requests":     "Scrapes in flight, each holding a slot of -max-inflight from admission until its body is sent or abandoned, waits for a connection included.",
	"scrapegate_pooled_endpoints":               "Pod endpoints (ip:port) with a connection pool.",
	"scrapegate_pooled_endpoints_evicted_total": "Endpoint pools dropped: idle for -endpoint-idle-ttl, or, with -max-endpoints pools in use, one that never answered making room for a new endpoint.",
	"scrapegate_auth_failures_total":            "Requests refused for missing or wrong credentials (401/407), by reason; reason busy (503) and too_many_failures (429) are basic-auth logins not judged; a node agent's token_refused_unreviewed is 401, serviceaccount_not_allowed 403, token_review_failed and token_reviews_busy 503.",
	"scrapegate_token_reviews_total":            "Node agent: TokenReviews of callers' tokens asked of the API server, by verdict (allowed, unauthenticated, serviceaccount_not_allowed, error).",
	"scrapegate_token_review_cache_hits_total":  "Node agent: callers' tokens judged from a remembered TokenReview verdict, without asking the API server, by verdict.",
	"scrapegate_rejected_connections_total":     "Connections closed before serving a request: caller not allowed, too many from one caller, or a refused client certificate.",
	"scrapegate_file_reloads_total":             "Reloads of the token, htpasswd, certificate and CA files, by flag and result: success when changed contents were put in force, failure at every -reload-interval check that cannot read or parse them, while the last good contents stay in force.",
	"scrapegate_rate_limited_callers":           "Callers (IPv4 addresses, IPv6 /64s) answered 429 by -caller-rate-limit within the last minute.",
	"scrapegate_kubernetes_synced":              "1 once the informers (-kubernetes) of pods, nodes, Services and EndpointSlices have listed every object, else 0.",
	"scrapegate_kubernetes_objects":             "Objects the informers hold, by resource: pods, nodes, services, endpointslices.",
	"scrapegate_service_scrapes_total":          "Service targets admitted (/services/, /endpoints/ and .svc names in absolute form), by the kind of the endpoint's targetRef: pod, node, none (no targetRef), other; never by Service.",
	"scrapegate_build_info":                     "A metric with a constant '1' value labelled by the version, VCS revision and Go version scrapegate was built from.",
}

// gatewayMetrics holds every metric of one Gateway. Each Gateway has its own
// set so that tests (and several gateways in one process) do not share counters.
type gatewayMetrics struct {
	set *metrics.Set

	requests [numRoutes][1000]atomic.Pointer[metrics.Counter]
	// routeNames are the route labels, from the route table.
	routeNames [numRoutes]string

	rejected       [numReasons]*metrics.Counter
	upstreamErrors [numReasons]*metrics.Counter
	clientAborts   [numReasons]*metrics.Counter
	upstreamTime   *metrics.PrometheusHistogram
	responseBytes  *metrics.Counter
	evicted        *metrics.Counter

	serviceScrapes      [numTargetKinds]*metrics.Counter
	authFailures        [auth.NumResults]*metrics.Counter
	rejectedConnections [callers.NumRejections]*metrics.Counter
}

var exposeMetadataOnce sync.Once

func newGatewayMetrics(inflight, pooled func() float64) *gatewayMetrics {
	exposeMetadataOnce.Do(func() { metrics.ExposeMetadata(true) })
	m := &gatewayMetrics{set: metrics.NewSet()}
	for r := range routes {
		m.routeNames[r] = routes[r].name
	}
	for r := reason(0); r < numReasons; r++ {
		name := fmt.Sprintf(`{reason=%q}`, reasonInfo[r].name)
		switch reasonInfo[r].family {
		case familyUpstream:
			m.upstreamErrors[r] = m.set.NewCounter("scrapegate_upstream_errors_total" + name)
		case familyCaller:
			m.clientAborts[r] = m.set.NewCounter("scrapegate_client_aborts_total" + name)
		default:
			m.rejected[r] = m.set.NewCounter("scrapegate_rejected_requests_total" + name)
		}
	}
	m.upstreamTime = m.set.NewPrometheusHistogramExt("scrapegate_upstream_response_seconds",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60})
	m.responseBytes = m.set.NewCounter("scrapegate_response_bytes_total")
	m.evicted = m.set.NewCounter("scrapegate_pooled_endpoints_evicted_total")
	for k, name := range targetKindNames {
		m.serviceScrapes[k] = m.set.NewCounter(fmt.Sprintf(`scrapegate_service_scrapes_total{target_kind=%q}`, name))
	}
	for r := auth.Result(1); r < auth.NumResults; r++ {
		m.authFailures[r] = m.set.NewCounter(fmt.Sprintf(`scrapegate_auth_failures_total{reason=%q}`, r))
	}
	for r := callers.Rejection(0); r < callers.NumRejections; r++ {
		m.rejectedConnections[r] = m.set.NewCounter(fmt.Sprintf(`scrapegate_rejected_connections_total{reason=%q}`, r))
	}
	m.set.NewGauge("scrapegate_upstream_inflight_requests", inflight)
	m.set.NewGauge("scrapegate_pooled_endpoints", pooled)
	build := buildinfo.Get()
	m.set.NewGauge(fmt.Sprintf(`scrapegate_build_info{version=%q,revision=%q,goversion=%q}`, build.Version, build.Revision, build.GoVersion),
		func() float64 { return 1 })
	return m
}

// countRequest counts one answered request. Counters are created on first use
// of a (route, code) pair and cached, so the hot path does not allocate.
func (m *gatewayMetrics) countRequest(r route, code int) {
	if code < 0 || code >= len(m.requests[r]) {
		code = 0
	}
	p := &m.requests[r][code]
	c := p.Load()
	if c == nil {
		c = m.set.GetOrCreateCounter(`scrapegate_requests_total{route="` + m.routeNames[r] + `",code="` + strconv.Itoa(code) + `"}`)
		p.Store(c)
	}
	c.Inc()
}

// reloads returns the counter of a file's reloads with the given result.
func (m *gatewayMetrics) reloads(flag string, ok bool) *metrics.Counter {
	result := "failure"
	if ok {
		result = "success"
	}
	return m.set.GetOrCreateCounter(fmt.Sprintf(`scrapegate_file_reloads_total{flag=%q,result=%q}`, flag, result))
}

// countFailure counts a failed request under its reason.
func (m *gatewayMetrics) countFailure(r reason) {
	switch reasonInfo[r].family {
	case familyUpstream:
		m.upstreamErrors[r].Inc()
	case familyCaller:
		m.clientAborts[r].Inc()
	default:
		m.rejected[r].Inc()
	}
}

// writePrometheus writes the gateway's metrics followed by Go and process
// metrics, filling in the HELP text that the metrics library leaves empty.
func (m *gatewayMetrics) writePrometheus(w io.Writer) {
	var bb bytes.Buffer
	m.set.WritePrometheus(&bb)
	metrics.WriteProcessMetrics(&bb)
	for line := range bytes.Lines(bb.Bytes()) {
		if name, ok := bytes.CutPrefix(line, []byte("# HELP ")); ok {
			name = bytes.TrimSuffix(name, []byte("\n"))
			if help, ok := metricHelp[string(name)]; ok {
				fmt.Fprintf(w, "# HELP %s %s\n", name, help)
				continue
			}
		}
		_, _ = w.Write(line)
	}
}
