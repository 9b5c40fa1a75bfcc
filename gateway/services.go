package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/gateway/target"
)

// Service targets: /services/{namespace}/{service}/{port}/{path},
// /endpoints/{namespace}/{service}/{ip}/{port}/{path} and absolute-form
// targets naming {service}.{namespace}.svc[.{cluster domain}]. Each is
// resolved from the cluster's EndpointSlices (package kube), never by DNS,
// after every name in it has been checked: a name that is not one
// Kubernetes could have is refused before anything is looked up.

// Paths the Service routes serve under.
const (
	servicesPrefix  = "/services/"
	endpointsPrefix = "/endpoints/"
)

// scrapeTarget is what admit lets through to proxy: the target, and for a
// Service target (Target.Service) the endpoint it resolved to.
type scrapeTarget struct {
	target.Target
	endpoint kube.ServiceEndpoint
	// component and node are a /components/ target's (KindComponent,
	// KindNodeAgent), for the answer to a refused connection.
	component *kube.Component
	node      string
}

var (
	errServicesNeedKubernetes  = target.Invalid("/services/ needs -kubernetes")
	errEndpointsNeedKubernetes = target.Invalid("/endpoints/ needs -kubernetes")
	errNoServicePort           = target.Invalid("want /services/{namespace}/{service}/{port}/{path}")
	errNoEndpointPort          = target.Invalid("want /endpoints/{namespace}/{service}/{ip}/{port}/{path}")
	// errNotSynced refuses a Service target for now (503 not_synced): the
	// Service may well exist, the gateway does not know yet.
	errNotSynced = errors.New("the Kubernetes informers have not synced yet; retry")
)

// parseServicePath parses /services/{namespace}/{service}/{port}/{path}
// and resolves it to one ready endpoint of the Service.
func (g *Gateway) parseServicePath(uri []byte) (scrapeTarget, error) {
	if g.kube == nil {
		return scrapeTarget{}, errServicesNeedKubernetes
	}
	rest, query := target.SplitQuery(uri[len(servicesPrefix):])
	segs, path, ok := cutSegments(rest, 3)
	if !ok {
		return scrapeTarget{}, errNoServicePort
	}
	ns, svc, port := string(segs[0]), string(segs[1]), string(segs[2])
	if err := checkServiceNames(ns, svc); err != nil {
		return scrapeTarget{}, err
	}
	if err := checkServicePort(port); err != nil {
		return scrapeTarget{}, err
	}
	path, err := target.CheckPathAndQuery(path, query)
	if err != nil {
		return scrapeTarget{}, err
	}
	if !g.kube.cluster.Synced() {
		return scrapeTarget{}, errNotSynced
	}
	ep, err := g.kube.cluster.ResolveService(ns, svc, port, g.livePodsOnly())
	if err != nil {
		return scrapeTarget{}, err
	}
	return serviceTarget(ep, path, query, ep.TLS), nil
}

// parseEndpointsPath parses /endpoints/{namespace}/{service}/{ip}/{port}/{path},
// the form /sd/endpoints points at: exactly that endpoint, while it is one
// of the Service's.
func (g *Gateway) parseEndpointsPath(uri []byte) (scrapeTarget, error) {
	if g.kube == nil {
		return scrapeTarget{}, errEndpointsNeedKubernetes
	}
	rest, query := target.SplitQuery(uri[len(endpointsPrefix):])
	segs, path, ok := cutSegments(rest, 4)
	if !ok {
		return scrapeTarget{}, errNoEndpointPort
	}
	ns, svc := string(segs[0]), string(segs[1])
	if err := checkServiceNames(ns, svc); err != nil {
		return scrapeTarget{}, err
	}
	addr, err := target.ParseIPPort(segs[2], segs[3])
	if err != nil {
		return scrapeTarget{}, err
	}
	if path, err = target.CheckPathAndQuery(path, query); err != nil {
		return scrapeTarget{}, err
	}
	if !g.kube.cluster.Synced() {
		return scrapeTarget{}, errNotSynced
	}
	ep, err := g.kube.cluster.ServiceEndpointAt(ns, svc, addr, g.livePodsOnly())
	if err != nil {
		return scrapeTarget{}, err
	}
	return serviceTarget(ep, path, query, ep.TLS), nil
}

// parseProxyURI parses an absolute-form target: an IP literal host is a pod
// endpoint, and {service}.{namespace}.svc[.{cluster domain}] a Service,
// resolved as /services/ resolves it, with the URI's port and scheme. Any
// other name is refused as it always was: the gateway resolves no name by
// DNS.
func (g *Gateway) parseProxyURI(uri []byte) (scrapeTarget, error) {
	t, err := target.ParseAbsoluteURI(uri)
	if err != target.ErrHostNotIP {
		return scrapeTarget{Target: t}, err
	}
	u, err := target.SplitAbsoluteURI(uri)
	if err != nil || !hasLabelFold(u.Host, "svc") {
		return scrapeTarget{}, target.ErrHostNotIP
	}
	if g.kube == nil {
		return scrapeTarget{}, target.Invalid("target host is not an IP literal; Service names (.svc) need -kubernetes")
	}
	svc, ns, err := g.serviceHost(string(u.Host))
	if err != nil {
		return scrapeTarget{}, err
	}
	if !g.kube.cluster.Synced() {
		return scrapeTarget{}, errNotSynced
	}
	ep, err := g.kube.cluster.ResolveService(ns, svc, strconv.Itoa(int(u.Port)), g.livePodsOnly())
	if err != nil {
		return scrapeTarget{}, err
	}
	return serviceTarget(ep, u.Path, u.Query, u.TLS), nil
}

// serviceHost splits a Service's DNS name, {service}.{namespace}.svc or
// {service}.{namespace}.svc.{-kubernetes-cluster-domain}, into the
// Service's name and namespace.
func (g *Gateway) serviceHost(host string) (service, namespace string, err error) {
	switch {
	case strings.ContainsRune(host, '%'):
		return "", "", target.Invalid(fmt.Sprintf("host %q is percent-encoded: write the Service name plainly", host))
	case strings.ToLower(host) != host:
		return "", "", target.Invalid(fmt.Sprintf("host %q has upper case letters: Service names are lower case", host))
	case strings.HasSuffix(host, "."):
		return "", "", target.Invalid(fmt.Sprintf("host %q ends in '.': write the Service name without the trailing dot", host))
	case strings.Contains(host, ".."):
		return "", "", target.Invalid(fmt.Sprintf("host %q has an empty label ('..')", host))
	}
	domain := g.cfg.KubernetesClusterDomain
	labels := strings.SplitN(host, ".", 4)
	if len(labels) < 3 || labels[2] != "svc" || len(labels) == 4 && labels[3] != domain {
		return "", "", target.Invalid(fmt.Sprintf("%q is not a Service name: it must be {service}.{namespace}.svc or end in .svc.%s (-kubernetes-cluster-domain=%s)",
			host, domain, domain))
	}
	if err := checkServiceNames(labels[1], labels[0]); err != nil {
		return "", "", err
	}
	return labels[0], labels[1], nil
}

// livePodsOnly is whether a Service's endpoints must be live pods, where a
// pod is behind them: the kubernetes target policy.
func (g *Gateway) livePodsOnly() bool {
	return g.cfg.EffectiveTargetPolicy() == TargetPolicyKubernetes
}

// serviceTarget is the target of endpoint ep of a Service. useTLS is
// ep.TLS but in proxy form, where the URI's scheme decides.
func serviceTarget(ep kube.ServiceEndpoint, path, query []byte, useTLS bool) scrapeTarget {
	return scrapeTarget{
		Target:   target.Target{Addr: ep.Addr, Path: path, Query: query, TLS: useTLS, Service: true},
		endpoint: ep,
	}
}

// cutSegments cuts n '/'-separated segments off rest and returns them and
// what follows the last, the path from its '/' (nil if none follows).
func cutSegments(rest []byte, n int) (segs [][]byte, path []byte, ok bool) {
	segs = make([][]byte, n)
	for i := range n - 1 {
		seg, after, found := bytes.Cut(rest, []byte("/"))
		if !found {
			return nil, nil, false
		}
		segs[i], rest = seg, after
	}
	segs[n-1] = rest
	if j := bytes.IndexByte(rest, '/'); j >= 0 {
		segs[n-1], path = rest[:j], rest[j:]
	}
	return segs, path, true
}

// hasLabelFold reports whether host has a '.'-separated label equal to
// label, ignoring case.
func hasLabelFold(host []byte, label string) bool {
	for l := range bytes.SplitSeq(host, []byte(".")) {
		if bytes.EqualFold(l, []byte(label)) {
			return true
		}
	}
	return false
}

// checkServiceNames checks a namespace (an RFC 1123 DNS label) and a
// Service name (an RFC 1035 one: it also starts with a letter).
func checkServiceNames(namespace, service string) error {
	if err := checkLabel("namespace", namespace, false); err != nil {
		return err
	}
	return checkLabel("service", service, true)
}

// checkLabel checks that s, a Kubernetes name of kind what, is a DNS
// label: at most 63 characters of a-z, 0-9 and '-', with a letter or digit
// at both ends (RFC 1123), and with rfc1035 a letter first. The error says
// which rule s breaks.
func checkLabel(what, s string, rfc1035 bool) error {
	rfc := "RFC 1123"
	if rfc1035 {
		rfc = "RFC 1035"
	}
	problem := ""
	switch {
	case s == "":
		return target.Invalid("the " + what + " is empty")
	case strings.ContainsRune(s, '%'):
		problem = "it is percent-encoded; write it plainly"
	case s == "." || s == "..":
		problem = "it is a dot segment"
	case strings.ContainsRune(s, '.'):
		problem = "it contains '.'"
	case len(s) > 63:
		problem = "it is longer than 63 characters"
	case strings.ToLower(s) != s:
		problem = "it has upper case letters; Kubernetes names are lower case"
	case strings.IndexFunc(s, func(c rune) bool { return !isLowerAlnum(c) && c != '-' }) >= 0:
		problem = "it may only have a-z, 0-9 and '-'"
	case !isLowerAlnum(rune(s[0])) || !isLowerAlnum(rune(s[len(s)-1])):
		problem = "it must start and end with a letter or digit"
	case rfc1035 && !('a' <= s[0] && s[0] <= 'z'):
		problem = "it must start with a letter"
	default:
		return nil
	}
	return target.Invalid(fmt.Sprintf("%s %q is not a DNS label (%s): %s", what, s, rfc, problem))
}

// checkServicePort checks a Service port as /services/ takes it: a number
// 1-65535 without leading zeros, or a port name (IANA_SVC_NAME: at most 15
// characters of a-z, 0-9 and '-', at least one letter, no '-' at either end
// or next to another).
func checkServicePort(port string) error {
	if port != "" && strings.Trim(port, "0123456789") == "" {
		if _, err := target.ParsePort([]byte(port)); err != nil {
			return target.Invalid(fmt.Sprintf("port %q is out of range: a Service port is a number 1-65535 without leading zeros, or a port name", port))
		}
		return nil
	}
	problem := ""
	switch {
	case port == "":
		return errNoServicePort
	case strings.ContainsRune(port, '%'):
		problem = "it is percent-encoded; write it plainly"
	case len(port) > 15:
		problem = "it is longer than 15 characters"
	case strings.ToLower(port) != port:
		problem = "it has upper case letters"
	case strings.IndexFunc(port, func(c rune) bool { return !isLowerAlnum(c) && c != '-' }) >= 0:
		problem = "it may only have a-z, 0-9 and '-'"
	case port[0] == '-' || port[len(port)-1] == '-' || strings.Contains(port, "--"):
		problem = "it must not start or end with '-', nor have two in a row"
	default:
		return nil
	}
	return target.Invalid(fmt.Sprintf("port %q is not a Service port number or name (IANA_SVC_NAME): %s", port, problem))
}

func isLowerAlnum(c rune) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// refusalOf is the reason a target that cannot be parsed or resolved is
// refused for.
func refusalOf(err error) reason {
	switch {
	case errors.Is(err, kube.ErrUnknownService), errors.Is(err, kube.ErrUnknownPort), errors.Is(err, kube.ErrNotAnEndpoint):
		return reasonUnknownService
	case errors.Is(err, kube.ErrUnknownComponent):
		return reasonUnknownComponent
	case errors.Is(err, kube.ErrNoReadyEndpoint):
		return reasonNoReadyEndpoint
	case errors.Is(err, kube.ErrPodNotLive), errors.Is(err, errNotAPIServer):
		return reasonForbidden
	case errors.Is(err, errNotSynced):
		return reasonNotSynced
	}
	return reasonBadTarget
}

// endpointHeader is the Scrapegate-Endpoint response header of a Service
// target: the endpoint scraped, and the pod behind it if there is one.
const endpointHeader = "Scrapegate-Endpoint"

// endpointHeaderValue is "10.244.1.5:8080", or with a pod behind the
// endpoint "10.244.1.5:8080; pod=kube-system/kube-state-metrics-0".
func endpointHeaderValue(ep *kube.ServiceEndpoint) string {
	if ep.Pod == "" {
		return ep.Addr.String()
	}
	return ep.Addr.String() + "; pod=" + ep.Pod
}

// Target kinds scrapegate_service_scrapes_total counts by: the endpoint's
// targetRef kind, never the Service's name, so a cluster's Services add no
// series.
const (
	targetKindPod = iota
	targetKindNode
	targetKindNone
	targetKindOther
	numTargetKinds
)

var targetKindNames = [numTargetKinds]string{targetKindPod: "pod", targetKindNode: "node", targetKindNone: "none", targetKindOther: "other"}

// targetKindOf is the label of a targetRef kind.
func targetKindOf(kind string) int {
	switch kind {
	case "Pod":
		return targetKindPod
	case "Node":
		return targetKindNode
	case "":
		return targetKindNone
	}
	return targetKindOther
}
