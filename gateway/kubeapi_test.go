package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

const kubeAPICallerToken = "caller-token"

// kubeAPIFixture is a gateway serving the discovery API over a fake
// clientset, with the kubelet proxy on and caller tokens required.
type kubeAPIFixture struct {
	g       *Gateway
	gw      string
	client  *fake.Clientset
	kubelet *fakeKubelet
}

// startKubeAPIGateway serves such a gateway, once synced; tune changes it
// before it serves.
func startKubeAPIGateway(t *testing.T, tune func(*Gateway), objects ...runtime.Object) *kubeAPIFixture {
	t.Helper()
	ca := testutil.NewCA(t, "cluster CA")
	kubelet := startFakeKubelet(t, ca, "127.0.0.3")
	cfg := kubeConfig()
	cfg.KubeletTokenFile = testutil.TempFile(t, "kubelet-token", []byte("kubelet-token\n"))
	cfg.KubeletCAFile = testutil.WriteCABundle(t, ca)
	cfg.AuthBearerTokensFile = testutil.TempFile(t, "tokens", []byte(kubeAPICallerToken+"\n"))
	client := fake.NewClientset(append([]runtime.Object{nodeObject("node-1", kubelet.addr)}, objects...)...)
	client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{Major: "1", Minor: "36", GitVersion: "v1.36.3-upstream"}
	g, err := newGateway(cfg, zerolog.Nop(), client)
	if err != nil {
		t.Fatalf("newGateway: %s", err)
	}
	if tune != nil {
		tune(g)
	}
	gw := serveGateway(t, g)
	testutil.WaitFor(t, "the informers to sync", g.kube.cluster.Synced)
	return &kubeAPIFixture{g: g, gw: gw, client: client, kubelet: kubelet}
}

// restConfig is how a client-go client reaches the gateway.
func (f *kubeAPIFixture) restConfig(contentType string) *rest.Config {
	return &rest.Config{Host: "http://" + f.gw, BearerToken: kubeAPICallerToken, ContentConfig: rest.ContentConfig{ContentType: contentType}}
}

// clientset is a client-go clientset talking to the gateway.
func (f *kubeAPIFixture) clientset(t *testing.T, contentType string) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(f.restConfig(contentType))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *kubeAPIFixture) kubeletCalls() int {
	f.kubelet.mu.Lock()
	defer f.kubelet.mu.Unlock()
	return len(f.kubelet.auth)
}

// upstreamWrites are the requests the gateway made to the API server
// other than its informers' lists and watches.
func (f *kubeAPIFixture) upstreamWrites() []string {
	var out []string
	for _, a := range f.client.Actions() {
		if v := a.GetVerb(); v != "list" && v != "watch" {
			out = append(out, v+" "+a.GetResource().Resource)
		}
	}
	return out
}

func TestKubeAPIRefusesWhatItDoesNotServe(t *testing.T) {
	fx := startKubeAPIGateway(t, nil)
	auth := "Authorization: Bearer " + kubeAPICallerToken
	kubeletCalls := fx.kubeletCalls()
	f := func(method, target string, want int, headerLines ...string) {
		t.Helper()
		r := rawGet(t, fx.gw, method, target, append([]string{auth}, headerLines...)...)
		if r.StatusCode != want {
			t.Errorf("%s %s: %d %q, want %d", method, target, r.StatusCode, r.body, want)
			return
		}
		if method == "HEAD" || want == 200 {
			return
		}
		obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(r.body), nil, nil)
		if s, ok := obj.(*metav1.Status); err != nil || !ok || gvk.Kind != "Status" || gvk.Version != "v1" || int(s.Code) != want {
			t.Errorf("%s %s: body %q, want a v1 Status with code %d (%v)", method, target, r.body, want, err)
		}
		if want == 405 && r.Header.Get("Allow") != "GET" {
			t.Errorf("%s %s: Allow %q, want GET", method, target, r.Header.Get("Allow"))
		}
	}
	// Served.
	f("GET", "/api/v1/pods", 200)
	f("GET", "/api/v1/namespaces/default/endpoints", 200)
	f("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", 200)
	// Other resources, single objects, subresources: forbidden, whatever the method.
	f("GET", "/api/v1/secrets", 403)
	f("GET", "/api/v1/namespaces/default/secrets", 403)
	f("GET", "/api/v1/namespaces/default/secrets/token?watch=1", 403)
	f("GET", "/api/v1/namespaces/default/configmaps", 403)
	f("GET", "/api/v1/serviceaccounts", 403)
	f("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", 403)
	f("GET", "/api/v1/namespaces", 403)
	f("GET", "/api/v1/namespaces/default", 403)
	f("GET", "/api/v1/namespaces/default/pods/p", 403)
	f("GET", "/api/v1/namespaces/default/pods/p/log", 403)
	f("GET", "/api/v1/namespaces/default/pods/p/exec?command=sh", 403)
	f("POST", "/api/v1/namespaces/default/pods/p/exec?command=sh", 403)
	f("GET", "/api/v1/namespaces/default/pods/p/proxy/metrics", 403)
	f("GET", "/api/v1/namespaces/default/services/s/proxy/", 400)
	f("GET", "/api/v1/namespaces/default/services/s:80/proxy", 403)
	f("GET", "/api/v1/nodes/node-1", 403)
	f("GET", "/api/v1/nodes/node-1/proxy", 403)
	f("GET", "/api/v1/nodes/node-1/proxy/configz", 403)
	f("GET", "/api/v1/nodes/node-1/proxy/pods", 403)
	f("GET", "/api/v1/nodes/node-1/proxy/metrics/cadvisorx", 403)
	f("GET", "/api/v1/nodes/node-1:10250/proxy/metrics", 403)
	f("PATCH", "/api/v1/nodes/node-1", 403)
	f("GET", "/api/v1/foos", 403)
	f("GET", "/apis/discovery.k8s.io/v1/endpointslices/x", 403)
	// Unknown groups and versions, and nodes in a namespace.
	f("GET", "/api/v2/pods", 404)
	f("GET", "/api/v1beta1", 404)
	f("GET", "/apis/apps/v1/deployments", 404)
	f("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", 404)
	f("GET", "/apis/discovery.k8s.io/v1beta1/endpointslices", 404)
	f("GET", "/apis/authentication.k8s.io/v1/tokenreviews", 404)
	f("POST", "/apis/authentication.k8s.io/v1/tokenreviews", 404)
	f("GET", "/api/v1/namespaces/default/nodes", 404)
	// Tricks, judged on the raw path.
	f("GET", "/api/v1/namespaces/default/%73ecrets", 400)
	f("GET", "/api/v1/namespaces/default/pods%2F..%2F..%2Fsecrets", 400)
	f("GET", "/api/v1/namespaces/default/pods/../secrets", 400)
	f("GET", "/api/v1/namespaces/default/pods/%2E%2E/secrets", 400)
	f("GET", "/api/v1/pods/..", 400)
	f("GET", "/api/v1/./secrets", 400)
	f("GET", "/api/v1//secrets", 400)
	f("GET", "/api/v1/pods/", 400)
	f("GET", "/api/v1/pods;/../secrets", 400)
	f("GET", `/api/v1\secrets`, 400)
	f("GET", "/api/v1/Secrets", 400)
	f("GET", "/api/v1/nodes/node-1/proxy/metrics/../../../pods", 400)
	f("GET", "/api/v1/nodes/node-1/proxy/metrics%2F..%2Fpods", 400)
	f("GET", "/api/v1/nodes/node-1/proxy//metrics", 400)
	f("GET", "/api/v1/namespaces/Default/pods", 400)
	// Methods on served paths.
	f("POST", "/api/v1/namespaces/default/pods", 405)
	f("DELETE", "/api/v1/namespaces/default/pods", 405)
	f("PUT", "/api/v1/nodes", 405)
	f("POST", "/api", 405)
	f("DELETE", "/version", 405)
	f("HEAD", "/api/v1/pods", 405)
	// Queries and encodings the API server refuses.
	f("GET", "/api/v1/pods?continue=abc", 400)
	f("GET", "/api/v1/pods?labelSelector=a%3D%3D%3Db", 400)
	f("GET", "/api/v1/pods?timeoutSeconds=x", 400)
	f("GET", "/api/v1/pods?watch=1&resourceVersionMatch=Exact&resourceVersion=1", 422)
	f("GET", "/api/v1/pods?sendInitialEvents=true", 422)
	f("GET", "/api/v1/pods", 406, "Accept: application/json;as=Table;v=v1;g=meta.k8s.io")
	f("GET", "/api/v1/pods", 406, "Accept: text/html")
	f("GET", "/api/v1/pods?watch=1", 406, "Accept: application/yaml")
	f("GET", "/api", 406, "Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")

	if got := fx.kubeletCalls(); got != kubeletCalls {
		t.Errorf("the kubelet got %d requests, want none", got-kubeletCalls)
	}
	if w := fx.upstreamWrites(); len(w) != 0 {
		t.Errorf("the gateway asked the API server for %v, want nothing but its informers' lists and watches", w)
	}
}

func TestKubeAPIDiscoveryDocumentsReadByClientGo(t *testing.T) {
	fx := startKubeAPIGateway(t, nil)
	for _, contentType := range []string{"", runtime.ContentTypeProtobuf} {
		dc, err := discovery.NewDiscoveryClientForConfig(fx.restConfig(contentType))
		if err != nil {
			t.Fatal(err)
		}
		v, err := dc.ServerVersion()
		if err != nil || v.GitVersion != "v1.36.3-upstream" {
			t.Errorf("%q: ServerVersion: %v %v, want the API server's", contentType, v, err)
		}
		groups, resources, err := dc.ServerGroupsAndResources()
		if err != nil {
			t.Fatalf("%q: ServerGroupsAndResources: %s", contentType, err)
		}
		var names []string
		for _, g := range groups {
			names = append(names, g.Name+"="+g.PreferredVersion.GroupVersion)
		}
		if got, want := strings.Join(names, ","), "=v1,discovery.k8s.io=discovery.k8s.io/v1"; got != want {
			t.Errorf("%q: groups %s, want %s", contentType, got, want)
		}
		var got []string
		for _, l := range resources {
			for _, r := range l.APIResources {
				got = append(got, fmt.Sprintf("%s %s %s/%s namespaced=%t %v", l.GroupVersion, r.Name, r.Kind, r.SingularName, r.Namespaced, r.Verbs))
			}
		}
		want := []string{
			"v1 pods Pod/pod namespaced=true [list watch]",
			"v1 nodes Node/node namespaced=false [list watch]",
			"v1 services Service/service namespaced=true [list watch]",
			"v1 endpoints Endpoints/endpoints namespaced=true [list watch]",
			"discovery.k8s.io/v1 endpointslices EndpointSlice/endpointslice namespaced=true [list watch]",
		}
		if !slices.Equal(got, want) {
			t.Errorf("%q: resources\n%s\nwant\n%s", contentType, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	r := get(t, fx.gw, "/api", "Authorization: Bearer "+kubeAPICallerToken)
	var versions metav1.APIVersions
	if err := json.Unmarshal([]byte(r.body), &versions); err != nil || versions.Kind != "APIVersions" ||
		len(versions.ServerAddressByClientCIDRs) != 1 || versions.ServerAddressByClientCIDRs[0].ServerAddress != fx.gw {
		t.Errorf("/api: %q (%v), want APIVersions with the gateway's address %s", r.body, err, fx.gw)
	}
	if w := fx.upstreamWrites(); !slices.Equal(w, []string{"get version"}) {
		t.Errorf("the gateway asked the API server for %v, want its version once", w)
	}
}

func TestKubeAPINeedsCallerAuth(t *testing.T) {
	fx := startKubeAPIGateway(t, nil)
	for _, target := range []string{"/version", "/api", "/apis", "/api/v1/pods", "/api/v1/pods?watch=1", "/api/v1/secrets", "/api/v1/nodes/node-1/proxy/metrics"} {
		if r := get(t, fx.gw, target); r.StatusCode != 401 {
			t.Errorf("%s without a token: %d %q, want 401", target, r.StatusCode, r.body)
		}
		if r := get(t, fx.gw, target, "Authorization: Bearer wrong"); r.StatusCode != 401 {
			t.Errorf("%s with a wrong token: %d %q, want 401", target, r.StatusCode, r.body)
		}
	}
	var se *apierrors.StatusError
	c := fx.clientset(t, "")
	if _, err := kubernetes.NewForConfigOrDie(&rest.Config{Host: "http://" + fx.gw}).CoreV1().Pods("").List(context.Background(), metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("client-go without a token: %v, want 401", err)
	}
	if _, err := c.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{}); err != nil {
		t.Errorf("client-go with the token: %v", err)
	}
	if _, err := c.CoreV1().Secrets("default").List(context.Background(), metav1.ListOptions{}); !errors.As(err, &se) || !apierrors.IsForbidden(err) {
		t.Errorf("client-go listing secrets: %v, want a 403 Status", err)
	}
	if n := fx.kubeletCalls(); n != 0 {
		t.Errorf("the kubelet got %d requests from callers without a token", n)
	}
}

func TestKubeAPINodeProxyAliasesReachTheKubelet(t *testing.T) {
	fx := startKubeAPIGateway(t, nil)
	auth := "Authorization: Bearer " + kubeAPICallerToken
	for _, path := range []string{"/metrics", "/metrics/cadvisor", "/metrics/resource", "/metrics/probes"} {
		r := get(t, fx.gw, "/api/v1/nodes/node-1/proxy"+path+"?a=b", auth)
		if want := "kubelet " + path + "?a=b\n"; r.StatusCode != 200 || r.body != want {
			t.Errorf("/api/v1/nodes/node-1/proxy%s: %d %q, want 200 %q", path, r.StatusCode, r.body, want)
		}
	}
	if got := fx.kubelet.lastAuth(); got != "Bearer kubelet-token" {
		t.Errorf("the kubelet got Authorization %q, want the gateway's kubelet token", got)
	}
	if r := get(t, fx.gw, "/api/v1/nodes/unknown/proxy/metrics", auth); r.StatusCode != 400 || !strings.Contains(r.body, `no node "unknown"`) {
		t.Errorf("an unknown node: %d %q, want the /nodes/ route's 400", r.StatusCode, r.body)
	}
	if v := metricValue(t, fx.g, `scrapegate_requests_total{route="node_proxy",code="200"}`); v != 4 {
		t.Errorf(`requests_total{route="node_proxy",code="200"} = %v, want 4`, v)
	}
}

func TestKubeAPIWatchFraming(t *testing.T) {
	fx := startKubeAPIGateway(t, nil)
	auth := "Authorization: Bearer " + kubeAPICallerToken
	f := func(accept, wantType string) {
		t.Helper()
		r := get(t, fx.gw, "/api/v1/pods?watch=1&timeoutSeconds=1", auth, "Accept: "+accept)
		if r.StatusCode != 200 || r.Header.Get("Content-Type") != wantType || !slices.Equal(r.TransferEncoding, []string{"chunked"}) {
			t.Errorf("Accept %s: %d %s %v %q, want 200 %s, chunked", accept, r.StatusCode, r.Header.Get("Content-Type"), r.TransferEncoding, r.body, wantType)
		}
	}
	// As the API server: only JSON watches have no stream=watch.
	f("application/vnd.kubernetes.protobuf, */*", "application/vnd.kubernetes.protobuf;stream=watch")
	f("application/json", "application/json")
	f("*/*", "application/json")
}

// kubeAPIObjects are one of each served resource.
func kubeAPIObjects() []runtime.Object {
	pod := podObject("a", "p", netip.MustParseAddrPort("127.0.0.4:9100"))
	pod.Labels = map[string]string{"app": "x"}
	return []runtime.Object{
		pod,
		podObject("b", "q", netip.MustParseAddrPort("127.0.0.5:9100")),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "s"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}},
		&corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "s"}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "s-1", Labels: map[string]string{discoveryv1.LabelServiceName: "s"}},
			AddressType: discoveryv1.AddressTypeIPv4},
	}
}

// Needs the discovery cache (gateway/kube/discovery_cache.go): the stub's
// lists are empty.
func TestKubeAPIListAndWatchThroughClientGo(t *testing.T) {
	fx := startKubeAPIGateway(t, nil, kubeAPIObjects()...)
	ctx := context.Background()
	for _, contentType := range []string{runtime.ContentTypeProtobuf, runtime.ContentTypeJSON} {
		c := fx.clientset(t, contentType)
		names := func(l runtime.Object, err error) string {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %s", contentType, err)
			}
			var out []string
			switch l := l.(type) {
			case *corev1.PodList:
				for _, o := range l.Items {
					out = append(out, o.Namespace+"/"+o.Name)
				}
			case *corev1.NodeList:
				for _, o := range l.Items {
					out = append(out, o.Name)
				}
			case *corev1.ServiceList:
				for _, o := range l.Items {
					out = append(out, o.Namespace+"/"+o.Name)
				}
			case *corev1.EndpointsList:
				for _, o := range l.Items {
					out = append(out, o.Namespace+"/"+o.Name)
				}
			case *discoveryv1.EndpointSliceList:
				for _, o := range l.Items {
					out = append(out, o.Namespace+"/"+o.Name)
				}
			}
			return strings.Join(out, ",")
		}
		f := func(got, want string) {
			t.Helper()
			if got != want {
				t.Errorf("%s: %s, want %s", contentType, got, want)
			}
		}
		f(names(c.CoreV1().Pods("").List(ctx, metav1.ListOptions{})), "a/p,b/q")
		f(names(c.CoreV1().Pods("a").List(ctx, metav1.ListOptions{})), "a/p")
		f(names(c.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app=x"})), "a/p")
		f(names(c.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "metadata.namespace=b"})), "b/q")
		f(names(c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})), "node-1")
		f(names(c.CoreV1().Services("a").List(ctx, metav1.ListOptions{})), "a/s")
		f(names(c.CoreV1().Endpoints("").List(ctx, metav1.ListOptions{})), "a/s")
		f(names(c.DiscoveryV1().EndpointSlices("a").List(ctx, metav1.ListOptions{})), "a/s-1")

	}
	for _, contentType := range []string{runtime.ContentTypeProtobuf, runtime.ContentTypeJSON} {
		c := fx.clientset(t, contentType)
		list, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w, err := c.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true})
		if err != nil {
			t.Fatalf("%s: watch: %s", contentType, err)
		}
		name := strings.NewReplacer("/", "-", ".", "-").Replace("new-" + contentType)
		if _, err := fx.client.CoreV1().Pods("a").Create(ctx, podObject("a", name, netip.MustParseAddrPort("127.0.0.6:9100")), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitForEvent(t, w, watch.Added, "a/"+name)
		w.Stop()

		// A watch from "" starts with every pod.
		w, err = c.CoreV1().Pods("b").Watch(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("%s: watch: %s", contentType, err)
		}
		waitForEvent(t, w, watch.Added, "b/q")
		w.Stop()
	}
}

// waitForEvent reads w until an event of type typ for the pod ns/name.
func waitForEvent(t *testing.T, w watch.Interface, typ watch.EventType, key string) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the watch ended before %s %s", typ, key)
			}
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == typ && p.Namespace+"/"+p.Name == key {
				return
			}
		case <-timeout:
			t.Fatalf("no %s %s within a minute", typ, key)
		}
	}
}

// Needs the discovery cache (gateway/kube/discovery_cache.go): the stub's
// watches end at once.
func TestKubeAPIWatchOutlivesWriteTimeoutAndEndsOnShutdown(t *testing.T) {
	const writeTimeout = 300 * time.Millisecond
	fx := startKubeAPIGateway(t, func(g *Gateway) { g.server.WriteTimeout = writeTimeout }, kubeAPIObjects()...)
	ctx := context.Background()
	c := fx.clientset(t, runtime.ContentTypeProtobuf)
	list, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	w, err := c.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// What is tested is time passing: a response the server's
	// WriteTimeout covered would be cut off by now.
	<-time.After(3*writeTimeout - time.Since(started))
	if _, err := fx.client.CoreV1().Pods("a").Create(ctx, podObject("a", "late", netip.MustParseAddrPort("127.0.0.7:9100")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForEvent(t, w, watch.Added, "a/late")

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := fx.g.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown with a watch open: %s", err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-w.ResultChan():
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the watch was still open 10s after Shutdown returned")
		}
	}
}

// The cache's refusals reach the caller as the API server's Status. Needs
// the discovery cache (gateway/kube/discovery_cache.go): the stub refuses
// nothing.
func TestKubeAPIPassesCacheErrorsAsStatus(t *testing.T) {
	fx := startKubeAPIGateway(t, nil)
	c := fx.clientset(t, runtime.ContentTypeProtobuf)
	_, err := c.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nonsense=1"})
	if !apierrors.IsBadRequest(err) {
		t.Errorf("an unsupported field selector: %v, want 400", err)
	}
	_, err = c.CoreV1().Pods("").Watch(context.Background(), metav1.ListOptions{ResourceVersion: "1"})
	if !apierrors.IsGone(err) && !apierrors.IsResourceExpired(err) {
		t.Errorf("a watch from resourceVersion 1: %v, want 410", err)
	}
	r := get(t, fx.gw, "/api/v1/pods?watch=1&resourceVersion=1", "Authorization: Bearer "+kubeAPICallerToken)
	if r.StatusCode != http.StatusGone {
		t.Errorf("raw watch from resourceVersion 1: %d %q, want 410", r.StatusCode, r.body)
	}
}

func (g *Gateway) openWatches() int {
	g.watches.mu.Lock()
	defer g.watches.mu.Unlock()
	return len(g.watches.watches)
}

// Needs the discovery cache (gateway/kube/discovery_cache.go): the stub's
// watches end at once.
func TestKubeAPIWatchEndsWhenTheCallerHangsUp(t *testing.T) {
	fx := startKubeAPIGateway(t, nil, kubeAPIObjects()...)
	conn := dialGateway(t, fx.gw)
	fmt.Fprintf(conn, "GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", kubeAPICallerToken)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("watch: %v %v", resp, err)
	}
	if n := fx.g.openWatches(); n != 1 {
		t.Fatalf("%d watches open, want 1", n)
	}
	conn.Close()
	testutil.WaitFor(t, "the watch to end with its caller", func() bool { return fx.g.openWatches() == 0 })
}

// Shutdown closes a TLS watch's TCP connection, not the tls.Conn, whose
// Close would first write close_notify to a caller that may not read.
func TestRawConnOfATLSWatchIsItsTCPConnection(t *testing.T) {
	tcp, peer := net.Pipe()
	defer peer.Close()
	if got := rawConn(tls.Server(tcp, &tls.Config{})); got != tcp {
		t.Errorf("rawConn of a tls.Conn is a %T, want the connection under it", got)
	}
	if got := rawConn(tcp); got != tcp {
		t.Errorf("rawConn of a plain connection is a %T, want itself", got)
	}
}
