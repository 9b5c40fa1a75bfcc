package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// ComponentsNamespace is where kubeadm runs the control plane's static
// pods and kube-proxy's DaemonSet.
const ComponentsNamespace = metav1.NamespaceSystem

// Component is a control-plane component the gateway scrapes
// (/components/) and a node agent forwards to.
type Component struct {
	Name     string   // kube-scheduler, kube-controller-manager, etcd or kube-proxy
	Selector string   // label selector of its pods in ComponentsNamespace
	Port     uint16   // where it serves its metrics, on its node's InternalIP
	TLS      bool     // https, with the control-plane token; else http with no token
	Paths    []string // its metrics paths, the only ones scraped
	// ControlPlaneNode: it runs only on the nodes that match
	// Options.ControlPlaneNodeSelector, and is found on no other. Every
	// kubelet may create a mirror pod with any labels bound to itself, so
	// without it any node could claim to run the component and receive the
	// control-plane token.
	ControlPlaneNode bool
}

// DefaultComponents are the components as kubeadm runs them: labels of its
// static pod manifests and of kube-proxy's DaemonSet, and the default
// metrics ports (etcd's is kubeadm's --listen-metrics-urls). The static
// pods run on the control-plane nodes, kube-proxy on every node.
func DefaultComponents() []Component {
	return []Component{
		{Name: "kube-scheduler", Selector: "component=kube-scheduler,tier=control-plane", Port: 10259, TLS: true,
			Paths: []string{"/metrics", "/metrics/slis"}, ControlPlaneNode: true},
		{Name: "kube-controller-manager", Selector: "component=kube-controller-manager,tier=control-plane", Port: 10257, TLS: true,
			Paths: []string{"/metrics", "/metrics/slis"}, ControlPlaneNode: true},
		{Name: "etcd", Selector: "component=etcd,tier=control-plane", Port: 2381, Paths: []string{"/metrics"}, ControlPlaneNode: true},
		{Name: "kube-proxy", Selector: "k8s-app=kube-proxy", Port: 10249, Paths: []string{"/metrics"}},
	}
}

// DefaultControlPlaneNodeSelector selects the control-plane nodes by the
// role label kubeadm gives them. The NodeRestriction admission plugin
// forbids a kubelet to set node-role.kubernetes.io/* labels on its own
// node, so a node cannot make itself one.
const DefaultControlPlaneNodeSelector = "node-role.kubernetes.io/control-plane"

// ParseRequiredSelector parses a label selector that must require
// something of the objects it selects: at least one key=value, key in
// (...) or key. One made only of negations (!key, key!=value, key notin
// (...)) or empty matches every object without some label, which anyone
// who may create such an object can arrange.
func ParseRequiredSelector(s string) (labels.Selector, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("cannot parse %q: %w", s, err)
	}
	reqs, _ := sel.Requirements()
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In, selection.Exists:
			return sel, nil
		}
	}
	return nil, fmt.Errorf("%q requires no label, so it matches whatever lacks some: give at least one key=value, key in (...) or key", s)
}

// ErrUnknownComponent: the cluster has no such component on that node: no
// such node, or no pod of the component bound to it (404). Errors of
// ComponentEndpoint wrap it or ErrNoReadyEndpoint.
var ErrUnknownComponent = errors.New("unknown component")

// ComponentEndpoint is where one component instance serves.
type ComponentEndpoint struct {
	Component *Component // of Options.Components
	Node      string
	Pod       string // namespace/name
	// Addr is the node's InternalIP and the component's port: every
	// component pod is a hostNetwork pod, and the node's address is the
	// one its kubelet is reached at, never the pod's status.podIP, which
	// the kubelet writes as it likes.
	Addr netip.AddrPort
	// NodeAddr is the node's InternalIP, where its node agent listens.
	NodeAddr netip.Addr
	Labels   map[string]string // the pod's; do not modify
}

// component is one of Options.Components with its parsed selector.
type component struct {
	Component
	selector labels.Selector
}

// componentPod is what the index keeps of a component's pod: what decides
// whether and where it is scraped, and what /sd/control-plane labels it
// with. Two equal entries scrape and list the same: an update that leaves
// the entry as it was changes nothing.
type componentPod struct {
	comp        *component
	key         string // namespace/name, ComponentEndpoint.Pod
	name        string
	node        string
	labels      map[string]string
	hostNetwork bool
	phase       corev1.PodPhase
	terminating bool
	created     time.Time
}

func componentPodOf(comp *component, pod *corev1.Pod) *componentPod {
	return &componentPod{comp: comp, key: pod.Namespace + "/" + pod.Name, name: pod.Name, node: pod.Spec.NodeName, labels: pod.Labels,
		hostNetwork: pod.Spec.HostNetwork, phase: pod.Status.Phase, terminating: pod.DeletionTimestamp != nil,
		created: pod.CreationTimestamp.Time}
}

func (p *componentPod) equal(q *componentPod) bool {
	return p.comp == q.comp && p.key == q.key && p.node == q.node && maps.Equal(p.labels, q.labels) && p.hostNetwork == q.hostNetwork &&
		p.phase == q.phase && p.terminating == q.terminating && p.created.Equal(q.created)
}

// parseComponents parses the selectors of Options.Components.
func parseComponents(cs []Component) ([]*component, error) {
	out := make([]*component, len(cs))
	for i, comp := range cs {
		// An empty or negative selector would make pods of kube-system
		// this component by what they lack.
		sel, err := ParseRequiredSelector(comp.Selector)
		if err != nil {
			return nil, fmt.Errorf("the selector of %s: %w", comp.Name, err)
		}
		out[i] = &component{Component: comp, selector: sel}
	}
	return out, nil
}

// watchComponents watches the pods of ComponentsNamespace with an informer
// of their own, whatever -kubernetes-namespaces and
// -kubernetes-pod-selector say, and indexes those of each component by
// node. Every pod of the namespace is listed: a label selector cannot ask
// for one component's labels or another's. Like the API servers' informer
// it does not count in Synced: /components/ waits for ComponentsSynced.
func (c *Cluster) watchComponents(client kubernetes.Interface) error {
	pods := client.CoreV1().Pods(ComponentsNamespace)
	c.componentsWatch = &resourceWatch{resource: "pods", namespace: ComponentsNamespace}
	_, err := c.newInformer(client, c.componentsWatch, &corev1.Pod{}, stripPod,
		cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { c.componentPodChanged(obj) },
			UpdateFunc: func(_, obj any) { c.componentPodChanged(obj) },
			DeleteFunc: c.componentPodDeleted,
		},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return pods.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return pods.Watch(ctx, o) })
	return err
}

// ComponentsSynced reports whether the pods of ComponentsNamespace have
// been listed; always false without Options.Components.
func (c *Cluster) ComponentsSynced() bool {
	return c.componentsWatch != nil && c.componentsWatch.synced()
}

// ComponentsFailure is the last failed request of the components' informer
// while it has not synced, else nil: what to say when /components/ cannot
// be served yet.
func (c *Cluster) ComponentsFailure() error {
	if w := c.componentsWatch; w != nil && !w.synced() {
		if f := w.failure.Load(); f != nil {
			return f
		}
	}
	return nil
}

// matchComponent is the first component whose selector pod's labels
// match, or nil.
func (c *Cluster) matchComponent(pod *corev1.Pod) *component {
	for _, comp := range c.components {
		if comp.selector.Matches(labels.Set(pod.Labels)) {
			return comp
		}
	}
	return nil
}

func (c *Cluster) componentPodChanged(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := objectKey{pod.Namespace, pod.Name}
	var entry *componentPod
	// The namespace checked again: only kube-system's pods may say where
	// the control-plane token goes.
	if comp := c.matchComponent(pod); comp != nil && pod.Namespace == ComponentsNamespace && pod.Spec.NodeName != "" {
		entry = componentPodOf(comp, pod)
	}
	c.mu.Lock()
	old := c.componentPodLocked(key)
	changed := entry != nil && (old == nil || !old.equal(entry)) || entry == nil && old != nil
	if changed {
		c.removeComponentPodLocked(key)
		if entry != nil {
			c.componentPods[entry.node] = append(c.componentPods[entry.node], entry)
			c.componentPodOn[key] = entry.node
		}
	}
	c.mu.Unlock()
	if changed {
		c.controlPlaneVersion.Add(1)
	}
}

func (c *Cluster) componentPodDeleted(obj any) {
	var key objectKey
	switch o := obj.(type) {
	case *corev1.Pod:
		key = objectKey{o.Namespace, o.Name}
	case cache.DeletedFinalStateUnknown:
		ns, name, err := cache.SplitMetaNamespaceKey(o.Key)
		if err != nil {
			return
		}
		key = objectKey{ns, name}
	default:
		return
	}
	c.mu.Lock()
	removed := c.removeComponentPodLocked(key)
	c.mu.Unlock()
	if removed {
		c.controlPlaneVersion.Add(1)
	}
}

// componentPodLocked is the index entry of the pod key, or nil. Every
// entry is of ComponentsNamespace: the name tells them apart.
func (c *Cluster) componentPodLocked(key objectKey) *componentPod {
	node, ok := c.componentPodOn[key]
	if !ok {
		return nil
	}
	i := slices.IndexFunc(c.componentPods[node], func(p *componentPod) bool { return p.name == key.name })
	return c.componentPods[node][i]
}

// removeComponentPodLocked removes the pod key from the index, and
// reports whether it was in it.
func (c *Cluster) removeComponentPodLocked(key objectKey) bool {
	node, ok := c.componentPodOn[key]
	if !ok {
		return false
	}
	delete(c.componentPodOn, key)
	list := slices.DeleteFunc(c.componentPods[node], func(p *componentPod) bool { return p.name == key.name })
	if len(list) == 0 {
		delete(c.componentPods, node)
	} else {
		c.componentPods[node] = list
	}
	return true
}

// ComponentEndpoint returns where the component named component serves on
// node: the node must be a watched node with an InternalIP, matching the
// control-plane node selector if the component runs on the control plane
// only (Component.ControlPlaneNode), and a hostNetwork pod in
// ComponentsNamespace matching the component's selector must be bound to
// it (spec.nodeName) and Running. Of several such pods (a static pod
// being replaced), the one not terminating, then the newest. The address
// is the node's InternalIP, whatever the pod's status says. The node's name
// is bytes of the request, looked up without allocating.
func (c *Cluster) ComponentEndpoint(component string, node []byte) (ComponentEndpoint, error) {
	comp := c.componentNamed(component)
	if comp == nil {
		return ComponentEndpoint{}, resolveErrorf(ErrUnknownComponent, "no component %q is configured", component)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	kubelet, ok := c.kubelets[string(node)]
	if !ok {
		return ComponentEndpoint{}, resolveErrorf(ErrUnknownComponent, "no node %q with an InternalIP is known", node)
	}
	if comp.ControlPlaneNode && !c.controlPlaneNodes[string(node)] {
		return ComponentEndpoint{}, resolveErrorf(ErrUnknownComponent,
			"node %s is not a control-plane node (its labels do not match -control-plane-node-selector %s), where %s runs",
			node, c.controlPlaneNodeSelector, comp.Name)
	}
	pod, err := componentPodToScrape(comp, c.componentPods[string(node)])
	if err != nil {
		return ComponentEndpoint{}, err
	}
	if pod == nil {
		return ComponentEndpoint{}, resolveErrorf(ErrUnknownComponent, "no pod of %s (labelled %s in namespace %s) runs on node %s",
			comp.Name, comp.Selector, ComponentsNamespace, node)
	}
	return componentEndpointOf(comp, pod, kubelet.Addr()), nil
}

// componentNamed is the configured component of that name, or nil.
func (c *Cluster) componentNamed(name string) *component {
	for _, comp := range c.components {
		if comp.Name == name {
			return comp
		}
	}
	return nil
}

// componentPodToScrape picks the pod of comp to scrape among pods, those
// of one node: of the Running hostNetwork ones, the preferred one
// (preferredComponentPod). A pod on the pod network is none: the address
// scraped is the node's, where it does not serve. Neither pod nor error:
// none of pods is comp's.
func componentPodToScrape(comp *component, pods []*componentPod) (*componentPod, error) {
	var best, notRunning, podNetwork *componentPod
	for _, p := range pods {
		switch {
		case p.comp != comp:
		case !p.hostNetwork:
			podNetwork = p
		case p.phase != corev1.PodRunning:
			notRunning = p
		case best == nil || preferredComponentPod(p, best):
			best = p
		}
	}
	switch {
	case best != nil:
		return best, nil
	case notRunning != nil:
		return nil, resolveErrorf(ErrNoReadyEndpoint, "the pod %s of %s on node %s is %s, not Running",
			notRunning.key, comp.Name, notRunning.node, notRunning.phase)
	case podNetwork != nil:
		return nil, resolveErrorf(ErrUnknownComponent, "the pod %s of %s on node %s is not a host-network pod: "+
			"only a pod on its node's network, as kubeadm runs %s, is one", podNetwork.key, comp.Name, podNetwork.node, comp.Name)
	}
	return nil, nil
}

// preferredComponentPod reports whether p, rather than q, is the one to
// scrape: the one not terminating, else the newer.
func preferredComponentPod(p, q *componentPod) bool {
	if p.terminating != q.terminating {
		return !p.terminating
	}
	return p.created.After(q.created)
}

// componentEndpointOf is where pod, the pod to scrape of comp on the node
// at nodeAddr, serves: the node's address.
func componentEndpointOf(comp *component, pod *componentPod, nodeAddr netip.Addr) ComponentEndpoint {
	return ComponentEndpoint{Component: &comp.Component, Node: pod.node, Pod: pod.key,
		Addr: netip.AddrPortFrom(nodeAddr, comp.Port), NodeAddr: nodeAddr, Labels: pod.labels}
}

// ControlPlaneSD returns the /sd/control-plane document: one target group
// per component instance ComponentEndpoint would scrape and
// Options.ComponentListed lets through, via
// /components/{component}/{node}/metrics, and, while the API servers are
// watched, one per endpoint of default/kubernetes, through
// /apiservers/{ip}/{port}/metrics. Each is labelled component and, where
// known, node, with instance the address scraped, and a component's with
// its pod's namespace, name, node name and labels as /sd/pods names them:
// nothing else of kube-system, which the watched namespaces may exclude.
// It takes no query.
func (c *Cluster) ControlPlaneSD(rawQuery string, gw Gateway) (*Document, error) {
	if rawQuery != "" {
		return nil, fmt.Errorf("/sd/control-plane takes no parameters, got %q", rawQuery)
	}
	return c.document(docKey{kind: "control-plane", gateway: gw}, &c.controlPlaneVersion, func() []targetGroup {
		return c.controlPlaneGroups(gw)
	})
}

func (c *Cluster) controlPlaneGroups(gw Gateway) []targetGroup {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var groups []targetGroup
	nodes := slices.Sorted(maps.Keys(c.componentPods))
	for _, comp := range c.components {
		for _, node := range nodes {
			kubelet, ok := c.kubelets[node]
			if !ok || comp.ControlPlaneNode && !c.controlPlaneNodes[node] {
				continue
			}
			pod, err := componentPodToScrape(comp, c.componentPods[node])
			if pod == nil || err != nil {
				continue
			}
			ep := componentEndpointOf(comp, pod, kubelet.Addr())
			if c.componentListed != nil && !c.componentListed(ep) {
				continue
			}
			l := map[string]string{
				metaNamespace:         ComponentsNamespace,
				metaPod + "name":      pod.name,
				metaPod + "node_name": node,
				"__scheme__":          gw.Scheme,
				"__metrics_path__":    "/components/" + comp.Name + "/" + node + "/metrics",
				"instance":            ep.Addr.String(),
				"component":           comp.Name,
				"node":                node,
			}
			addMapLabels(l, metaPod+"label", pod.labels)
			groups = append(groups, targetGroup{Targets: []string{gw.Address}, Labels: l})
		}
	}
	if c.apiServersWatch == nil {
		return groups
	}
	var apiServers []netip.AddrPort
	for _, eps := range c.apiServers {
		for _, ep := range eps {
			if !slices.Contains(apiServers, ep) {
				apiServers = append(apiServers, ep)
			}
		}
	}
	slices.SortFunc(apiServers, netip.AddrPort.Compare)
	for _, ep := range apiServers {
		l := map[string]string{
			"__scheme__":       gw.Scheme,
			"__metrics_path__": "/apiservers/" + ep.Addr().String() + "/" + strconv.Itoa(int(ep.Port())) + "/metrics",
			"instance":         ep.String(),
			"component":        "kube-apiserver",
		}
		if node := c.nodeWithIPLocked(ep.Addr()); node != "" {
			l["node"] = node
		}
		groups = append(groups, targetGroup{Targets: []string{gw.Address}, Labels: l})
	}
	return groups
}

// nodeWithIPLocked is the name of the node whose InternalIP is ip, or "";
// the first by name if several claim it.
func (c *Cluster) nodeWithIPLocked(ip netip.Addr) string {
	var found string
	for name, kubelet := range c.kubelets {
		if kubelet.Addr() == ip && (found == "" || name < found) {
			found = name
		}
	}
	return found
}
