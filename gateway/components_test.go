package gateway

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rs/zerolog"
	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/internal/testutil"
)

// componentPod is a Running pod of component (its kubeadm labels: the
// static pods' component and tier, kube-proxy's k8s-app) in namespace ns,
// bound to node, on the node's network at ip.
func componentPod(ns, component, node string, ip netip.Addr, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := podObject(ns, component+"-"+node, netip.AddrPortFrom(ip, 1))
	p.Labels = map[string]string{"component": component, "tier": "control-plane"}
	if component == "kube-proxy" {
		p.Labels = map[string]string{"k8s-app": "kube-proxy"}
	}
	p.Spec.NodeName, p.Spec.HostNetwork = node, true
	for _, m := range mutate {
		m(p)
	}
	return p
}

// nodeAt is a node with InternalIP ip.
func nodeAt(name, ip string) *corev1.Node {
	return nodeObject(name, netip.AddrPortFrom(netip.MustParseAddr(ip), 10250))
}

// controlPlaneNodeAt is a node with InternalIP ip, labelled as kubeadm
// labels the control-plane nodes (-control-plane-node-selector's default).
func controlPlaneNodeAt(name, ip string) *corev1.Node {
	n := nodeAt(name, ip)
	n.Labels = map[string]string{kube.DefaultControlPlaneNodeSelector: ""}
	return n
}

// withPodIP gives a pod another status.podIP than its node's, as its
// kubelet may write.
func withPodIP(ip string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	}
}

// recordingPod is a plain http stand-in for etcd, kube-proxy or a node
// agent: it records the path and Authorization header of each request.
type recordingPod struct {
	*testPod
	mu   sync.Mutex
	seen []string // "path auth"
}

func startRecordingPod(t *testing.T, addr string) *recordingPod {
	t.Helper()
	r := &recordingPod{}
	ip, port, _ := net.SplitHostPort(addr)
	h := func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen = append(r.seen, req.URL.RequestURI()+" "+req.Header.Get("Authorization"))
		r.mu.Unlock()
		w.Write([]byte("up 1\n"))
	}
	if port == "0" {
		r.testPod = startPod(t, ip, h)
		return r
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen on %s, the port the components share: %s", addr, err)
	}
	r.testPod = &testPod{addr: netip.MustParseAddrPort(ln.Addr().String())}
	srv := &http.Server{Handler: http.HandlerFunc(h)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *recordingPod) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// canaryAt counts the connections to ip:port, where nothing may connect.
func canaryAt(t *testing.T, ip string, port uint16) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	addr := net.JoinHostPort(ip, itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen on %s, the port the components share: %s", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return &n
}

// componentsConfig is apiServerConfig with the components' ports.
func componentsConfig(t *testing.T, ca *testutil.CA, scheduler, controllerManager, etcd, proxy uint16) Config {
	cfg := apiServerConfig(t, ca, testutil.TempFile(t, "control-plane-token", []byte("cp-token\n")))
	cfg.KubeSchedulerPort, cfg.KubeControllerManagerPort, cfg.EtcdPort, cfg.KubeProxyPort = scheduler, controllerManager, etcd, proxy
	return cfg
}

// startComponentsGateway is startKubeGateway once the components' pods
// are listed too.
func startComponentsGateway(t *testing.T, cfg Config, objects ...runtime.Object) (*Gateway, string) {
	t.Helper()
	g, gw := startKubeGateway(t, cfg, fake.NewClientset(objects...))
	testutil.WaitFor(t, "the components' pods to be listed", g.kube.cluster.ComponentsSynced)
	return g, gw
}

// TestComponents: each component is scraped at its Running pod in
// kube-system on the node named, the https ones with the control-plane
// token and their certificate verified for their IP, the http ones with
// no token; nothing is dialled for a node, pod or path that is not one.
func TestComponents(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	cp1 := netip.MustParseAddr("127.0.0.31")
	serving := ca.IssueServer(t, nil, []netip.Addr{cp1}).TLS
	scheduler := testutil.StartTLSPod(t, "127.0.0.31:0", serving, nil)
	schedulerPort := netip.MustParseAddrPort(scheduler.Addr).Port()
	controllerManager := testutil.StartTLSPod(t, "127.0.0.31:0", serving, nil)
	kcmPort := netip.MustParseAddrPort(controllerManager.Addr).Port()
	etcd := startRecordingPod(t, "127.0.0.31:0")
	proxy := startRecordingPod(t, "127.0.0.32:0")
	// A controller-manager bound to 127.0.0.1 only, as kubeadm binds it,
	// on a node whose address is 127.0.0.35.
	loopbackOnly := startRecordingPod(t, "127.0.0.1:"+itoa(kcmPort))
	// A scheduler whose self-signed certificate the cluster CA cannot verify.
	selfSigned := testutil.StartTLSPod(t, "127.0.0.41:"+itoa(schedulerPort),
		testutil.NewCA(t, "kube-scheduler self-signed").IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.41")}).TLS, nil)
	// Where the scheduler's token must never go, at the scheduler's port.
	canaries := map[string]*atomic.Int32{
		"worker-1, which is no control-plane node":    canaryAt(t, "127.0.0.32", schedulerPort),
		"another namespace's scheduler-like pod":      canaryAt(t, "127.0.0.33", schedulerPort),
		"cp-2, whose scheduler is Pending":            canaryAt(t, "127.0.0.34", schedulerPort),
		"cp-4, which runs nothing":                    canaryAt(t, "127.0.0.36", schedulerPort),
		"cp-6, whose scheduler is on the pod network": canaryAt(t, "127.0.0.37", schedulerPort),
		"the pod IP of cp-6's scheduler":              canaryAt(t, "127.0.0.38", schedulerPort),
		"the pod IP cp-1's controller-manager claims": canaryAt(t, "127.0.0.39", kcmPort),
	}

	cfg := componentsConfig(t, ca, schedulerPort, kcmPort, etcd.addr.Port(), proxy.addr.Port())
	g, gw := startComponentsGateway(t, cfg,
		controlPlaneNodeAt("cp-1", "127.0.0.31"), nodeAt("worker-1", "127.0.0.32"), controlPlaneNodeAt("cp-2", "127.0.0.34"),
		controlPlaneNodeAt("cp-3", "127.0.0.35"), controlPlaneNodeAt("cp-4", "127.0.0.36"), controlPlaneNodeAt("cp-5", "127.0.0.41"),
		controlPlaneNodeAt("cp-6", "127.0.0.37"),
		componentPod("kube-system", "kube-scheduler", "cp-1", cp1),
		// Its kubelet writes the status: the node's address is dialled.
		componentPod("kube-system", "kube-controller-manager", "cp-1", cp1, withPodIP("127.0.0.39")),
		componentPod("kube-system", "etcd", "cp-1", cp1),
		componentPod("kube-system", "kube-proxy", "worker-1", netip.MustParseAddr("127.0.0.32")),
		// A mirror pod worker-1's kubelet may create, bound to itself.
		componentPod("kube-system", "kube-scheduler", "worker-1", netip.MustParseAddr("127.0.0.32")),
		componentPod("kube-system", "kube-scheduler", "cp-2", netip.MustParseAddr("127.0.0.34"),
			func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
		componentPod("apps", "kube-scheduler", "cp-4", netip.MustParseAddr("127.0.0.33"),
			func(p *corev1.Pod) { p.Spec.HostNetwork = false }),
		componentPod("kube-system", "kube-scheduler", "cp-6", netip.MustParseAddr("127.0.0.38"),
			func(p *corev1.Pod) { p.Spec.HostNetwork = false }),
		componentPod("kube-system", "kube-controller-manager", "cp-3", netip.MustParseAddr("127.0.0.35")),
		componentPod("kube-system", "kube-scheduler", "cp-5", netip.MustParseAddr("127.0.0.41")),
	)
	f := checkGet(t, gw, "Authorization: Bearer caller-token")

	f("/components/kube-scheduler/cp-1/metrics", 200, "up 1")
	if got := scheduler.LastAuthorization(t); got != "Bearer cp-token" {
		t.Errorf("the scheduler got Authorization %q, want the control-plane token", got)
	}
	f("/components/kube-scheduler/cp-1/metrics/slis?x=1", 200, "up 1")
	f("/components/kube-controller-manager/cp-1/metrics", 200, "up 1")
	if got := controllerManager.LastAuthorization(t); got != "Bearer cp-token" {
		t.Errorf("the controller-manager got Authorization %q, want the control-plane token", got)
	}
	f("/components/etcd/cp-1/metrics", 200, "up 1")
	f("/components/kube-proxy/worker-1/metrics", 200, "up 1")
	for name, p := range map[string]*recordingPod{"etcd": etcd, "kube-proxy": proxy} {
		if got := p.requests(); len(got) != 1 || got[0] != "/metrics " {
			t.Errorf("%s got %q, want one GET /metrics without Authorization", name, got)
		}
	}

	// What must never be scraped, and the token never sent to.
	f("/components/kube-scheduler/worker-1/metrics", 404,
		"node worker-1 is not a control-plane node (its labels do not match -control-plane-node-selector node-role.kubernetes.io/control-plane)")
	f("/components/kube-scheduler/cp-4/metrics", 404, "no pod of kube-scheduler (labelled component=kube-scheduler,tier=control-plane in namespace kube-system) runs on node cp-4")
	f("/components/kube-scheduler/cp-6/metrics", 404, "the pod kube-system/kube-scheduler-cp-6 of kube-scheduler on node cp-6 is not a host-network pod")
	f("/components/kube-scheduler/cp-2/metrics", 503, "is Pending, not Running")
	f("/components/kube-scheduler/nowhere/metrics", 404, `no node "nowhere" with an InternalIP is known`)
	f("/components/kube-scheduler/127.0.0.31/metrics", 404, "unknown_component")
	f("/components/kube-apiserver/cp-1/metrics", 400, "the component must be one of kube-scheduler, kube-controller-manager, etcd, kube-proxy")
	before := scheduler.Requests()
	for _, p := range []string{"/configz", "/debug/pprof/", "/metrics/", "/metrics/../configz", "/metrics/%2e%2e/configz", "/Metrics", "//metrics", "/metrics;x"} {
		f("/components/kube-scheduler/cp-1"+p, 400, "the kube-scheduler path must be one of /metrics, /metrics/slis")
	}
	f("/components/etcd/cp-1/metrics/slis", 400, "the etcd path must be one of /metrics")
	f("/components/kube-scheduler/cp-1", 400, "want /components/{component}/{node}/{path}")
	f("/components/kube-scheduler//metrics", 400, "want /components/{component}/{node}/{path}")
	if got := scheduler.Requests(); got != before {
		t.Errorf("refused paths reached the scheduler: %d requests, want %d", got, before)
	}
	for name, n := range canaries {
		if got := n.Load(); got != 0 {
			t.Errorf("%s got %d connections, want none", name, got)
		}
	}

	// kubeadm's 127.0.0.1: refused, and the answer says why and what to do.
	f("/components/kube-controller-manager/cp-3/metrics", 502,
		"kube-controller-manager on node cp-3 refused 127.0.0.35:"+itoa(kcmPort)+": it may listen on 127.0.0.1 only (kubeadm's default bind address); "+
			"bind it to the node's address, or run the node agent and set -node-agent-port")
	if got := loopbackOnly.requests(); len(got) != 0 {
		t.Errorf("the controller-manager on 127.0.0.1 got %q", got)
	}
	// A certificate the cluster CA did not sign gets no request.
	f("/components/kube-scheduler/cp-5/metrics", 502, "tls_failed")
	if got := selfSigned.Requests(); got != 0 {
		t.Errorf("the self-signed scheduler got %d requests, want 0", got)
	}

	// One Prometheus job for all of it.
	r := get(t, gw, "/sd/control-plane", "Authorization: Bearer caller-token")
	for _, want := range []string{"/components/kube-scheduler/cp-1/metrics", "/components/kube-proxy/worker-1/metrics", `"component":"etcd"`} {
		if r.StatusCode != 200 || !strings.Contains(r.body, want) {
			t.Errorf("/sd/control-plane: %d %s, want 200 with %s", r.StatusCode, r.body, want)
		}
	}
	if strings.Contains(r.body, "/components/kube-scheduler/cp-2/") || strings.Contains(r.body, "/components/kube-scheduler/worker-1/") ||
		strings.Contains(r.body, "/components/kube-scheduler/cp-6/") {
		t.Errorf("/sd/control-plane lists a scheduler that must not be scraped: %s", r.body)
	}
	if v := metricValue(t, g, `scrapegate_requests_total{route="components",code="200"}`); v != 5 {
		t.Errorf(`requests_total{route="components",code="200"} = %v, want 5`, v)
	}
}

// TestComponentsInsecureSkipVerify: -control-plane-insecure-skip-verify
// reaches a self-signed scheduler, with the token, and never applies to
// the API servers.
func TestComponentsInsecureSkipVerify(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	selfSigned := testutil.NewCA(t, "self-signed")
	scheduler := testutil.StartTLSPod(t, "127.0.0.41:0", selfSigned.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.41")}).TLS, nil)
	apiserver, apiAddr := startAPIServer(t, selfSigned, "127.0.0.42:0", "kubernetes.default.svc")
	cfg := componentsConfig(t, ca, netip.MustParseAddrPort(scheduler.Addr).Port(), 10257, 2381, 10249)
	cfg.ControlPlaneInsecureSkipVerify = true
	_, gw := startComponentsGateway(t, cfg, controlPlaneNodeAt("cp-5", "127.0.0.41"),
		componentPod("kube-system", "kube-scheduler", "cp-5", netip.MustParseAddr("127.0.0.41")),
		apiServerSlice("default", "kubernetes", "kubernetes", apiAddr))
	f := checkGet(t, gw, "Authorization: Bearer caller-token")
	f("/components/kube-scheduler/cp-5/metrics", 200, "up 1")
	if got := scheduler.LastAuthorization(t); got != "Bearer cp-token" {
		t.Errorf("the scheduler got %q, want the control-plane token", got)
	}
	f("/apiservers/127.0.0.42/"+itoa(apiAddr.Port())+"/metrics", 502, "tls_failed")
	if got := apiserver.Requests(); got != 0 {
		t.Errorf("an API server with a certificate the CA did not sign got %d requests: the skip applied to it", got)
	}
}

// TestComponentsWithoutControlPlaneToken: without the token the https
// components are off, and say so; the http ones still work.
func TestComponentsWithoutControlPlaneToken(t *testing.T) {
	etcd := startRecordingPod(t, "127.0.0.31:0")
	cfg := kubeConfig()
	cfg.EtcdPort = etcd.addr.Port()
	_, gw := startComponentsGateway(t, cfg, controlPlaneNodeAt("cp-1", "127.0.0.31"),
		componentPod("kube-system", "kube-scheduler", "cp-1", netip.MustParseAddr("127.0.0.31")),
		componentPod("kube-system", "etcd", "cp-1", netip.MustParseAddr("127.0.0.31")))
	f := checkGet(t, gw)
	f("/components/kube-scheduler/cp-1/metrics", 400, "/components/kube-scheduler is off: -control-plane-token-file is empty")
	f("/components/etcd/cp-1/metrics", 200, "up 1")

	_, plain := startGateway(t, testConfig())
	checkGet(t, plain)("/components/etcd/cp-1/metrics", 400, "/components/ needs -kubernetes")
}

// TestComponentsThroughNodeAgents: with -node-agent-port a scrape goes to
// the agent on the component's node, at /{component}{path}, with the
// node-agent token only, never the control-plane token, and never to the
// component itself.
func TestComponentsThroughNodeAgents(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	cp1 := netip.MustParseAddr("127.0.0.31")
	scheduler := testutil.StartTLSPod(t, "127.0.0.31:0", ca.IssueServer(t, nil, []netip.Addr{cp1}).TLS, nil)
	etcd := startRecordingPod(t, "127.0.0.31:0")
	agent := startRecordingPod(t, "127.0.0.31:0")
	cfg := componentsConfig(t, ca, netip.MustParseAddrPort(scheduler.Addr).Port(), 10257, etcd.addr.Port(), 10249)
	cfg.NodeAgentPort = agent.addr.Port()
	cfg.NodeAgentTokenFile = testutil.TempFile(t, "node-agent-token", []byte("agent-token\n"))
	objects := []runtime.Object{controlPlaneNodeAt("cp-1", "127.0.0.31"), nodeAt("worker-1", "127.0.0.32"), controlPlaneNodeAt("cp-2", "127.0.0.34"),
		componentPod("kube-system", "kube-scheduler", "cp-1", cp1),
		componentPod("kube-system", "etcd", "cp-1", cp1),
		componentPod("kube-system", "kube-proxy", "worker-1", netip.MustParseAddr("127.0.0.32")),
		componentPod("kube-system", "kube-scheduler", "cp-2", netip.MustParseAddr("127.0.0.34"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
		componentPod("apps", "kube-scheduler", "worker-1", netip.MustParseAddr("127.0.0.32")),
	}
	_, gw := startComponentsGateway(t, cfg, objects...)
	f := checkGet(t, gw, "Authorization: Bearer caller-token")
	f("/components/kube-scheduler/cp-1/metrics/slis", 200, "up 1")
	f("/components/etcd/cp-1/metrics?a=b", 200, "up 1")
	want := []string{"/kube-scheduler/metrics/slis Bearer agent-token", "/etcd/metrics?a=b Bearer agent-token"}
	if got := agent.requests(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the agent got %q, want %q", got, want)
	}
	if scheduler.Requests() != 0 || len(etcd.requests()) != 0 {
		t.Errorf("the components were dialled directly: scheduler %d, etcd %q", scheduler.Requests(), etcd.requests())
	}
	// The same refusals as when dialling directly, before any dial.
	f("/components/kube-scheduler/worker-1/metrics", 404, "unknown_component")
	f("/components/kube-scheduler/cp-2/metrics", 503, "no_ready_endpoint")
	f("/components/kube-scheduler/nowhere/metrics", 404, "unknown_component")
	f("/components/kube-scheduler/cp-1/configz", 400, "must be one of")
	if got := len(agent.requests()); got != 2 {
		t.Errorf("refused scrapes reached the agent: %d requests, want 2", got)
	}
	// No agent on worker-1's address: the answer says so.
	f("/components/kube-proxy/worker-1/metrics", 502, "no node agent listens on node worker-1 at 127.0.0.32:"+itoa(agent.addr.Port()))

	// Over TLS, the agent's certificate verified for the node's IP, with a
	// client certificate.
	clientCA := testutil.NewCA(t, "node-agent client CA")
	client := clientCA.IssueClient(t, "scrapegate")
	tlsAgent := testutil.StartTLSPod(t, "127.0.0.31:0", ca.IssueServer(t, nil, []netip.Addr{cp1}).TLS, clientCA.Pool())
	cfg.NodeAgentPort = netip.MustParseAddrPort(tlsAgent.Addr).Port()
	cfg.NodeAgentCAFile = testutil.WriteCABundle(t, ca)
	cfg.NodeAgentCertFile, cfg.NodeAgentKeyFile = client.CertFile, client.KeyFile
	_, tlsGW := startComponentsGateway(t, cfg, objects...)
	checkGet(t, tlsGW, "Authorization: Bearer caller-token")("/components/kube-scheduler/cp-1/metrics", 200, "up 1")
	if got := tlsAgent.LastAuthorization(t); got != "Bearer agent-token" {
		t.Errorf("the TLS agent got %q, want the node-agent token", got)
	}
	if got, want := tlsAgent.LastClientSerial(), client.Cert.SerialNumber.Text(16); got != want {
		t.Errorf("the TLS agent saw client certificate %q, want %q", got, want)
	}
	if scheduler.Requests() != 0 {
		t.Errorf("the scheduler was dialled directly: %d requests", scheduler.Requests())
	}
	// A client certificate alone, no token: nothing but the certificate.
	cfg.NodeAgentTokenFile = ""
	_, certOnly := startComponentsGateway(t, cfg, objects...)
	checkGet(t, certOnly, "Authorization: Bearer caller-token")("/components/kube-scheduler/cp-1/metrics", 200, "up 1")
	if got := tlsAgent.LastAuthorization(t); got != "" {
		t.Errorf("without -node-agent-token-file the agent got Authorization %q", got)
	}
}

// startComponentsGatewayOn is startComponentsGateway serving on ln.
func startComponentsGatewayOn(t *testing.T, cfg Config, ln net.Listener, objects ...runtime.Object) string {
	t.Helper()
	g, err := newGateway(cfg, zerolog.Nop(), fake.NewClientset(objects...))
	if err != nil {
		t.Fatalf("newGateway: %s", err)
	}
	gw := serveGatewayOn(t, g, ln)
	testutil.WaitFor(t, "the informers and the components' pods to be listed", func() bool {
		return g.kube.cluster.Synced() && g.kube.cluster.ComponentsSynced()
	})
	return gw
}

// TestComponentsAtRefusedAddresses: a Running component pod on a node
// whose InternalIP is in a special range, in -deny-cidrs or the gateway's
// own address is refused (403) before any connection, dialled directly
// or through the node agents, and /sd/control-plane does not list it.
func TestComponentsAtRefusedAddresses(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	ln := testutil.Listen(t, "127.0.0.53")
	self := netip.MustParseAddrPort(ln.Addr().String())
	schedulerPort := testutil.FreeAddr(t, "127.0.0.52").Port()
	objects := []runtime.Object{
		controlPlaneNodeAt("metadata", "169.254.169.254"), controlPlaneNodeAt("denied", "127.0.0.52"), controlPlaneNodeAt("self", "127.0.0.53"),
		componentPod("kube-system", "kube-scheduler", "metadata", netip.MustParseAddr("169.254.169.254")),
		componentPod("kube-system", "kube-scheduler", "denied", netip.MustParseAddr("127.0.0.52")),
		componentPod("kube-system", "kube-proxy", "self", self.Addr()),
	}
	f := func(name string, cfg Config, ln net.Listener, canary *atomic.Int32) {
		t.Helper()
		// Every address allowed but the special ranges, of which only
		// loopback is named on purpose.
		cfg.AllowCIDRs = mustParsePrefixes("0.0.0.0/0", "127.0.0.0/8")
		cfg.DenyCIDRs = mustParsePrefixes("127.0.0.52/32")
		gw := startComponentsGatewayOn(t, cfg, ln, objects...)
		check := checkGet(t, gw, "Authorization: Bearer caller-token")
		// 0.0.0.0/0 does not name the link-local range on purpose.
		check("/components/kube-scheduler/metadata/metrics", 403, "the target IP is not allowed by -allow-cidrs: 169.254.169.254:")
		check("/components/kube-scheduler/denied/metrics", 403, "the target IP is denied by -deny-cidrs")
		check("/components/kube-proxy/self/metrics", 403, "the target is the gateway itself")
		if n := canary.Load(); n != 0 {
			t.Errorf("%s: the denied node got %d connections", name, n)
		}
		r := get(t, gw, "/sd/control-plane", "Authorization: Bearer caller-token")
		if r.StatusCode != 200 || r.body != "[]\n" {
			t.Errorf("%s: /sd/control-plane = %d %s, want 200 and no target", name, r.StatusCode, r.body)
		}
	}
	direct := componentsConfig(t, ca, schedulerPort, 10257, 2381, self.Port())
	f("directly", direct, ln, canaryAt(t, "127.0.0.52", schedulerPort))

	agentLn := testutil.Listen(t, "127.0.0.53")
	agentPort := netip.MustParseAddrPort(agentLn.Addr().String()).Port()
	viaAgents := componentsConfig(t, ca, schedulerPort, 10257, 2381, 10249)
	viaAgents.NodeAgentPort = agentPort // the gateway's own port, on node self
	viaAgents.NodeAgentTokenFile = testutil.TempFile(t, "node-agent-token", []byte("agent-token\n"))
	f("through the node agents", viaAgents, agentLn, canaryAt(t, "127.0.0.52", agentPort))
}

// TestComponentsSDListsOnlyWhatIsScraped: without the control-plane token
// the https components, which /components/ refuses, are not listed when
// dialled directly; through the node agents, which hold their own, they
// are.
func TestComponentsSDListsOnlyWhatIsScraped(t *testing.T) {
	objects := []runtime.Object{controlPlaneNodeAt("cp-1", "127.0.0.31"),
		componentPod("kube-system", "kube-scheduler", "cp-1", netip.MustParseAddr("127.0.0.31")),
		componentPod("kube-system", "etcd", "cp-1", netip.MustParseAddr("127.0.0.31"))}
	f := func(cfg Config, want string) {
		t.Helper()
		_, gw := startComponentsGateway(t, cfg, objects...)
		r := get(t, gw, "/sd/control-plane")
		var got []string
		for _, c := range []string{"kube-scheduler", "etcd"} {
			if strings.Contains(r.body, "/components/"+c+"/cp-1/metrics") {
				got = append(got, c)
			}
		}
		if r.StatusCode != 200 || strings.Join(got, " ") != want {
			t.Errorf("-node-agent-port=%d: /sd/control-plane = %d %s, want only %s", cfg.NodeAgentPort, r.StatusCode, r.body, want)
		}
	}
	f(kubeConfig(), "etcd")
	viaAgents := kubeConfig()
	viaAgents.NodeAgentPort = 10271
	viaAgents.NodeAgentTokenFile = testutil.TempFile(t, "node-agent-token", []byte("agent-token\n"))
	f(viaAgents, "kube-scheduler etcd")
}

// TestComponentsWaitForKubeSystem: until the pods of kube-system are
// listed, /components/ and /sd/control-plane answer 503 not_synced with
// the API server's refusal, while the rest of the gateway is ready.
func TestComponentsWaitForKubeSystem(t *testing.T) {
	etcd := startRecordingPod(t, "127.0.0.31:0")
	client := fake.NewClientset(controlPlaneNodeAt("cp-1", "127.0.0.31"),
		componentPod("kube-system", "etcd", "cp-1", netip.MustParseAddr("127.0.0.31")))
	var released atomic.Bool
	client.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() == kube.ComponentsNamespace && !released.Load() {
			return true, nil, errors.New(`pods is forbidden: cannot list resource "pods" in the namespace "kube-system"`)
		}
		return false, nil, nil
	})
	cfg := kubeConfig()
	cfg.EtcdPort = etcd.addr.Port()
	g, gw := startKubeGateway(t, cfg, client)
	testutil.WaitFor(t, "the refusal to be known", func() bool { return g.kube.cluster.ComponentsFailure() != nil })
	f := checkGet(t, gw)
	f("/components/etcd/cp-1/metrics", 503, `not_synced: "/components/etcd/cp-1/metrics": the Kubernetes informers have not synced yet; retry: the pods of kube-system have not been listed yet: `)
	f("/components/etcd/cp-1/metrics", 503, `pods is forbidden`)
	f("/sd/control-plane", 503, "the pods of kube-system have not been listed yet")
	f("/readyz", 200, "")
	if got := etcd.requests(); len(got) != 0 {
		t.Errorf("etcd got %q before kube-system was listed", got)
	}
	released.Store(true)
	testutil.WaitFor(t, "the components' pods to be listed", g.kube.cluster.ComponentsSynced)
	f("/components/etcd/cp-1/metrics", 200, "up 1")
	f("/sd/control-plane", 200, "/components/etcd/cp-1/metrics")
}
