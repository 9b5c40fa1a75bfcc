package main

// Stand-ins for exporters that cannot be built here (the module proxy
// refuses k8s.io/kube-state-metrics/v2 and github.com/brancz/kube-rbac-proxy):
// each does on the wire what the real one does, as far as a scrape through
// the gateway can tell.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// ksmEndMarker is the last series of a kube-state-metrics stand-in's body:
// a scrape that stored it got the whole body.
const ksmEndMarker = "kube_state_metrics_stand_in_end"

// ksmStandIn is a kube-state-metrics-shaped exporter: on /metrics, a large
// text exposition (tens of MB for a few tens of thousands of pods, as KSM
// gives on a big cluster) of kube_pod_* families, each with its HELP and
// TYPE, gzip-compressed when the request accepts gzip (KSM compresses
// whenever Accept-Encoding has gzip, which Prometheus always sends). The
// body is built once; KSM builds it from its informer cache on each scrape,
// which changes nothing on the wire. The last series is ksmEndMarker,
// labelled with the stand-in's name.
type ksmStandIn struct {
	name     string // namespace/pod of the exporter, on the marker series
	plain    []byte
	gzipped  []byte
	samples  int // series in the body, what Prometheus's scrape_samples_scraped counts
	requests atomic.Int64
	gzipReqs atomic.Int64
	// authorization is the last Authorization header a request carried
	// ("" for none): behind kube-rbac-proxy, never the caller's token.
	authorization atomic.Value
}

// newKSMStandIn builds the body of a kube-state-metrics for pods pods.
func newKSMStandIn(t *testing.T, name string, pods int) *ksmStandIn {
	t.Helper()
	var b bytes.Buffer
	samples := 0
	pod := func(i int) (ns, name, uid string) {
		return fmt.Sprintf("ns-%03d", i%200), fmt.Sprintf("app-%05d-7d9f8c6b5-x%04d", i/7, i%10000),
			fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
	}
	b.WriteString("# HELP kube_pod_info [STABLE] Information about pod.\n# TYPE kube_pod_info gauge\n")
	for i := range pods {
		ns, name, uid := pod(i)
		fmt.Fprintf(&b, "kube_pod_info{namespace=%q,pod=%q,uid=%q,host_ip=\"10.250.%d.%d\",pod_ip=\"10.244.%d.%d\",node=\"node-%03d\",created_by_kind=\"ReplicaSet\",created_by_name=%q,priority_class=\"\",host_network=\"false\"} 1\n",
			ns, name, uid, i/250%256, i%250+1, i/250%256, i%250+1, i%300, name[:len(name)-6])
		samples++
	}
	b.WriteString("# HELP kube_pod_status_phase [STABLE] The pods current phase.\n# TYPE kube_pod_status_phase gauge\n")
	for i := range pods {
		ns, name, uid := pod(i)
		for _, phase := range []string{"Pending", "Succeeded", "Failed", "Unknown", "Running"} {
			v := 0
			if phase == "Running" {
				v = 1
			}
			fmt.Fprintf(&b, "kube_pod_status_phase{namespace=%q,pod=%q,uid=%q,phase=%q} %d\n", ns, name, uid, phase, v)
			samples++
		}
	}
	b.WriteString("# HELP kube_pod_container_status_restarts_total [STABLE] The number of container restarts per container.\n# TYPE kube_pod_container_status_restarts_total counter\n")
	for i := range pods {
		ns, name, uid := pod(i)
		fmt.Fprintf(&b, "kube_pod_container_status_restarts_total{namespace=%q,pod=%q,uid=%q,container=\"app\"} %d\n", ns, name, uid, i%5)
		samples++
	}
	fmt.Fprintf(&b, "# HELP %s The last series of the stand-in's body.\n# TYPE %s gauge\n%s{exporter=%q} 1\n", ksmEndMarker, ksmEndMarker, ksmEndMarker, name)
	samples++
	k := &ksmStandIn{name: name, plain: b.Bytes(), samples: samples}
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	if _, err := zw.Write(k.plain); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	k.gzipped = z.Bytes()
	k.authorization.Store("")
	return k
}

func (k *ksmStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	k.requests.Add(1)
	k.authorization.Store(r.Header.Get("Authorization"))
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	body := k.plain
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		k.gzipReqs.Add(1)
		w.Header().Set("Content-Encoding", "gzip")
		body = k.gzipped
	}
	_, _ = w.Write(body)
}

// nodeExporterStandIn is a node-exporter-shaped exporter: node_* families on
// /metrics, plain text, and a node_uname_info naming its node.
type nodeExporterStandIn struct {
	node     string
	body     []byte
	requests atomic.Int64
}

func newNodeExporterStandIn(node string) *nodeExporterStandIn {
	var b bytes.Buffer
	b.WriteString("# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n# TYPE node_cpu_seconds_total counter\n")
	for cpu := range 2 {
		for _, mode := range []string{"idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"} {
			fmt.Fprintf(&b, "node_cpu_seconds_total{cpu=\"%d\",mode=%q} %d.25\n", cpu, mode, 1000+len(mode))
		}
	}
	b.WriteString("# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.\n# TYPE node_memory_MemAvailable_bytes gauge\nnode_memory_MemAvailable_bytes 4.294967296e+09\n")
	fmt.Fprintf(&b, "# HELP node_uname_info Labeled system information as provided by the uname system call.\n# TYPE node_uname_info gauge\n"+
		"node_uname_info{domainname=\"(none)\",machine=\"x86_64\",nodename=%q,release=\"6.1.0\",sysname=\"Linux\",version=\"#1 SMP\"} 1\n", node)
	return &nodeExporterStandIn{node: node, body: b.Bytes()}
}

func (n *nodeExporterStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	n.requests.Add(1)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(n.body)
}

// serveHTTP serves h on ln until the test ends.
func serveHTTP(t *testing.T, ln net.Listener, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// rbacProxyStandIn does what kube-rbac-proxy (v0.21, the delegating
// authenticator and the SubjectAccessReview authorizer, with no
// --config-file, no static authorization and no --allow-paths) does with a
// request, checked against its code:
//
//   - authentication (pkg/filters WithAuthentication, k8s.io/apiserver's
//     bearertoken and webhook token authenticators): the token of an
//     "Authorization: Bearer <token>" header (scheme case-insensitive, the
//     token non-empty) goes into a TokenReview (authentication.k8s.io/v1,
//     no audiences: the API server's own); no such header, a review that
//     fails or one that does not authenticate: 401 "Unauthorized".
//   - authorization (WithAuthorization, the default attributes of
//     pkg/proxy): a SubjectAccessReview with the reviewed user's name, UID,
//     groups and extra, for the non-resource URL that is the request's path
//     and the verb of its method (GET: get); a failed review: 500
//     "Authorization error (...)"; not allowed: 403 "Forbidden (user=...,
//     verb=..., resource=, subresource=)".
//   - else the request goes to its upstream (httputil.ReverseProxy),
//     without the Authorization header, which the bearer authenticator
//     removes once it has authenticated.
//
// Both reviews are made with the proxy's own ServiceAccount's token, which
// needs the system:auth-delegator ClusterRole (kube-rbac-proxy's README).
// Unlike kube-rbac-proxy it caches no review (it keeps allowed ones for 5
// minutes, denied ones 30 seconds, tokens 2 minutes): each request asks the
// API server, so every answer here is the API server's RBAC now.
type rbacProxyStandIn struct {
	addr     string // ip:port, https
	client   kubernetes.Interface
	upstream *httputil.ReverseProxy

	unauthorized, forbidden, allowed atomic.Int64
	mu                               sync.Mutex
	users                            map[string]int // allowed requests by user name
}

// startRBACProxyStandIn serves kube-rbac-proxy's checks on https at ln
// with a certificate of ca for ln's IP, in front of upstream (on
// 127.0.0.1, as a sidecar in the exporter's pod), reviewing with token.
func startRBACProxyStandIn(t *testing.T, k *kubeAPI, token string, ln net.Listener, ca *testutil.CA, upstream string) *rbacProxyStandIn {
	t.Helper()
	client, err := kubernetes.NewForConfig(k.restConfig(token))
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{Proxy: nil}
	p := &rbacProxyStandIn{addr: ln.Addr().String(), client: client, upstream: rp, users: map[string]int{}}
	ip := netip.MustParseAddrPort(p.addr).Addr()
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(discardWriter{}, "", 0)}
	tlsLn := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.IssueServer(t, nil, []netip.Addr{ip}).TLS}, MinVersion: tls.VersionTLS12})
	go func() { _ = srv.Serve(tlsLn) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// discardWriter drops a server's error log (failed handshakes of probes).
type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// bearerToken returns the token of an Authorization header as
// k8s.io/apiserver's bearertoken authenticator reads it.
func bearerToken(header string) (string, bool) {
	auth := strings.TrimSpace(header)
	if auth == "" {
		return "", false
	}
	parts := strings.SplitN(auth, " ", 3)
	if len(parts) < 2 || strings.ToLower(parts[0]) != "bearer" {
		return "", false
	}
	return parts[1], parts[1] != ""
}

func (p *rbacProxyStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	token, ok := bearerToken(r.Header.Get("Authorization"))
	var review *authenticationv1.TokenReview
	if ok {
		var err error
		review, err = p.client.AuthenticationV1().TokenReviews().Create(ctx,
			&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
		ok = err == nil && review.Status.Authenticated
	}
	if !ok {
		p.unauthorized.Add(1)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	user := review.Status.User
	verb := map[string]string{http.MethodPost: "create", http.MethodGet: "get", http.MethodPut: "update",
		http.MethodPatch: "patch", http.MethodDelete: "delete"}[r.Method]
	if verb == "" {
		verb = "*"
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := p.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: r.URL.Path, Verb: verb},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		http.Error(w, fmt.Sprintf("Authorization error (user=%s, verb=%s, resource=, subresource=)", user.Username, verb), http.StatusInternalServerError)
		return
	}
	if !sar.Status.Allowed {
		p.forbidden.Add(1)
		http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=, subresource=)", user.Username, verb), http.StatusForbidden)
		return
	}
	p.allowed.Add(1)
	p.mu.Lock()
	p.users[user.Username]++
	p.mu.Unlock()
	r.Header.Del("Authorization")
	p.upstream.ServeHTTP(w, r)
}

// allowedUsers returns how many requests it let through, by user.
func (p *rbacProxyStandIn) allowedUsers() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.users))
	for u, n := range p.users {
		m[u] = n
	}
	return m
}

// rbacProxyAccount creates the ServiceAccount namespace/name that an
// rbac proxy stand-in runs as, binds it to system:auth-delegator as
// kube-rbac-proxy's README says, and returns a token for it.
func rbacProxyAccount(t *testing.T, k *kubeAPI, namespace, name string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := k.client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("cannot create ServiceAccount %s/%s: %v", namespace, name, err)
	}
	if _, err := k.client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: namespace + "-" + name + "-auth-delegator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: namespace}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("cannot bind %s/%s to system:auth-delegator: %v", namespace, name, err)
	}
	return k.serviceAccountToken(t, namespace, name)
}
