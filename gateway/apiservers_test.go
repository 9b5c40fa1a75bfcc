package gateway

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// apiServerSlice is an EndpointSlice in namespace ns of Service service
// with port "https" and an endpoint at each of addrs, which share addrs[0]'s
// port.
func apiServerSlice(ns, service, name string, addrs ...netip.AddrPort) *discoveryv1.EndpointSlice {
	portName, port, proto := "https", int32(addrs[0].Port()), corev1.ProtocolTCP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port, Protocol: &proto}},
	}
	for _, a := range addrs {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.Addr().String()}})
	}
	return es
}

// startAPIServer is an https server on ip:port (port 0: any) standing in
// for an API server: its certificate of ca is valid for dnsNames.
func startAPIServer(t *testing.T, ca *testutil.CA, addr string, dnsNames ...string) (*testutil.TLSPod, netip.AddrPort) {
	t.Helper()
	pod := testutil.StartTLSPod(t, addr, ca.IssueServer(t, dnsNames, nil).TLS, nil)
	return pod, netip.MustParseAddrPort(pod.Addr)
}

// apiServerConfig is kubeConfig with the API server proxy: the token in
// tokenFile, certificates verified by ca, callers authenticated by the
// bearer token "caller-token", and only namespace apps watched, so the
// API servers' slices are known by their own informer.
func apiServerConfig(t *testing.T, ca *testutil.CA, tokenFile string) Config {
	cfg := kubeConfig()
	cfg.KubernetesNamespaces = []string{"apps"}
	cfg.ControlPlaneTokenFile = tokenFile
	cfg.ControlPlaneCAFile = testutil.WriteCABundle(t, ca)
	cfg.AuthBearerTokensFile = testutil.TempFile(t, "tokens", []byte("caller-token\n"))
	return cfg
}

// TestAPIServerProxy: /apiservers/ reaches an endpoint of the
// default/kubernetes Service with the control-plane token, verified as
// kubernetes.default.svc, and the token reaches nothing else.
func TestAPIServerProxy(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	apiserver, apiAddr := startAPIServer(t, ca, "127.0.0.7:0", "kubernetes.default.svc")
	// The worst cases have a certificate the gateway would accept.
	second, secondAddr := startAPIServer(t, ca, "127.0.0.8:"+strconv.Itoa(int(apiAddr.Port())), "kubernetes.default.svc")
	otherPort, otherPortAddr := startAPIServer(t, ca, "127.0.0.7:0", "kubernetes.default.svc")
	pod, podAddr := startAPIServer(t, ca, "127.0.0.9:0", "kubernetes.default.svc")
	misnamed, misnamedAddr := startAPIServer(t, ca, "127.0.0.10:0", "apiserver.example")
	elsewhere, elsewhereAddr := startAPIServer(t, ca, "127.0.0.11:0", "kubernetes.default.svc")

	tokenFile := testutil.TempFile(t, "control-plane-token", []byte("cp-token-1\n"))
	cfg := apiServerConfig(t, ca, tokenFile)
	// Neither the CIDR nor the port rules judge an API server.
	cfg.DenyCIDRs = mustParsePrefixes("127.0.0.7/32")
	cfg.DenyPorts = append(cfg.DenyPorts, [2]uint16{apiAddr.Port(), apiAddr.Port()})
	client := fake.NewClientset(
		apiServerSlice("default", "kubernetes", "kubernetes", apiAddr, secondAddr),
		apiServerSlice("default", "kubernetes", "kubernetes-misnamed", misnamedAddr),
		// Named kubernetes, but of another namespace or Service: not an API server.
		apiServerSlice("apps", "kubernetes", "kubernetes", elsewhereAddr),
		apiServerSlice("default", "web", "web", elsewhereAddr),
		podObject("apps", "pod", podAddr))
	g, gw := startKubeGateway(t, cfg, client)
	auth := "Authorization: Bearer caller-token"
	f := checkGet(t, gw, auth)

	path := func(addr netip.AddrPort, p string) string {
		return "/apiservers/" + addr.Addr().String() + "/" + itoa(addr.Port()) + p
	}
	f(path(apiAddr, "/metrics"), 200, "up 1")
	if got := apiserver.LastAuthorization(t); got != "Bearer cp-token-1" {
		t.Errorf("the API server got Authorization %q, want the control-plane token (never the caller's)", got)
	}
	if got := apiserver.LastSNI(t); got != "kubernetes.default.svc" {
		t.Errorf("the API server got SNI %q, want kubernetes.default.svc", got)
	}
	f(path(apiAddr, "/metrics/slis"), 200, "up 1")
	f(path(apiAddr, "/metrics?exclude=x"), 200, "up 1")
	f(path(secondAddr, "/metrics"), 200, "up 1")

	// Nothing else gets it: another port of the API server's IP, a pod,
	// slices of other Services or namespaces.
	f(path(otherPortAddr, "/metrics"), 403, "is not an endpoint of the default/kubernetes Service")
	f(path(podAddr, "/metrics"), 403, "forbidden")
	f(path(elsewhereAddr, "/metrics"), 403, "forbidden")
	// A certificate not valid for kubernetes.default.svc gets no request.
	f(path(misnamedAddr, "/metrics"), 502, "tls_failed")
	if v := metricValue(t, g, `scrapegate_upstream_errors_total{reason="tls_failed"}`); v != 1 {
		t.Errorf("tls_failed = %v, want 1", v)
	}

	// Only the two metrics paths, and nothing is dialled for another.
	before := apiserver.Requests()
	for _, p := range []string{"/api/v1/secrets", "/metrics/", "/metrics/cadvisor", "/metrics/../api", "/metricsx", "/healthz", "/"} {
		f(path(apiAddr, p), 400, "bad_target")
	}
	f("/apiservers/"+apiAddr.Addr().String()+"/"+itoa(apiAddr.Port()), 400, "want /apiservers/{ip}/{port}/{path}")
	f("/apiservers/"+apiAddr.Addr().String(), 400, "want /apiservers/{ip}/{port}/{path}")
	f("/apiservers/kubernetes/443/metrics", 400, "bad_target")
	if got := apiserver.Requests(); got != before {
		t.Errorf("refused paths reached the API server: %d requests, want %d", got, before)
	}
	if r := get(t, gw, path(apiAddr, "/metrics")); r.StatusCode != 401 {
		t.Errorf("/apiservers/ without the caller's credentials: %d, want 401", r.StatusCode)
	}

	// An address leaves the slice: refused once the watch event is in.
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(t.Context(),
		apiServerSlice("default", "kubernetes", "kubernetes", apiAddr), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the removed API server to be forgotten", func() bool { return !g.kube.cluster.IsAPIServer(secondAddr) })
	before = second.Requests()
	f(path(secondAddr, "/metrics"), 403, "is not an endpoint of the default/kubernetes Service")
	f(path(apiAddr, "/metrics"), 200, "up 1")
	if err := client.DiscoveryV1().EndpointSlices("default").Delete(t.Context(), "kubernetes-misnamed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted slice to be forgotten", func() bool { return !g.kube.cluster.IsAPIServer(misnamedAddr) })
	f(path(misnamedAddr, "/metrics"), 403, "forbidden")

	for name, p := range map[string]*testutil.TLSPod{"another port": otherPort, "a pod": pod, "the removed API server": second, "a misnamed one": misnamed, "another Service's": elsewhere} {
		want := 0
		if p == second {
			want = before
		}
		if got := p.Requests(); got != want {
			t.Errorf("%s got %d requests, want %d", name, got, want)
		}
	}

	// Projected tokens rotate: the next scrape carries the new one.
	testutil.WriteFile(t, tokenFile, []byte("cp-token-2"))
	g.reloadAll()
	f(path(apiAddr, "/metrics"), 200, "up 1")
	if got := apiserver.LastAuthorization(t); got != "Bearer cp-token-2" {
		t.Errorf("after rotation the API server got %q", got)
	}
	if v := metricValue(t, g, `scrapegate_file_reloads_total{flag="control-plane-token-file",result="success"}`); v != 1 {
		t.Errorf("control-plane-token-file reloads = %v, want 1", v)
	}
}

func itoa(port uint16) string { return strconv.Itoa(int(port)) }

// TestAPIServerProxyOffWithoutToken: -control-plane-token-file= turns the
// route off, and says so; nor are the API servers' slices watched then, so
// a gateway whose RBAC covers only its own namespaces still gets ready.
func TestAPIServerProxyOffWithoutToken(t *testing.T) {
	addr := netip.MustParseAddrPort("127.0.0.7:6443")
	cfg := kubeConfig()
	cfg.KubernetesNamespaces = []string{"apps"}
	client := fake.NewClientset(apiServerSlice("default", "kubernetes", "kubernetes", addr))
	_, gw := startKubeGateway(t, cfg, client)
	checkGet(t, gw)("/apiservers/127.0.0.7/6443/metrics", 400, "/apiservers/ is off: -control-plane-token-file is empty")
	for _, a := range client.Actions() {
		if a.GetNamespace() == "default" {
			t.Errorf("with /apiservers/ off, the gateway asked the API server to %s %s in namespace default", a.GetVerb(), a.GetResource().Resource)
		}
	}
	_, plain := startGateway(t, testConfig())
	checkGet(t, plain)("/apiservers/127.0.0.7/6443/metrics", 400, "/apiservers/ needs -kubernetes")
}

// TestAPIServerProxyBeforeSync: until the API servers' slices are listed,
// no address is known to be one (503, not 403); nothing else waits for
// them.
func TestAPIServerProxyBeforeSync(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	apiserver, apiAddr := startAPIServer(t, ca, "127.0.0.7:0", "kubernetes.default.svc")
	client := fake.NewClientset(apiServerSlice("default", "kubernetes", "kubernetes", apiAddr))
	// Failed, not held: the fake clientset answers one request at a time,
	// so a held one would hold the other informers too.
	var released atomic.Bool
	release := func() { released.Store(true) }
	client.PrependReactor("list", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "default" && !released.Load() {
			return true, nil, errors.New("not yet")
		}
		return false, nil, nil
	})
	g, err := newGateway(apiServerConfig(t, ca, testutil.TempFile(t, "token", []byte("cp-token\n"))), zerolog.Nop(), client)
	if err != nil {
		t.Fatal(err)
	}
	gw := serveGateway(t, g)
	target := "/apiservers/127.0.0.7/" + itoa(apiAddr.Port()) + "/metrics"
	if r := get(t, gw, target, "Authorization: Bearer caller-token"); r.StatusCode != 503 || r.Header.Get("Retry-After") == "" || !strings.Contains(r.body, "not_synced") {
		t.Errorf("before sync: %d %q, want 503 not_synced with Retry-After", r.StatusCode, r.body)
	}
	// The rest of the gateway does not wait for them.
	testutil.WaitFor(t, "the other informers to sync", g.kube.cluster.Synced)
	if r := get(t, gw, "/readyz"); r.StatusCode != 200 {
		t.Errorf("/readyz while only the API servers' slices are not listed: %d, want 200", r.StatusCode)
	}
	if r := get(t, gw, target, "Authorization: Bearer caller-token"); r.StatusCode != 503 || !strings.Contains(r.body, "default/kubernetes have not been listed") {
		t.Errorf("before the API servers' slices are listed: %d %q, want 503 saying so", r.StatusCode, r.body)
	}
	release()
	testutil.WaitFor(t, "the API servers' slices to be listed", g.kube.cluster.APIServersSynced)
	checkGet(t, gw, "Authorization: Bearer caller-token")(target, 200, "up 1")
	if apiserver.Requests() != 1 {
		t.Errorf("the API server got %d requests, want 1", apiserver.Requests())
	}
}

// TestAPIServerProxyOutsideAPod: the default files are the pod's
// ServiceAccount's; without them the error says what to set.
func TestAPIServerProxyOutsideAPod(t *testing.T) {
	if _, err := os.Stat(filepath.Join(serviceAccountDir, "token")); err == nil {
		t.Skip("running in a pod")
	}
	cfg := kubeConfig()
	def := DefaultConfig()
	cfg.ControlPlaneTokenFile, cfg.ControlPlaneCAFile = def.ControlPlaneTokenFile, def.ControlPlaneCAFile
	_, err := newGateway(cfg, zerolog.Nop(), fake.NewClientset())
	if err == nil || !strings.Contains(err.Error(), "set -control-plane-token-file and -control-plane-ca-file") ||
		!strings.Contains(err.Error(), "-control-plane-token-file=") {
		t.Errorf("newGateway outside a pod: %v, want an error saying what to set", err)
	}
	// With the kubelet's defaults too, one error names both pairs.
	cfg.KubeletTokenFile, cfg.KubeletCAFile = def.KubeletTokenFile, def.KubeletCAFile
	_, err = newGateway(cfg, zerolog.Nop(), fake.NewClientset())
	if err == nil || !strings.Contains(err.Error(), "-kubelet-token-file=") || !strings.Contains(err.Error(), "-control-plane-token-file=") {
		t.Errorf("newGateway outside a pod with every default: %v, want one error naming both token flags", err)
	}
}

// TestAPIServerProxyWithoutAccessToDefault: a gateway whose RBAC does not
// reach namespace default is ready and serves everything else; only
// /apiservers/ is refused, saying why.
func TestAPIServerProxyWithoutAccessToDefault(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	_, apiAddr := startAPIServer(t, ca, "127.0.0.7:0", "kubernetes.default.svc")
	client := fake.NewClientset()
	client.PrependReactor("list", "endpointslices", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == "default" {
			return true, nil, errors.New(`endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:apps:scrapegate" cannot list resource "endpointslices" in API group "discovery.k8s.io" in the namespace "default"`)
		}
		return false, nil, nil
	})
	g, gw := startKubeGateway(t, apiServerConfig(t, ca, testutil.TempFile(t, "token", []byte("cp-token\n"))), client)
	if r := get(t, gw, "/readyz"); r.StatusCode != 200 {
		t.Errorf("/readyz: %d %q, want 200", r.StatusCode, r.body)
	}
	target := "/apiservers/127.0.0.7/" + itoa(apiAddr.Port()) + "/metrics"
	testutil.WaitFor(t, "the refusal to be known", func() bool { return g.kube.cluster.APIServersFailure() != nil })
	checkGet(t, gw, "Authorization: Bearer caller-token")(target, 503, `cannot list resource "endpointslices"`)
}
