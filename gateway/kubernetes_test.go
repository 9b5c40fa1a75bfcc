package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// kubeConfig is testConfig with -kubernetes and neither the kubelet proxy
// nor the API server proxy.
func kubeConfig() Config {
	cfg := testConfig()
	cfg.Kubernetes = true
	cfg.KubeletTokenFile = ""
	cfg.KubeletCAFile = ""
	cfg.ControlPlaneTokenFile = ""
	cfg.ControlPlaneCAFile = ""
	return cfg
}

// startKubeGateway serves a gateway watching client, once its informers
// have synced.
func startKubeGateway(t *testing.T, cfg Config, client *fake.Clientset) (*Gateway, string) {
	t.Helper()
	g, err := newGateway(cfg, zerolog.Nop(), client)
	if err != nil {
		t.Fatalf("newGateway: %s", err)
	}
	addr := serveGateway(t, g)
	testutil.WaitFor(t, "the informers to sync", g.kube.cluster.Synced)
	return g, addr
}

// podObject is a running pod at addr declaring its port.
func podObject(ns, name string, addr netip.AddrPort, annotations ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{
			Name: "app", Ports: []corev1.ContainerPort{{ContainerPort: int32(addr.Port())}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: addr.Addr().String(),
			PodIPs: []corev1.PodIP{{IP: addr.Addr().String()}}},
	}
	for i := 0; i+1 < len(annotations); i += 2 {
		p.Annotations[annotations[i]] = annotations[i+1]
	}
	return p
}

// checkGet returns a check that GET target, with headerLines, answers want
// with a body containing wantBody.
func checkGet(t *testing.T, gw string, headerLines ...string) func(target string, want int, wantBody string) {
	return func(target string, want int, wantBody string) {
		t.Helper()
		if r := get(t, gw, target, headerLines...); r.StatusCode != want || !strings.Contains(r.body, wantBody) {
			t.Errorf("%s: %d %q, want %d with %q", target, r.StatusCode, r.body, want, wantBody)
		}
	}
}

func okHandler(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }
}

func TestKubernetesPolicyAllowsOnlyLivePods(t *testing.T) {
	member := startPod(t, "127.0.0.1", okHandler("member"))
	stranger := startPod(t, "127.0.0.2", okHandler("stranger"))
	client := fake.NewClientset(podObject("a", "member", member.addr))
	g, gw := startKubeGateway(t, kubeConfig(), client)

	if r := get(t, gw, member.podPath("/metrics")); r.StatusCode != 200 || r.body != "member" {
		t.Fatalf("a live pod: %d %q, want 200 member", r.StatusCode, r.body)
	}
	f := func(target, why string) {
		t.Helper()
		if r := get(t, gw, target); r.StatusCode != 403 || !strings.Contains(r.body, "-target-policy=kubernetes") {
			t.Errorf("%s (%s): %d %q, want 403 naming -target-policy=kubernetes", target, why, r.StatusCode, r.body)
		}
	}
	f(stranger.podPath("/metrics"), "not a pod")
	f(fmt.Sprintf("http://%s/metrics", stranger.addr), "not a pod, proxy form")
	f(fmt.Sprintf("/pods/%s/%d/metrics", member.addr.Addr(), member.addr.Port()+1), "a port the pod does not declare")
	if n := stranger.conns.Load(); n != 0 {
		t.Errorf("the gateway connected to a non-pod %d times", n)
	}

	if err := client.CoreV1().Pods("a").Delete(context.Background(), "member", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the deleted pod to be refused", func() bool { return get(t, gw, member.podPath("/metrics")).StatusCode == 403 })
	if v := metricValue(t, g, `scrapegate_rejected_requests_total{reason="forbidden"}`); v < 4 {
		t.Errorf("forbidden counter = %v, want at least 4", v)
	}
}

// logWatcher is a log sink that closes seen at the first line holding every
// one of want.
type logWatcher struct {
	want [][]byte
	seen chan struct{}
	once sync.Once
}

func (w *logWatcher) Write(p []byte) (int, error) {
	for _, s := range w.want {
		if !bytes.Contains(p, s) {
			return len(p), nil
		}
	}
	w.once.Do(func() { close(w.seen) })
	return len(p), nil
}

func TestReadyzSaysWhyTheInformersHaveNotSynced(t *testing.T) {
	apiServer := "http://" + testutil.FreeAddr(t, "127.0.0.1").String() // nothing listens there: every request is refused
	client, err := kubernetes.NewForConfig(&rest.Config{Host: apiServer})
	if err != nil {
		t.Fatal(err)
	}
	// The pods of every namespace, not those of kube-system that the
	// components' informer lists.
	failed := &logWatcher{want: [][]byte{[]byte(`"level":"warn"`), []byte(`"resource":"pods"`), []byte(`cannot list pods from the Kubernetes API server`)},
		seen: make(chan struct{})}
	g, err := newGateway(kubeConfig(), zerolog.New(failed), client)
	if err != nil {
		t.Fatal(err)
	}
	gw := serveGateway(t, g)
	select {
	case <-failed.seen:
	case <-time.After(time.Minute):
		t.Fatal("no warning about listing pods within a minute")
	}
	want := "waiting for the Kubernetes informers to sync: cannot list pods from " + apiServer +
		": dial tcp " + strings.TrimPrefix(apiServer, "http://") + ": connect: connection refused\n"
	if r := get(t, gw, "/readyz"); r.StatusCode != 503 || r.body != want {
		t.Errorf("/readyz with the API server unreachable: %d %q; want 503 %q", r.StatusCode, r.body, want)
	}
}

func TestCIDRPolicyWithKubernetes(t *testing.T) {
	stranger := startPod(t, "127.0.0.2", okHandler("stranger"))
	cfg := kubeConfig()
	cfg.TargetPolicy = TargetPolicyCIDR
	_, gw := startKubeGateway(t, cfg, fake.NewClientset())
	if r := get(t, gw, stranger.podPath("/metrics")); r.StatusCode != 200 {
		t.Errorf("-target-policy=cidr with -kubernetes: %d %q, want 200", r.StatusCode, r.body)
	}
}

func TestNotReadyUntilInformersSync(t *testing.T) {
	client := fake.NewClientset(podObject("a", "p", netip.MustParseAddrPort("127.0.0.9:9100"), "prometheus.io/scrape", "true"))
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		<-release // the API server is slow to answer the first list
		return false, nil, nil
	})
	g, err := newGateway(kubeConfig(), zerolog.Nop(), client)
	if err != nil {
		t.Fatal(err)
	}
	gw := serveGateway(t, g)
	if r := get(t, gw, "/readyz"); r.StatusCode != 503 || !strings.Contains(r.body, "informers") {
		t.Errorf("/readyz before sync: %d %q, want 503 about the informers", r.StatusCode, r.body)
	}
	if r := get(t, gw, "/sd/pods"); r.StatusCode != 503 {
		t.Errorf("/sd/pods before sync: %d %q, want 503 (an empty list would drop every target)", r.StatusCode, r.body)
	}
	// Not a 403: the pod may well exist, the gateway does not know yet.
	if r := get(t, gw, "/pods/127.0.0.9/9100/metrics"); r.StatusCode != 503 || r.Header.Get("Retry-After") == "" || !strings.Contains(r.body, "not synced") {
		t.Errorf("a pod before sync: %d %q, want 503 with Retry-After", r.StatusCode, r.body)
	}
	if v := metricValue(t, g, `scrapegate_rejected_requests_total{reason="not_synced"}`); v != 1 {
		t.Errorf(`rejected_requests_total{reason="not_synced"} = %v, want 1`, v)
	}
	if v := metricValue(t, g, "scrapegate_kubernetes_synced"); v != 0 {
		t.Errorf("scrapegate_kubernetes_synced = %v before sync", v)
	}
	once.Do(func() { close(release) })
	testutil.WaitFor(t, "/readyz to turn 200", func() bool { return get(t, gw, "/readyz").StatusCode == 200 })
	if v := metricValue(t, g, "scrapegate_kubernetes_synced"); v != 1 {
		t.Errorf("scrapegate_kubernetes_synced = %v after sync", v)
	}
	if v := metricValue(t, g, `scrapegate_kubernetes_objects{resource="pods"}`); v != 1 {
		t.Errorf(`scrapegate_kubernetes_objects{resource="pods"} = %v, want 1`, v)
	}
}

func TestServiceDiscoveryRoutes(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	testutil.WriteFile(t, tokens, []byte("secret-token\n"))
	cfg := kubeConfig()
	cfg.AuthBearerTokensFile = tokens
	client := fake.NewClientset(podObject("a", "p", netip.MustParseAddrPort("10.0.0.1:9100"), "prometheus.io/scrape", "true"))
	_, gw := startKubeGateway(t, cfg, client)
	auth := "Authorization: Bearer secret-token"

	if r := get(t, gw, "/sd/pods"); r.StatusCode != 401 {
		t.Errorf("/sd/pods without credentials: %d, want 401", r.StatusCode)
	}
	r := get(t, gw, "/sd/pods", auth)
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/sd/pods: %d %q %q", r.StatusCode, r.Header.Get("Content-Type"), r.body)
	}
	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(r.body), &groups); err != nil {
		t.Fatal(err)
	}
	// rawGet sends Host: <gateway address>, as Prometheus does.
	if len(groups) != 1 || groups[0].Targets[0] != gw || groups[0].Labels["__metrics_path__"] != "/pods/10.0.0.1/9100/metrics" {
		t.Errorf("/sd/pods: %s", r.body)
	}
	etag := r.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if r := get(t, gw, "/sd/pods", auth, "If-None-Match: "+etag); r.StatusCode != 304 || r.body != "" {
		t.Errorf("If-None-Match with the current ETag: %d %q, want 304 and no body", r.StatusCode, r.body)
	}
	if r := get(t, gw, "/sd/pods", auth, `If-None-Match: "other", `+strings.TrimPrefix(etag, "W/")); r.StatusCode != 304 {
		t.Errorf("If-None-Match with a list holding the ETag: %d, want 304", r.StatusCode)
	}
	gz := get(t, gw, "/sd/pods", auth, "Accept-Encoding: gzip")
	if gz.Header.Get("Content-Encoding") != "gzip" || gz.Header.Get("ETag") != etag {
		t.Errorf("gzip: Content-Encoding %q, ETag %q", gz.Header.Get("Content-Encoding"), gz.Header.Get("ETag"))
	}
	zr, err := gzip.NewReader(strings.NewReader(gz.body))
	if err != nil {
		t.Fatal(err)
	}
	if unzipped, _ := io.ReadAll(zr); !bytes.Equal(unzipped, []byte(r.body)) {
		t.Errorf("the gzipped document differs: %s", unzipped)
	}

	if _, err := client.CoreV1().Pods("a").Create(context.Background(),
		podObject("a", "q", netip.MustParseAddrPort("10.0.0.2:9100"), "prometheus.io/scrape", "true"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the new pod to change the ETag", func() bool {
		r := get(t, gw, "/sd/pods", auth, "If-None-Match: "+etag)
		return r.StatusCode == 200 && r.Header.Get("ETag") != etag && strings.Contains(r.body, "10.0.0.2")
	})

	f := checkGet(t, gw, auth)
	f("/sd/pods?role=pod", 400, "unknown parameter")
	f("/sd/nodes?path=/configz", 400, "path must be one of")
	f("/sd/services", 404, "/sd/pods, /sd/nodes, /sd/endpoints or /sd/control-plane")
	f("/sd/nodes", 200, "[]")
	if r := rawGet(t, gw, "POST", "/sd/pods", auth, "Content-Length: 0"); r.StatusCode != 405 {
		t.Errorf("POST /sd/pods: %d, want 405", r.StatusCode)
	}
}

func TestAdvertiseAddress(t *testing.T) {
	cfg := kubeConfig()
	cfg.AdvertiseAddress = "scrapegate.example:31000"
	gwCert := testutil.NewCA(t, "gateway CA").IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	cfg.TLSCertFile, cfg.TLSKeyFile = gwCert.CertFile, gwCert.KeyFile
	client := fake.NewClientset(podObject("a", "p", netip.MustParseAddrPort("10.0.0.1:9100"), "prometheus.io/scrape", "true"))
	_, gw := startKubeGateway(t, cfg, client)
	status, body, err := tlsGet(t, gw, &tls.Config{InsecureSkipVerify: true}, "/sd/pods")
	if err != nil || status != 200 {
		t.Fatalf("/sd/pods: %d %v", status, err)
	}
	if !strings.Contains(body, `"targets":["scrapegate.example:31000"]`) || !strings.Contains(body, `"__scheme__":"https"`) {
		t.Errorf("/sd/pods does not advertise -advertise-address over https: %s", body)
	}
}

func TestKubernetesRoutesNeedKubernetes(t *testing.T) {
	_, gw := startGateway(t, testConfig())
	for _, target := range []string{"/sd/pods", "/nodes/node-1/metrics"} {
		if r := get(t, gw, target); r.StatusCode == 200 || !strings.Contains(r.body, "-kubernetes") {
			t.Errorf("%s without -kubernetes: %d %q, want an error naming -kubernetes", target, r.StatusCode, r.body)
		}
	}
}

// fakeKubelet is an https server on ip that records the Authorization
// header of every request.
type fakeKubelet struct {
	addr    netip.AddrPort
	mu      sync.Mutex
	auth    []string
	headers http.Header // of the last request
}

func startFakeKubelet(t *testing.T, ca *testutil.CA, ip string) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{}
	leaf := ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr(ip)})
	ln, err := tls.Listen("tcp", net.JoinHostPort(ip, "0"), &tls.Config{Certificates: []tls.Certificate{leaf.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	k.addr = netip.MustParseAddrPort(ln.Addr().String())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		k.auth = append(k.auth, r.Header.Get("Authorization"))
		k.headers = r.Header.Clone()
		k.mu.Unlock()
		fmt.Fprintf(w, "kubelet %s\n", r.URL.RequestURI())
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return k
}

func (k *fakeKubelet) lastAuth() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.auth) == 0 {
		return ""
	}
	return k.auth[len(k.auth)-1]
}

func nodeObject(name string, kubelet netip.AddrPort) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: kubelet.Addr().String()}}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(kubelet.Port())
	return n
}

func TestKubeletProxy(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	kubelet := startFakeKubelet(t, ca, "127.0.0.3")
	otherCA := testutil.NewCA(t, "other CA")
	untrusted := startFakeKubelet(t, otherCA, "127.0.0.5")
	denied := startFakeKubelet(t, ca, "127.0.0.6")
	var podAuth sync.Map
	pod := startPod(t, "127.0.0.4", func(w http.ResponseWriter, r *http.Request) {
		podAuth.Store(r.Header.Get("Authorization"), true)
		io.WriteString(w, "pod")
	})

	dir := t.TempDir()
	tokenFile, tokens := filepath.Join(dir, "token"), filepath.Join(dir, "tokens")
	testutil.WriteFile(t, tokenFile, []byte("kubelet-token-1\n"))
	testutil.WriteFile(t, tokens, []byte("caller-token\n"))
	cfg := kubeConfig()
	cfg.KubeletTokenFile = tokenFile
	cfg.KubeletCAFile = testutil.WriteCABundle(t, ca)
	cfg.AuthBearerTokensFile = tokens
	cfg.DenyCIDRs = mustParsePrefixes("127.0.0.6/32")
	client := fake.NewClientset(nodeObject("node-1", kubelet.addr), nodeObject("node-x", untrusted.addr),
		nodeObject("node-denied", denied.addr), nodeObject("node-outside", netip.MustParseAddrPort("203.0.113.9:10250")),
		podObject("a", "p", pod.addr))
	g, gw := startKubeGateway(t, cfg, client)
	auth := "Authorization: Bearer caller-token"

	for _, path := range []string{"/metrics", "/metrics/cadvisor", "/metrics/resource", "/metrics/probes"} {
		r := get(t, gw, "/nodes/node-1"+path, auth)
		if r.StatusCode != 200 || r.body != "kubelet "+path+"\n" {
			t.Errorf("/nodes/node-1%s: %d %q", path, r.StatusCode, r.body)
		}
	}
	if got := kubelet.lastAuth(); got != "Bearer kubelet-token-1" {
		t.Errorf("the kubelet got Authorization %q, want the gateway's token (never the caller's)", got)
	}

	// Only a scrape's own headers go with the token: the Kubernetes
	// authentication stack acts on others, such as Impersonate-User.
	r := get(t, gw, "/nodes/node-1/metrics", auth, "Accept: text/plain", "User-Agent: Prometheus/3.15",
		"X-Prometheus-Scrape-Timeout-Seconds: 10", "Accept-Encoding: gzip", "Impersonate-User: system:admin", "Impersonate-Group: system:masters",
		"X-Remote-User: admin", "Cookie: c=1")
	if r.StatusCode != 200 {
		t.Fatalf("/nodes/node-1/metrics with extra headers: %d %q", r.StatusCode, r.body)
	}
	kubelet.mu.Lock()
	var names []string
	for name := range kubelet.headers {
		names = append(names, name)
	}
	kubelet.mu.Unlock()
	slices.Sort(names)
	if got, want := strings.Join(names, ","), "Accept,Accept-Encoding,Authorization,User-Agent,Via,X-Prometheus-Scrape-Timeout-Seconds"; got != want {
		t.Errorf("the kubelet got headers %s, want %s", got, want)
	}

	// The token never goes to a pod, not even through the same gateway.
	if r := get(t, gw, pod.podPath("/metrics"), auth); r.StatusCode != 200 {
		t.Fatalf("pod: %d %q", r.StatusCode, r.body)
	}
	podAuth.Range(func(k, _ any) bool {
		if k.(string) != "" {
			t.Errorf("a pod got Authorization %q", k)
		}
		return true
	})

	f := checkGet(t, gw, auth)
	f("/nodes/node-1/configz", 400, "must be one of")
	f("/nodes/node-1/pods", 400, "must be one of")
	f("/nodes/node-1/metrics/../pods", 400, "must be one of")
	f("/nodes/node-1/metrics/", 400, "must be one of")
	f("/nodes/node-1", 400, "want /nodes/{node}/{path}")
	f("/nodes/unknown/metrics", 400, `no node "unknown"`)
	// A node writes its own addresses: the CIDR rules keep the token
	// where targets may go.
	f("/nodes/node-denied/metrics", 403, "-deny-cidrs")
	f("/nodes/node-outside/metrics", 403, "not allowed")
	if got := denied.lastAuth(); got != "" {
		t.Errorf("a kubelet in -deny-cidrs got %q", got)
	}
	f("/nodes/node-x/metrics", 502, "") // its certificate is not the cluster CA's
	if v := metricValue(t, g, `scrapegate_upstream_errors_total{reason="tls_failed"}`); v != 1 {
		t.Errorf("tls_failed = %v, want 1", v)
	}
	if r := get(t, gw, "/nodes/node-1/metrics"); r.StatusCode != 401 {
		t.Errorf("/nodes/ without the caller's credentials: %d, want 401", r.StatusCode)
	}

	// Projected tokens rotate: the next scrape carries the new one.
	testutil.WriteFile(t, tokenFile, []byte("kubelet-token-2"))
	g.reloadAll()
	f("/nodes/node-1/metrics", 200, "kubelet /metrics")
	if got := kubelet.lastAuth(); got != "Bearer kubelet-token-2" {
		t.Errorf("after rotation the kubelet got %q", got)
	}
}

func TestKubeletProxyOffWithoutToken(t *testing.T) {
	kubelet := netip.MustParseAddrPort("127.0.0.3:10250")
	_, gw := startKubeGateway(t, kubeConfig(), fake.NewClientset(nodeObject("node-1", kubelet)))
	if r := get(t, gw, "/nodes/node-1/metrics"); r.StatusCode != 400 || !strings.Contains(r.body, "-kubelet-token-file") {
		t.Errorf("/nodes/ without -kubelet-token-file: %d %q", r.StatusCode, r.body)
	}
}
