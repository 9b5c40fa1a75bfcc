package kube

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Document is one rendered http_sd document: a JSON list of target groups
// (https://prometheus.io/docs/prometheus/latest/http_sd/), kept gzipped
// only (Prometheus asks for gzip, and 10,000 pods' JSON is tens of
// megabytes), and a weak ETag, valid for both encodings, that changes
// exactly when the JSON does.
type Document struct {
	Gzipped []byte
	ETag    string
	Groups  int
}

// JSON returns the document uncompressed, for the rare caller that does
// not accept gzip.
func (d *Document) JSON() ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(d.Gzipped))
	if err != nil {
		return nil, fmt.Errorf("BUG: cannot read a gzipped document: %w", err)
	}
	return io.ReadAll(zr)
}

// Where documents point Prometheus: the address and scheme it reaches the
// gateway with (__address__, __scheme__).
type Gateway struct {
	Address string
	Scheme  string
}

// KubeletPaths are the kubelet metrics endpoints the gateway proxies; every
// other kubelet path (exec, logs, pods, configz...) is refused.
var KubeletPaths = []string{"/metrics", "/metrics/cadvisor", "/metrics/resource", "/metrics/probes"}

// IsKubeletPath reports whether path is one of KubeletPaths.
func IsKubeletPath(path string) bool { return slices.Contains(KubeletPaths, path) }

// Callers choose the cached documents (each query and advertised address
// has its own), so the cache is bounded in count and bytes; the least
// recently used documents go first. A document over the budget on its own
// is served but not kept.
const (
	maxDocuments     = 16
	maxDocumentBytes = 32 << 20
)

type docKey struct {
	kind    string // "pods", "nodes", "endpoints" or "control-plane"
	query   string // canonical form of the query
	gateway Gateway
}

// document caches one Document until the objects it was built from change.
type document struct {
	mu       sync.Mutex
	version  uint64
	doc      *Document
	size     atomic.Int64 // of doc, for the cache's byte budget
	lastUsed atomic.Int64 // a tick of Cluster.docsClock
}

// sdQuery is what /sd/pods?... and /sd/endpoints?... select: pods, or
// Services, by namespace and labels.
type sdQuery struct {
	namespaces []string // empty: all watched namespaces
	selector   labels.Selector
	all        bool // not only those annotated prometheus.io/scrape: "true"
}

func parseSDQuery(rawQuery string) (sdQuery, string, error) {
	q := sdQuery{selector: labels.Everything()}
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return q, "", fmt.Errorf("cannot parse the query: %w", err)
	}
	for k, vs := range values {
		switch k {
		case "namespace":
			for _, v := range vs {
				for _, ns := range strings.Split(v, ",") {
					if ns != "" && !slices.Contains(q.namespaces, ns) {
						q.namespaces = append(q.namespaces, ns)
					}
				}
			}
		case "selector":
			if len(vs) != 1 {
				return q, "", fmt.Errorf("give selector at most once")
			}
			if q.selector, err = labels.Parse(vs[0]); err != nil {
				return q, "", fmt.Errorf("cannot parse selector %q: %w", vs[0], err)
			}
		case "all":
			if len(vs) != 1 {
				return q, "", fmt.Errorf("give all at most once")
			}
			if q.all, err = strconv.ParseBool(vs[0]); err != nil {
				return q, "", fmt.Errorf("all must be true or false, not %q", vs[0])
			}
		default:
			return q, "", fmt.Errorf("unknown parameter %q: use namespace, selector or all", k)
		}
	}
	slices.Sort(q.namespaces)
	canonical := fmt.Sprintf("ns=%s;sel=%s;all=%t", strings.Join(q.namespaces, ","), q.selector, q.all)
	return q, canonical, nil
}

// PodsSD returns the /sd/pods document for rawQuery: one target group per
// pod endpoint, pointed at gw, labelled as Prometheus's kubernetes_sd_configs
// (role: pod) would label it. By default only pods annotated
// prometheus.io/scrape: "true"; see parseSDQuery for what the query selects.
func (c *Cluster) PodsSD(rawQuery string, gw Gateway) (*Document, error) {
	q, canonical, err := parseSDQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	return c.document(docKey{kind: "pods", query: canonical, gateway: gw}, &c.podsVersion, func() []targetGroup {
		return c.podGroups(q, gw)
	})
}

// NodesSD returns the /sd/nodes document for rawQuery ("path=/metrics/cadvisor",
// default /metrics): one target group per node with a kubelet address.
func (c *Cluster) NodesSD(rawQuery string, gw Gateway) (*Document, error) {
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, fmt.Errorf("cannot parse the query: %w", err)
	}
	path := "/metrics"
	for k, vs := range values {
		if k != "path" || len(vs) != 1 {
			return nil, fmt.Errorf("the only parameter is path, given once")
		}
		path = vs[0]
	}
	if !IsKubeletPath(path) {
		return nil, fmt.Errorf("path must be one of %s", strings.Join(KubeletPaths, ", "))
	}
	return c.document(docKey{kind: "nodes", query: path, gateway: gw}, &c.nodesVersion, func() []targetGroup {
		return c.nodeGroups(path, gw)
	})
}

// document returns the cached document for key, rebuilding it when the
// objects changed since it was built. Concurrent requests for one document
// wait for a single rebuild.
func (c *Cluster) document(key docKey, version interface{ Load() uint64 }, build func() []targetGroup) (*Document, error) {
	c.docsMu.Lock()
	d := c.docs[key]
	if d == nil {
		d = &document{}
		c.docs[key] = d
	}
	c.docsClock++
	d.lastUsed.Store(c.docsClock)
	c.docsMu.Unlock()

	d.mu.Lock()
	// Read before building: a change during the build leaves the version
	// behind, so the next request rebuilds.
	v := version.Load()
	if d.doc != nil && d.version == v {
		d.mu.Unlock()
		return d.doc, nil
	}
	doc, err := render(build())
	if err == nil {
		d.doc, d.version = doc, v
		d.size.Store(int64(len(doc.Gzipped)))
	}
	d.mu.Unlock()
	c.trimDocuments()
	return doc, err
}

// trimDocuments drops the least recently used documents until the cache is
// within its bounds.
func (c *Cluster) trimDocuments() {
	c.docsMu.Lock()
	defer c.docsMu.Unlock()
	for {
		var total int64
		var oldestKey docKey
		var oldest *document
		for k, d := range c.docs {
			total += d.size.Load()
			if oldest == nil || d.lastUsed.Load() < oldest.lastUsed.Load() {
				oldestKey, oldest = k, d
			}
		}
		if len(c.docs) <= maxDocuments && total <= maxDocumentBytes || oldest == nil {
			return
		}
		delete(c.docs, oldestKey)
	}
}

type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

func render(groups []targetGroup) (*Document, error) {
	if groups == nil {
		groups = []targetGroup{} // "[]", not "null"
	}
	var gz bytes.Buffer
	h := sha256.New()
	zw := gzip.NewWriter(&gz)
	// Streamed: the uncompressed JSON never exists as one buffer.
	if err := json.NewEncoder(io.MultiWriter(zw, h)).Encode(groups); err != nil {
		return nil, fmt.Errorf("BUG: cannot encode target groups: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("cannot gzip the document: %w", err)
	}
	return &Document{Gzipped: gz.Bytes(), ETag: `W/"` + hex.EncodeToString(h.Sum(nil)[:12]) + `"`, Groups: len(groups)}, nil
}

// Label names as kubernetes_sd_configs gives them, so relabel rules written
// for it keep working.
const (
	metaNamespace = "__meta_kubernetes_namespace"
	metaPod       = "__meta_kubernetes_pod_"
	metaNode      = "__meta_kubernetes_node_"
)

func (c *Cluster) podGroups(q sdQuery, gw Gateway) []targetGroup {
	var pods []*corev1.Pod
	for _, s := range c.stores("pods") {
		for _, obj := range s.List() {
			pod, ok := obj.(*corev1.Pod)
			if !ok || !isLive(pod) || len(podIPs(pod)) == 0 {
				continue
			}
			if len(q.namespaces) > 0 && !slices.Contains(q.namespaces, pod.Namespace) {
				continue
			}
			if !q.all && pod.Annotations[annotationScrape] != "true" {
				continue
			}
			if !q.selector.Matches(labels.Set(pod.Labels)) {
				continue
			}
			pods = append(pods, pod)
		}
	}
	slices.SortFunc(pods, func(a, b *corev1.Pod) int {
		return cmpOr(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	var groups []targetGroup
	for _, pod := range pods {
		groups = appendPodGroups(groups, pod, gw)
	}
	return groups
}

func cmpOr(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}

// podEndpoint is one port of a pod to scrape, with the container that
// declares it when one does.
type podEndpoint struct {
	port      uint16
	container *servingContainer
	cport     *corev1.ContainerPort
}

// endpointsOf returns the ports to scrape: the prometheus.io/port annotation
// when a pod has one, otherwise every TCP port its containers declare (as
// kubernetes_sd_configs lists them).
func endpointsOf(pod *corev1.Pod) []podEndpoint {
	annotated, hasAnnotation := annotatedPort(pod.Annotations)
	containers := servingContainers(pod)
	var eps []podEndpoint
	for i := range containers {
		ctr := &containers[i]
		for j := range ctr.container.Ports {
			p := &ctr.container.Ports[j]
			if !isTCP(*p) || (hasAnnotation && uint16(p.ContainerPort) != annotated) {
				continue
			}
			eps = append(eps, podEndpoint{port: uint16(p.ContainerPort), container: ctr, cport: p})
			if hasAnnotation {
				return eps
			}
		}
	}
	if hasAnnotation {
		ep := podEndpoint{port: annotated}
		for i := range containers {
			if !containers[i].init { // the first regular container, as a guess
				ep.container = &containers[i]
				break
			}
		}
		return []podEndpoint{ep}
	}
	return eps
}

func appendPodGroups(groups []targetGroup, pod *corev1.Pod, gw Gateway) []targetGroup {
	eps := endpointsOf(pod)
	if len(eps) == 0 {
		return groups
	}
	ip := podIPs(pod)[0] // the primary IP, as kubernetes_sd_configs uses
	path, params := metricsPath(pod.Annotations[annotationPath])
	podsPrefix := "/pods/"
	if pod.Annotations[annotationScheme] == "https" {
		podsPrefix = "/pods/https/"
	}
	common := podLabels(pod)
	for k, v := range params {
		common["__param_"+k] = v
	}
	for _, ep := range eps {
		l := make(map[string]string, len(common)+10)
		for k, v := range common {
			l[k] = v
		}
		l["__scheme__"] = gw.Scheme
		l["__metrics_path__"] = podsPrefix + ip.String() + "/" + strconv.Itoa(int(ep.port)) + path
		l["instance"] = netip.AddrPortFrom(ip, ep.port).String()
		if ep.container != nil {
			l[metaPod+"container_name"] = ep.container.container.Name
			l[metaPod+"container_image"] = ep.container.container.Image
			l[metaPod+"container_init"] = strconv.FormatBool(ep.container.init)
		}
		if ep.cport != nil {
			l[metaPod+"container_port_name"] = ep.cport.Name
			l[metaPod+"container_port_number"] = strconv.Itoa(int(ep.cport.ContainerPort))
			l[metaPod+"container_port_protocol"] = string(corev1.ProtocolTCP)
		}
		groups = append(groups, targetGroup{Targets: []string{gw.Address}, Labels: l})
	}
	return groups
}

// metricsPath returns the prometheus.io/path annotation as a path (default
// /metrics, always starting with '/') and its query as __param_ values:
// Prometheus would escape a '?' inside __metrics_path__.
func metricsPath(annotation string) (string, map[string]string) {
	path, rawQuery, _ := strings.Cut(annotation, "?")
	if path == "" {
		path = "/metrics"
	} else if path[0] != '/' {
		path = "/" + path
	}
	if rawQuery == "" {
		return path, nil
	}
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return path, nil
	}
	params := make(map[string]string, len(values))
	for k, vs := range values {
		if isLabelName(k) {
			params[k] = vs[0]
		}
	}
	return path, params
}

func podLabels(pod *corev1.Pod) map[string]string {
	l := map[string]string{
		metaNamespace:         pod.Namespace,
		metaPod + "name":      pod.Name,
		metaPod + "ip":        primaryIP(pod),
		metaPod + "uid":       string(pod.UID),
		metaPod + "phase":     string(pod.Status.Phase),
		metaPod + "ready":     podReady(pod),
		metaPod + "node_name": pod.Spec.NodeName,
		metaPod + "host_ip":   pod.Status.HostIP,
	}
	addMapLabels(l, metaPod+"label", pod.Labels)
	addMapLabels(l, metaPod+"annotation", pod.Annotations)
	for _, ref := range pod.OwnerReferences {
		if ref.Controller != nil && *ref.Controller {
			l[metaPod+"controller_kind"] = ref.Kind
			l[metaPod+"controller_name"] = ref.Name
		}
	}
	return l
}

// primaryIP is the pod's first IP, as kubernetes_sd_configs labels it, or
// "" before it has one (an EndpointSlice may still list an evicted pod).
func primaryIP(pod *corev1.Pod) string {
	if ips := podIPs(pod); len(ips) > 0 {
		return ips[0].String()
	}
	return ""
}

func podReady(pod *corev1.Pod) string {
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return strings.ToLower(string(cond.Status))
		}
	}
	return "unknown"
}

// addMapLabels adds <prefix>_<name> and <prefix>present_<name> for each
// label or annotation, its name sanitised as Prometheus does.
func addMapLabels(l map[string]string, prefix string, m map[string]string) {
	for k, v := range m {
		name := sanitizeLabelName(k)
		l[prefix+"_"+name] = v
		l[prefix+"present_"+name] = "true"
	}
}

// sanitizeLabelName replaces every character that may not appear in a
// Prometheus label name with '_', as kubernetes_sd_configs does.
func sanitizeLabelName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

func isLabelName(s string) bool {
	return s != "" && sanitizeLabelName(s) == s && !('0' <= s[0] && s[0] <= '9')
}

func (c *Cluster) nodeGroups(path string, gw Gateway) []targetGroup {
	var nodes []*corev1.Node
	for _, obj := range c.stores("nodes")[0].List() {
		if node, ok := obj.(*corev1.Node); ok {
			if _, ok := kubeletAddr(node); ok {
				nodes = append(nodes, node)
			}
		}
	}
	slices.SortFunc(nodes, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	groups := make([]targetGroup, 0, len(nodes))
	for _, node := range nodes {
		l := map[string]string{
			"__scheme__":             gw.Scheme,
			"__metrics_path__":       "/nodes/" + node.Name + path,
			"instance":               node.Name,
			metaNode + "name":        node.Name,
			metaNode + "provider_id": node.Spec.ProviderID,
		}
		addMapLabels(l, metaNode+"label", node.Labels)
		addMapLabels(l, metaNode+"annotation", node.Annotations)
		for _, a := range node.Status.Addresses {
			name := metaNode + "address_" + string(a.Type)
			if _, ok := l[name]; !ok {
				l[name] = a.Address
			}
		}
		groups = append(groups, targetGroup{Targets: []string{gw.Address}, Labels: l})
	}
	return groups
}
