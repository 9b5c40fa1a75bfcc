// Package kube is the gateway's view of a Kubernetes cluster: shared
// informers for pods, nodes, Services and EndpointSlices, stripped to what
// the gateway and Prometheus's discovery use, an index
// of live pod endpoints (ip:port) for the "kubernetes" target policy, an
// index of Services and their EndpointSlices that resolves Service targets
// to endpoints (services.go), each node's kubelet address, the API
// servers (the endpoints of default/kubernetes), the control-plane
// components' pods in kube-system by node (components.go), the credentials
// the gateway presents to kubelets and API servers (Credentials), and the
// Prometheus http_sd documents /sd/pods, /sd/nodes, /sd/endpoints and
// /sd/control-plane, and the read-only Kubernetes discovery API's lists
// and watches of those objects and of Endpoints, from the same informers
// (discovery_cache.go).
// It knows nothing about HTTP serving: the gateway asks it questions and
// serves the answers.
package kube

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Options limits what the cluster view watches.
type Options struct {
	// Namespaces to watch pods, Services and EndpointSlices in; empty
	// means every namespace.
	Namespaces []string
	// PodSelector is a label selector pods must match; empty matches all.
	PodSelector string
	// APIServers watches the EndpointSlices of default/kubernetes too,
	// whatever Namespaces lists, for IsAPIServer.
	APIServers bool
	// Components are the control-plane components to find among the pods
	// of ComponentsNamespace, whatever Namespaces and PodSelector say, for
	// ComponentEndpoint; nil: none, and that namespace is not watched for
	// them.
	Components []Component
	// ControlPlaneNodeSelector is the label selector of the nodes that
	// the components with ControlPlaneNode run on (required with
	// Components).
	ControlPlaneNodeSelector string
	// ComponentListed, if set, says which of the component instances
	// ComponentEndpoint finds /sd/control-plane lists: those the gateway
	// would scrape. Its answer for an endpoint must not change while the
	// Cluster runs, since documents are rebuilt only when objects change.
	ComponentListed func(ComponentEndpoint) bool
}

// defaultKubeletPort is where a kubelet serves when its node does not say.
const defaultKubeletPort = 10250

// NewClient connects to the API server with kubeconfig, or with the pod's
// service account when kubeconfig is empty, sending at most qps requests
// a second on average and burst at once (0: client-go's defaults, 5 and
// 10).
func NewClient(kubeconfig, userAgent string, qps float32, burst int) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("cannot use the in-cluster service account (outside a cluster, set -kubeconfig): %w", err)
		}
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("cannot load -kubeconfig %q: %w", kubeconfig, err)
		}
	}
	cfg.UserAgent = userAgent
	cfg.QPS, cfg.Burst = qps, burst
	// Protobuf: a 10,000-pod list is several times smaller and faster to
	// decode than as JSON.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot create a Kubernetes client: %w", err)
	}
	return client, nil
}

// Cluster watches pods, nodes, Services and EndpointSlices. Its methods are
// safe for concurrent use.
type Cluster struct {
	log zerolog.Logger
	// server is the API server's URL, for log lines and /readyz.
	server string
	// failureLogInterval bounds how often one informer's failed requests
	// are logged at warn level.
	failureLogInterval time.Duration
	// watches are one per resource and namespace (nodes: one).
	watches []*resourceWatch
	synced  atomic.Bool
	// namespaces are those watched (-kubernetes-namespaces), nil for all:
	// an unknown Service's error says when its namespace is not one.
	namespaces []string

	mu sync.RWMutex
	// livePods maps each pod IP to the live pods that have it: usually one;
	// every hostNetwork pod of a node shares the node's IP.
	livePods map[netip.Addr][]*livePod
	byKey    map[string]*livePod // namespace/name -> its entry in livePods
	kubelets map[string]netip.AddrPort
	// services and serviceSlices index the Services and EndpointSlices
	// (services.go); serviceSlices holds a Service's slices whether or not
	// the Service itself has arrived yet, sliceOf each slice's entry.
	services      map[objectKey]*service
	serviceSlices map[objectKey][]*endpointSlice
	sliceOf       map[objectKey]*endpointSlice
	// apiServers are the endpoints of each EndpointSlice of
	// default/kubernetes (apiserver_endpoints.go), from apiServersWatch.
	apiServers      map[objectKey][]netip.AddrPort
	apiServersWatch *resourceWatch
	// components are Options.Components; componentPods their pods in
	// ComponentsNamespace by node (components.go), from componentsWatch,
	// and componentPodOn the node of each pod in it.
	components      []*component
	componentPods   map[string][]*componentPod
	componentPodOn  map[objectKey]string
	componentsWatch *resourceWatch
	componentListed func(ComponentEndpoint) bool
	// controlPlaneNodes are the nodes with an InternalIP whose labels
	// match controlPlaneNodeSelector (nil without components).
	controlPlaneNodeSelector labels.Selector
	controlPlaneNodes        map[string]bool

	// podsVersion and nodesVersion change whenever a watched pod or node
	// does, and endpointsVersion whenever a Service, an EndpointSlice or a
	// pod does (/sd/endpoints carries pod labels), so the documents built
	// from them know when to rebuild.
	podsVersion      atomic.Uint64
	nodesVersion     atomic.Uint64
	endpointsVersion atomic.Uint64
	// controlPlaneVersion changes whenever what /sd/control-plane is built
	// from does: the index entry of a component's pod, the set of nodes
	// with an InternalIP, that address, whether a node is a control-plane
	// node, or an API servers' slice. Not on other updates: every node
	// reports its status every few seconds.
	controlPlaneVersion atomic.Uint64

	docsMu    sync.Mutex
	docs      map[docKey]*document
	docsClock int64 // orders the documents' uses, for eviction

	// discovery are the discovery API's caches by resource
	// (discovery_cache.go), fed by the handlers of the informers above.
	discovery map[string]*discoveryCache
	// endpointsWatches watch the core/v1 Endpoints, started only once the
	// discovery API is first asked for them (startEndpoints), under Run's
	// stop; running is closed once Run has set stop.
	endpointsWatches []*resourceWatch
	endpointsOnce    sync.Once
	running          chan struct{}
	stop             <-chan struct{}
}

// livePod is what the policy needs of a pod: its IPs and the ports it
// declares, what decides which pod owns an IP that two pods claim, and
// what decides whether the scrape token may be sent to it.
type livePod struct {
	key         string
	namespace   string
	scrapeToken bool // AnnotationScrapeToken: "true"
	ips         []netip.Addr
	ports       []uint16
	hostNetwork bool
	terminating bool
	created     time.Time
}

// ownsIPOver reports whether p, rather than q, owns the IP both claim: a
// pod network reuses a deleted pod's IP, sometimes while the old pod is
// still terminating, and the old pod's ports must not open on the new one.
func (p *livePod) ownsIPOver(q *livePod) bool {
	if p.terminating != q.terminating {
		return !p.terminating
	}
	return p.created.After(q.created)
}

// New returns a Cluster that watches through client once started.
func New(client kubernetes.Interface, opts Options, log zerolog.Logger) (*Cluster, error) {
	if _, err := labels.Parse(opts.PodSelector); err != nil {
		return nil, fmt.Errorf("cannot parse -kubernetes-pod-selector %q: %w", opts.PodSelector, err)
	}
	components, err := parseComponents(opts.Components)
	if err != nil {
		return nil, err
	}
	var controlPlaneNodeSelector labels.Selector
	if opts.Components != nil {
		if controlPlaneNodeSelector, err = ParseRequiredSelector(opts.ControlPlaneNodeSelector); err != nil {
			return nil, fmt.Errorf("the control-plane node selector: %w", err)
		}
	}
	logClientGoTo(log)
	c := &Cluster{
		log:                      log,
		server:                   serverOf(client),
		failureLogInterval:       30 * time.Second,
		livePods:                 make(map[netip.Addr][]*livePod),
		byKey:                    make(map[string]*livePod),
		kubelets:                 make(map[string]netip.AddrPort),
		services:                 make(map[objectKey]*service),
		serviceSlices:            make(map[objectKey][]*endpointSlice),
		sliceOf:                  make(map[objectKey]*endpointSlice),
		apiServers:               make(map[objectKey][]netip.AddrPort),
		components:               components,
		componentPods:            make(map[string][]*componentPod),
		componentPodOn:           make(map[objectKey]string),
		componentListed:          opts.ComponentListed,
		controlPlaneNodeSelector: controlPlaneNodeSelector,
		controlPlaneNodes:        make(map[string]bool),
		docs:                     make(map[docKey]*document),
		discovery:                make(map[string]*discoveryCache),
		running:                  make(chan struct{}),
	}
	for _, resource := range DiscoveryResources {
		c.discovery[resource] = newDiscoveryCache(resource)
	}
	var namespaces []string
	for _, ns := range opts.Namespaces {
		if !slices.Contains(namespaces, ns) { // one watch each
			namespaces = append(namespaces, ns)
		}
	}
	c.namespaces = slices.Clone(namespaces)
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	podHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.podChanged(obj) },
		UpdateFunc: func(_, obj any) { c.podChanged(obj) },
		DeleteFunc: c.podDeleted,
	}
	serviceHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.serviceChanged(obj) },
		UpdateFunc: func(_, obj any) { c.serviceChanged(obj) },
		DeleteFunc: c.serviceDeleted,
	}
	sliceHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.sliceChanged(obj) },
		UpdateFunc: func(_, obj any) { c.sliceChanged(obj) },
		DeleteFunc: c.sliceDeleted,
	}
	for _, ns := range namespaces {
		pods := client.CoreV1().Pods(ns)
		_, err := c.newInformer(client, &resourceWatch{resource: "pods", namespace: ns}, &corev1.Pod{}, stripPod, podHandler,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				o.LabelSelector = opts.PodSelector
				return pods.List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				o.LabelSelector = opts.PodSelector
				return pods.Watch(ctx, o)
			})
		if err != nil {
			return nil, fmt.Errorf("cannot watch pods: %w", err)
		}
		services, slices := client.CoreV1().Services(ns), client.DiscoveryV1().EndpointSlices(ns)
		if _, err := c.newInformer(client, &resourceWatch{resource: "services", namespace: ns}, &corev1.Service{}, stripService, serviceHandler,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return services.List(ctx, o) },
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return services.Watch(ctx, o)
			}); err != nil {
			return nil, fmt.Errorf("cannot watch services: %w", err)
		}
		if _, err := c.newInformer(client, &resourceWatch{resource: "endpointslices", namespace: ns}, &discoveryv1.EndpointSlice{}, stripEndpointSlice, sliceHandler,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return slices.List(ctx, o) },
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return slices.Watch(ctx, o) }); err != nil {
			return nil, fmt.Errorf("cannot watch endpointslices: %w", err)
		}
		if err := c.watchEndpoints(client, ns); err != nil {
			return nil, fmt.Errorf("cannot watch endpoints: %w", err)
		}
	}
	nodeHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.nodeChanged(obj) },
		UpdateFunc: func(_, obj any) { c.nodeChanged(obj) },
		DeleteFunc: c.nodeDeleted,
	}
	nodes := client.CoreV1().Nodes()
	if _, err := c.newInformer(client, &resourceWatch{resource: "nodes"}, &corev1.Node{}, stripNode, nodeHandler,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return nodes.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return nodes.Watch(ctx, o) }); err != nil {
		return nil, fmt.Errorf("cannot watch nodes: %w", err)
	}
	if opts.APIServers {
		if err := c.watchAPIServers(client); err != nil {
			return nil, fmt.Errorf("cannot watch the EndpointSlices of default/kubernetes: %w", err)
		}
	}
	if opts.Components != nil {
		if err := c.watchComponents(client); err != nil {
			return nil, fmt.Errorf("cannot watch the pods of %s: %w", ComponentsNamespace, err)
		}
	}
	for _, w := range c.watches {
		if d := c.discovery[w.resource]; d != nil && (!c.ownWatch(w) || slices.Contains(c.endpointsWatches, w)) {
			d.synced = append(d.synced, w.synced)
		}
	}
	return c, nil
}

// Run watches until stop is closed. Synced turns true once every informer
// has listed its objects.
func (c *Cluster) Run(stop <-chan struct{}) {
	c.stop = stop
	close(c.running)
	var synced []cache.InformerSynced
	for _, w := range c.watches {
		if slices.Contains(c.endpointsWatches, w) {
			continue // started by startEndpoints
		}
		go w.informer.Run(stop)
		if !c.ownWatch(w) {
			synced = append(synced, w.synced)
		}
	}
	begin := time.Now()
	if !cache.WaitForCacheSync(stop, synced...) {
		return
	}
	c.synced.Store(true)
	e := c.log.Info()
	for _, resource := range Resources {
		e = e.Int(resource, c.Count(resource))
	}
	e.Stringer("after", time.Since(begin).Round(time.Millisecond)).Msg("kubernetes informers synced")
}

// ownWatch reports whether w is one of the informers of their own, which
// do not count in Synced: those whose objects are not the watched
// namespaces' (see watchAPIServers, watchComponents), and the Endpoints
// ones, which only the discovery API asks for (startEndpoints).
func (c *Cluster) ownWatch(w *resourceWatch) bool {
	return w == c.apiServersWatch || w == c.componentsWatch || slices.Contains(c.endpointsWatches, w)
}

// startEndpoints starts the Endpoints informers once Run runs, the first
// time the discovery API is asked for Endpoints: the API is deprecated, and
// nobody should watch it unless a client asks.
func (c *Cluster) startEndpoints() {
	select {
	case <-c.running:
	default:
		return
	}
	c.endpointsOnce.Do(func() {
		for _, w := range c.endpointsWatches {
			go w.informer.Run(c.stop)
		}
	})
}

// Synced reports whether every informer has listed its objects: before
// that, the cluster view is incomplete and the gateway is not ready.
func (c *Cluster) Synced() bool { return c.synced.Load() }

// Resources are what the cluster view watches, as the API names them.
var Resources = []string{"pods", "nodes", "services", "endpointslices"}

// Count returns how many objects of resource (one of Resources) the
// informers hold.
func (c *Cluster) Count(resource string) int {
	n := 0
	for _, s := range c.stores(resource) {
		n += len(s.ListKeys())
	}
	return n
}

// stores are the informers' stores of resource, one per namespace watched.
func (c *Cluster) stores(resource string) []cache.Store {
	var stores []cache.Store
	for _, w := range c.watches {
		// Not the informers of their own: their objects are also in the
		// other informers wherever their namespace is watched, and only
		// there are they what the watched namespaces hold.
		if w.resource == resource && !c.ownWatch(w) {
			stores = append(stores, w.informer.GetStore())
		}
	}
	return stores
}

// HasEndpoint reports whether addr is the IP of a live pod (one with an IP
// that has not terminated) and one of the ports that pod declares: a
// container port, a native sidecar's port or its prometheus.io/port
// annotation. Every hostNetwork pod of a node shares the node's IP; of
// other pods claiming one IP, only the one that owns it counts.
func (c *Cluster) HasEndpoint(addr netip.AddrPort) bool {
	ip, port := addr.Addr().Unmap(), addr.Port()
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, p := range c.livePods[ip] {
		if p.hostNetwork && slices.Contains(p.ports, port) {
			return true
		}
	}
	owner := c.ownerLocked(ip)
	return owner != nil && slices.Contains(owner.ports, port)
}

// ownerLocked returns the pod that owns ip among the live pods that are
// not hostNetwork (those share their node's IP), or nil.
func (c *Cluster) ownerLocked(ip netip.Addr) *livePod {
	var owner *livePod
	for _, p := range c.livePods[ip] {
		if !p.hostNetwork && (owner == nil || p.ownsIPOver(owner)) {
			owner = p
		}
	}
	return owner
}

// Kubelet returns the kubelet address of a node the informer knows: its
// InternalIP and the port the node reports.
func (c *Cluster) Kubelet(node string) (netip.AddrPort, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	addr, ok := c.kubelets[node]
	return addr, ok
}

func (c *Cluster) podChanged(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	c.mu.Lock()
	c.removePodLocked(key)
	if lp := livePodOf(pod, key); lp != nil {
		c.byKey[key] = lp
		for _, ip := range lp.ips {
			c.livePods[ip] = append(c.livePods[ip], lp)
		}
	}
	c.mu.Unlock()
	c.podsVersion.Add(1)
	c.endpointsVersion.Add(1)
	c.discovery["pods"].changed(pod)
}

func (c *Cluster) podDeleted(obj any) {
	var key string
	switch o := obj.(type) {
	case *corev1.Pod:
		key = o.Namespace + "/" + o.Name
	case cache.DeletedFinalStateUnknown:
		key = o.Key
	default:
		return
	}
	c.mu.Lock()
	c.removePodLocked(key)
	c.mu.Unlock()
	c.podsVersion.Add(1)
	c.endpointsVersion.Add(1)
	c.discovery["pods"].deleted(obj)
}

func (c *Cluster) removePodLocked(key string) {
	old := c.byKey[key]
	if old == nil {
		return
	}
	delete(c.byKey, key)
	for _, ip := range old.ips {
		list := c.livePods[ip]
		for i, p := range list {
			if p == old {
				list = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(c.livePods, ip)
		} else {
			c.livePods[ip] = list
		}
	}
}

// livePodOf returns the policy's entry for pod, or nil if it is not a
// target: no IP yet, or terminated (its IP may already belong to another pod).
func livePodOf(pod *corev1.Pod, key string) *livePod {
	if !isLive(pod) {
		return nil
	}
	lp := &livePod{key: key, namespace: pod.Namespace, scrapeToken: pod.Annotations[AnnotationScrapeToken] == "true",
		ips: podIPs(pod), hostNetwork: pod.Spec.HostNetwork,
		terminating: pod.DeletionTimestamp != nil, created: pod.CreationTimestamp.Time}
	if len(lp.ips) == 0 {
		return nil
	}
	for _, ctr := range servingContainers(pod) {
		for _, p := range ctr.container.Ports {
			if isTCP(p) && !slices.Contains(lp.ports, uint16(p.ContainerPort)) {
				lp.ports = append(lp.ports, uint16(p.ContainerPort))
			}
		}
	}
	if port, ok := annotatedPort(pod.Annotations); ok && !slices.Contains(lp.ports, port) {
		lp.ports = append(lp.ports, port)
	}
	return lp
}

// servingContainer is a container that runs as long as its pod: a regular
// one, or a native sidecar (an init container with restartPolicy Always).
// Other init containers have finished before the pod serves.
type servingContainer struct {
	container *corev1.Container
	init      bool
}

func servingContainers(pod *corev1.Pod) []servingContainer {
	out := make([]servingContainer, 0, len(pod.Spec.Containers)+len(pod.Spec.InitContainers))
	for i := range pod.Spec.InitContainers {
		if isSidecar(&pod.Spec.InitContainers[i]) {
			out = append(out, servingContainer{container: &pod.Spec.InitContainers[i], init: true})
		}
	}
	for i := range pod.Spec.Containers {
		out = append(out, servingContainer{container: &pod.Spec.Containers[i]})
	}
	return out
}

func isSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

func isLive(pod *corev1.Pod) bool {
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

func isTCP(p corev1.ContainerPort) bool {
	return (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) && p.ContainerPort > 0 && p.ContainerPort < 65536
}

// podIPs returns a pod's IPs: status.podIPs, or status.podIP from servers
// that predate dual stack.
func podIPs(pod *corev1.Pod) []netip.Addr {
	var ips []netip.Addr
	add := func(s string) {
		if ip, err := netip.ParseAddr(s); err == nil && ip.Zone() == "" {
			ip = ip.Unmap()
			for _, have := range ips {
				if have == ip {
					return
				}
			}
			ips = append(ips, ip)
		}
	}
	for _, p := range pod.Status.PodIPs {
		add(p.IP)
	}
	add(pod.Status.PodIP)
	return ips
}

// Annotations pods use to ask for scraping.
const (
	annotationScrape = "prometheus.io/scrape"
	annotationPort   = "prometheus.io/port"
	annotationPath   = "prometheus.io/path"
	annotationScheme = "prometheus.io/scheme"
)

// annotatedPort returns the prometheus.io/port annotation of a pod or a
// Service, if it is a port number.
func annotatedPort(annotations map[string]string) (uint16, bool) {
	s, ok := annotations[annotationPort]
	if !ok {
		return 0, false
	}
	port, err := strconv.ParseUint(s, 10, 16)
	if err != nil || port == 0 {
		return 0, false
	}
	return uint16(port), true
}

func (c *Cluster) nodeChanged(obj any) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	addr, hasAddr := kubeletAddr(node)
	controlPlane := c.controlPlaneNodeSelector != nil && c.controlPlaneNodeSelector.Matches(labels.Set(node.Labels))
	c.mu.Lock()
	old, hadAddr := c.kubelets[node.Name]
	changed := hasAddr != hadAddr || addr.Addr() != old.Addr() || controlPlane != c.controlPlaneNodes[node.Name]
	if hasAddr {
		c.kubelets[node.Name] = addr
	} else {
		delete(c.kubelets, node.Name)
	}
	if controlPlane {
		c.controlPlaneNodes[node.Name] = true
	} else {
		delete(c.controlPlaneNodes, node.Name)
	}
	c.mu.Unlock()
	if changed {
		c.controlPlaneVersion.Add(1)
	}
	c.nodesVersion.Add(1)
	c.discovery["nodes"].changed(node)
}

func (c *Cluster) nodeDeleted(obj any) {
	var name string
	switch o := obj.(type) {
	case *corev1.Node:
		name = o.Name
	case cache.DeletedFinalStateUnknown:
		name = o.Key // nodes are cluster-scoped: the key is the name
	default:
		return
	}
	c.mu.Lock()
	_, hadAddr := c.kubelets[name]
	changed := hadAddr || c.controlPlaneNodes[name]
	delete(c.kubelets, name)
	delete(c.controlPlaneNodes, name)
	c.mu.Unlock()
	if changed {
		c.controlPlaneVersion.Add(1)
	}
	c.nodesVersion.Add(1)
	c.discovery["nodes"].deleted(obj)
}

// kubeletAddr is where a node's kubelet serves: its InternalIP (the address
// the API server itself uses by default) and its reported port.
func kubeletAddr(node *corev1.Node) (netip.AddrPort, bool) {
	port := int(node.Status.DaemonEndpoints.KubeletEndpoint.Port)
	if port <= 0 || port > 65535 {
		port = defaultKubeletPort
	}
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Zone() == "" {
			return netip.AddrPortFrom(ip.Unmap(), uint16(port)), true
		}
	}
	return netip.AddrPort{}, false
}

// lastApplied is kubectl's copy of the whole object it applied: often the
// biggest annotation, and never useful to relabelling.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// stripPod keeps only what the policy, /sd/pods and /sd/endpoints read, so
// that 10,000 cached pods cost a few megabytes: no managed fields, volumes,
// environment, probes or status beyond phase, IPs and readiness.
func stripPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: keptMeta(&pod.ObjectMeta),
		Spec: corev1.PodSpec{
			NodeName:    pod.Spec.NodeName,
			HostNetwork: pod.Spec.HostNetwork,
		},
		Status: corev1.PodStatus{
			Phase:  pod.Status.Phase,
			PodIP:  pod.Status.PodIP,
			PodIPs: pod.Status.PodIPs,
			HostIP: pod.Status.HostIP,
		},
	}
	if len(pod.Spec.Containers) > 0 {
		out.Spec.Containers = make([]corev1.Container, len(pod.Spec.Containers))
		for i, ctr := range pod.Spec.Containers {
			out.Spec.Containers[i] = corev1.Container{Name: ctr.Name, Image: ctr.Image, Ports: ctr.Ports}
		}
	}
	// Every init container: /sd/endpoints labels a slice port with the
	// container declaring it, init containers included, as Prometheus does;
	// the policy and /sd/pods take only the native sidecars among them
	// (servingContainers).
	for _, ctr := range pod.Spec.InitContainers {
		out.Spec.InitContainers = append(out.Spec.InitContainers,
			corev1.Container{Name: ctr.Name, Image: ctr.Image, Ports: ctr.Ports, RestartPolicy: ctr.RestartPolicy})
	}
	// Prometheus's role: pod labels each container with its ID
	// (__meta_kubernetes_pod_container_id) from the statuses.
	out.Status.ContainerStatuses = keptContainerStatuses(pod.Status.ContainerStatuses)
	out.Status.InitContainerStatuses = keptContainerStatuses(pod.Status.InitContainerStatuses)
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: cond.Type, Status: cond.Status}}
		}
	}
	return out, nil
}

func keptContainerStatuses(statuses []corev1.ContainerStatus) []corev1.ContainerStatus {
	if len(statuses) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(statuses))
	for i, st := range statuses {
		out[i] = corev1.ContainerStatus{Name: st.Name, ContainerID: st.ContainerID, Ready: st.Ready}
	}
	return out
}

// stripService keeps what the Service index and /sd/endpoints read of a
// Service: its name, labels and annotations (Prometheus's role:
// endpointslice labels a Service by nothing else: serviceLabels), its
// ports, and its IP family policy and families, by which Prometheus skips
// the secondary slice of a dual-stack Service (nonPrimaryIPFamilySlice).
// Its type, cluster IP, external name and load-balancer addresses are
// labels of Prometheus's role: service (service.go), kept so one stripped
// Service serves both.
func stripService(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	return &corev1.Service{
		ObjectMeta: keptMeta(&svc.ObjectMeta),
		Spec: corev1.ServiceSpec{
			Ports:          svc.Spec.Ports,
			IPFamilyPolicy: svc.Spec.IPFamilyPolicy,
			IPFamilies:     svc.Spec.IPFamilies,
			Type:           svc.Spec.Type,
			ClusterIP:      svc.Spec.ClusterIP,
			ClusterIPs:     svc.Spec.ClusterIPs,
			ExternalName:   svc.Spec.ExternalName,
			LoadBalancerIP: svc.Spec.LoadBalancerIP,
		},
		Status: corev1.ServiceStatus{LoadBalancer: keptLoadBalancer(svc.Status.LoadBalancer)},
	}, nil
}

func keptLoadBalancer(lb corev1.LoadBalancerStatus) corev1.LoadBalancerStatus {
	if len(lb.Ingress) == 0 {
		return lb
	}
	out := corev1.LoadBalancerStatus{Ingress: make([]corev1.LoadBalancerIngress, len(lb.Ingress))}
	for i, ing := range lb.Ingress {
		out.Ingress[i] = corev1.LoadBalancerIngress{IP: ing.IP, Hostname: ing.Hostname}
	}
	return out
}

// stripEndpointSlice keeps a slice as it is, but for its managed fields
// and last-applied configuration: discovery reads all of the rest.
func stripEndpointSlice(obj any) (any, error) {
	slice, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	slice.ManagedFields = nil
	slice.Annotations = withoutLastApplied(slice.Annotations)
	return slice, nil
}

// stripNode keeps what /sd/nodes, the kubelet proxy and the components
// read (the labels, which the control-plane node selector judges), and the
// conditions' types and statuses, which Prometheus's role: node labels
// (__meta_kubernetes_node_condition_*); a node's status otherwise carries
// every image it has pulled.
func stripNode(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{
		ObjectMeta: keptMeta(&node.ObjectMeta),
		Spec:       corev1.NodeSpec{ProviderID: node.Spec.ProviderID},
		Status: corev1.NodeStatus{
			Addresses:       node.Status.Addresses,
			DaemonEndpoints: node.Status.DaemonEndpoints,
		},
	}
	for _, cond := range node.Status.Conditions {
		out.Status.Conditions = append(out.Status.Conditions, corev1.NodeCondition{Type: cond.Type, Status: cond.Status})
	}
	return out, nil
}

// keptMeta is the metadata kept of pods, nodes and Services (EndpointSlices
// are kept whole): identity, creation and deletion, the controller, labels,
// and annotations but the last-applied configuration. Only pods use the
// middle three today; for the others they are empty or a few bytes.
func keptMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp,
		Labels:            m.Labels,
		Annotations:       withoutLastApplied(m.Annotations),
		OwnerReferences:   controllerOnly(m.OwnerReferences),
		DeletionTimestamp: m.DeletionTimestamp,
	}
}

func withoutLastApplied(annotations map[string]string) map[string]string {
	if _, ok := annotations[lastApplied]; !ok {
		return annotations
	}
	out := make(map[string]string, len(annotations)-1)
	for k, v := range annotations {
		if k != lastApplied {
			out[k] = v
		}
	}
	return out
}

func controllerOnly(refs []metav1.OwnerReference) []metav1.OwnerReference {
	for _, r := range refs {
		if r.Controller != nil && *r.Controller {
			return []metav1.OwnerReference{{APIVersion: r.APIVersion, Kind: r.Kind, Name: r.Name, UID: r.UID, Controller: r.Controller}}
		}
	}
	return nil
}
