package kube

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// newService is a Service with ports and the annotations in kv.
func newService(ns, name string, ports []corev1.ServicePort, kv ...string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: withPairs(nil, kv)},
		Spec:       corev1.ServiceSpec{Ports: ports},
	}
}

func tcpServicePort(name string, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, Protocol: corev1.ProtocolTCP}
}

// newSlice is an IPv4 EndpointSlice of service, as the endpointslice
// controller writes it (port names and protocols always set).
func newSlice(ns, name, service string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func slicePortOf(name string, port int32) discoveryv1.EndpointPort {
	tcp := corev1.ProtocolTCP
	return discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &tcp}
}

type endpointOpt func(*discoveryv1.Endpoint)

func newEndpoint(ip string, opts ...endpointOpt) discoveryv1.Endpoint {
	ep := discoveryv1.Endpoint{Addresses: []string{ip}}
	for _, o := range opts {
		o(&ep)
	}
	return ep
}

// ofPod sets the endpoint's targetRef to the pod ns/name.
func ofPod(ns, name string) endpointOpt {
	return func(ep *discoveryv1.Endpoint) {
		ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name}
	}
}

// conditions sets ready, serving and terminating.
func conditions(ready, serving, terminating bool) endpointOpt {
	return func(ep *discoveryv1.Endpoint) {
		ep.Conditions = discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating}
	}
}

// ksm is kube-state-metrics as its chart deploys it: Service port 80 named
// http-metrics onto container port 8080, and telemetry on 8081.
func ksm() (*corev1.Service, []discoveryv1.EndpointPort) {
	svc := newService("kube-system", "ksm", []corev1.ServicePort{tcpServicePort("http-metrics", 80), tcpServicePort("telemetry", 8081)})
	return svc, []discoveryv1.EndpointPort{slicePortOf("http-metrics", 8080), slicePortOf("telemetry", 8081)}
}

func TestResolveServiceByNumberAndNameSpreadsOverReadyEndpoints(t *testing.T) {
	svc, ports := ksm()
	client := fake.NewClientset(svc, newPod("kube-system", "ksm-0", "10.244.1.5"),
		newSlice("kube-system", "ksm-a", "ksm", ports,
			newEndpoint("10.244.1.5", ofPod("kube-system", "ksm-0")),
			newEndpoint("10.244.1.6", conditions(false, true, true)), // terminating: not ready
		),
		newSlice("kube-system", "ksm-b", "ksm", ports,
			newEndpoint("10.244.2.5"),                                  // ready unset: ready
			newEndpoint("10.244.2.6", conditions(false, false, false)), // not ready
		),
	)
	c := startCluster(t, client, Options{})
	seen := map[string]int{}
	for _, port := range []string{"80", "http-metrics", "80", "http-metrics"} {
		ep, err := c.ResolveService("kube-system", "ksm", port, false)
		if err != nil {
			t.Fatalf("ResolveService(%q): %v", port, err)
		}
		seen[ep.Addr.String()]++
		if ep.Addr.Addr().String() == "10.244.1.5" && (ep.Pod != "kube-system/ksm-0" || ep.TargetKind != "Pod") ||
			ep.Addr.Addr().String() == "10.244.2.5" && (ep.Pod != "" || ep.TargetKind != "") || ep.TLS || ep.ScrapeToken {
			t.Errorf("ResolveService(%q) = %+v", port, ep)
		}
	}
	if len(seen) != 2 || seen["10.244.1.5:8080"] != 2 || seen["10.244.2.5:8080"] != 2 {
		t.Errorf("4 resolutions went to %v; want 2 each to the ready endpoints 10.244.1.5:8080 and 10.244.2.5:8080", seen)
	}
	if ep, err := c.ResolveService("kube-system", "ksm", "telemetry", false); err != nil || ep.Addr.Port() != 8081 {
		t.Errorf("ResolveService(telemetry) = %v, %v; want port 8081", ep, err)
	}

	// Spreading allocates nothing: /services/ may be scraped thousands of
	// times a minute.
	if n := testing.AllocsPerRun(100, func() { _, _ = c.ResolveService("kube-system", "ksm", "http-metrics", false) }); n != 0 {
		t.Errorf("ResolveService allocates %v times per call, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = c.ResolveService("kube-system", "ksm", "80", true) }); n != 0 {
		t.Errorf("ResolveService(livePodsOnly) allocates %v times per call, want 0", n)
	}
}

func TestResolveServiceErrors(t *testing.T) {
	svc, ports := ksm()
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	idle := newService("kube-system", "idle", []corev1.ServicePort{tcpServicePort("", 9100)})
	client := fake.NewClientset(svc, idle,
		newSlice("kube-system", "ksm-a", "ksm", ports, newEndpoint("10.244.1.6", conditions(false, false, true))),
		newSlice("kube-system", "idle-a", "idle", []discoveryv1.EndpointPort{slicePortOf("", 9100)}),
	)
	c := startCluster(t, client, Options{})
	f := func(ns, name, port string, want error, wantText string) {
		t.Helper()
		ep, err := c.ResolveService(ns, name, port, false)
		if !errors.Is(err, want) || err.Error() != wantText {
			t.Errorf("ResolveService(%s/%s, %q) = %+v, %v\nwant error %q (%v)", ns, name, port, ep, err, wantText, want)
		}
	}
	f("kube-system", "foo", "80", ErrUnknownService, "no Service kube-system/foo in the watched namespaces")
	f("default", "ksm", "80", ErrUnknownService, "no Service default/ksm in the watched namespaces")
	f("kube-system", "ksm", "http", ErrUnknownPort, `Service kube-system/ksm has no TCP port "http" (it has: 80/http-metrics, 8081/telemetry, 53/dns (UDP))`)
	f("kube-system", "ksm", "8080", ErrUnknownPort, `Service kube-system/ksm has no TCP port "8080" (it has: 80/http-metrics, 8081/telemetry, 53/dns (UDP))`)
	f("kube-system", "ksm", "53", ErrUnknownPort, `Service kube-system/ksm has no TCP port "53" (it has: 80/http-metrics, 8081/telemetry, 53/dns (UDP))`)
	f("kube-system", "ksm", "dns", ErrUnknownPort, `Service kube-system/ksm has no TCP port "dns" (it has: 80/http-metrics, 8081/telemetry, 53/dns (UDP))`)
	f("kube-system", "ksm", "99999", ErrUnknownPort, `Service kube-system/ksm has no TCP port "99999" (it has: 80/http-metrics, 8081/telemetry, 53/dns (UDP))`)
	f("kube-system", "ksm", "80", ErrNoReadyEndpoint, "Service kube-system/ksm has no ready endpoint for port 80/http-metrics")
	f("kube-system", "idle", "9100", ErrNoReadyEndpoint, "Service kube-system/idle has no ready endpoint for port 9100")
}

func TestSliceBeforeItsServiceAndRemovals(t *testing.T) {
	ctx := context.Background()
	svc, ports := ksm()
	client := fake.NewClientset(newSlice("kube-system", "ksm-a", "ksm", ports,
		newEndpoint("10.244.1.5"), newEndpoint("10.244.1.6", conditions(false, false, true))))
	c := startCluster(t, client, Options{})
	if _, err := c.ResolveService("kube-system", "ksm", "80", false); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("a slice without its Service resolved: %v", err)
	}
	if _, err := client.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the Service to link to its earlier slice", func() bool {
		_, err := c.ResolveService("kube-system", "ksm", "80", false)
		return err == nil
	})
	at := func(addr string) error {
		_, err := c.ServiceEndpointAt("kube-system", "ksm", netip.MustParseAddrPort(addr), false)
		return err
	}
	if err := at("10.244.1.6:8080"); err != nil {
		t.Errorf("a terminating endpoint is still an endpoint of the Service (/sd/endpoints lists it): %v", err)
	}

	// The endpoint goes from the slice: refused at once.
	slice := newSlice("kube-system", "ksm-a", "ksm", ports, newEndpoint("10.244.1.5"))
	if _, err := client.DiscoveryV1().EndpointSlices("kube-system").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the removed endpoint to be refused", func() bool { return errors.Is(at("10.244.1.6:8080"), ErrNotAnEndpoint) })
	if err := at("10.244.1.6:8080"); err.Error() != "10.244.1.6 is not an endpoint address of Service kube-system/ksm" {
		t.Errorf("error %q", err)
	}
	if err := at("10.244.1.5:8080"); err != nil {
		t.Errorf("the endpoint left in the slice: %v", err)
	}

	// The slice goes: its endpoints are refused, the Service stays known.
	if err := client.DiscoveryV1().EndpointSlices("kube-system").Delete(ctx, "ksm-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted slice's endpoint to be refused", func() bool { return errors.Is(at("10.244.1.5:8080"), ErrNotAnEndpoint) })
	if _, err := c.ResolveService("kube-system", "ksm", "80", false); !errors.Is(err, ErrNoReadyEndpoint) {
		t.Errorf("ResolveService with no slice: %v, want ErrNoReadyEndpoint", err)
	}

	// A slice whose service-name label changes moves to the other Service.
	other := newService("kube-system", "other", []corev1.ServicePort{tcpServicePort("http-metrics", 80)})
	if _, err := client.CoreV1().Services("kube-system").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	moving := newSlice("kube-system", "moving", "ksm", ports, newEndpoint("10.244.3.5"))
	if _, err := client.DiscoveryV1().EndpointSlices("kube-system").Create(ctx, moving, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the new slice to be indexed", func() bool { return at("10.244.3.5:8080") == nil })
	moving.Labels[discoveryv1.LabelServiceName] = "other"
	if _, err := client.DiscoveryV1().EndpointSlices("kube-system").Update(ctx, moving, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the relabelled slice to leave its old Service", func() bool { return errors.Is(at("10.244.3.5:8080"), ErrNotAnEndpoint) })
	if _, err := c.ServiceEndpointAt("kube-system", "other", netip.MustParseAddrPort("10.244.3.5:8080"), false); err != nil {
		t.Errorf("the relabelled slice is not its new Service's: %v", err)
	}

	// The Service goes: unknown again.
	if err := client.CoreV1().Services("kube-system").Delete(ctx, "ksm", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted Service to be unknown", func() bool { return errors.Is(at("10.244.3.5:8080"), ErrUnknownService) })
}

func TestServiceEndpointAtPorts(t *testing.T) {
	svc, ports := ksm()
	svc.Annotations = map[string]string{"prometheus.io/port": "9102"}
	client := fake.NewClientset(svc, newSlice("kube-system", "ksm-a", "ksm", ports, newEndpoint("10.244.1.5")))
	c := startCluster(t, client, Options{})
	f := func(addr string, want error, wantText string) {
		t.Helper()
		ep, err := c.ServiceEndpointAt("kube-system", "ksm", netip.MustParseAddrPort(addr), false)
		if want == nil && (err != nil || ep.Addr.String() != addr) || want != nil && (!errors.Is(err, want) || err.Error() != wantText) {
			t.Errorf("ServiceEndpointAt(%s) = %+v, %v; want %v %q", addr, ep, err, want, wantText)
		}
	}
	f("10.244.1.5:8080", nil, "")
	f("10.244.1.5:8081", nil, "")
	f("10.244.1.5:9102", nil, "") // prometheus.io/port
	f("10.244.1.5:80", ErrUnknownPort, "endpoint 10.244.1.5 of Service kube-system/ksm has no TCP port 80 (it has: 8080, 8081, 9102)")
	f("10.244.9.9:8080", ErrNotAnEndpoint, "10.244.9.9 is not an endpoint address of Service kube-system/ksm")
	if ep, err := c.ServiceEndpointAt("kube-system", "ksm", netip.MustParseAddrPort("[::ffff:10.244.1.5]:8080"), false); err != nil || ep.Addr.String() != "10.244.1.5:8080" {
		t.Errorf("an IPv4-mapped address: %+v, %v; want the endpoint, unmapped", ep, err)
	}
}

func TestLivePodsOnly(t *testing.T) {
	ctx := context.Background()
	svc, ports := ksm()
	old := newPod("kube-system", "old", "10.244.1.7")
	old.CreationTimestamp = metav1.Unix(1000, 0)
	newer := newPod("other", "new", "10.244.1.7")
	newer.CreationTimestamp = metav1.Unix(2000, 0)
	client := fake.NewClientset(svc,
		newPod("kube-system", "ksm-0", "10.244.1.5"),
		newPod("kube-system", "moved", "10.244.9.9"), // its slice entry says 10.244.1.6
		old, newer, // the pod network gave old's IP to a newer pod
		newSlice("kube-system", "ksm-a", "ksm", ports,
			newEndpoint("10.244.1.5", ofPod("kube-system", "ksm-0")),
			newEndpoint("10.244.1.6", ofPod("kube-system", "moved")),
			newEndpoint("10.244.1.7", ofPod("kube-system", "old")),
			newEndpoint("10.244.1.8", ofPod("kube-system", "gone")),
			newEndpoint("10.250.0.1", func(ep *discoveryv1.Endpoint) { ep.TargetRef = &corev1.ObjectReference{Kind: "Node", Name: "node-1"} }),
			newEndpoint("10.244.1.9"), // no targetRef: the CIDR rules decide
		))
	c := startCluster(t, client, Options{})
	seen := map[string]bool{}
	for range 12 {
		ep, err := c.ResolveService("kube-system", "ksm", "80", true)
		if err != nil {
			t.Fatal(err)
		}
		seen[ep.Addr.Addr().String()] = true
	}
	if len(seen) != 3 || !seen["10.244.1.5"] || !seen["10.250.0.1"] || !seen["10.244.1.9"] {
		t.Errorf("livePodsOnly resolved to %v; want 10.244.1.5 (live pod), 10.250.0.1 (a node) and 10.244.1.9 (no targetRef) only", seen)
	}
	f := func(addr string, wantErr string) {
		t.Helper()
		_, err := c.ServiceEndpointAt("kube-system", "ksm", netip.MustParseAddrPort(addr), true)
		if wantErr == "" && err != nil || wantErr != "" && (!errors.Is(err, ErrPodNotLive) || err.Error() != wantErr) {
			t.Errorf("ServiceEndpointAt(%s, livePodsOnly) = %v, want %q", addr, err, wantErr)
		}
		if _, err := c.ServiceEndpointAt("kube-system", "ksm", netip.MustParseAddrPort(addr), false); err != nil {
			t.Errorf("ServiceEndpointAt(%s) without livePodsOnly: %v", addr, err)
		}
	}
	f("10.244.1.5:8080", "")
	f("10.250.0.1:8080", "")
	f("10.244.1.9:8080", "")
	f("10.244.1.6:8080", "the pod kube-system/moved behind endpoint 10.244.1.6:8080 of Service kube-system/ksm is not a live pod with that IP")
	f("10.244.1.7:8080", "the pod kube-system/old behind endpoint 10.244.1.7:8080 of Service kube-system/ksm is not a live pod with that IP")
	f("10.244.1.8:8080", "the pod kube-system/gone behind endpoint 10.244.1.8:8080 of Service kube-system/ksm is not a live pod with that IP")

	// Its pod terminated: the last live endpoint goes, and with only pod
	// endpoints left the Service has none ready.
	only := newSlice("kube-system", "ksm-a", "ksm", ports, newEndpoint("10.244.1.5", ofPod("kube-system", "ksm-0")), newEndpoint("10.244.1.8", ofPod("kube-system", "gone")))
	if _, err := client.DiscoveryV1().EndpointSlices("kube-system").Update(ctx, only, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the slice update", func() bool {
		return errors.Is(func() error {
			_, err := c.ServiceEndpointAt("kube-system", "ksm", netip.MustParseAddrPort("10.244.1.9:8080"), false)
			return err
		}(), ErrNotAnEndpoint)
	})
	if err := client.CoreV1().Pods("kube-system").Delete(ctx, "ksm-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted pod's endpoint to be skipped", func() bool {
		_, err := c.ResolveService("kube-system", "ksm", "80", true)
		return errors.Is(err, ErrNoReadyEndpoint)
	})
	_, err := c.ResolveService("kube-system", "ksm", "80", true)
	if want := "Service kube-system/ksm has no ready endpoint for port 80/http-metrics with a live pod behind it (the pods of 2 ready endpoints are not live pods with that IP)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if _, err := c.ResolveService("kube-system", "ksm", "80", false); err != nil {
		t.Errorf("without livePodsOnly: %v", err)
	}
}

// TestServiceTLS: the scheme annotation decides, else the port's
// appProtocol or name.
func TestServiceTLS(t *testing.T) {
	f := func(schemeAnnotation, portName, appProtocol string, want bool) {
		t.Helper()
		s := &service{scheme: schemeAnnotation}
		if got := s.tls(portName, appProtocol); got != want {
			t.Errorf("scheme %q, port name %q, appProtocol %q: TLS %v, want %v", schemeAnnotation, portName, appProtocol, got, want)
		}
	}
	f("", "metrics", "", false)
	f("", "https", "", true)
	f("", "https-metrics", "", true)
	f("", "httpsx", "", false)
	f("", "metrics-https", "", false)
	f("", "metrics", "https", true)
	f("", "metrics", "http", false)
	f("", "https", "http", true) // either says https
	f("http", "https-main", "https", false)
	f("https", "http-metrics", "", true)
	f("HTTPS", "metrics", "", false) // as the classic job's regex (https?): case matters
	f("bogus", "https", "", true)

	// Wired through: ResolveService reads the Service port, ServiceEndpointAt
	// the slice port, or the annotation alone for the prometheus.io/port.
	svc := newService("monitoring", "node-exporter", []corev1.ServicePort{tcpServicePort("https", 9100), tcpServicePort("plain", 9101)}, "prometheus.io/port", "9200")
	client := fake.NewClientset(svc, newSlice("monitoring", "ne", "node-exporter",
		[]discoveryv1.EndpointPort{slicePortOf("https", 9100), slicePortOf("plain", 9101)}, newEndpoint("10.250.0.1")))
	c := startCluster(t, client, Options{})
	for port, want := range map[string]bool{"9100": true, "https": true, "plain": false} {
		if ep, err := c.ResolveService("monitoring", "node-exporter", port, false); err != nil || ep.TLS != want {
			t.Errorf("ResolveService(%s) = %+v, %v; want TLS %v", port, ep, err, want)
		}
	}
	for addr, want := range map[string]bool{"10.250.0.1:9100": true, "10.250.0.1:9101": false, "10.250.0.1:9200": false} {
		if ep, err := c.ServiceEndpointAt("monitoring", "node-exporter", netip.MustParseAddrPort(addr), false); err != nil || ep.TLS != want {
			t.Errorf("ServiceEndpointAt(%s) = %+v, %v; want TLS %v", addr, ep, err, want)
		}
	}
}

func TestScrapeTokenOptIn(t *testing.T) {
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	optIn := annotated(AnnotationScrapeToken, "true")
	client := fake.NewClientset(
		newPod("monitoring", "opted-in", "10.244.1.5", optIn),
		newPod("monitoring", "not-opted-in", "10.244.1.6", annotated(AnnotationScrapeToken, "yes")),
		newPod("monitoring", "node-exporter", "10.250.0.1", hostNet, optIn),
		newPod("kube-system", "kube-proxy", "10.250.0.1", hostNet, declaring(10249)),
		newPod("monitoring", "node-exporter-2", "10.250.0.2", hostNet, optIn),
		newPod("monitoring", "node-exporter-2-next", "10.250.0.2", hostNet, optIn), // a rollout
		newPod("monitoring", "node-exporter-3", "10.250.0.3", hostNet, optIn),
		newPod("monitoring", "node-exporter-3-next", "10.250.0.3", hostNet),
		newPod("kube-system", "node-exporter-4", "10.250.0.4", hostNet, optIn),
		newPod("monitoring", "node-exporter-4-next", "10.250.0.4", hostNet, optIn),
		newPod("monitoring", "done", "10.244.1.7", optIn, phase(corev1.PodSucceeded)),
		newService("monitoring", "opted", []corev1.ServicePort{tcpServicePort("https", 443)}, AnnotationScrapeToken, "true"),
		newService("monitoring", "plain", []corev1.ServicePort{tcpServicePort("https", 443)}),
		newSlice("monitoring", "opted-a", "opted", []discoveryv1.EndpointPort{slicePortOf("https", 8443)}, newEndpoint("10.244.1.6", ofPod("monitoring", "not-opted-in"))),
		newSlice("monitoring", "plain-a", "plain", []discoveryv1.EndpointPort{slicePortOf("https", 8443)},
			newEndpoint("10.244.1.5", ofPod("monitoring", "opted-in")), newEndpoint("10.244.1.6", ofPod("monitoring", "not-opted-in"))),
		// Slices anyone who may write them could make: the opted-in
		// Service's token must reach no pod of another namespace, no
		// address without a pod, no pod a targetRef merely names, and
		// no port of a node that its hostNetwork pod does not declare.
		newPod("elsewhere", "victim", "10.244.5.5"),
		newSlice("monitoring", "opted-b", "opted", []discoveryv1.EndpointPort{slicePortOf("https", 8443), slicePortOf("proxy", 10249), slicePortOf("node", 9100)},
			newEndpoint("10.244.5.5", ofPod("elsewhere", "victim")),
			newEndpoint("10.244.5.6"),
			newEndpoint("10.244.5.7", ofPod("monitoring", "opted-in")),
			newEndpoint("10.250.0.1", ofPod("monitoring", "node-exporter"))),
	)
	c := startCluster(t, client, Options{})
	f := func(addr, wantNamespace string, wantOptedIn, wantOK bool) {
		t.Helper()
		ns, optedIn, ok := c.PodScrapeToken(netip.MustParseAddrPort(addr))
		if ns != wantNamespace || optedIn != wantOptedIn || ok != wantOK {
			t.Errorf("PodScrapeToken(%s) = %q, %v, %v; want %q, %v, %v", addr, ns, optedIn, ok, wantNamespace, wantOptedIn, wantOK)
		}
	}
	f("10.244.1.5:8443", "monitoring", true, true)
	f("[::ffff:10.244.1.5]:8443", "monitoring", true, true) // any port of a pod IP is that pod's
	f("10.244.1.6:8443", "monitoring", false, true)         // only "true" opts in
	// A node's IP: the hostNetwork pod declaring the port.
	f("10.250.0.1:9100", "monitoring", true, true)
	f("10.250.0.1:10249", "kube-system", false, true)
	f("10.250.0.1:8443", "", false, false)          // no pod declares it
	f("10.250.0.2:9100", "monitoring", true, true)  // both pods of a rollout opted in, in one namespace
	f("10.250.0.3:9100", "monitoring", false, true) // one of them did not
	f("10.250.0.4:9100", "", false, true)           // two namespaces claim the port
	f("10.244.1.7:9100", "", false, false)          // terminated
	f("10.244.9.9:9100", "", false, false)

	g := func(svc, addr, wantPod string, want bool) {
		t.Helper()
		ep, err := c.ServiceEndpointAt("monitoring", svc, netip.MustParseAddrPort(addr), false)
		if err != nil || ep.Pod != wantPod || ep.ScrapeToken != want {
			t.Errorf("ServiceEndpointAt(%s, %s) = %+v, %v; want Pod %q, ScrapeToken %v", svc, addr, ep, err, wantPod, want)
		}
	}
	g("opted", "10.244.1.6:8443", "monitoring/not-opted-in", true) // the Service opted in
	g("plain", "10.244.1.5:8443", "monitoring/opted-in", true)     // the pod did
	g("plain", "10.244.1.6:8443", "monitoring/not-opted-in", false)
	g("opted", "10.244.5.5:8443", "elsewhere/victim", false)        // another namespace's pod
	g("opted", "10.244.5.6:8443", "", false)                        // no pod behind it
	g("opted", "10.244.5.7:8443", "", false)                        // a targetRef to a pod that does not have the IP
	g("opted", "10.250.0.1:10249", "", false)                       // kube-proxy's port on node-exporter's node
	g("opted", "10.250.0.1:8443", "", false)                        // a port node-exporter does not declare
	g("opted", "10.250.0.1:9100", "monitoring/node-exporter", true) // the port it declares

}

func TestServicesOfUnwatchedNamespaces(t *testing.T) {
	svc, ports := ksm()
	client := fake.NewClientset(svc, newSlice("kube-system", "ksm-a", "ksm", ports, newEndpoint("10.244.1.5")))
	c := startCluster(t, client, Options{Namespaces: []string{"monitoring", "default"}})
	_, err := c.ResolveService("kube-system", "ksm", "80", false)
	if want := "no Service kube-system/ksm in the watched namespaces: -kubernetes-namespaces does not list kube-system"; !errors.Is(err, ErrUnknownService) || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
	_, err = c.ResolveService("monitoring", "ksm", "80", false)
	if want := "no Service monitoring/ksm in the watched namespaces"; !errors.Is(err, ErrUnknownService) || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}

// A dual-stack Service resolves through its primary family's slices only,
// as /sd/endpoints lists them: one pod is one endpoint, not one per family.
func TestResolveDualStackServiceUsesThePrimaryFamily(t *testing.T) {
	svc := newService("default", "dual", []corev1.ServicePort{tcpServicePort("http", 8080)})
	preferDual := corev1.IPFamilyPolicyPreferDualStack
	svc.Spec.IPFamilyPolicy = &preferDual
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	v4 := newSlice("default", "dual-v4", "dual", []discoveryv1.EndpointPort{slicePortOf("http", 8080)}, newEndpoint("10.244.1.5"))
	v6 := newSlice("default", "dual-v6", "dual", []discoveryv1.EndpointPort{slicePortOf("http", 8080)}, newEndpoint("fd00::5"))
	v6.AddressType = discoveryv1.AddressTypeIPv6
	c := startCluster(t, fake.NewClientset(svc, v4, v6), Options{})
	for range 4 {
		if ep, err := c.ResolveService("default", "dual", "http", false); err != nil || ep.Addr.String() != "10.244.1.5:8080" {
			t.Fatalf("ResolveService = %+v, %v; want the IPv4 endpoint every time", ep, err)
		}
	}
	if _, err := c.ServiceEndpointAt("default", "dual", netip.MustParseAddrPort("[fd00::5]:8080"), false); !errors.Is(err, ErrNotAnEndpoint) {
		t.Errorf("ServiceEndpointAt the secondary family's address: %v, want ErrNotAnEndpoint", err)
	}
}

// A port name may start with a digit (IANA_SVC_NAME: "9p"); only a port of
// digits alone is a number.
func TestResolvePortNameStartingWithADigit(t *testing.T) {
	svc := newService("ns", "files", []corev1.ServicePort{tcpServicePort("9p", 564)})
	c := startCluster(t, fake.NewClientset(svc, newSlice("ns", "files-a", "files", []discoveryv1.EndpointPort{slicePortOf("9p", 5640)}, newEndpoint("10.244.1.5"))), Options{})
	f := func(port, want string) {
		t.Helper()
		ep, err := c.ResolveService("ns", "files", port, false)
		if got := ep.Addr.String(); err != nil && want != "" || err == nil && got != want {
			t.Errorf("ResolveService(%q) = %s, %v; want %q", port, got, err, want)
		}
		if want == "" && !errors.Is(err, ErrUnknownPort) {
			t.Errorf("ResolveService(%q): %v, want ErrUnknownPort", port, err)
		}
	}
	f("9p", "10.244.1.5:5640")
	f("564", "10.244.1.5:5640")
	f("99999", "")
	f("9", "")
}

// The token's opt-in on a node's IP, or on a reused pod IP, through the
// Service routes as through /pods/ (PodScrapeToken): every hostNetwork pod
// declaring the port may be the one listening, so all must qualify; and a
// terminating pod may have lost its IP to a pod the gateway cannot see
// (another namespace than it watches), so it never qualifies.
func TestScrapeTokenOnSharedAndReusedAddresses(t *testing.T) {
	hostNet := func(p *corev1.Pod) { p.Spec.HostNetwork = true }
	terminating := func(p *corev1.Pod) {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	}
	optIn := annotated(AnnotationScrapeToken, "true")
	ports := []discoveryv1.EndpointPort{slicePortOf("https", 9100)}
	client := fake.NewClientset(
		newPod("monitoring", "node-exporter", "10.250.0.1", hostNet, optIn),
		newPod("other", "squatter", "10.250.0.1", hostNet), // declares 9100 too
		newService("monitoring", "node-exporter", []corev1.ServicePort{tcpServicePort("https", 9100)}),
		newSlice("monitoring", "node-exporter-a", "node-exporter", ports, newEndpoint("10.250.0.1", ofPod("monitoring", "node-exporter"))),
		newPod("monitoring", "old", "10.244.1.5", terminating, optIn),
		newService("monitoring", "old", []corev1.ServicePort{tcpServicePort("https", 9100)}),
		newSlice("monitoring", "old-a", "old", ports, newEndpoint("10.244.1.5", ofPod("monitoring", "old"))),
	)
	c := startCluster(t, client, Options{})
	f := func(service, addr string) {
		t.Helper()
		a := netip.MustParseAddrPort(addr)
		if _, optedIn, _ := c.PodScrapeToken(a); optedIn {
			t.Errorf("PodScrapeToken(%s) opted in", addr)
		}
		if ep, err := c.ServiceEndpointAt("monitoring", service, a, false); err != nil || ep.ScrapeToken {
			t.Errorf("ServiceEndpointAt(%s, %s) = %+v, %v; want no scrape token", service, addr, ep, err)
		}
		if ep, err := c.ResolveService("monitoring", service, "https", false); err != nil || ep.ScrapeToken {
			t.Errorf("ResolveService(%s) = %+v, %v; want no scrape token", service, ep, err)
		}
	}
	f("node-exporter", "10.250.0.1:9100")
	f("old", "10.244.1.5:9100")
}
