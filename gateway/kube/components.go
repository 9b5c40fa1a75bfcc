package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
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
	Port     uint16   // where it serves its metrics, on its pod's address
	TLS      bool     // https, with the control-plane token; else http with no token
	Paths    []string // its metrics paths, the only ones scraped
}

// DefaultComponents are the components as kubeadm runs them: labels of its
// static pod manifests and of kube-proxy's DaemonSet, and the default
// metrics ports (etcd's is kubeadm's --listen-metrics-urls).
func DefaultComponents() []Component {
	return []Component{
		{Name: "kube-scheduler", Selector: "component=kube-scheduler,tier=control-plane", Port: 10259, TLS: true, Paths: []string{"/metrics", "/metrics/slis"}},
		{Name: "kube-controller-manager", Selector: "component=kube-controller-manager,tier=control-plane", Port: 10257, TLS: true, Paths: []string{"/metrics", "/metrics/slis"}},
		{Name: "etcd", Selector: "component=etcd,tier=control-plane", Port: 2381, Paths: []string{"/metrics"}},
		{Name: "kube-proxy", Selector: "k8s-app=kube-proxy", Port: 10249, Paths: []string{"/metrics"}},
	}
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
	// Addr is the pod's IP and the component's port; the node's
	// InternalIP for a hostNetwork pod, as static pods are.
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

// componentOn names the pods of one component bound to one node.
type componentOn struct{ component, node string }

// parseComponents parses the selectors of Options.Components.
func parseComponents(cs []Component) ([]*component, error) {
	out := make([]*component, len(cs))
	for i, comp := range cs {
		sel, err := labels.Parse(comp.Selector)
		if err != nil {
			return nil, fmt.Errorf("cannot parse the selector %q of %s: %w", comp.Selector, comp.Name, err)
		}
		if sel.Empty() {
			// It would make every pod in kube-system this component.
			return nil, fmt.Errorf("the selector of %s is empty", comp.Name)
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
	c.mu.Lock()
	c.removeComponentPodLocked(key)
	// The namespace checked again: only kube-system's pods may say where
	// the control-plane token goes.
	if comp := c.matchComponent(pod); comp != nil && pod.Namespace == ComponentsNamespace && pod.Spec.NodeName != "" {
		on := componentOn{comp.Name, pod.Spec.NodeName}
		c.componentPods[on] = append(c.componentPods[on], pod)
		c.componentPodOn[key] = on
	}
	c.mu.Unlock()
	c.controlPlaneVersion.Add(1)
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
	c.removeComponentPodLocked(key)
	c.mu.Unlock()
	c.controlPlaneVersion.Add(1)
}

func (c *Cluster) removeComponentPodLocked(key objectKey) {
	on, ok := c.componentPodOn[key]
	if !ok {
		return
	}
	delete(c.componentPodOn, key)
	list := slices.DeleteFunc(c.componentPods[on], func(p *corev1.Pod) bool { return p.Namespace == key.namespace && p.Name == key.name })
	if len(list) == 0 {
		delete(c.componentPods, on)
	} else {
		c.componentPods[on] = list
	}
}

// ComponentEndpoint returns where the component named component serves on
// node: the node must be a watched node with an InternalIP, and a pod in
// ComponentsNamespace matching the component's selector must be bound to
// it (spec.nodeName) and Running. Of several such pods (a static pod
// being replaced), the one not terminating, then the newest.
func (c *Cluster) ComponentEndpoint(component, node string) (ComponentEndpoint, error) {
	comp := c.componentNamed(component)
	if comp == nil {
		return ComponentEndpoint{}, resolveErrorf(ErrUnknownComponent, "no component %q is configured", component)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	kubelet, ok := c.kubelets[node]
	if !ok {
		return ComponentEndpoint{}, resolveErrorf(ErrUnknownComponent, "no node %q with an InternalIP is known", node)
	}
	pods := c.componentPods[componentOn{comp.Name, node}]
	if len(pods) == 0 {
		return ComponentEndpoint{}, resolveErrorf(ErrUnknownComponent, "no pod of %s (labelled %s in namespace %s) runs on node %s",
			comp.Name, comp.Selector, ComponentsNamespace, node)
	}
	pod := runningComponentPod(pods)
	if pod == nil {
		return ComponentEndpoint{}, resolveErrorf(ErrNoReadyEndpoint, "the pod %s/%s of %s on node %s is %s, not Running",
			pods[0].Namespace, pods[0].Name, comp.Name, node, pods[0].Status.Phase)
	}
	return componentEndpointOf(comp, pod, kubelet.Addr())
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

// runningComponentPod picks the pod to scrape of those of one component on
// one node, or nil if none is Running.
func runningComponentPod(pods []*corev1.Pod) *corev1.Pod {
	var best *corev1.Pod
	for _, p := range pods {
		if p.Status.Phase == corev1.PodRunning && (best == nil || preferredComponentPod(p, best)) {
			best = p
		}
	}
	return best
}

// preferredComponentPod reports whether p, rather than q, is the one to
// scrape: the one not terminating, else the newer.
func preferredComponentPod(p, q *corev1.Pod) bool {
	if pTerminating, qTerminating := p.DeletionTimestamp != nil, q.DeletionTimestamp != nil; pTerminating != qTerminating {
		return !pTerminating
	}
	return p.CreationTimestamp.After(q.CreationTimestamp.Time)
}

// componentEndpointOf is where pod, a Running pod of comp on the node at
// nodeAddr, serves.
func componentEndpointOf(comp *component, pod *corev1.Pod, nodeAddr netip.Addr) (ComponentEndpoint, error) {
	ip := nodeAddr
	if !pod.Spec.HostNetwork {
		ips := podIPs(pod)
		if len(ips) == 0 {
			return ComponentEndpoint{}, resolveErrorf(ErrNoReadyEndpoint, "the pod %s/%s of %s on node %s has no IP yet",
				pod.Namespace, pod.Name, comp.Name, pod.Spec.NodeName)
		}
		ip = ips[0]
	}
	return ComponentEndpoint{Component: &comp.Component, Node: pod.Spec.NodeName, Pod: pod.Namespace + "/" + pod.Name,
		Addr: netip.AddrPortFrom(ip, comp.Port), NodeAddr: nodeAddr, Labels: pod.Labels}, nil
}

// ControlPlaneSD returns the /sd/control-plane document: one target group
// per component instance ComponentEndpoint would scrape, through
// /components/{component}/{node}/metrics, and, while the API servers are
// watched, one per endpoint of default/kubernetes, through
// /apiservers/{ip}/{port}/metrics. Each is labelled component and, where
// known, node, with instance the address scraped, and a component's with
// its pod's labels as /sd/pods gives them. It takes no query.
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
	for _, comp := range c.components {
		var nodes []string
		for on := range c.componentPods {
			if on.component == comp.Name {
				nodes = append(nodes, on.node)
			}
		}
		slices.Sort(nodes)
		for _, node := range nodes {
			kubelet, ok := c.kubelets[node]
			pod := runningComponentPod(c.componentPods[componentOn{comp.Name, node}])
			if !ok || pod == nil {
				continue
			}
			ep, err := componentEndpointOf(comp, pod, kubelet.Addr())
			if err != nil {
				continue
			}
			l := podLabels(pod)
			l["__scheme__"] = gw.Scheme
			l["__metrics_path__"] = "/components/" + comp.Name + "/" + node + "/metrics"
			l["instance"] = ep.Addr.String()
			l["component"] = comp.Name
			l["node"] = node
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
