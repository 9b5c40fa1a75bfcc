package kube

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
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

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// newNode is a node with an InternalIP.
func newNode(name, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	return n
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

// TestComponentEndpoint: a component is found on a node only as a Running
// pod of kube-system matching its selector and bound to that node, at the
// node's address for a hostNetwork pod and at the pod's otherwise.
func TestComponentEndpoint(t *testing.T) {
	old := metav1.NewTime(time.Unix(1000, 0))
	deleting := metav1.NewTime(time.Unix(3000, 0))
	client := fake.NewClientset(
		newNode("cp-1", "10.250.0.1"), newNode("cp-2", "10.250.0.2"), newNode("worker-1", "10.250.0.3"),
		staticPod("kube-scheduler", "cp-1", "10.250.0.1"),
		// Pending on cp-2: found, not scraped.
		staticPod("kube-scheduler", "cp-2", "10.250.0.2", phase(corev1.PodPending)),
		// Labelled as a scheduler but in another namespace: nothing.
		newPod("apps", "fake-scheduler", "10.244.1.9", labelled("component", "kube-scheduler", "tier", "control-plane"), onNode("worker-1")),
		// etcd in the pod network: its pod IP.
		newPod(ComponentsNamespace, "etcd-cp-1", "10.244.0.5", labelled("component", "etcd", "tier", "control-plane", "extra", "x"), onNode("cp-1")),
		// A static pod being replaced: the old one terminating, the new one
		// newer still; the new one's IP is the node's all the same.
		staticPod("kube-controller-manager", "cp-1", "10.250.0.1", named("kcm-old"), func(p *corev1.Pod) {
			p.CreationTimestamp, p.DeletionTimestamp = metav1.NewTime(time.Unix(4000, 0)), &deleting
		}),
		staticPod("kube-controller-manager", "cp-1", "10.250.0.1", named("kcm-new"), func(p *corev1.Pod) { p.CreationTimestamp = old }),
		// kube-proxy on a node the informer does not know.
		newPod(ComponentsNamespace, "kube-proxy-x", "10.250.0.9", labelled("k8s-app", "kube-proxy"), onNode("gone"),
			func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		newPod(ComponentsNamespace, "kube-proxy-w", "10.250.0.3", labelled("k8s-app", "kube-proxy"), onNode("worker-1"),
			func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		// Labelled by half of the selector: no component.
		newPod(ComponentsNamespace, "half", "10.244.0.6", labelled("component", "kube-scheduler"), onNode("worker-1")),
	)
	c := startCluster(t, client, Options{Namespaces: []string{"apps"}, Components: DefaultComponents()})
	testutil.WaitFor(t, "the components' pods to be listed", c.ComponentsSynced)

	f := func(component, node, wantAddr, wantPod string, wantErr error) {
		t.Helper()
		ep, err := c.ComponentEndpoint(component, node)
		if wantErr != nil {
			if !errors.Is(err, wantErr) {
				t.Errorf("ComponentEndpoint(%s, %s) = %+v, %v; want %v", component, node, ep, err, wantErr)
			}
			return
		}
		if err != nil || ep.Addr.String() != wantAddr || ep.Pod != wantPod || ep.Node != node || ep.Component.Name != component {
			t.Errorf("ComponentEndpoint(%s, %s) = %+v, %v; want %s of %s", component, node, ep, err, wantAddr, wantPod)
		}
	}
	f("kube-scheduler", "cp-1", "10.250.0.1:10259", "kube-system/kube-scheduler-cp-1", nil)
	f("kube-scheduler", "cp-2", "", "", ErrNoReadyEndpoint)
	f("kube-scheduler", "worker-1", "", "", ErrUnknownComponent) // only the other namespace's and a half-labelled pod
	f("kube-scheduler", "nowhere", "", "", ErrUnknownComponent)
	f("etcd", "cp-1", "10.244.0.5:2381", "kube-system/etcd-cp-1", nil)
	f("kube-controller-manager", "cp-1", "10.250.0.1:10257", "kube-system/kcm-new", nil)
	f("kube-proxy", "gone", "", "", ErrUnknownComponent)
	f("kube-proxy", "worker-1", "10.250.0.3:10249", "kube-system/kube-proxy-w", nil)
	f("kube-apiserver", "cp-1", "", "", ErrUnknownComponent)

	ep, _ := c.ComponentEndpoint("etcd", "cp-1")
	if ep.NodeAddr != netip.MustParseAddr("10.250.0.1") || ep.Labels["extra"] != "x" {
		t.Errorf("etcd's NodeAddr %s and labels %v, want 10.250.0.1 and its pod's labels", ep.NodeAddr, ep.Labels)
	}
	_, err := c.ComponentEndpoint("kube-scheduler", "worker-1")
	if want := "no pod of kube-scheduler (labelled component=kube-scheduler,tier=control-plane in namespace kube-system) runs on node worker-1"; err == nil || err.Error() != want {
		t.Errorf("the error names %v, want %q", err, want)
	}
	// Its own informer: the components' pods are not the watched namespaces'.
	if n := c.Count("pods"); n != 1 {
		t.Errorf("Count(pods) = %d, want 1: only namespace apps is watched", n)
	}

	// The pod goes Running, or away: followed.
	p := staticPod("kube-scheduler", "cp-2", "10.250.0.2")
	if _, err := client.CoreV1().Pods(ComponentsNamespace).Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the Running scheduler", func() bool { _, err := c.ComponentEndpoint("kube-scheduler", "cp-2"); return err == nil })
	if err := client.CoreV1().Pods(ComponentsNamespace).Delete(context.Background(), "kube-scheduler-cp-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted scheduler to be forgotten", func() bool {
		_, err := c.ComponentEndpoint("kube-scheduler", "cp-1")
		return errors.Is(err, ErrUnknownComponent)
	})
	// Labels change: a pod that stops matching is no component.
	proxy := newPod(ComponentsNamespace, "kube-proxy-w", "10.250.0.3", labelled("k8s-app", "other"), onNode("worker-1"))
	if _, err := client.CoreV1().Pods(ComponentsNamespace).Update(context.Background(), proxy, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the relabelled pod to be no kube-proxy", func() bool {
		_, err := c.ComponentEndpoint("kube-proxy", "worker-1")
		return errors.Is(err, ErrUnknownComponent)
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
	if _, err := c.ComponentEndpoint("kube-scheduler", "cp-1"); !errors.Is(err, ErrUnknownComponent) {
		t.Errorf("ComponentEndpoint without Options.Components: %v, want ErrUnknownComponent", err)
	}
	for _, a := range client.Actions() {
		if a.GetNamespace() == ComponentsNamespace {
			t.Errorf("without components, the cluster asked to %s %s in %s", a.GetVerb(), a.GetResource().Resource, ComponentsNamespace)
		}
	}
}

// TestComponentSelectorsAreChecked: a selector that does not parse, or
// that is empty and would make every pod of kube-system the component, is
// refused.
func TestComponentSelectorsAreChecked(t *testing.T) {
	f := func(selector, wantErr string) {
		t.Helper()
		comps := DefaultComponents()
		comps[2].Selector = selector
		_, err := New(fake.NewClientset(), Options{Components: comps}, zerolog.Nop())
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("selector %q: %v, want an error with %q", selector, err, wantErr)
		}
	}
	f("component in (etcd", "cannot parse the selector \"component in (etcd\" of etcd")
	f("", "the selector of etcd is empty")
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
	c := startCluster(t, client, Options{Namespaces: []string{"apps"}, Components: DefaultComponents()})
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
// finds and per API server endpoint, labelled component and node, and the
// document follows changes.
func TestControlPlaneSD(t *testing.T) {
	client := fake.NewClientset(
		newNode("cp-1", "10.250.0.1"), newNode("worker-1", "10.250.0.3"),
		staticPod("kube-scheduler", "cp-1", "10.250.0.1"),
		staticPod("etcd", "worker-1", "10.250.0.3", phase(corev1.PodPending)),
		newPod(ComponentsNamespace, "kube-proxy-w", "10.250.0.3", labelled("k8s-app", "kube-proxy"), onNode("worker-1"),
			func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		newPod(ComponentsNamespace, "kube-proxy-x", "10.250.0.9", labelled("k8s-app", "kube-proxy"), onNode("gone"),
			func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		newSlice("default", "kubernetes", "kubernetes", []discoveryv1.EndpointPort{slicePortOf("https", 6443)},
			newEndpoint("10.250.0.1"), newEndpoint("10.250.0.100")),
	)
	c := startCluster(t, client, Options{Namespaces: []string{"apps"}, APIServers: true, Components: DefaultComponents()})
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
	scheduler := groups[0].Labels
	for k, v := range map[string]string{
		"__scheme__": "http", "component": "kube-scheduler", "node": "cp-1", "instance": "10.250.0.1:10259",
		"__meta_kubernetes_namespace": "kube-system", "__meta_kubernetes_pod_name": "kube-scheduler-cp-1",
		"__meta_kubernetes_pod_label_component": "kube-scheduler", "__meta_kubernetes_pod_label_tier": "control-plane",
		"__meta_kubernetes_pod_node_name": "cp-1",
	} {
		if scheduler[k] != v {
			t.Errorf("the scheduler's %s = %q, want %q", k, scheduler[k], v)
		}
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
	if _, err := client.CoreV1().Pods(ComponentsNamespace).Update(context.Background(),
		staticPod("etcd", "worker-1", "10.250.0.3"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the Running etcd in the document", func() bool {
		doc, err := c.ControlPlaneSD("", testGateway)
		return err == nil && doc.Groups == 5
	})
	if _, err := client.CoreV1().Nodes().Create(context.Background(), newNode("gone", "10.250.0.9"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the new node's kube-proxy in the document", func() bool {
		doc, err := c.ControlPlaneSD("", testGateway)
		return err == nil && doc.Groups == 6
	})
	if err := client.DiscoveryV1().EndpointSlices("default").Delete(context.Background(), "kubernetes", metav1.DeleteOptions{}); err != nil {
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
	noAPI := startCluster(t, client, Options{Components: DefaultComponents()})
	testutil.WaitFor(t, "the components' pods to be listed", noAPI.ComponentsSynced)
	if doc, err := noAPI.ControlPlaneSD("", testGateway); err != nil || strings.Contains(strings.Join(paths(decode(t, doc)), " "), "/apiservers/") {
		t.Errorf("without Options.APIServers: %v, %v", doc, err)
	}
}
