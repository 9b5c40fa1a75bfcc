package kube

import (
	"errors"
	"net/netip"
)

// AnnotationScrapeToken, set to "true" on a pod or a Service, opts its
// targets in to the gateway's scrape token (-target-token-file), which the
// gateway sends only over TLS and only to -target-token-namespaces.
const AnnotationScrapeToken = "scrapegate.io/scrape-token"

// Why a Service target cannot be resolved; the errors ResolveService and
// ServiceEndpointAt return wrap one of these, and say which name or port.
var (
	// ErrUnknownService: no such Service in a watched namespace (404).
	ErrUnknownService = errors.New("unknown service")
	// ErrUnknownPort: the Service has no such port (404).
	ErrUnknownPort = errors.New("unknown service port")
	// ErrNotAnEndpoint: the address is not one of the Service's endpoints (404).
	ErrNotAnEndpoint = errors.New("not an endpoint of the service")
	// ErrNoReadyEndpoint: the Service has the port but no ready endpoint
	// for it (503).
	ErrNoReadyEndpoint = errors.New("no ready endpoint")
	// ErrPodNotLive: the endpoint's pod is not a live pod with that IP
	// (403 with -target-policy=kubernetes).
	ErrPodNotLive = errors.New("the endpoint's pod is not a live pod")
)

// ServiceEndpoint is the endpoint a Service target resolved to.
type ServiceEndpoint struct {
	// Addr is the endpoint's address (never zoned, IPv4 unmapped) and port
	// (the EndpointSlice port, or the prometheus.io/port annotation).
	Addr netip.AddrPort
	// TLS is the scheme the Service asks for on that port: its
	// prometheus.io/scheme annotation, or else the port's appProtocol
	// "https" or a name "https" or "https-*".
	TLS bool
	// TargetKind is the endpoint's targetRef kind as the API gives it
	// ("Pod", "Node", ...), or "" for an endpoint with no targetRef.
	TargetKind string
	// Pod is namespace/name of the pod behind the endpoint (targetRef kind
	// Pod), else "".
	Pod string
	// ScrapeToken is set when the Service or that pod carries
	// AnnotationScrapeToken: "true".
	ScrapeToken bool
}

// ResolveService picks one ready endpoint of the Service namespace/name for
// port, a Service port number or name, spreading successive calls over the
// ready endpoints (round robin). With livePodsOnly, endpoints whose
// targetRef pod is not a live pod with that IP are skipped.
func (c *Cluster) ResolveService(namespace, name, port string, livePodsOnly bool) (ServiceEndpoint, error) {
	return ServiceEndpoint{}, ErrUnknownService
}

// ServiceEndpointAt returns the endpoint addr of the Service namespace/name:
// addr's IP must be an address of one of the Service's EndpointSlices, in
// any condition, and its port one of those slices' ports or the Service's
// prometheus.io/port annotation. With livePodsOnly, an endpoint whose
// targetRef pod is not a live pod with that IP is ErrPodNotLive.
func (c *Cluster) ServiceEndpointAt(namespace, name string, addr netip.AddrPort, livePodsOnly bool) (ServiceEndpoint, error) {
	return ServiceEndpoint{}, ErrUnknownService
}

// PodScrapeToken returns the namespace of the live pod that owns ip (as
// HasEndpoint decides ownership) and whether that pod carries
// AnnotationScrapeToken: "true"; ok is false when no live pod has ip.
func (c *Cluster) PodScrapeToken(ip netip.Addr) (namespace string, optedIn, ok bool) {
	return "", false, false
}

// EndpointsSD returns the /sd/endpoints document for rawQuery: one target
// group per EndpointSlice endpoint address and port of each Service, pointed
// at gw through /endpoints/{namespace}/{service}/{ip}/{port}{path}, labelled
// as Prometheus's kubernetes_sd_configs (role: endpointslice) would label
// it. The query takes namespace, selector (on the Services' labels) and all,
// as /sd/pods does: by default only Services annotated prometheus.io/scrape: "true".
func (c *Cluster) EndpointsSD(rawQuery string, gw Gateway) (*Document, error) {
	return nil, errors.New("not yet")
}
