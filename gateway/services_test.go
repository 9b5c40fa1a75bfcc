package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// serviceObject is a Service with one TCP port named portName, number
// port, and the given annotations.
func serviceObject(ns, name, portName string, port int32, annotations ...string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: portName, Port: port, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromString(portName),
		}}},
	}
	for i := 0; i+1 < len(annotations); i += 2 {
		s.Annotations[annotations[i]] = annotations[i+1]
	}
	return s
}

// sliceObject is an EndpointSlice of Service ns/service with one TCP port
// named portName, number addr's port, and one endpoint at addr: ready or
// not, and with pod, "ns/name", as its targetRef unless it is "".
func sliceObject(ns, service, name, portName string, addr netip.AddrPort, ready bool, pod string) *discoveryv1.EndpointSlice {
	port, proto := int32(addr.Port()), corev1.ProtocolTCP
	ep := discoveryv1.Endpoint{Addresses: []string{addr.Addr().String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
	if podNS, podName, ok := strings.Cut(pod, "/"); ok {
		ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: podNS, Name: podName}
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
		Endpoints:   []discoveryv1.Endpoint{ep},
	}
}

// podHandler answers with its name and sets a Scrapegate-Endpoint header of
// its own, which must not reach the caller.
func podHandler(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Scrapegate-Endpoint", "forged")
		fmt.Fprint(w, name)
	}
}

func TestServiceRoutes(t *testing.T) {
	podA := startPod(t, "127.0.0.1", podHandler("a"))
	podB := startPod(t, "127.0.0.2", podHandler("b"))
	external := startPod(t, "127.0.0.4", podHandler("external"))
	denied := startPod(t, "127.0.0.5", podHandler("denied"))
	client := fake.NewClientset(
		podObject("mon", "exporter-a", podA.addr), podObject("mon", "exporter-b", podB.addr),
		serviceObject("mon", "exporter", "metrics", 8080),
		// The two pods' ports differ, so each is its own slice, as during
		// a rollout that changes a named targetPort's number.
		sliceObject("mon", "exporter", "exporter-1", "metrics", podA.addr, true, "mon/exporter-a"),
		sliceObject("mon", "exporter", "exporter-2", "metrics", podB.addr, true, "mon/exporter-b"),
		serviceObject("mon", "idle", "metrics", 8080),
		sliceObject("mon", "idle", "idle-1", "metrics", netip.MustParseAddrPort("127.0.0.3:9100"), false, ""),
		// A manually managed slice: no pod behind it, so only the CIDR
		// rules judge it, even with -target-policy=kubernetes.
		serviceObject("mon", "external", "metrics", 9100),
		sliceObject("mon", "external", "external-1", "metrics", external.addr, true, ""),
		serviceObject("mon", "denied", "metrics", 9100),
		sliceObject("mon", "denied", "denied-1", "metrics", denied.addr, true, ""),
	)
	cfg := kubeConfig()
	cfg.DenyCIDRs = mustParsePrefixes("127.0.0.5/32")
	g, gw := startKubeGateway(t, cfg, client)

	endpointOf := map[string]string{
		"a": fmt.Sprintf("%s; pod=mon/exporter-a", podA.addr),
		"b": fmt.Sprintf("%s; pod=mon/exporter-b", podB.addr),
	}
	ok := func(target string) string {
		t.Helper()
		r := get(t, gw, target)
		if r.StatusCode != 200 || endpointOf[r.body] == "" {
			t.Fatalf("%s: %d %q, want 200 from exporter-a or -b", target, r.StatusCode, r.body)
		}
		if got := r.Header.Values("Scrapegate-Endpoint"); len(got) != 1 || got[0] != endpointOf[r.body] {
			t.Errorf("%s: Scrapegate-Endpoint %q, want exactly %q", target, got, endpointOf[r.body])
		}
		return r.body
	}
	// Every form reaches the Service, and successive scrapes spread over
	// its ready endpoints.
	for _, target := range []string{
		"/services/mon/exporter/metrics/metrics",
		"/services/mon/exporter/8080/metrics",
		"http://exporter.mon.svc:8080/metrics",
		"http://exporter.mon.svc.cluster.local:8080/metrics",
	} {
		seen := map[string]bool{ok(target): true}
		seen[ok(target)] = true
		if !seen["a"] || !seen["b"] {
			t.Errorf("%s: two scrapes went to %v, want both endpoints", target, seen)
		}
	}
	if body := ok(fmt.Sprintf("/endpoints/mon/exporter/%s/%d/metrics", podB.addr.Addr(), podB.addr.Port())); body != "b" {
		t.Errorf("/endpoints/ to exporter-b reached %q", body)
	}
	if v := metricValue(t, g, `scrapegate_service_scrapes_total{target_kind="pod"}`); v != 9 {
		t.Errorf(`scrapegate_service_scrapes_total{target_kind="pod"} = %v, want 9`, v)
	}

	r := get(t, gw, "/services/mon/external/metrics/metrics")
	if r.StatusCode != 200 || r.body != "external" || r.Header.Get("Scrapegate-Endpoint") != external.addr.String() {
		t.Errorf("an endpoint with no pod behind it: %d %q, Scrapegate-Endpoint %q", r.StatusCode, r.body, r.Header.Get("Scrapegate-Endpoint"))
	}
	if v := metricValue(t, g, `scrapegate_service_scrapes_total{target_kind="none"}`); v != 1 {
		t.Errorf(`scrapegate_service_scrapes_total{target_kind="none"} = %v, want 1`, v)
	}

	f := checkGet(t, gw)
	f("/services/mon/nosuch/8080/metrics", 404, "unknown_service")
	f("/services/other/exporter/8080/metrics", 404, "unknown_service")
	f("/services/mon/exporter/9999/metrics", 404, "unknown_service")
	f("/services/mon/exporter/http/metrics", 404, "unknown_service")
	f("http://nosuch.mon.svc:8080/metrics", 404, "unknown_service")
	f(fmt.Sprintf("/endpoints/mon/exporter/127.0.0.9/%d/metrics", podA.addr.Port()), 404, "unknown_service")
	f("/services/mon/denied/9100/metrics", 403, "-deny-cidrs")
	if r := get(t, gw, "/services/mon/denied/9100/metrics"); r.Header.Get("Scrapegate-Endpoint") != denied.addr.String() {
		t.Errorf("a refused endpoint: Scrapegate-Endpoint %q, want %s", r.Header.Get("Scrapegate-Endpoint"), denied.addr)
	}
	if n := denied.conns.Load(); n != 0 {
		t.Errorf("the gateway connected to an endpoint in -deny-cidrs %d times", n)
	}
	if r := get(t, gw, "/services/mon/idle/metrics/metrics"); r.StatusCode != 503 || r.Header.Get("Retry-After") == "" || !strings.Contains(r.body, "no_ready_endpoint") {
		t.Errorf("a Service without a ready endpoint: %d %q, want 503 no_ready_endpoint with Retry-After", r.StatusCode, r.body)
	}
	if v := metricValue(t, g, `scrapegate_rejected_requests_total{reason="unknown_service"}`); v != 6 {
		t.Errorf(`rejected_requests_total{reason="unknown_service"} = %v, want 6`, v)
	}

	// An endpoint removed from its slices is refused at once.
	if err := client.DiscoveryV1().EndpointSlices("mon").Delete(context.Background(), "exporter-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	removed := fmt.Sprintf("/endpoints/mon/exporter/%s/%d/metrics", podB.addr.Addr(), podB.addr.Port())
	testutil.WaitFor(t, "the removed endpoint to be refused", func() bool { return get(t, gw, removed).StatusCode == 404 })
	for range 3 {
		if body := ok("/services/mon/exporter/metrics/metrics"); body != "a" {
			t.Errorf("after exporter-b's slice was removed a scrape reached %q", body)
		}
	}
}

// TestServiceTargetsOfDeadPods: with -target-policy=kubernetes an endpoint whose targetRef pod is
// gone is not scraped; with cidr it is.
func TestServiceTargetsOfDeadPods(t *testing.T) {
	pod := startPod(t, "127.0.0.1", podHandler("ghost"))
	objects := func() *fake.Clientset {
		return fake.NewClientset(serviceObject("mon", "ghost", "metrics", 9100),
			sliceObject("mon", "ghost", "ghost-1", "metrics", pod.addr, true, "mon/ghost-0"))
	}
	_, gw := startKubeGateway(t, kubeConfig(), objects())
	f := checkGet(t, gw)
	f("/services/mon/ghost/metrics/metrics", 503, "no_ready_endpoint")
	f(fmt.Sprintf("/endpoints/mon/ghost/%s/%d/metrics", pod.addr.Addr(), pod.addr.Port()), 403, "forbidden")
	if n := pod.conns.Load(); n != 0 {
		t.Errorf("the gateway connected to a dead pod's endpoint %d times", n)
	}

	cfg := kubeConfig()
	cfg.TargetPolicy = TargetPolicyCIDR
	_, gw = startKubeGateway(t, cfg, objects())
	checkGet(t, gw)("/services/mon/ghost/metrics/metrics", 200, "ghost")
}

func TestServiceRoutesNeedKubernetes(t *testing.T) {
	_, gw := startGateway(t, testConfig())
	f := checkGet(t, gw)
	f("/services/mon/exporter/8080/metrics", 400, "/services/ needs -kubernetes")
	f("/endpoints/mon/exporter/127.0.0.1/8080/metrics", 400, "/endpoints/ needs -kubernetes")
	f("http://exporter.mon.svc:8080/metrics", 400, "Service names (.svc) need -kubernetes")
	f("http://exporter.mon.example:8080/metrics", 400, "target host is not an IP literal")
}

// Before the informers have synced a Service target is 503, not 404: the
// Service may well exist.
func TestServiceTargetsBeforeSync(t *testing.T) {
	client := fake.NewClientset()
	held := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(held) }) }
	t.Cleanup(release)
	client.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		<-held // the API server is slow to answer the first list
		return false, nil, nil
	})
	g, err := newGateway(kubeConfig(), zerolog.Nop(), client)
	if err != nil {
		t.Fatal(err)
	}
	gw := serveGateway(t, g)
	for _, target := range []string{
		"/services/mon/exporter/8080/metrics",
		"/endpoints/mon/exporter/127.0.0.1/8080/metrics",
		"http://exporter.mon.svc:8080/metrics",
	} {
		if r := get(t, gw, target); r.StatusCode != 503 || r.Header.Get("Retry-After") == "" || !strings.Contains(r.body, "not_synced") {
			t.Errorf("%s before sync: %d %q, want 503 not_synced with Retry-After", target, r.StatusCode, r.body)
		}
	}
	release()
	testutil.WaitFor(t, "the informers to sync", g.kube.cluster.Synced)
	checkGet(t, gw)("/services/mon/exporter/8080/metrics", 404, "unknown_service")
}

// TestServiceNames: the names of a Service target are checked as
// Kubernetes checks them, and each refusal says which rule is broken.
func TestServiceNames(t *testing.T) {
	g := &Gateway{cfg: kubeConfig()}
	f := func(ns, svc, port, wantErr string) {
		t.Helper()
		err := checkServiceNames(ns, svc)
		if err == nil {
			err = checkServicePort(port)
		}
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%s/%s/%s: %s, want no error", ns, svc, port, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("%s/%s/%s: %v, want an error with %q", ns, svc, port, err, wantErr)
		}
	}
	f("kube-system", "kube-dns", "metrics", "")
	f("kube-system", "kube-state-metrics", "8080", "")
	f("0ns", "s1", "65535", "")
	f("ns", "s", "https-main", "")
	f("ns", "s", "a1", "")
	f("", "s", "80", `the namespace is empty`)
	f("ns", "", "80", `the service is empty`)
	f("Kube-System", "s", "80", `namespace "Kube-System" is not a DNS label (RFC 1123): it has upper case letters`)
	f("ns", "Kube-DNS", "80", `service "Kube-DNS" is not a DNS label (RFC 1035): it has upper case letters`)
	f("ns", "..", "80", `service ".." is not a DNS label (RFC 1035): it is a dot segment`)
	f("ns", "a.b", "80", `it contains '.'`)
	f("ns", "kube%2ddns", "80", `service "kube%2ddns" is not a DNS label (RFC 1035): it is percent-encoded`)
	f("ns", strings.Repeat("a", 64), "80", `it is longer than 63 characters`)
	f("ns", strings.Repeat("a", 63), "80", "")
	f("ns", "1dns", "80", `service "1dns" is not a DNS label (RFC 1035): it must start with a letter`)
	f("ns", "-dns", "80", `it must start and end with a letter or digit`)
	f("ns-", "dns", "80", `namespace "ns-" is not a DNS label (RFC 1123): it must start and end with a letter or digit`)
	f("ns", "dns_x", "80", `it may only have a-z, 0-9 and '-'`)
	f("ns", "s", "0", `port "0" is out of range`)
	f("ns", "s", "65536", `port "65536" is out of range`)
	f("ns", "s", "080", `port "080" is out of range`)
	f("ns", "s", "HTTP", `port "HTTP" is not a Service port number or name (IANA_SVC_NAME): it has upper case letters`)
	f("ns", "s", "a-very-long-port-name", `it is longer than 15 characters`)
	f("ns", "s", "-http", `it must not start or end with '-', nor have two in a row`)
	f("ns", "s", "ht--tp", `nor have two in a row`)
	f("ns", "s", "ht%74p", `it is percent-encoded`)
	f("ns", "s", "ht.tp", `it may only have a-z, 0-9 and '-'`)

	host := func(h, wantSvc, wantNS, wantErr string) {
		t.Helper()
		svc, ns, err := g.serviceHost(h)
		switch {
		case wantErr == "" && (err != nil || svc != wantSvc || ns != wantNS):
			t.Errorf("serviceHost(%q) = %q, %q, %v; want %q, %q", h, svc, ns, err, wantSvc, wantNS)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("serviceHost(%q): %v, want an error with %q", h, err, wantErr)
		}
	}
	host("kube-state-metrics.kube-system.svc", "kube-state-metrics", "kube-system", "")
	host("kube-state-metrics.kube-system.svc.cluster.local", "kube-state-metrics", "kube-system", "")
	host("ksm.kube-system.svc.cluster.local.", "", "", `ends in '.'`)
	host("KSM.kube-system.svc", "", "", `has upper case letters`)
	host("ksm.kube-system.SVC", "", "", `has upper case letters`)
	host("ksm..svc", "", "", `has an empty label ('..')`)
	host("ksm%2ekube-system.svc", "", "", `is percent-encoded`)
	host("ksm.kube-system.svc.evil.example", "", "",
		`"ksm.kube-system.svc.evil.example" is not a Service name: it must be {service}.{namespace}.svc or end in .svc.cluster.local (-kubernetes-cluster-domain=cluster.local)`)
	host("ksm.kube-system.svc.cluster.local.evil.example", "", "", `is not a Service name`)
	host("kube-system.svc", "", "", `is not a Service name`)
	host("a.ksm.kube-system.svc", "", "", `is not a Service name`)
	host("1ksm.kube-system.svc", "", "", `must start with a letter`)
	g.cfg.KubernetesClusterDomain = "k8s.example.org"
	host("ksm.kube-system.svc.k8s.example.org", "ksm", "kube-system", "")
	host("ksm.kube-system.svc.cluster.local", "", "", `end in .svc.k8s.example.org (-kubernetes-cluster-domain=k8s.example.org)`)
}
