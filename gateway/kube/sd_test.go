package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

var testGateway = Gateway{Address: "gw.example:31000", Scheme: "http"}

func decode(t *testing.T, doc *Document) []targetGroup {
	t.Helper()
	body, err := doc.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var groups []targetGroup
	if err := json.Unmarshal(body, &groups); err != nil {
		t.Fatalf("the document is not JSON: %v\n%s", err, body)
	}
	if doc.Groups != len(groups) {
		t.Errorf("Groups = %d, want %d", doc.Groups, len(groups))
	}
	return groups
}

// paths returns each group's __metrics_path__, in order.
func paths(groups []targetGroup) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g.Labels["__metrics_path__"])
	}
	return out
}

func TestPodsSDLabelsAsKubernetesSD(t *testing.T) {
	isController := true
	pod := newPod("shop", "web-1", "10.0.0.1",
		annotated("prometheus.io/scrape", "true", "prometheus.io/port", "9100", "prometheus.io/path", "/stats?format=prometheus&x=1"),
		labelled("app.kubernetes.io/name", "web"))
	pod.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-abc", Controller: &isController}}
	c := startCluster(t, fake.NewClientset(pod), Options{})
	doc, err := c.PodsSD("", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	groups := decode(t, doc)
	want := []targetGroup{{
		Targets: []string{"gw.example:31000"},
		Labels: map[string]string{
			"__scheme__":       "http",
			"__metrics_path__": "/pods/10.0.0.1/9100/stats",
			"__param_format":   "prometheus",
			"__param_x":        "1",
			"instance":         "10.0.0.1:9100",

			"__meta_kubernetes_namespace":                                  "shop",
			"__meta_kubernetes_pod_name":                                   "web-1",
			"__meta_kubernetes_pod_ip":                                     "10.0.0.1",
			"__meta_kubernetes_pod_uid":                                    "uid-web-1",
			"__meta_kubernetes_pod_phase":                                  "Running",
			"__meta_kubernetes_pod_ready":                                  "true",
			"__meta_kubernetes_pod_node_name":                              "node-1",
			"__meta_kubernetes_pod_host_ip":                                "192.168.0.1",
			"__meta_kubernetes_pod_label_app_kubernetes_io_name":           "web",
			"__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name":    "true",
			"__meta_kubernetes_pod_annotation_prometheus_io_scrape":        "true",
			"__meta_kubernetes_pod_annotationpresent_prometheus_io_scrape": "true",
			"__meta_kubernetes_pod_annotation_prometheus_io_port":          "9100",
			"__meta_kubernetes_pod_annotationpresent_prometheus_io_port":   "true",
			"__meta_kubernetes_pod_annotation_prometheus_io_path":          "/stats?format=prometheus&x=1",
			"__meta_kubernetes_pod_annotationpresent_prometheus_io_path":   "true",
			"__meta_kubernetes_pod_controller_kind":                        "ReplicaSet",
			"__meta_kubernetes_pod_controller_name":                        "web-abc",
			"__meta_kubernetes_pod_container_name":                         "app",
			"__meta_kubernetes_pod_container_image":                        "example/app:1",
			"__meta_kubernetes_pod_container_init":                         "false",
			"__meta_kubernetes_pod_container_port_name":                    "metrics",
			"__meta_kubernetes_pod_container_port_number":                  "9100",
			"__meta_kubernetes_pod_container_port_protocol":                "TCP",
		},
	}}
	if !reflect.DeepEqual(groups, want) {
		got, _ := json.MarshalIndent(groups, "", "  ")
		t.Errorf("got\n%s", got)
	}
}

func TestPodsSDSelection(t *testing.T) {
	scrape := annotated("prometheus.io/scrape", "true")
	multiPort := newPod("a", "multi", "10.0.0.2", scrape)
	multiPort.Spec.Containers = append(multiPort.Spec.Containers, corev1.Container{Name: "sidecar",
		Ports: []corev1.ContainerPort{{ContainerPort: 9200}, {ContainerPort: 53, Protocol: corev1.ProtocolUDP}}})
	noPorts := newPod("a", "no-ports", "10.0.0.7", scrape)
	noPorts.Spec.Containers[0].Ports = nil
	client := fake.NewClientset(
		newPod("a", "annotated", "10.0.0.1", scrape, labelled("tier", "web")),
		multiPort,
		newPod("a", "not-annotated", "10.0.0.3", labelled("tier", "web")),
		newPod("a", "scrape-false", "10.0.0.4", annotated("prometheus.io/scrape", "false")),
		newPod("b", "https", "fd00::5", scrape, annotated("prometheus.io/scheme", "https", "prometheus.io/port", "8443", "prometheus.io/path", "metrics")),
		newPod("b", "succeeded", "10.0.0.6", scrape, phase(corev1.PodSucceeded)),
		noPorts,
		newPod("b", "no-ip-yet", "", scrape),
	)
	c := startCluster(t, client, Options{})
	f := func(query string, want ...string) {
		t.Helper()
		doc, err := c.PodsSD(query, testGateway)
		if err != nil {
			t.Fatalf("PodsSD(%q): %v", query, err)
		}
		if got := paths(decode(t, doc)); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("PodsSD(%q) paths:\n got %q\nwant %q", query, got, want)
		}
	}
	f("",
		"/pods/10.0.0.1/9100/metrics",
		"/pods/10.0.0.2/9100/metrics", "/pods/10.0.0.2/9200/metrics", // every declared TCP port
		"/pods/https/fd00::5/8443/metrics") // scheme, annotated port, path without its '/'
	f("namespace=b", "/pods/https/fd00::5/8443/metrics")
	f("namespace=b&namespace=a", "/pods/10.0.0.1/9100/metrics", "/pods/10.0.0.2/9100/metrics", "/pods/10.0.0.2/9200/metrics", "/pods/https/fd00::5/8443/metrics")
	f("namespace=b,a&selector=tier%3Dweb", "/pods/10.0.0.1/9100/metrics")
	f("all=true&selector=tier%3Dweb", "/pods/10.0.0.1/9100/metrics", "/pods/10.0.0.3/9100/metrics")
	f("all=true&namespace=a",
		"/pods/10.0.0.1/9100/metrics", "/pods/10.0.0.2/9100/metrics", "/pods/10.0.0.2/9200/metrics",
		"/pods/10.0.0.3/9100/metrics", "/pods/10.0.0.4/9100/metrics")

	doc, _ := c.PodsSD("namespace=b", testGateway)
	if got := decode(t, doc)[0].Labels["instance"]; got != "[fd00::5]:8443" {
		t.Errorf("IPv6 instance = %q, want [fd00::5]:8443", got)
	}

	bad := func(query, wantErr string) {
		t.Helper()
		if _, err := c.PodsSD(query, testGateway); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("PodsSD(%q): error %v, want one containing %q", query, err, wantErr)
		}
	}
	bad("role=pod", "unknown parameter")
	bad("selector=a%20in%20(", "cannot parse selector")
	bad("all=maybe", "true or false")
	bad("all=1&all=0", "at most once")
	bad("%zz", "cannot parse the query")
}

func TestPodsSDETagFollowsChanges(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(newPod("a", "one", "10.0.0.1", annotated("prometheus.io/scrape", "true")))
	c := startCluster(t, client, Options{})
	first, err := c.PodsSD("", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := c.PodsSD("", testGateway)
	if again != first {
		t.Error("an unchanged document was rebuilt")
	}
	other, _ := c.PodsSD("", Gateway{Address: "other:80", Scheme: "https"})
	if other.ETag == first.ETag || decode(t, other)[0].Labels["__scheme__"] != "https" {
		t.Error("another advertised address and scheme got the same document")
	}

	// A change that does not alter the document keeps its ETag.
	unrelated := newPod("a", "unannotated", "10.0.0.2")
	if _, err := client.CoreV1().Pods("a").Create(ctx, unrelated, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the new pod to be seen", func() bool { return c.Count("pods") == 2 })
	rebuilt, _ := c.PodsSD("", testGateway)
	if rebuilt.ETag != first.ETag {
		t.Errorf("ETag changed from %s to %s though the document did not", first.ETag, rebuilt.ETag)
	}

	if err := client.CoreV1().Pods("a").Delete(ctx, "one", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted pod to leave the document", func() bool {
		doc, _ := c.PodsSD("", testGateway)
		return doc.Groups == 0
	})
	empty, _ := c.PodsSD("", testGateway)
	if body, _ := empty.JSON(); empty.ETag == first.ETag || string(body) != "[]\n" {
		t.Errorf("after the delete: ETag %s (was %s), JSON %q; want a new ETag and []", empty.ETag, first.ETag, body)
	}
}

func TestNodesSD(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"topology.kubernetes.io/zone": "z1"},
			Annotations: map[string]string{"note": "n"}},
		Spec: corev1.NodeSpec{ProviderID: "aws:///z1/i-1"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.168.0.1"},
			{Type: corev1.NodeInternalIP, Address: "192.168.0.2"},
			{Type: corev1.NodeHostName, Address: "node-1.example"},
		}},
	}
	noAddress := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-0"}}
	c := startCluster(t, fake.NewClientset(node, noAddress), Options{})
	doc, err := c.NodesSD("path=/metrics/cadvisor", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	want := []targetGroup{{Targets: []string{"gw.example:31000"}, Labels: map[string]string{
		"__scheme__":                         "http",
		"__metrics_path__":                   "/nodes/node-1/metrics/cadvisor",
		"instance":                           "node-1",
		"__meta_kubernetes_node_name":        "node-1",
		"__meta_kubernetes_node_provider_id": "aws:///z1/i-1",
		"__meta_kubernetes_node_label_topology_kubernetes_io_zone":        "z1",
		"__meta_kubernetes_node_labelpresent_topology_kubernetes_io_zone": "true",
		"__meta_kubernetes_node_annotation_note":                          "n",
		"__meta_kubernetes_node_annotationpresent_note":                   "true",
		"__meta_kubernetes_node_address_InternalIP":                       "192.168.0.1",
		"__meta_kubernetes_node_address_Hostname":                         "node-1.example",
	}}}
	if groups := decode(t, doc); !reflect.DeepEqual(groups, want) {
		got, _ := json.MarshalIndent(groups, "", "  ")
		t.Errorf("got\n%s", got)
	}
	if doc, _ := c.NodesSD("", testGateway); paths(decode(t, doc))[0] != "/nodes/node-1/metrics" {
		t.Errorf("default path: %v", decode(t, doc))
	}
	for _, q := range []string{"path=/configz", "path=/metrics/../pods", "path=/metrics&path=/metrics/cadvisor", "role=node"} {
		if _, err := c.NodesSD(q, testGateway); err == nil {
			t.Errorf("NodesSD(%q) succeeded", q)
		}
	}
}

func TestPodsSDListsNativeSidecars(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	pod := newPod("a", "meshed", "10.0.0.1", annotated("prometheus.io/scrape", "true"))
	pod.Spec.InitContainers = []corev1.Container{
		{Name: "setup", Image: "setup:1", Ports: []corev1.ContainerPort{{ContainerPort: 7000}}}, // runs to completion
		{Name: "proxy", Image: "proxy:1", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "stats", ContainerPort: 15090}}},
	}
	c := startCluster(t, fake.NewClientset(pod), Options{})
	doc, err := c.PodsSD("", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	groups := decode(t, doc)
	if got := strings.Join(paths(groups), " "); got != "/pods/10.0.0.1/15090/metrics /pods/10.0.0.1/9100/metrics" {
		t.Fatalf("paths %s", got)
	}
	if l := groups[0].Labels; l["__meta_kubernetes_pod_container_name"] != "proxy" || l["__meta_kubernetes_pod_container_init"] != "true" {
		t.Errorf("sidecar labels: %v", l)
	}
	if l := groups[1].Labels; l["__meta_kubernetes_pod_container_init"] != "false" {
		t.Errorf("regular container labels: %v", l)
	}
	f := func(addr string, want bool) {
		t.Helper()
		if got := c.HasEndpoint(netip.MustParseAddrPort(addr)); got != want {
			t.Errorf("HasEndpoint(%s) = %v, want %v", addr, got, want)
		}
	}
	f("10.0.0.1:15090", true) // a sidecar serves as long as its pod
	f("10.0.0.1:7000", false) // a finished init container does not
}

func TestDocumentCacheIsBounded(t *testing.T) {
	var pods []runtime.Object
	for i := range 50 {
		pods = append(pods, newPod("a", fmt.Sprintf("p%d", i), fmt.Sprintf("10.0.0.%d", i+1), annotated("prometheus.io/scrape", "true")))
	}
	c := startCluster(t, fake.NewClientset(pods...), Options{})
	first, _ := c.PodsSD("", Gateway{Address: "host-0:1", Scheme: "http"})
	// Callers choose the Host, and with it the cache key.
	for i := range 200 {
		if _, err := c.PodsSD("", Gateway{Address: fmt.Sprintf("host-%d:1", i), Scheme: "http"}); err != nil {
			t.Fatal(err)
		}
	}
	c.docsMu.Lock()
	n := len(c.docs)
	c.docsMu.Unlock()
	if n > maxDocuments {
		t.Errorf("%d documents cached, want at most %d", n, maxDocuments)
	}
	// The most recently used survive: host-199's is still the same one.
	a, _ := c.PodsSD("", Gateway{Address: "host-199:1", Scheme: "http"})
	b, _ := c.PodsSD("", Gateway{Address: "host-199:1", Scheme: "http"})
	if a != b {
		t.Error("the most recently used document was evicted")
	}
	if again, _ := c.PodsSD("", Gateway{Address: "host-0:1", Scheme: "http"}); again == first || again.ETag != first.ETag {
		t.Error("the least recently used document was kept, or rebuilt differently")
	}
}
