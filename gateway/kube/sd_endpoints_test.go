package kube

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// TestEndpointsSDLabelsAsKubernetesSD: the labels are those Prometheus's
// role: endpointslice gives (discovery/kubernetes/endpointslice.go,
// buildEndpointSlice): its group labels (namespace, address type, and
// addObjectMetaLabels of the slice), addServiceLabels (serviceLabels:
// service name, labels, annotations), the target labels of add() for each
// endpoint and port, and for a pod the store holds podLabels (pod.go) and
// the container port labels; __address__ becomes instance, and the target
// points at the gateway.
func TestEndpointsSDLabelsAsKubernetesSD(t *testing.T) {
	isController := true
	pod := newPod("monitoring", "app-0", "10.244.1.5", labelled("app", "web"))
	pod.OwnerReferences = []metav1.OwnerReference{{Kind: "StatefulSet", Name: "app", Controller: &isController}}
	pod.Spec.Containers[0].Ports[0].Protocol = corev1.ProtocolTCP // as the API defaults it
	svc := newService("monitoring", "app", []corev1.ServicePort{tcpServicePort("metrics", 80)},
		"prometheus.io/scrape", "true", "prometheus.io/path", "/stats?format=prom")
	svc.Labels = map[string]string{"app.kubernetes.io/name": "app"}
	port := slicePortOf("metrics", 9100)
	appProtocol := "http"
	port.AppProtocol = &appProtocol
	node, zone, hostname := "node-1", "z1", "ext"
	slice := newSlice("monitoring", "app-abcde", "app", []discoveryv1.EndpointPort{port},
		newEndpoint("10.244.1.5", ofPod("monitoring", "app-0"), conditions(true, true, false), func(ep *discoveryv1.Endpoint) {
			ep.NodeName, ep.Zone = &node, &zone
			ep.DeprecatedTopology = map[string]string{"kubernetes.io/hostname": "node-1"}
		}),
		newEndpoint("10.244.2.5", func(ep *discoveryv1.Endpoint) { ep.Hostname = &hostname }),
		newEndpoint("10.244.1.6", ofPod("monitoring", "app-gone")), // a pod the informer does not hold
	)
	slice.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2024-01-01T00:00:00Z"}
	c := startCluster(t, fake.NewClientset(pod, svc, slice), Options{})
	doc, err := c.EndpointsSD("", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	// The group labels of buildEndpointSlice, with addServiceLabels'.
	group := map[string]string{
		"__meta_kubernetes_namespace":                                                                        "monitoring",
		"__meta_kubernetes_endpointslice_address_type":                                                       "IPv4",
		"__meta_kubernetes_endpointslice_name":                                                               "app-abcde",
		"__meta_kubernetes_endpointslice_label_kubernetes_io_service_name":                                   "app",
		"__meta_kubernetes_endpointslice_labelpresent_kubernetes_io_service_name":                            "true",
		"__meta_kubernetes_endpointslice_annotation_endpoints_kubernetes_io_last_change_trigger_time":        "2024-01-01T00:00:00Z",
		"__meta_kubernetes_endpointslice_annotationpresent_endpoints_kubernetes_io_last_change_trigger_time": "true",
		"__meta_kubernetes_service_name":                                                                     "app",
		"__meta_kubernetes_service_label_app_kubernetes_io_name":                                             "app",
		"__meta_kubernetes_service_labelpresent_app_kubernetes_io_name":                                      "true",
		"__meta_kubernetes_service_annotation_prometheus_io_scrape":                                          "true",
		"__meta_kubernetes_service_annotationpresent_prometheus_io_scrape":                                   "true",
		"__meta_kubernetes_service_annotation_prometheus_io_path":                                            "/stats?format=prom",
		"__meta_kubernetes_service_annotationpresent_prometheus_io_path":                                     "true",
		// The gateway's: metricsPath's query as __param_.
		"__scheme__":     "http",
		"__param_format": "prom",
	}
	// add()'s labels for the slice port, each set because the field is.
	portLabels := map[string]string{
		"__meta_kubernetes_endpointslice_port_name":         "metrics",
		"__meta_kubernetes_endpointslice_port_protocol":     "TCP",
		"__meta_kubernetes_endpointslice_port":              "9100",
		"__meta_kubernetes_endpointslice_port_app_protocol": "http",
	}
	target := func(labelSets ...map[string]string) map[string]string {
		l := map[string]string{}
		for _, m := range append([]map[string]string{group, portLabels}, labelSets...) {
			for k, v := range m {
				l[k] = v
			}
		}
		return l
	}
	want := []targetGroup{
		{Targets: []string{"gw.example:31000"}, Labels: target(map[string]string{
			"instance":         "10.244.1.5:9100",
			"__metrics_path__": "/endpoints/monitoring/app/10.244.1.5/9100/stats",
			// add(): conditions, targetRef, node name, zone, topology.
			"__meta_kubernetes_endpointslice_endpoint_conditions_ready":                        "true",
			"__meta_kubernetes_endpointslice_endpoint_conditions_serving":                      "true",
			"__meta_kubernetes_endpointslice_endpoint_conditions_terminating":                  "false",
			"__meta_kubernetes_endpointslice_address_target_kind":                              "Pod",
			"__meta_kubernetes_endpointslice_address_target_name":                              "app-0",
			"__meta_kubernetes_endpointslice_endpoint_node_name":                               "node-1",
			"__meta_kubernetes_endpointslice_endpoint_zone":                                    "z1",
			"__meta_kubernetes_endpointslice_endpoint_topology_kubernetes_io_hostname":         "node-1",
			"__meta_kubernetes_endpointslice_endpoint_topology_present_kubernetes_io_hostname": "true",
			// podLabels (pod.go), and addObjectMetaLabels of the pod.
			"__meta_kubernetes_pod_ip":               "10.244.1.5",
			"__meta_kubernetes_pod_ready":            "true",
			"__meta_kubernetes_pod_phase":            "Running",
			"__meta_kubernetes_pod_node_name":        "node-1",
			"__meta_kubernetes_pod_host_ip":          "192.168.0.1",
			"__meta_kubernetes_pod_uid":              "uid-app-0",
			"__meta_kubernetes_pod_name":             "app-0",
			"__meta_kubernetes_pod_label_app":        "web",
			"__meta_kubernetes_pod_labelpresent_app": "true",
			"__meta_kubernetes_pod_controller_kind":  "StatefulSet",
			"__meta_kubernetes_pod_controller_name":  "app",
			// The container whose port matches the slice port.
			"__meta_kubernetes_pod_container_name":          "app",
			"__meta_kubernetes_pod_container_image":         "example/app:1",
			"__meta_kubernetes_pod_container_port_name":     "metrics",
			"__meta_kubernetes_pod_container_port_number":   "9100",
			"__meta_kubernetes_pod_container_port_protocol": "TCP",
			"__meta_kubernetes_pod_container_init":          "false",
		})},
		{Targets: []string{"gw.example:31000"}, Labels: target(map[string]string{
			"instance":         "10.244.2.5:9100",
			"__metrics_path__": "/endpoints/monitoring/app/10.244.2.5/9100/stats",
			"__meta_kubernetes_endpointslice_endpoint_hostname": "ext",
		})},
		{Targets: []string{"gw.example:31000"}, Labels: target(map[string]string{
			"instance":         "10.244.1.6:9100",
			"__metrics_path__": "/endpoints/monitoring/app/10.244.1.6/9100/stats",
			// resolvePodRef finds no pod: no pod labels.
			"__meta_kubernetes_endpointslice_address_target_kind": "Pod",
			"__meta_kubernetes_endpointslice_address_target_name": "app-gone",
		})},
	}
	groups := decode(t, doc)
	if len(groups) != len(want) {
		got, _ := json.MarshalIndent(groups, "", "  ")
		t.Fatalf("%d groups, want %d:\n%s", len(groups), len(want), got)
	}
	for i := range want {
		if !reflect.DeepEqual(groups[i].Targets, want[i].Targets) {
			t.Errorf("group %d: targets %v, want %v", i, groups[i].Targets, want[i].Targets)
		}
		for k, v := range want[i].Labels {
			if got, ok := groups[i].Labels[k]; !ok || got != v {
				t.Errorf("group %d: %s = %q (present %v), want %q", i, k, got, ok, v)
			}
		}
		for k, v := range groups[i].Labels {
			if _, ok := want[i].Labels[k]; !ok {
				t.Errorf("group %d: unexpected label %s = %q", i, k, v)
			}
		}
	}
}

// TestEndpointsSDAnnotationsAndSlices: prometheus.io/port moves the scrape
// as the classic job's __address__ rewrite does; the slices Prometheus
// would not list, or /endpoints/ could not serve, are left out.
func TestEndpointsSDAnnotationsAndSlices(t *testing.T) {
	scrape := []string{"prometheus.io/scrape", "true"}
	dns := newService("kube-system", "kube-dns", []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, tcpServicePort("dns-tcp", 53)},
		append(scrape, "prometheus.io/port", "9153", "prometheus.io/path", "metrics")...)
	udp := corev1.ProtocolUDP
	dnsName := "dns"
	dnsPort := int32(53)
	dnsSlice := newSlice("kube-system", "kube-dns-a", "kube-dns",
		[]discoveryv1.EndpointPort{{Name: &dnsName, Port: &dnsPort, Protocol: &udp}, slicePortOf("dns-tcp", 53)},
		newEndpoint("10.244.0.10", ofPod("kube-system", "coredns-0")))
	allPorts := newService("default", "all-ports", []corev1.ServicePort{tcpServicePort("", 80)}, scrape...)
	allPortsSlice := newSlice("default", "all-ports-a", "all-ports", []discoveryv1.EndpointPort{{}}, newEndpoint("10.244.0.20"))
	fqdn := newService("default", "fqdn", []corev1.ServicePort{tcpServicePort("", 80)}, scrape...)
	fqdnSlice := newSlice("default", "fqdn-a", "fqdn", []discoveryv1.EndpointPort{slicePortOf("", 80)}, newEndpoint("db.example"))
	fqdnSlice.AddressType = discoveryv1.AddressTypeFQDN
	orphan := newSlice("default", "orphan-a", "no-such-service", []discoveryv1.EndpointPort{slicePortOf("", 80)}, newEndpoint("10.244.0.30"))
	dual := newService("default", "dual", []corev1.ServicePort{tcpServicePort("http", 8080)}, scrape...)
	preferDual := corev1.IPFamilyPolicyPreferDualStack
	dual.Spec.IPFamilyPolicy = &preferDual
	dual.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
	dualV4 := newSlice("default", "dual-v4", "dual", []discoveryv1.EndpointPort{slicePortOf("http", 8080)}, newEndpoint("10.244.0.40"))
	dualV6 := newSlice("default", "dual-v6", "dual", []discoveryv1.EndpointPort{slicePortOf("http", 8080)}, newEndpoint("fd00::40"))
	dualV6.AddressType = discoveryv1.AddressTypeIPv6
	c := startCluster(t, fake.NewClientset(dns, dnsSlice, allPorts, allPortsSlice, fqdn, fqdnSlice, orphan, dual, dualV4, dualV6), Options{})
	doc, err := c.EndpointsSD("", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	groups := decode(t, doc)
	got := paths(groups)
	want := []string{
		"/endpoints/default/dual/fd00::40/8080/metrics",            // the primary family's slice only (nonPrimaryIPFamilySlice)
		"/endpoints/kube-system/kube-dns/10.244.0.10/9153/metrics", // 53/UDP, at prometheus.io/port
		"/endpoints/kube-system/kube-dns/10.244.0.10/9153/metrics", // 53/TCP, likewise
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("paths:\n got %q\nwant %q", got, want)
	}
	f := func(i int, name, want string) {
		t.Helper()
		if got := groups[i].Labels[name]; got != want {
			t.Errorf("group %d: %s = %q, want %q", i, name, got, want)
		}
	}
	f(0, "instance", "[fd00::40]:8080")
	f(0, "__meta_kubernetes_endpointslice_address_type", "IPv6")
	f(1, "instance", "10.244.0.10:9153")
	f(1, "__meta_kubernetes_endpointslice_port", "53") // the slice's port, as Prometheus labels it
	f(1, "__meta_kubernetes_endpointslice_port_protocol", "UDP")
	f(2, "__meta_kubernetes_endpointslice_port_name", "dns-tcp")

	// A slice port left out is every port: with prometheus.io/port the
	// endpoint has one to scrape, listed without port labels.
	allPorts.Annotations["prometheus.io/port"] = "8080"
	c = startCluster(t, fake.NewClientset(allPorts, allPortsSlice), Options{})
	doc, _ = c.EndpointsSD("", testGateway)
	groups = decode(t, doc)
	if got := paths(groups); len(got) != 1 || got[0] != "/endpoints/default/all-ports/10.244.0.20/8080/metrics" {
		t.Fatalf("paths %q", got)
	}
	if _, ok := groups[0].Labels["__meta_kubernetes_endpointslice_port"]; ok {
		t.Errorf("a slice port with no number got a port label: %v", groups[0].Labels)
	}
}

func TestEndpointsSDQuery(t *testing.T) {
	svc := func(ns, name, team string, kv ...string) *corev1.Service {
		s := newService(ns, name, []corev1.ServicePort{tcpServicePort("", 80)}, kv...)
		s.Labels = map[string]string{"team": team}
		return s
	}
	slice := func(ns, service, ip string) *discoveryv1.EndpointSlice {
		return newSlice(ns, service+"-a", service, []discoveryv1.EndpointPort{slicePortOf("", 8080)}, newEndpoint(ip))
	}
	scrape := []string{"prometheus.io/scrape", "true"}
	client := fake.NewClientset(
		svc("a", "web", "x", scrape...), slice("a", "web", "10.0.0.1"),
		svc("a", "plain", "x"), slice("a", "plain", "10.0.0.2"),
		svc("a", "off", "y", "prometheus.io/scrape", "false"), slice("a", "off", "10.0.0.3"),
		svc("b", "api", "y", scrape...), slice("b", "api", "10.0.0.4"),
	)
	c := startCluster(t, client, Options{})
	f := func(query string, want ...string) {
		t.Helper()
		doc, err := c.EndpointsSD(query, testGateway)
		if err != nil {
			t.Fatalf("EndpointsSD(%q): %v", query, err)
		}
		if got := paths(decode(t, doc)); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("EndpointsSD(%q) paths:\n got %q\nwant %q", query, got, want)
		}
	}
	f("", "/endpoints/a/web/10.0.0.1/8080/metrics", "/endpoints/b/api/10.0.0.4/8080/metrics")
	f("namespace=b", "/endpoints/b/api/10.0.0.4/8080/metrics")
	f("namespace=b,a&selector=team%3Dx", "/endpoints/a/web/10.0.0.1/8080/metrics")
	f("all=true&namespace=a", "/endpoints/a/off/10.0.0.3/8080/metrics", "/endpoints/a/plain/10.0.0.2/8080/metrics", "/endpoints/a/web/10.0.0.1/8080/metrics")
	f("all=true&selector=team%3Dy", "/endpoints/a/off/10.0.0.3/8080/metrics", "/endpoints/b/api/10.0.0.4/8080/metrics")
	bad := func(query, wantErr string) {
		t.Helper()
		if _, err := c.EndpointsSD(query, testGateway); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("EndpointsSD(%q): error %v, want one containing %q", query, err, wantErr)
		}
	}
	bad("role=endpointslice", "unknown parameter")
	bad("selector=a%20in%20(", "cannot parse selector")
	bad("all=maybe", "true or false")
	bad("%zz", "cannot parse the query")
}

// TestEndpointsSDETagFollowsChanges: the document is rebuilt on Service,
// slice and pod events, and its ETag changes exactly when its JSON does.
func TestEndpointsSDETagFollowsChanges(t *testing.T) {
	ctx := context.Background()
	svc := newService("a", "web", []corev1.ServicePort{tcpServicePort("", 80)}, "prometheus.io/scrape", "true")
	slice := newSlice("a", "web-a", "web", []discoveryv1.EndpointPort{slicePortOf("", 9100)}, newEndpoint("10.0.0.1", ofPod("a", "web-0")))
	pod := newPod("a", "web-0", "10.0.0.1")
	client := fake.NewClientset(svc, slice, pod)
	c := startCluster(t, client, Options{})
	current, err := c.EndpointsSD("", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.EndpointsSD("", testGateway); again != current {
		t.Error("an unchanged document was rebuilt")
	}
	// changed makes a change, waits for its event to reach the cluster
	// view and for the document to show it, and checks the ETag changed
	// exactly when the JSON did.
	changed := func(what string, change func() error, seen func(*Document) bool, wantNewETag bool) {
		t.Helper()
		before := c.endpointsVersion.Load()
		if err := change(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, what+" to be seen", func() bool { return c.endpointsVersion.Load() != before })
		var doc *Document
		testutil.WaitFor(t, what+" in the document", func() bool {
			doc, _ = c.EndpointsSD("", testGateway)
			return seen(doc)
		})
		if doc == current {
			t.Errorf("%s: the document was not rebuilt", what)
		}
		if (doc.ETag != current.ETag) != wantNewETag {
			t.Errorf("%s: ETag %s, was %s; want a new one: %v", what, doc.ETag, current.ETag, wantNewETag)
		}
		current = doc
	}
	label := func(doc *Document, name string) string { return decode(t, doc)[0].Labels[name] }

	pod.Labels = map[string]string{"version": "2"}
	changed("the pod's new label", func() error { _, err := client.CoreV1().Pods("a").Update(ctx, pod, metav1.UpdateOptions{}); return err },
		func(d *Document) bool { return label(d, "__meta_kubernetes_pod_label_version") == "2" }, true)

	svc.Labels = map[string]string{"tier": "web"}
	changed("the Service's new label", func() error {
		_, err := client.CoreV1().Services("a").Update(ctx, svc, metav1.UpdateOptions{})
		return err
	},
		func(d *Document) bool { return label(d, "__meta_kubernetes_service_label_tier") == "web" }, true)

	slice.Endpoints = append(slice.Endpoints, newEndpoint("10.0.0.2"))
	changed("the slice's new endpoint", func() error {
		_, err := client.DiscoveryV1().EndpointSlices("a").Update(ctx, slice, metav1.UpdateOptions{})
		return err
	}, func(d *Document) bool { return d.Groups == 2 }, true)

	// A pod no endpoint points at: rebuilt, the same JSON, the same ETag.
	changed("an unrelated pod", func() error {
		_, err := client.CoreV1().Pods("a").Create(ctx, newPod("a", "other", "10.0.0.9"), metav1.CreateOptions{})
		return err
	}, func(*Document) bool { return true }, false)

	// A Service that is not annotated: rebuilt, unchanged.
	changed("an unannotated Service", func() error {
		_, err := client.CoreV1().Services("a").Create(ctx, newService("a", "quiet", nil), metav1.CreateOptions{})
		return err
	}, func(*Document) bool { return true }, false)

	changed("the deleted slice", func() error {
		return client.DiscoveryV1().EndpointSlices("a").Delete(ctx, "web-a", metav1.DeleteOptions{})
	},
		func(d *Document) bool { return d.Groups == 0 }, true)
}

// A slice port that only an ordinary init container declares gets that
// container's labels, as buildEndpointSlice gives them (containers, then
// init containers, the last declaring the port): the informer keeps every
// init container's name, image and ports, though only sidecars serve.
func TestEndpointsSDLabelsAnInitContainersPort(t *testing.T) {
	pod := newPod("monitoring", "app-0", "10.244.1.5")
	pod.Spec.InitContainers = []corev1.Container{{Name: "setup", Image: "example/setup:1",
		Ports: []corev1.ContainerPort{{Name: "warmup", ContainerPort: 7000, Protocol: corev1.ProtocolTCP}}}}
	svc := newService("monitoring", "app", []corev1.ServicePort{tcpServicePort("warmup", 7000)}, "prometheus.io/scrape", "true")
	slice := newSlice("monitoring", "app-a", "app", []discoveryv1.EndpointPort{slicePortOf("warmup", 7000)},
		newEndpoint("10.244.1.5", ofPod("monitoring", "app-0")))
	c := startCluster(t, fake.NewClientset(pod, svc, slice), Options{})
	doc, err := c.EndpointsSD("", testGateway)
	if err != nil {
		t.Fatal(err)
	}
	groups := decode(t, doc)
	if len(groups) != 1 {
		t.Fatalf("%d groups, want 1", len(groups))
	}
	for name, want := range map[string]string{
		metaPod + "container_name":          "setup",
		metaPod + "container_image":         "example/setup:1",
		metaPod + "container_init":          "true",
		metaPod + "container_port_name":     "warmup",
		metaPod + "container_port_number":   "7000",
		metaPod + "container_port_protocol": "TCP",
	} {
		if got := groups[0].Labels[name]; got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}
