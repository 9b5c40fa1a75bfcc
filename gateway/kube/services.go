package kube

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
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
	// Pod is namespace/name of the pod behind the endpoint, else "": the
	// targetRef pod, when it is a live pod that serves Addr (it owns the
	// IP, or on its node's IP declares the port). Anyone who may write
	// EndpointSlices can name any pod in a targetRef.
	Pod string
	// ScrapeToken is set when that pod carries AnnotationScrapeToken:
	// "true", or the Service does and the pod is in the Service's
	// namespace: a Service's opt-in never reaches another namespace's pod,
	// nor an address with no pod behind it.
	ScrapeToken bool
}

// ResolveService picks one ready endpoint of the Service namespace/name for
// port, a Service port number or name, spreading successive calls over the
// ready endpoints (round robin). With livePodsOnly, endpoints whose
// targetRef pod is not a live pod with that IP are skipped.
func (c *Cluster) ResolveService(namespace, name, port string, livePodsOnly bool) (ServiceEndpoint, error) {
	key := objectKey{namespace, name}
	c.mu.RLock()
	defer c.mu.RUnlock()
	svc := c.services[key]
	if svc == nil {
		return ServiceEndpoint{}, c.unknownService(key)
	}
	sp := svc.port(port)
	if sp == nil {
		return ServiceEndpoint{}, resolveErrorf(ErrUnknownPort, "Service %s has no TCP port %q (it has: %s)", key, port, svc.portList())
	}
	// Two passes over the candidates, counting then picking, so that
	// nothing is allocated per call.
	candidates, skipped := 0, 0
	c.eachReadyEndpoint(svc, key, sp.name, func(ep *sliceEndpoint, _ *slicePort) bool {
		if livePodsOnly && !c.podBehindLocked(ep, ep.addrs[0]) {
			skipped++
		} else {
			candidates++
		}
		return true
	})
	if candidates == 0 {
		if skipped > 0 {
			return ServiceEndpoint{}, resolveErrorf(ErrNoReadyEndpoint, "Service %s has no ready endpoint for port %s with a live pod behind it (the pods of %d ready endpoints are not live pods with that IP)",
				key, sp, skipped)
		}
		return ServiceEndpoint{}, resolveErrorf(ErrNoReadyEndpoint, "Service %s has no ready endpoint for port %s", key, sp)
	}
	pick := int(svc.next.Add(1) % uint64(candidates))
	var out ServiceEndpoint
	c.eachReadyEndpoint(svc, key, sp.name, func(ep *sliceEndpoint, p *slicePort) bool {
		if livePodsOnly && !c.podBehindLocked(ep, ep.addrs[0]) {
			return true
		}
		if pick > 0 {
			pick--
			return true
		}
		out = c.serviceEndpointLocked(svc, namespace, ep, netip.AddrPortFrom(ep.addrs[0], p.port), svc.tls(sp.name, sp.appProtocol))
		return false
	})
	return out, nil
}

// ServiceEndpointAt returns the endpoint addr of the Service namespace/name:
// addr's IP must be an address of one of the Service's EndpointSlices, in
// any condition, and its port one of those slices' ports or the Service's
// prometheus.io/port annotation. With livePodsOnly, an endpoint whose
// targetRef pod is not a live pod with that IP is ErrPodNotLive.
func (c *Cluster) ServiceEndpointAt(namespace, name string, addr netip.AddrPort, livePodsOnly bool) (ServiceEndpoint, error) {
	key := objectKey{namespace, name}
	ip, port := addr.Addr().Unmap(), addr.Port()
	c.mu.RLock()
	defer c.mu.RUnlock()
	svc := c.services[key]
	if svc == nil {
		return ServiceEndpoint{}, c.unknownService(key)
	}
	hasIP := false // then the error is the port's
	for _, es := range c.serviceSlices[key] {
		if !svc.counts(es) {
			continue
		}
		for i := range es.endpoints {
			ep := &es.endpoints[i]
			if !slices.Contains(ep.addrs, ip) {
				continue
			}
			hasIP = true
			var tls bool
			if p := es.tcpPort(port); p != nil {
				tls = svc.tls(p.name, p.appProtocol)
			} else if port == svc.annotatedPort && port != 0 {
				tls = svc.tls("", "")
			} else {
				continue
			}
			if livePodsOnly && !c.podBehindLocked(ep, ip) {
				return ServiceEndpoint{}, resolveErrorf(ErrPodNotLive, "the pod %s behind endpoint %s of Service %s is not a live pod with that IP",
					ep.pod, netip.AddrPortFrom(ip, port), key)
			}
			return c.serviceEndpointLocked(svc, namespace, ep, netip.AddrPortFrom(ip, port), tls), nil
		}
	}
	if hasIP {
		return ServiceEndpoint{}, resolveErrorf(ErrUnknownPort, "endpoint %s of Service %s has no TCP port %d (it has: %s)",
			ip, key, port, c.endpointPortList(svc, key, ip))
	}
	return ServiceEndpoint{}, resolveErrorf(ErrNotAnEndpoint, "%s is not an endpoint address of Service %s", ip, key)
}

// PodScrapeToken returns the namespace of the live pod that serves addr
// and whether that pod carries AnnotationScrapeToken: "true"; ok is false
// when no live pod serves addr. On a node's IP, shared by its hostNetwork
// pods, that is the pod declaring addr's port (as HasEndpoint decides), so
// node-exporter can opt in while kube-proxy beside it does not; should
// several declare it (a DaemonSet's old and new pod in a rollout), the
// token goes only if every one opted in, in one namespace.
func (c *Cluster) PodScrapeToken(addr netip.AddrPort) (namespace string, optedIn, ok bool) {
	ip, port := addr.Addr().Unmap(), addr.Port()
	c.mu.RLock()
	defer c.mu.RUnlock()
	owners := 0
	optedIn = true
	add := func(p *livePod) {
		if owners == 0 {
			namespace = p.namespace
		} else if namespace != p.namespace {
			namespace = ""
		}
		owners++
		// A terminating pod may already have lost its IP to a pod the
		// informers have not shown yet, or never will (unwatched).
		optedIn = optedIn && p.scrapeToken && !p.terminating
	}
	for _, p := range c.livePods[ip] {
		if p.hostNetwork && slices.Contains(p.ports, port) {
			add(p)
		}
	}
	if owners == 0 {
		if owner := c.ownerLocked(ip); owner != nil {
			add(owner)
		}
	}
	if owners == 0 {
		return "", false, false
	}
	return namespace, optedIn && namespace != "", true
}

// EndpointsSD returns the /sd/endpoints document for rawQuery: one target
// group per EndpointSlice endpoint address and port of each Service, pointed
// at gw through /endpoints/{namespace}/{service}/{ip}/{port}{path}, labelled
// as Prometheus's kubernetes_sd_configs (role: endpointslice) would label
// it. The query takes namespace, selector (on the Services' labels) and all,
// as /sd/pods does: by default only Services annotated prometheus.io/scrape: "true".
//
// Endpoints of every condition are listed, as Prometheus lists them. Left
// out: slices of a Service the informer does not hold, FQDN slices, and the
// extra targets Prometheus adds for a pod's container ports that no slice
// port covers (they carry no endpointslice port label, and /endpoints/
// would refuse them).
func (c *Cluster) EndpointsSD(rawQuery string, gw Gateway) (*Document, error) {
	q, canonical, err := parseSDQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	return c.document(docKey{kind: "endpoints", query: canonical, gateway: gw}, &c.endpointsVersion, func() []targetGroup {
		return c.endpointGroups(q, gw)
	})
}

// objectKey names a namespaced object without building a "namespace/name"
// string on every lookup.
type objectKey struct{ namespace, name string }

func (k objectKey) String() string { return k.namespace + "/" + k.name }

// service is what resolution needs of a Service. Its strings share the
// informer's stored object.
type service struct {
	ports         []servicePort
	scheme        string // prometheus.io/scheme
	annotatedPort uint16 // prometheus.io/port, 0 when absent
	scrapeToken   bool   // AnnotationScrapeToken: "true"
	// primaryFamily is the address type of a dual-stack Service's slices
	// that count, "" for a single-stack one: one pod is one target, as on
	// /sd/endpoints (nonPrimaryIPFamilySlice), not one per address family.
	primaryFamily discoveryv1.AddressType
	next          atomic.Uint64
}

// servicePort is one TCP port of a Service; name links it to the slices'
// ports (an unnamed single port has name "").
type servicePort struct {
	name        string
	port        uint16
	protocol    corev1.Protocol
	appProtocol string
}

// endpointSlice is what resolution needs of an EndpointSlice: its TCP ports
// and its endpoints that have an IP address.
type endpointSlice struct {
	service     objectKey // by its label kubernetes.io/service-name
	addressType discoveryv1.AddressType
	ports       []slicePort
	endpoints   []sliceEndpoint
}

type slicePort struct {
	name        string
	port        uint16
	appProtocol string
}

type sliceEndpoint struct {
	addrs      []netip.Addr // at least one: the first is the one resolved to
	ready      bool         // conditions.ready nil or true
	targetKind string
	pod        string // namespace/name when targetKind is "Pod"
}

func serviceOf(svc *corev1.Service) *service {
	s := &service{scheme: svc.Annotations[annotationScheme], scrapeToken: svc.Annotations[AnnotationScrapeToken] == "true"}
	s.annotatedPort, _ = annotatedPort(svc.Annotations)
	if p := svc.Spec.IPFamilyPolicy; p != nil && (*p == corev1.IPFamilyPolicyPreferDualStack || *p == corev1.IPFamilyPolicyRequireDualStack) && len(svc.Spec.IPFamilies) > 0 {
		s.primaryFamily = discoveryv1.AddressType(svc.Spec.IPFamilies[0])
	}
	for _, p := range svc.Spec.Ports {
		if p.Port <= 0 || p.Port > 65535 {
			continue
		}
		sp := servicePort{name: p.Name, port: uint16(p.Port), protocol: p.Protocol}
		if sp.protocol == "" {
			sp.protocol = corev1.ProtocolTCP
		}
		if p.AppProtocol != nil {
			sp.appProtocol = *p.AppProtocol
		}
		s.ports = append(s.ports, sp)
	}
	return s
}

// counts reports whether es is one of the Service's slices that count: not
// the secondary address family's of a dual-stack Service.
func (s *service) counts(es *endpointSlice) bool {
	return s.primaryFamily == "" || es.addressType == s.primaryFamily
}

// port returns the TCP port the Service calls port, a number or a name.
func (s *service) port(port string) *servicePort {
	number := -1 // a name, unless every character is a digit: "9p" is a name
	if strings.Trim(port, "0123456789") == "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return nil
		}
		number = int(n)
	}
	for i := range s.ports {
		p := &s.ports[i]
		if p.protocol == corev1.ProtocolTCP && (number >= 0 && int(p.port) == number || number < 0 && p.name == port) {
			return p
		}
	}
	return nil
}

// portList lists the Service's ports for an error message, e.g.
// "8080/http-metrics, 53/dns (UDP)".
func (s *service) portList() string {
	if len(s.ports) == 0 {
		return "none"
	}
	list := make([]string, len(s.ports))
	for i, p := range s.ports {
		list[i] = p.String()
		if p.protocol != corev1.ProtocolTCP {
			list[i] += " (" + string(p.protocol) + ")"
		}
	}
	return strings.Join(list, ", ")
}

// String is the port as error messages name it: "8080/http-metrics", or
// "8080" when it has no name.
func (p *servicePort) String() string {
	if p.name == "" {
		return strconv.Itoa(int(p.port))
	}
	return strconv.Itoa(int(p.port)) + "/" + p.name
}

// tls decides the scheme to an endpoint port that the Service names
// portName, with appProtocol: the prometheus.io/scheme annotation, or else
// the port's appProtocol "https" or a name "https" or "https-*".
func (s *service) tls(portName, appProtocol string) bool {
	switch s.scheme {
	case "https":
		return true
	case "http":
		return false
	}
	return appProtocol == "https" || portName == "https" || strings.HasPrefix(portName, "https-")
}

func sliceOf(es *discoveryv1.EndpointSlice) *endpointSlice {
	out := &endpointSlice{service: objectKey{es.Namespace, es.Labels[discoveryv1.LabelServiceName]}, addressType: es.AddressType}
	if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
		return out // FQDN: nothing the gateway dials
	}
	for _, p := range es.Ports {
		// A port left out (nil) means every port: nothing to resolve to.
		if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 || p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		sp := slicePort{port: uint16(*p.Port)}
		if p.Name != nil {
			sp.name = *p.Name
		}
		if p.AppProtocol != nil {
			sp.appProtocol = *p.AppProtocol
		}
		out.ports = append(out.ports, sp)
	}
	for _, e := range es.Endpoints {
		ep := sliceEndpoint{ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
		for _, a := range e.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil && ip.Zone() == "" {
				ep.addrs = append(ep.addrs, ip.Unmap())
			}
		}
		if len(ep.addrs) == 0 {
			continue
		}
		if ref := e.TargetRef; ref != nil {
			ep.targetKind = ref.Kind
			if ref.Kind == "Pod" {
				ns := ref.Namespace
				if ns == "" {
					ns = es.Namespace
				}
				ep.pod = ns + "/" + ref.Name
			}
		}
		out.endpoints = append(out.endpoints, ep)
	}
	return out
}

// tcpPort returns the slice's port with that number.
func (es *endpointSlice) tcpPort(port uint16) *slicePort {
	for i := range es.ports {
		if es.ports[i].port == port {
			return &es.ports[i]
		}
	}
	return nil
}

// eachReadyEndpoint calls f with each ready endpoint of the Service svc,
// whose key is key, in the slices that count, and the port its slice gives
// the Service port portName, until f returns false.
func (c *Cluster) eachReadyEndpoint(svc *service, key objectKey, portName string, f func(*sliceEndpoint, *slicePort) bool) {
	for _, es := range c.serviceSlices[key] {
		if !svc.counts(es) {
			continue
		}
		var port *slicePort
		for i := range es.ports {
			if es.ports[i].name == portName {
				port = &es.ports[i]
				break
			}
		}
		if port == nil {
			continue
		}
		for i := range es.endpoints {
			if ep := &es.endpoints[i]; ep.ready && !f(ep, port) {
				return
			}
		}
	}
}

// podBehindLocked reports whether ep is not a pod's, or its pod is a live
// pod that owns ip: a pod network reuses IPs, and a terminated pod may
// linger in a slice after another pod got its address.
func (c *Cluster) podBehindLocked(ep *sliceEndpoint, ip netip.Addr) bool {
	if ep.targetKind != "Pod" {
		return true
	}
	p := c.byKey[ep.pod]
	return p != nil && slices.Contains(p.ips, ip) && (p.hostNetwork || c.ownerLocked(ip) == p)
}

// serviceEndpointLocked is endpoint ep at addr of the Service svc in
// namespace.
func (c *Cluster) serviceEndpointLocked(svc *service, namespace string, ep *sliceEndpoint, addr netip.AddrPort, tls bool) ServiceEndpoint {
	out := ServiceEndpoint{Addr: addr, TLS: tls, TargetKind: ep.targetKind}
	if p := c.servingPodLocked(ep, addr); p != nil {
		out.Pod = ep.pod
		optedIn := func(q *livePod) bool {
			return !q.terminating && q.namespace == p.namespace && (q.scrapeToken || svc.scrapeToken && q.namespace == namespace)
		}
		out.ScrapeToken = optedIn(p)
		if p.hostNetwork {
			// As PodScrapeToken: every hostNetwork pod declaring the
			// port on the node's IP may be the one listening on it.
			for _, q := range c.livePods[addr.Addr()] {
				if q.hostNetwork && slices.Contains(q.ports, addr.Port()) && !optedIn(q) {
					out.ScrapeToken = false
				}
			}
		}
	}
	return out
}

// servingPodLocked returns ep's targetRef pod if it is a live pod serving
// addr: it owns addr's IP, or it is on its node's network and declares
// addr's port (a node's IP is every hostNetwork pod's); else nil.
func (c *Cluster) servingPodLocked(ep *sliceEndpoint, addr netip.AddrPort) *livePod {
	if ep.targetKind != "Pod" {
		return nil
	}
	p := c.byKey[ep.pod]
	ip := addr.Addr()
	if p == nil || !slices.Contains(p.ips, ip) {
		return nil
	}
	if p.hostNetwork && slices.Contains(p.ports, addr.Port()) || !p.hostNetwork && c.ownerLocked(ip) == p {
		return p
	}
	return nil
}

func (c *Cluster) unknownService(key objectKey) error {
	if len(c.namespaces) > 0 && !slices.Contains(c.namespaces, key.namespace) {
		return resolveErrorf(ErrUnknownService, "no Service %s in the watched namespaces: -kubernetes-namespaces does not list %s", key, key.namespace)
	}
	return resolveErrorf(ErrUnknownService, "no Service %s in the watched namespaces", key)
}

// resolveError is why a Service target cannot be resolved, worded for the
// gateway's error body ("no Service kube-system/foo in the watched namespaces"): its text
// does not repeat the sentinel it wraps.
type resolveError struct {
	reason error
	text   string
}

func resolveErrorf(reason error, format string, args ...any) error {
	return &resolveError{reason: reason, text: fmt.Sprintf(format, args...)}
}

func (e *resolveError) Error() string { return e.text }
func (e *resolveError) Unwrap() error { return e.reason }

// endpointPortList lists the ports ServiceEndpointAt accepts at ip, for an
// error message.
func (c *Cluster) endpointPortList(svc *service, key objectKey, ip netip.Addr) string {
	var ports []int
	if svc.annotatedPort != 0 {
		ports = append(ports, int(svc.annotatedPort))
	}
	for _, es := range c.serviceSlices[key] {
		if !slices.ContainsFunc(es.endpoints, func(ep sliceEndpoint) bool { return slices.Contains(ep.addrs, ip) }) {
			continue
		}
		for _, p := range es.ports {
			ports = append(ports, int(p.port))
		}
	}
	slices.Sort(ports)
	ports = slices.Compact(ports)
	if len(ports) == 0 {
		return "none"
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}

func (c *Cluster) serviceChanged(obj any) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	entry := serviceOf(svc)
	key := objectKey{svc.Namespace, svc.Name}
	c.mu.Lock()
	if old := c.services[key]; old != nil {
		entry.next.Store(old.next.Load()) // keep spreading where it was
	}
	c.services[key] = entry
	c.mu.Unlock()
	c.endpointsVersion.Add(1)
	c.discovery["services"].changed(svc)
}

func (c *Cluster) serviceDeleted(obj any) {
	key, ok := deletedKey(obj)
	if !ok {
		return
	}
	c.mu.Lock()
	delete(c.services, key)
	c.mu.Unlock()
	c.endpointsVersion.Add(1)
	c.discovery["services"].deleted(obj)
}

func (c *Cluster) sliceChanged(obj any) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	entry := sliceOf(es)
	key := objectKey{es.Namespace, es.Name}
	c.mu.Lock()
	c.removeSliceLocked(key)
	c.sliceOf[key] = entry
	c.serviceSlices[entry.service] = append(c.serviceSlices[entry.service], entry)
	c.mu.Unlock()
	c.endpointsVersion.Add(1)
	c.discovery["endpointslices"].changed(es)
}

func (c *Cluster) sliceDeleted(obj any) {
	key, ok := deletedKey(obj)
	if !ok {
		return
	}
	c.mu.Lock()
	c.removeSliceLocked(key)
	c.mu.Unlock()
	c.endpointsVersion.Add(1)
	c.discovery["endpointslices"].deleted(obj)
}

func (c *Cluster) removeSliceLocked(key objectKey) {
	old := c.sliceOf[key]
	if old == nil {
		return
	}
	delete(c.sliceOf, key)
	list := c.serviceSlices[old.service]
	if i := slices.Index(list, old); i >= 0 {
		list = slices.Delete(list, i, i+1)
	}
	if len(list) == 0 {
		delete(c.serviceSlices, old.service)
	} else {
		c.serviceSlices[old.service] = list
	}
}

// deletedKey is the namespace and name of a deleted Service or
// EndpointSlice, whether the informer saw it go or only its tombstone.
func deletedKey(obj any) (objectKey, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		ns, name, err := cache.SplitMetaNamespaceKey(d.Key)
		return objectKey{ns, name}, err == nil
	}
	switch o := obj.(type) {
	case *corev1.Service:
		return objectKey{o.Namespace, o.Name}, true
	case *discoveryv1.EndpointSlice:
		return objectKey{o.Namespace, o.Name}, true
	}
	return objectKey{}, false
}
