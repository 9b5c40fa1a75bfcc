package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

func startCluster(t *testing.T, client kubernetes.Interface, opts Options) *Cluster {
	t.Helper()
	c, err := New(client, opts, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go c.Run(stop)
	testutil.WaitFor(t, "the informers to sync", c.Synced)
	return c
}

type podOpt func(*corev1.Pod)

func newPod(ns, name, ip string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{
			NodeName: "node-1",
			Containers: []corev1.Container{{
				Name: "app", Image: "example/app:1",
				Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9100}},
			}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, HostIP: "192.168.0.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	if ip != "" {
		p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func annotated(kv ...string) podOpt {
	return func(p *corev1.Pod) { p.Annotations = withPairs(p.Annotations, kv) }
}

func labelled(kv ...string) podOpt {
	return func(p *corev1.Pod) { p.Labels = withPairs(p.Labels, kv) }
}

// withPairs returns m, made if nil, with the keys and values alternating in
// kv set.
func withPairs(m map[string]string, kv []string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// declaring makes the pod's container declare port instead of 9100.
func declaring(port int32) podOpt {
	return func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = port }
}

func phase(ph corev1.PodPhase) podOpt { return func(p *corev1.Pod) { p.Status.Phase = ph } }

func TestHasEndpointFollowsPods(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(
		newPod("a", "web", "10.0.0.1", annotated("prometheus.io/port", "8080")),
		newPod("a", "done", "10.0.0.2", phase(corev1.PodSucceeded)),
		newPod("a", "pending", ""),
	)
	c := startCluster(t, client, Options{})
	f := func(addr string, want bool) {
		t.Helper()
		if got := c.HasEndpoint(netip.MustParseAddrPort(addr)); got != want {
			t.Errorf("HasEndpoint(%s) = %v, want %v", addr, got, want)
		}
	}
	f("10.0.0.1:9100", true)  // declared container port
	f("10.0.0.1:8080", true)  // prometheus.io/port
	f("10.0.0.1:22", false)   // neither
	f("10.0.0.2:9100", false) // terminated: its IP may be someone else's
	f("10.0.0.9:9100", false) // no such pod
	f("[::ffff:10.0.0.1]:9100", true)

	// Deleted: refused as soon as the watch event arrives.
	if err := client.CoreV1().Pods("a").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted pod's endpoint to be refused", func() bool { return !c.HasEndpoint(netip.MustParseAddrPort("10.0.0.1:9100")) })

	// Its IP moves to a new pod: only the new pod's ports are allowed.
	moved := newPod("b", "other", "10.0.0.1")
	moved.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 7000}, {ContainerPort: 53, Protocol: corev1.ProtocolUDP}}
	if _, err := client.CoreV1().Pods("b").Create(ctx, moved, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the new pod's port to be allowed", func() bool { return c.HasEndpoint(netip.MustParseAddrPort("10.0.0.1:7000")) })
	f("10.0.0.1:9100", false)
	f("10.0.0.1:8080", false)
	f("10.0.0.1:53", false) // UDP

	// A pod that terminates is refused before it is deleted.
	moved.Status.Phase = corev1.PodFailed
	if _, err := client.CoreV1().Pods("b").UpdateStatus(ctx, moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the failed pod's endpoint to be refused", func() bool { return !c.HasEndpoint(netip.MustParseAddrPort("10.0.0.1:7000")) })
}

func TestHostNetworkPodsShareTheNodeIP(t *testing.T) {
	a := newPod("monitoring", "node-exporter", "192.168.0.1")
	a.Spec.HostNetwork = true
	b := newPod("kube-system", "proxy", "192.168.0.1")
	b.Spec.HostNetwork = true
	b.Spec.Containers[0].Ports[0].ContainerPort = 10249
	client := fake.NewClientset(a, b)
	c := startCluster(t, client, Options{})
	for _, addr := range []string{"192.168.0.1:9100", "192.168.0.1:10249"} {
		if !c.HasEndpoint(netip.MustParseAddrPort(addr)) {
			t.Errorf("HasEndpoint(%s) = false, want true", addr)
		}
	}
	if err := client.CoreV1().Pods("kube-system").Delete(context.Background(), "proxy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted pod's port to be refused", func() bool { return !c.HasEndpoint(netip.MustParseAddrPort("192.168.0.1:10249")) })
	if !c.HasEndpoint(netip.MustParseAddrPort("192.168.0.1:9100")) {
		t.Error("deleting one hostNetwork pod refused another on the same IP")
	}
}

func TestNamespacesAndSelectorLimitWhatIsWatched(t *testing.T) {
	client := fake.NewClientset(
		newPod("a", "in", "10.0.0.1", labelled("team", "x")),
		newPod("a", "wrong-label", "10.0.0.2", labelled("team", "y")),
		newPod("b", "other-ns", "10.0.0.3", labelled("team", "x")),
		newPod("c", "in-c", "10.0.0.4", labelled("team", "x")),
	)
	c := startCluster(t, client, Options{Namespaces: []string{"a", "c"}, PodSelector: "team=x"})
	f := func(addr string, want bool) {
		t.Helper()
		if got := c.HasEndpoint(netip.MustParseAddrPort(addr)); got != want {
			t.Errorf("HasEndpoint(%s) = %v, want %v", addr, got, want)
		}
	}
	f("10.0.0.1:9100", true)
	f("10.0.0.2:9100", false)
	f("10.0.0.3:9100", false)
	f("10.0.0.4:9100", true)
	if pods := c.Count("pods"); pods != 2 {
		t.Errorf("Count(pods) = %d, want 2", pods)
	}
	if _, err := New(client, Options{PodSelector: "team in ("}, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "-kubernetes-pod-selector") {
		t.Errorf("an invalid selector: error %v, want one naming -kubernetes-pod-selector", err)
	}
}

func TestStripPodKeepsOnlyWhatIsUsed(t *testing.T) {
	isController := true
	pod := newPod("a", "web", "10.0.0.1", annotated(lastApplied, strings.Repeat("x", 10000), "prometheus.io/scrape", "true"), labelled("app", "web"))
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	pod.OwnerReferences = []metav1.OwnerReference{{Kind: "ConfigMap", Name: "x"}, {Kind: "ReplicaSet", Name: "web-1", Controller: &isController}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "data"}}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "SECRET", Value: "s3cr3t"}}
	pod.Spec.Containers[0].Args = []string{"--password=s3cr3t"}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://c0ffee",
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: "OOMKilled"}}}}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue})

	obj, err := stripPod(pod)
	if err != nil {
		t.Fatal(err)
	}
	got := obj.(*corev1.Pod)
	b, _ := json.Marshal(got)
	for _, leaked := range []string{"s3cr3t", "kubectl", "last-applied", "ConfigMap", `"data"`, "PodScheduled", "OOMKilled"} {
		if strings.Contains(string(b), leaked) {
			t.Errorf("the stripped pod still holds %q: %s", leaked, b)
		}
	}
	for _, kept := range []string{`"web"`, `"10.0.0.1"`, `"prometheus.io/scrape":"true"`, `"app":"web"`, `"containerPort":9100`, `"ReplicaSet"`, `"node-1"`, `"Ready"`, `"example/app:1"`, `"containerd://c0ffee"`} {
		if !strings.Contains(string(b), kept) {
			t.Errorf("the stripped pod lost %s: %s", kept, b)
		}
	}
	if len(b) > 1000 {
		t.Errorf("the stripped pod is %d bytes of JSON, want under 1000: %s", len(b), b)
	}
}

func TestStripNodeDropsImages(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"zone": "a"}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.0.1"}},
			Images:    []corev1.ContainerImage{{Names: []string{"registry.example/huge:1"}}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse,
				Message: "kubelet has sufficient memory available"}},
		},
	}
	obj, _ := stripNode(node)
	b, _ := json.Marshal(obj)
	if strings.Contains(string(b), "huge") || strings.Contains(string(b), "sufficient memory") ||
		!strings.Contains(string(b), "192.168.0.1") || !strings.Contains(string(b), `"zone":"a"`) ||
		!strings.Contains(string(b), `{"type":"MemoryPressure","status":"False"`) {
		t.Errorf("stripped node: %s", b)
	}
}

func TestKubeletAddress(t *testing.T) {
	node := func(name string, port int32, addrs ...corev1.NodeAddress) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		n.Status.Addresses = addrs
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = port
		return n
	}
	internal := corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.168.0.7"}
	external := corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.7"}
	client := fake.NewClientset(
		node("custom-port", 10350, external, internal),
		node("default-port", 0, internal),
		node("external-only", 10250, external),
	)
	c := startCluster(t, client, Options{})
	f := func(name, want string) {
		t.Helper()
		addr, ok := c.Kubelet(name)
		if got := addr.String(); !ok && want != "" || ok && got != want {
			t.Errorf("Kubelet(%q) = %s, %v; want %q", name, got, ok, want)
		}
	}
	f("custom-port", "192.168.0.7:10350")
	f("default-port", "192.168.0.7:10250")
	f("external-only", "") // never an external address: the token would cross the internet
	f("unknown", "")
	if err := client.CoreV1().Nodes().Delete(context.Background(), "custom-port", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted node to be forgotten", func() bool { _, ok := c.Kubelet("custom-port"); return !ok })
}

func TestClientGoLogsInTheGatewaysFormat(t *testing.T) {
	var buf bytes.Buffer
	sink := &klogSink{log: zerolog.New(&buf)}
	logr.New(sink).WithName("reflector").WithValues("resource", "pods").Error(errors.New("forbidden"), "Failed to watch", "attempt", 3, "err", errors.New("watch ended"))
	logr.New(sink).V(4).Info("debug detail")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	want := map[string]any{"level": "error", "error": "forbidden", "message": "Failed to watch", "logger": "reflector", "resource": "pods", "attempt": float64(3), "err": "watch ended"}
	if !reflect.DeepEqual(line, want) {
		t.Errorf("got %v, want %v", line, want)
	}
}

func TestReusedIPBelongsToTheNewPod(t *testing.T) {
	ctx := context.Background()
	old := newPod("a", "old", "10.0.0.1")
	old.Spec.Containers[0].Ports[0].ContainerPort = 8080
	old.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
	client := fake.NewClientset(old)
	c := startCluster(t, client, Options{})
	// The old pod terminates; the CNI hands its IP to a new pod at once.
	now := metav1.Now()
	old.DeletionTimestamp = &now
	if _, err := client.CoreV1().Pods("a").Update(ctx, old, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	fresh := newPod("b", "fresh", "10.0.0.1")
	fresh.CreationTimestamp = metav1.Now()
	if _, err := client.CoreV1().Pods("b").Create(ctx, fresh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the new pod's port to be allowed", func() bool { return c.HasEndpoint(netip.MustParseAddrPort("10.0.0.1:9100")) })
	if c.HasEndpoint(netip.MustParseAddrPort("10.0.0.1:8080")) {
		t.Error("the terminating pod's port opened on the new pod that now has its IP")
	}
}

func TestNamespaceListedTwiceIsWatchedOnce(t *testing.T) {
	c := startCluster(t, fake.NewClientset(newPod("a", "p", "10.0.0.1", annotated("prometheus.io/scrape", "true"))), Options{Namespaces: []string{"a", "a"}})
	if pods := c.Count("pods"); pods != 1 {
		t.Errorf("Count(pods) = %d, want 1", pods)
	}
	if doc, _ := c.PodsSD("", testGateway); doc.Groups != 1 {
		t.Errorf("%d target groups, want 1", doc.Groups)
	}
}

// TestServicesAndEndpointSlicesAreWatched: Services and EndpointSlices are
// watched in the namespaces of -kubernetes-namespaces only, and held
// without what nobody reads (managed fields, the last-applied annotation).
func TestServicesAndEndpointSlicesAreWatched(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}
	annotations := map[string]string{lastApplied: `{"big":"json"}`, "prometheus.io/scrape": "true"}
	service := func(ns, name string) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name},
				Annotations: annotations, ManagedFields: managed},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "metrics", Port: 8080, Protocol: corev1.ProtocolTCP}}},
		}
	}
	slice := func(ns, name string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "ksm"},
				Annotations: annotations, ManagedFields: managed},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.7"}}},
		}
	}
	client := fake.NewClientset(service("monitoring", "ksm"), service("other", "app"),
		slice("monitoring", "ksm-abcde"), slice("other", "app-fghij"))
	c := startCluster(t, client, Options{Namespaces: []string{"monitoring"}})
	if n, m := c.Count("services"), c.Count("endpointslices"); n != 1 || m != 1 {
		t.Fatalf("Count(services), Count(endpointslices) = %d, %d; want 1, 1: only -kubernetes-namespaces are watched", n, m)
	}
	svc := c.stores("services")[0].List()[0].(*corev1.Service)
	if svc.Name != "ksm" || svc.ManagedFields != nil || svc.Annotations[lastApplied] != "" || svc.Annotations["prometheus.io/scrape"] != "true" ||
		svc.Spec.Selector != nil || svc.Spec.Ports[0].Port != 8080 || svc.Labels["app"] != "ksm" {
		t.Errorf("the Service held: %+v; want its name, labels, annotations but last-applied, ports, and no managed fields or selector", svc)
	}
	es := c.stores("endpointslices")[0].List()[0].(*discoveryv1.EndpointSlice)
	if es.ManagedFields != nil || es.Annotations[lastApplied] != "" || es.Endpoints[0].Addresses[0] != "10.244.1.7" || es.Labels[discoveryv1.LabelServiceName] != "ksm" {
		t.Errorf("the EndpointSlice held: %+v; want it whole but for managed fields and last-applied", es)
	}
}
