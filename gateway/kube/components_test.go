package kube

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// newNode is a node with an InternalIP.
func newNode(name, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	return n
}

// controlPlaneNode is a node with an InternalIP, labelled as kubeadm
// labels a control-plane node.
func controlPlaneNode(name, ip string) *corev1.Node {
	n := newNode(name, ip)
	n.Labels = map[string]string{DefaultControlPlaneNodeSelector: ""}
	return n
}

// componentOptions watch namespace apps and the default components.
func componentOptions() Options {
	return Options{Namespaces: []string{"apps"}, Components: DefaultComponents(), ControlPlaneNodeSelector: DefaultControlPlaneNodeSelector}
}

// staticPod is a kubeadm static pod of component on node: hostNetwork,
// labelled component=<component>, tier=control-plane, in kube-system,
// its IP the node's.
func staticPod(component, node, nodeIP string, opts ...podOpt) *corev1.Pod {
	p := newPod(ComponentsNamespace, component+"-"+node, nodeIP,
		labelled("component", component, "tier", "control-plane"),
		func(p *corev1.Pod) { p.Spec.NodeName, p.Spec.HostNetwork = node, true })
	for _, o := range opts {
		o(p)
	}
	return p
}

func onNode(node string) podOpt { return func(p *corev1.Pod) { p.Spec.NodeName = node } }

func named(name string) podOpt { return func(p *corev1.Pod) { p.Name = name } }

func createdAt(sec int64) podOpt {
	return func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(time.Unix(sec, 0)) }
}

func hostNetwork(p *corev1.Pod) { p.Spec.HostNetwork = true }

// TestComponentEndpoint: a component is found on a node only as a Running
// hostNetwork pod of kube-system matching its selector and bound to that
// node, a control-plane node for all but kube-proxy, and is scraped at the
// node's InternalIP whatever the pod's status says.
func TestComponentEndpoint(t *testing.T) {
	deleting := metav1.NewTime(time.Unix(3000, 0))
	client := fake.NewClientset(
		controlPlaneNode("cp-1", "10.250.0.1"), controlPlaneNode("cp-2", "10.250.0.2"), newNode("worker-1", "10.250.0.3"),
		staticPod("kube-scheduler", "cp-1", "10.250.0.1"),
		// Pending on cp-2: found, not scraped.
		staticPod("kube-scheduler", "cp-2", "10.250.0.2", phase(corev1.PodPending)),
		// A mirror pod that worker-1's kubelet may create: no scheduler,
		// worker-1 is no control-plane node.
		staticPod("kube-scheduler", "worker-1", "10.250.0.3"),
		// Labelled as a controller-manager but in another namespace, or by
		// half of the selector: nothing.
		newPod("apps", "fake-kcm", "10.250.0.2", labelled("component", "kube-controller-manager", "tier", "control-plane"), onNode("cp-2"), hostNetwork),
		newPod(ComponentsNamespace, "half", "10.250.0.2", labelled("component", "kube-controller-manager"), onNode("cp-2"), hostNetwork),
		// etcd in the pod network: not a component instance.
		newPod(ComponentsNamespace, "etcd-cp-1", "10.244.0.5", labelled("component", "etcd", "tier", "control-plane"), onNode("cp-1")),
		// Two Running etcd on cp-2: the newer; its status claims another IP,
		// the node's is dialled.
		staticPod("etcd", "cp-2", "10.250.0.2", named("etcd-old"), createdAt(1000)),
		staticPod("etcd", "cp-2", "10.244.9.9", named("etcd-new"), createdAt(2000), labelled("extra", "x")),
		// A static pod being replaced: the old one terminating, the new one
		// newer still.
		staticPod("kube-controller-manager", "cp-1", "10.250.0.1", named("kcm-old"), createdAt(4000),
			func(p *corev1.Pod) { p.DeletionTimestamp = &deleting }),
		staticPod("kube-controller-manager", "cp-1", "10.250.0.1", named("kcm-new"), createdAt(1000)),
		// kube-proxy on a node the informer does not know, and on a worker.
		newPod(ComponentsNamespace, "kube-proxy-x", "10.250.0.9", labelled("k8s-app", "kube-proxy"), onNode("gone"), hostNetwork),
		newPod(ComponentsNamespace, "kube-proxy-w", "10.250.0.3", labelled("k8s-app", "kube-proxy"), onNode("worker-1"), hostNetwork),
	)
	c := startCluster(t, client, componentOptions())
	testutil.WaitFor(t, "the components' pods to be listed", c.ComponentsSynced)

	f := func(component, node, wantAddr, wantPod string, wantErr error, wantText string) {
		t.Helper()
		ep, err := c.ComponentEndpoint(component, []byte(node))
		if wantErr != nil {
			if !errors.Is(err, wantErr) || !strings.Contains(err.Error(), wantText) {
				t.Errorf("ComponentEndpoint(%s, %s) = %+v, %v; want %v saying %q", component, node, ep, err, wantErr, wantText)
			}
			return
		}
		if err != nil || ep.Addr.String() != wantAddr || ep.Pod != wantPod || ep.Node != node || ep.Component.Name != component {
			t.Errorf("ComponentEndpoint(%s, %s) = %+v, %v; want %s of %s", component, node, ep, err, wantAddr, wantPod)
		}
	}
	f("kube-scheduler", "cp-1", "10.250.0.1:10259", "kube-system/kube-scheduler-cp-1", nil, "")
	f("kube-scheduler", "cp-2", "", "", ErrNoReadyEndpoint, "the pod kube-system/kube-scheduler-cp-2 of kube-scheduler on node cp-2 is Pending, not Running")
	f("kube-scheduler", "worker-1", "", "", ErrUnknownComponent,
		"node worker-1 is not a control-plane node (its labels do not match -control-plane-node-selector node-role.kubernetes.io/control-plane), where kube-scheduler runs")
	f("kube-scheduler", "nowhere", "", "", ErrUnknownComponent, `no node "nowhere" with an InternalIP is known`)
	f("kube-controller-manager", "cp-2", "", "", ErrUnknownComponent,
		"no pod of kube-controller-manager (labelled component=kube-controller-manager,tier=control-plane in namespace kube-system) runs on node cp-2")
	f("etcd", "cp-1", "", "", ErrUnknownComponent, "the pod kube-system/etcd-cp-1 of etcd on node cp-1 is not a host-network pod")
	f("etcd", "cp-2", "10.250.0.2:2381", "kube-system/etcd-new", nil, "")
	f("kube-controller-manager", "cp-1", "10.250.0.1:10257", "kube-system/kcm-new", nil, "")
	f("kube-proxy", "gone", "", "", ErrUnknownComponent, `no node "gone"`)
	f("kube-proxy", "worker-1", "10.250.0.3:10249", "kube-system/kube-proxy-w", nil, "")
	f("kube-apiserver", "cp-1", "", "", ErrUnknownComponent, `no component "kube-apiserver" is configured`)

	ep, _ := c.ComponentEndpoint("etcd", []byte("cp-2"))
	if ep.NodeAddr != netip.MustParseAddr("10.250.0.2") || ep.Labels["extra"] != "x" {
		t.Errorf("etcd's NodeAddr %s and labels %v, want 10.250.0.2 and its pod's labels", ep.NodeAddr, ep.Labels)
	}
	// Its own informer: the components' pods are not the watched namespaces'.
	if n := c.Count("pods"); n != 1 {
		t.Errorf("Count(pods) = %d, want 1: only namespace apps is watched", n)
	}

	pods, nodes := client.CoreV1().Pods(ComponentsNamespace), client.CoreV1().Nodes()
	ctx := context.Background()
	// The pod goes Running, or away: followed.
	if _, err := pods.Update(ctx, staticPod("kube-scheduler", "cp-2", "10.250.0.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the Running scheduler", func() bool { _, err := c.ComponentEndpoint("kube-scheduler", []byte("cp-2")); return err == nil })
	if err := pods.Delete(ctx, "kube-scheduler-cp-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted scheduler to be forgotten", func() bool {
		_, err := c.ComponentEndpoint("kube-scheduler", []byte("cp-1"))
		return errors.Is(err, ErrUnknownComponent)
	})
	// A deletion the informer missed the end of: its tombstone.
	c.componentPodDeleted(cache.DeletedFinalStateUnknown{Key: "kube-system/etcd-new", Obj: staticPod("etcd", "cp-2", "10.250.0.2", named("etcd-new"))})
	f("etcd", "cp-2", "10.250.0.2:2381", "kube-system/etcd-old", nil, "")
	// Labels change: a pod that stops matching is no component.
	proxy := newPod(ComponentsNamespace, "kube-proxy-w", "10.250.0.3", labelled("k8s-app", "other"), onNode("worker-1"), hostNetwork)
	if _, err := pods.Update(ctx, proxy, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the relabelled pod to be no kube-proxy", func() bool {
		_, err := c.ComponentEndpoint("kube-proxy", []byte("worker-1"))
		return errors.Is(err, ErrUnknownComponent)
	})
	// A node that loses its role runs no control-plane component; a new
	// InternalIP is dialled at once.
	if _, err := nodes.Update(ctx, newNode("cp-1", "10.250.0.1"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "cp-1 to be no control-plane node", func() bool {
		_, err := c.ComponentEndpoint("kube-controller-manager", []byte("cp-1"))
		return errors.Is(err, ErrUnknownComponent)
	})
	if _, err := nodes.Update(ctx, controlPlaneNode("cp-1", "10.250.0.11"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "cp-1's new address", func() bool {
		ep, err := c.ComponentEndpoint("kube-controller-manager", []byte("cp-1"))
		return err == nil && ep.Addr.String() == "10.250.0.11:10257"
	})
}

// TestComponentsAreOptional: without Options.Components nothing of
// kube-system is watched for them, and no component is known.
func TestComponentsAreOptional(t *testing.T) {
	client := fake.NewClientset(newNode("cp-1", "10.250.0.1"), staticPod("kube-scheduler", "cp-1", "10.250.0.1"))
	c := startCluster(t, client, Options{Namespaces: []string{"apps"}})
	if c.ComponentsSynced() {
		t.Error("ComponentsSynced without Options.Components")
	}
	if _, err := c.ComponentEndpoint("kube-scheduler", []byte("cp-1")); !errors.Is(err, ErrUnknownComponent) {
		t.Errorf("ComponentEndpoint without Options.Components: %v, want ErrUnknownComponent", err)
	}
	for _, a := range client.Actions() {
		if a.GetNamespace() == ComponentsNamespace {
			t.Errorf("without components, the cluster asked to %s %s in %s", a.GetVerb(), a.GetResource().Resource, ComponentsNamespace)
		}
	}
}

// TestComponentSelectorsAreChecked: a selector that does not parse, or
// that requires no label and would make pods of kube-system, or nodes, the
// component's by what they lack, is refused.
func TestComponentSelectorsAreChecked(t *testing.T) {
	f := func(selector, nodeSelector, wantErr string) {
		t.Helper()
		opts := componentOptions()
		opts.Components[2].Selector = selector
		opts.ControlPlaneNodeSelector = nodeSelector
		_, err := New(fake.NewClientset(), opts, zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("selector %q, node selector %q: %v, want an error with %q", selector, nodeSelector, err, wantErr)
		}
	}
	const nodes = DefaultControlPlaneNodeSelector
	f("component in (etcd", nodes, `the selector of etcd: cannot parse "component in (etcd"`)
	f("", nodes, `the selector of etcd: "" requires no label`)
	f("!component", nodes, `the selector of etcd: "!component" requires no label, so it matches whatever lacks some: give at least one key=value, key in (...) or key`)
	f("component!=etcd,tier notin (x)", nodes, `"component!=etcd,tier notin (x)" requires no label`)
	f("component=etcd", "!"+nodes, `the control-plane node selector: "!node-role.kubernetes.io/control-plane" requires no label`)
	f("component=etcd", "", `the control-plane node selector: "" requires no label`)
	for _, ok := range []string{"component=etcd", "component==etcd,x!=y", "component in (etcd)", "component,!x"} {
		opts := componentOptions()
		opts.Components[2].Selector = ok
		if _, err := New(fake.NewClientset(), opts, zerolog.Nop()); err != nil {
			t.Errorf("selector %q: %v", ok, err)
		}
	}
}

// TestComponentsDoNotHoldUpSynced: a gateway whose RBAC does not reach
// kube-system is ready for everything else; ComponentsFailure says why
// /components/ is not.
func TestComponentsDoNotHoldUpSynced(t *testing.T) {
	client := fake.NewClientset()
	var released atomic.Bool
	client.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == ComponentsNamespace && !released.Load() {
			return true, nil, errors.New(`pods is forbidden: cannot list resource "pods" in the namespace "kube-system"`)
		}
		return false, nil, nil
	})
	c := startCluster(t, client, componentOptions())
	testutil.WaitFor(t, "the failure to be known", func() bool { return c.ComponentsFailure() != nil })
	if err := c.ComponentsFailure(); !strings.Contains(err.Error(), "cannot list pods in namespace kube-system") {
		t.Errorf("ComponentsFailure() = %v, want it to name the list in kube-system", err)
	}
	if c.SyncFailure() != nil {
		t.Errorf("SyncFailure() = %v, want nil: the components' informer is its own", c.SyncFailure())
	}
	released.Store(true)
	testutil.WaitFor(t, "the components' pods to be listed", c.ComponentsSynced)
	if c.ComponentsFailure() != nil {
		t.Errorf("ComponentsFailure() after sync = %v", c.ComponentsFailure())
	}
}

// TestControlPlaneSD: one target per component instance ComponentEndpoint
// finds and ComponentListed lets through, and per API server endpoint,
// labelled component and node and with nothing of kube-system's pods but
// their namespace, name, node and labels; the document follows changes.
func TestControlPlaneSD(t *testing.T) {
	client := fake.NewClientset(
		controlPlaneNode("cp-1", "10.250.0.1"), newNode("worker-1", "10.250.0.3"), controlPlaneNode("cp-9", "10.250.0.9"),
		staticPod("kube-scheduler", "cp-1", "10.250.0.1", annotated("kubernetes.io/config.hash", "secret-ish")),
		staticPod("etcd", "cp-1", "10.250.0.1", phase(corev1.PodPending)),
		// On a worker, which is no control-plane node: never listed.
		staticPod("kube-controller-manager", "worker-1", "10.250.0.3"),
		// Refused by ComponentListed.
		staticPod("kube-controller-manager", "cp-9", "10.250.0.9"),
		newPod(ComponentsNamespace, "kube-proxy-w", "10.250.0.3", labelled("k8s-app", "kube-proxy"), onNode("worker-1"), hostNetwork),
		newPod(ComponentsNamespace, "kube-proxy-x", "10.250.0.7", labelled("k8s-app", "kube-proxy"), onNode("gone"), hostNetwork),
		newSlice("default", "kubernetes", "kubernetes", []discoveryv1.EndpointPort{slicePortOf("https", 6443)},
			newEndpoint("10.250.0.1"), newEndpoint("10.250.0.100")),
	)
	opts := componentOptions()
	opts.APIServers = true
	opts.ComponentListed = func(ep ComponentEndpoint) bool { return ep.Node != "cp-9" }
	c := startCluster(t, client, opts)
	testutil.WaitFor(t, "the components and API servers to be listed", func() bool { return c.ComponentsSynced() && c.APIServersSynced() })

	doc, err := c.ControlPlaneSD("", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	groups := decode(t, doc)
	want := []string{"/components/kube-scheduler/cp-1/metrics", "/components/kube-proxy/worker-1/metrics",
		"/apiservers/10.250.0.1/6443/metrics", "/apiservers/10.250.0.100/6443/metrics"}
	if got := paths(groups); !reflect.DeepEqual(got, want) {
		t.Fatalf("paths %v, want %v", got, want)
	}
	wantScheduler := map[string]string{
		"__scheme__": "http", "__metrics_path__": "/components/kube-scheduler/cp-1/metrics",
		"component": "kube-scheduler", "node": "cp-1", "instance": "10.250.0.1:10259",
		"__meta_kubernetes_namespace": "kube-system", "__meta_kubernetes_pod_name": "kube-scheduler-cp-1",
		"__meta_kubernetes_pod_node_name":       "cp-1",
		"__meta_kubernetes_pod_label_component": "kube-scheduler", "__meta_kubernetes_pod_labelpresent_component": "true",
		"__meta_kubernetes_pod_label_tier": "control-plane", "__meta_kubernetes_pod_labelpresent_tier": "true",
	}
	if !reflect.DeepEqual(groups[0].Labels, wantScheduler) {
		got, _ := json.Marshal(groups[0].Labels)
		t.Errorf("the scheduler's labels %s, want %v: no annotation, uid or IP of kube-system", got, wantScheduler)
	}
	if g := groups[0].Targets; !reflect.DeepEqual(g, []string{testGateway.Address}) {
		t.Errorf("targets %v, want the gateway", g)
	}
	wantAPI := map[string]string{"__scheme__": "http", "__metrics_path__": "/apiservers/10.250.0.1/6443/metrics",
		"instance": "10.250.0.1:6443", "component": "kube-apiserver", "node": "cp-1"}
	if !reflect.DeepEqual(groups[2].Labels, wantAPI) {
		got, _ := json.Marshal(groups[2].Labels)
		t.Errorf("the API server's labels %s, want %v", got, wantAPI)
	}
	if _, ok := groups[3].Labels["node"]; ok {
		t.Errorf("an API server on no node's address has a node label: %v", groups[3].Labels)
	}

	// The same document until something changes, then another.
	if again, _ := c.ControlPlaneSD("", testGateway); again.ETag != doc.ETag {
		t.Error("the ETag changed with nothing changed")
	}
	ctx := context.Background()
	if _, err := client.CoreV1().Pods(ComponentsNamespace).Update(ctx, staticPod("etcd", "cp-1", "10.250.0.1"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the Running etcd in the document", func() bool {
		doc, err := c.ControlPlaneSD("", testGateway)
		return err == nil && doc.Groups == 5
	})
	if _, err := client.CoreV1().Nodes().Create(ctx, newNode("gone", "10.250.0.7"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the new node's kube-proxy in the document", func() bool {
		doc, err := c.ControlPlaneSD("", testGateway)
		return err == nil && doc.Groups == 6
	})
	// A new InternalIP is the new instance.
	if _, err := client.CoreV1().Nodes().Update(ctx, newNode("worker-1", "10.250.0.33"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "worker-1's new address as its kube-proxy's instance", func() bool {
		doc, err := c.ControlPlaneSD("", testGateway)
		return err == nil && slices.ContainsFunc(decode(t, doc), func(g targetGroup) bool {
			return g.Labels["component"] == "kube-proxy" && g.Labels["node"] == "worker-1" && g.Labels["instance"] == "10.250.0.33:10249"
		})
	})
	if err := client.DiscoveryV1().EndpointSlices("default").Delete(ctx, "kubernetes", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the API servers gone from the document", func() bool {
		doc, err := c.ControlPlaneSD("", testGateway)
		return err == nil && doc.Groups == 4
	})

	for _, q := range []string{"namespace=kube-system", "selector=a=b", "all=true", "x"} {
		if _, err := c.ControlPlaneSD(q, testGateway); err == nil {
			t.Errorf("ControlPlaneSD(%q) succeeded", q)
		}
	}
	// Without the API servers' informer, only the components.
	noAPI := startCluster(t, client, componentOptions())
	testutil.WaitFor(t, "the components' pods to be listed", noAPI.ComponentsSynced)
	if doc, err := noAPI.ControlPlaneSD("", testGateway); err != nil || strings.Contains(strings.Join(paths(decode(t, doc)), " "), "/apiservers/") {
		t.Errorf("without Options.APIServers: %v, %v", doc, err)
	}
}

// TestControlPlaneSDIgnoresWhatItDoesNotShow: a node's status heartbeat
// and an update of a kube-system pod that changes nothing the document
// shows leave it as it was, unbuilt: same version, same ETag.
func TestControlPlaneSDIgnoresWhatItDoesNotShow(t *testing.T) {
	scheduler := staticPod("kube-scheduler", "cp-1", "10.250.0.1")
	client := fake.NewClientset(controlPlaneNode("cp-1", "10.250.0.1"), scheduler,
		newPod(ComponentsNamespace, "coredns", "10.244.0.2", labelled("k8s-app", "kube-dns"), onNode("cp-1")))
	c := startCluster(t, client, componentOptions())
	testutil.WaitFor(t, "the components' pods to be listed", c.ComponentsSynced)
	doc, err := c.ControlPlaneSD("", testGateway)
	if err != nil || doc.Groups != 1 {
		t.Fatalf("ControlPlaneSD: %v, %v; want the scheduler", doc, err)
	}
	version := c.controlPlaneVersion.Load()
	ctx := context.Background()

	// The heartbeat: the node handler has run once nodesVersion moves.
	node := controlPlaneNode("cp-1", "10.250.0.1")
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}}
	nodes := c.nodesVersion.Load()
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the heartbeat to be handled", func() bool { return c.nodesVersion.Load() != nodes })
	if v := c.controlPlaneVersion.Load(); v != version {
		t.Errorf("a node heartbeat moved the control-plane version from %d to %d", version, v)
	}
	if again, _ := c.ControlPlaneSD("", testGateway); again.ETag != doc.ETag {
		t.Error("the ETag changed with a heartbeat")
	}

	// An unrelated pod, then an annotation and a condition of the
	// scheduler's: nothing. Then the scheduler's labels, which the
	// document shows: the one change, handled after the others.
	dns := newPod(ComponentsNamespace, "coredns", "10.244.0.2", labelled("k8s-app", "kube-dns", "x", "y"), onNode("cp-1"))
	if _, err := client.CoreV1().Pods(ComponentsNamespace).Update(ctx, dns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	scheduler.Annotations = map[string]string{"kubernetes.io/config.seen": "now"}
	scheduler.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
	if _, err := client.CoreV1().Pods(ComponentsNamespace).Update(ctx, scheduler, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	scheduler.Labels["version"] = "2"
	if _, err := client.CoreV1().Pods(ComponentsNamespace).Update(ctx, scheduler, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the relabelled scheduler", func() bool {
		ep, err := c.ComponentEndpoint("kube-scheduler", []byte("cp-1"))
		return err == nil && ep.Labels["version"] == "2"
	})
	if v := c.controlPlaneVersion.Load(); v != version+1 {
		t.Errorf("the control-plane version moved from %d to %d, want one step for the one change shown", version, v)
	}
	if again, _ := c.ControlPlaneSD("", testGateway); again.ETag == doc.ETag {
		t.Error("the ETag stayed with the scheduler's labels changed")
	}
}

// TestComponentEndpointAllocatesNothing: a scrape's lookup builds no
// string: the node is looked up from the request's bytes, and the pod's
// namespace/name was built when it was indexed.
func TestComponentEndpointAllocatesNothing(t *testing.T) {
	client := fake.NewClientset(controlPlaneNode("cp-1", "10.250.0.1"), staticPod("kube-scheduler", "cp-1", "10.250.0.1"))
	c := startCluster(t, client, componentOptions())
	testutil.WaitFor(t, "the components' pods to be listed", c.ComponentsSynced)
	node := []byte("cp-1")
	if _, err := c.ComponentEndpoint("kube-scheduler", node); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = c.ComponentEndpoint("kube-scheduler", node) }); n != 0 {
		t.Errorf("ComponentEndpoint allocates %v times per call, want 0", n)
	}
}
