package main

// End-to-end test of the gateway's Kubernetes mode: the real binary watches a
// real API server (etcd and kube-apiserver, no controllers) with the
// ServiceAccount and RBAC of deploy/base, and a real Prometheus with
// Kubernetes discovery scrapes pods and kubelets through it in every way its
// users configure it: the gateway's own http_sd endpoints, psystrike-style
// relabeling of kubernetes_sd targets, and proxy_url.
//
// Pods and nodes are API objects whose status the test sets: each pod's IP
// is a loopback address where a fake exporter listens, each node's
// InternalIP and kubelet port those of a fake kubelet serving https.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

const (
	// kubePodNet is where this test's pods listen: 127.44.0.1, ... (the
	// other tests of this package use 127.42.x.y); kubeNodeNet is where
	// its kubelets do.
	kubePodNet     = "127.44.0."
	kubeNodeNet    = "127.44.1."
	kubeDecoyIP    = kubePodNet + "250" // a live server that no pod has as its IP
	kubeNumPods    = 120                // annotated, running: scraped by every pod job
	kubeNumNodes   = 3
	kubeCustomPath = "/custom/metrics" // odd pods' prometheus.io/path; even ones rely on the default

	kubeAppLabel = "fake-exporter" // the pods' app.kubernetes.io/name

	// Prometheus jobs.
	jobKubeHTTPSD    = "kube-http-sd"   // http_sd_configs: the gateway's /sd/pods
	jobKubePsystrike = "kube-psystrike" // kubernetes_sd_configs, relabeled to the gateway's /pods/
	jobKubeProxy     = "kube-proxy-url" // kubernetes_sd_configs, scraped through proxy_url
	jobKubeKubelet   = "kube-kubelet"   // http_sd_configs: the gateway's /sd/nodes
	jobKubeCadvisor  = "kube-cadvisor"  // http_sd_configs: the gateway's /sd/nodes?path=/metrics/cadvisor
	// kubernetes_sd_configs role node, relabeled to the gateway's /nodes/<node>/metrics/cadvisor
	jobKubeSDCadvisor = "kube-sd-cadvisor"

	kubeGatewayNamespace = "scrapegate" // of deploy/base
	kubeGatewaySA        = "scrapegate"
)

var (
	kubeNamespaces   = []string{"kube-e2e-a", "kube-e2e-b"}
	kubePodJobs      = []string{jobKubeHTTPSD, jobKubePsystrike, jobKubeProxy}
	kubeOwnSDPodJobs = []string{jobKubePsystrike, jobKubeProxy} // those with Kubernetes discovery of their own
)

// kubePod is a pod: an API object and the fake exporter at its IP.
type kubePod struct {
	*fakePod
	namespace string
	node      *fakeKubelet
	path      string // where it serves metrics; "" for the default, /metrics
	annotated bool   // prometheus.io/scrape: "true"
	phase     corev1.PodPhase
}

func (p *kubePod) key() string { return p.namespace + "/" + p.name }

func (p *kubePod) metricsPath() string {
	if p.path == "" {
		return "/metrics"
	}
	return p.path
}

// ServeHTTP serves the pod's metrics at its path only.
func (p *kubePod) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != p.metricsPath() {
		http.Error(w, p.name+": only "+p.metricsPath()+" is served, got "+r.URL.Path, http.StatusNotFound)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/metrics"
	p.fakePod.ServeHTTP(w, r2)
}

// fakeKubelet is a node's kubelet: https on its own address, requiring the
// one bearer token, serving a marker series on /metrics and /metrics/cadvisor.
type fakeKubelet struct {
	n          int
	name       string // the Node's
	ip, port   string
	token      string
	requests   atomic.Int64 // with the right token
	badAuth    atomic.Int64 // without it
	wrongPaths atomic.Int64
	// failedHandshakes counts TLS handshakes that failed, as the
	// server's error log reports them.
	failedHandshakes atomic.Int64
}

// Write is the kubelet's server's error log: it counts failed handshakes.
func (k *fakeKubelet) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "TLS handshake error") {
		k.failedHandshakes.Add(1)
	}
	return len(p), nil
}

func (k *fakeKubelet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+k.token {
		k.badAuth.Add(1)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	var endpoint string
	switch r.URL.Path {
	case "/metrics":
		endpoint = "metrics"
	case "/metrics/cadvisor":
		endpoint = "cadvisor"
	default:
		k.wrongPaths.Add(1)
		http.Error(w, k.name+": not found: "+r.URL.Path, http.StatusNotFound)
		return
	}
	k.requests.Add(1)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP fake_kubelet_marker Identifies the fake kubelet.\n# TYPE fake_kubelet_marker gauge\n")
	fmt.Fprintf(w, "fake_kubelet_marker{node=%q,endpoint=%q} %d\n", k.name, endpoint, k.n)
}

func startFakeKubelet(t *testing.T, n int, name string, ca *testutil.CA, token string) *fakeKubelet {
	t.Helper()
	ip := kubeNodeNet + strconv.Itoa(n)
	ln, err := net.Listen("tcp4", ip+":0")
	if err != nil {
		t.Fatalf("cannot start the kubelet of node %d on %s: %v", n, ip, err)
	}
	return startFakeKubeletOn(t, ln, n, name, ca, token)
}

// startFakeKubeletOn is startFakeKubelet on ln, a TCP listener at the
// node's address (netnsListen's, in a test's network namespace).
func startFakeKubeletOn(t *testing.T, ln net.Listener, n int, name string, ca *testutil.CA, token string) *fakeKubelet {
	t.Helper()
	ip := ln.Addr().(*net.TCPAddr).IP.String()
	k := &fakeKubelet{n: n, name: name, ip: ip, token: token}
	k.port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: k, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(k, "", 0)}
	tlsLn := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr(ip)}).TLS}, MinVersion: tls.VersionTLS12})
	go func() { _ = srv.Serve(tlsLn) }()
	t.Cleanup(func() { _ = srv.Close() })
	return k
}

func TestEndToEndKubernetes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test against a real API server and Prometheus; skipped with -short")
	}
	begin := time.Now()
	since := func() time.Duration { return time.Since(begin).Round(time.Millisecond) }
	kubectlBin := kubeTestbin(t, "kubectl")
	promBin := kubeTestbin(t, "prometheus") // Debian's has no Kubernetes discovery
	gatewayBin := buildGateway(t, raceEnabled())
	t.Logf("built gateway after %s", since())

	// 1. The API server, with the gateway's Namespace, ServiceAccount and
	// RBAC applied from deploy/base, as in production.
	k := startKubeAPI(t)
	t.Logf("API server ready at %s after %s", k.url, since())
	out := k.kubectl(t, kubectlBin, "apply", "-k", filepath.Join("..", "..", "deploy", "base"))
	t.Logf("kubectl apply -k deploy/base:\n%s", strings.TrimSpace(out))
	ctx := context.Background()
	if _, err := k.client.CoreV1().ServiceAccounts(kubeGatewayNamespace).Get(ctx, kubeGatewaySA, metav1.GetOptions{}); err != nil {
		t.Fatalf("deploy/base must create the ServiceAccount %s/%s the gateway runs as: %v", kubeGatewayNamespace, kubeGatewaySA, err)
	}

	// 2. Every kustomization under deploy/ is accepted by the API server.
	validateDeployKustomizations(t, k, kubectlBin)

	// 3. Nodes with fake kubelets, and pods with fake exporters: 120
	// annotated and running, one running but not annotated, one annotated
	// but completed.
	kubeletCA := testutil.NewCA(t, "kubelets")
	kubeletToken := secRandom(t)
	kubeletTokenFile := filepath.Join(t.TempDir(), "kubelet-token")
	testutil.WriteFile(t, kubeletTokenFile, []byte(kubeletToken+"\n"))
	var nodes []*fakeKubelet // with pods
	for n := 1; n <= kubeNumNodes; n++ {
		nodes = append(nodes, startFakeKubelet(t, n, fmt.Sprintf("kube-e2e-node-%d", n), kubeletCA, kubeletToken))
	}
	// A node whose kubelet's certificate the gateway must not trust, so
	// must not send the token to.
	untrusted := startFakeKubelet(t, kubeNumNodes+1, "kube-e2e-node-untrusted", testutil.NewCA(t, "rogue"), kubeletToken)
	allNodes := append(slices.Clone(nodes), untrusted)
	unannotatedN, succeededN := kubeNumPods+1, kubeNumPods+2
	pods := startPodServers(t, kubePodNet, kubeNumPods+2, func(fp *fakePod) *kubePod {
		p := &kubePod{
			fakePod:   fp,
			namespace: kubeNamespaces[fp.n%len(kubeNamespaces)],
			node:      nodes[fp.n%len(nodes)],
			annotated: fp.n != unannotatedN,
			phase:     corev1.PodRunning,
		}
		if fp.n%2 == 1 && p.annotated {
			p.path = kubeCustomPath
		}
		if fp.n == succeededN {
			p.phase = corev1.PodSucceeded
		}
		return p
	})
	scraped := pods[:kubeNumPods]
	// Pods 1 and 2 are deleted and completed later; pod 3 lives on.
	deleted, completed, live := scraped[0], scraped[1], scraped[2]
	unannotated, succeeded := pods[unannotatedN-1], pods[succeededN-1]
	// A server at an address in -allow-cidrs that no pod has.
	decoyLn, err := net.Listen("tcp4", net.JoinHostPort(kubeDecoyIP, pods[0].port))
	if err != nil {
		t.Fatalf("cannot start the decoy on %s:%s: %v", kubeDecoyIP, pods[0].port, err)
	}
	decoy := newFakePod(250, decoyLn.Addr().(*net.TCPAddr))
	decoySrv := &http.Server{Handler: decoy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = decoySrv.Serve(decoyLn) }()
	t.Cleanup(func() { _ = decoySrv.Close() })

	createKubeObjects(t, k, allNodes, pods)
	t.Logf("%d nodes and %d pods created after %s", len(allNodes), len(pods), since())

	// 4. The gateway, as the ServiceAccount of deploy/base.
	gwKubeconfig := k.serviceAccountKubeconfig(t, kubeGatewayNamespace, kubeGatewaySA)
	gw := startGateway(t, gatewayBin,
		"--kubernetes",
		"--kubeconfig="+gwKubeconfig,
		"--kubelet-ca-file="+kubeletCA.CertFile,
		"--kubelet-token-file="+kubeletTokenFile,
		"--control-plane-token-file=",
	)
	procs := []*process{gw.proc, k.apiserver, k.etcd}
	t.Logf("gateway ready on %s after %s", gw.addr, since())
	if err := checkGatewaySynced(gw.addr); err != nil {
		t.Error(err)
	}

	// 5. RBAC is enforced, so the gateway above works with what deploy/base
	// grants it: a ServiceAccount without it gets a gateway that never
	// becomes ready, and refuses to scrape pods it cannot see.
	checkGatewayWithoutRBAC(t, k, gatewayBin, live)

	// 6. The gateway's discovery, read directly.
	etag := checkGatewayDiscovery(t, gw, procs, pods, allNodes)

	// 7. Prometheus, scraping pods through the gateway three ways, and
	// kubelets through it two ways.
	prom := startPrometheus(t, promBin, kubePrometheusConfig(gw.addr, k))
	procs = append(procs, prom.proc)
	t.Logf("Prometheus ready on %s after %s", prom.addr, since())

	// 8. Every annotated running pod is up in each pod job, and so is
	// every kubelet; the completed pod is a target only where Prometheus
	// discovers pods itself, and there the gateway refuses it.
	targets := kubeTargets(gw.addr, scraped, nodes, untrusted)
	for _, job := range kubeOwnSDPodJobs {
		targets = append(targets, kubePodTarget(job, gw.addr, succeeded, "403"))
	}
	waitFor(t, kubeScrapeTimeout, "every target of every job to be up, but the completed pod down with 403 and the untrusted kubelet with 502", procs, func() error {
		return checkKubeTargets(prom, targets)
	})
	t.Logf("all %d targets as expected after %s", len(targets), since())
	waitFor(t, kubeScrapeTimeout, fmt.Sprintf("up == 1 and %d successful scrapes for every target that must be up", e2eMinScrapes), procs, func() error {
		now := time.Now()
		if err := checkEachTarget(prom, "up", now, targets, func(kt kubeTarget, s promSample) error {
			if want := kt.wantUp(); s.value != want {
				return fmt.Errorf("up is %v, want %v", s.value, want)
			}
			return nil
		}); err != nil {
			return err
		}
		return checkScrapeCounts(prom, now, targets)
	})
	t.Logf("%d scrapes of every target after %s", e2eMinScrapes, since())

	// 9. Each pod's series arrived under its own instance in every scrape,
	// and each kubelet's under its node.
	at := time.Now()
	upTargets := slices.DeleteFunc(slices.Clone(targets), func(kt kubeTarget) bool { return kt.wantErr != "" })
	podTargets := slices.DeleteFunc(slices.Clone(upTargets), func(kt kubeTarget) bool { return kt.pod == nil })
	nodeTargets := slices.DeleteFunc(slices.Clone(upTargets), func(kt kubeTarget) bool { return kt.node == nil })
	for _, fn := range []string{"min_over_time", "max_over_time"} {
		if err := checkEachTarget(prom, fn+"(fake_pod_value[1h])", at, podTargets, func(kt kubeTarget, s promSample) error {
			if s.value != float64(kt.pod.n) {
				return fmt.Errorf("got %v, want the pod's own number %d", s.value, kt.pod.n)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	if err := checkEachTarget(prom, "last_over_time(fake_pod_info[1h])", at, podTargets, func(kt kubeTarget, s promSample) error {
		if s.labels["pod"] != kt.pod.name || s.value != 1 {
			return fmt.Errorf("got fake_pod_info{pod=%q} %v, want {pod=%q} 1", s.labels["pod"], s.value, kt.pod.name)
		}
		// The relabeling's names, from the discovery's labels.
		if s.labels["kubernetes_pod_name"] != kt.pod.name || s.labels["kubernetes_namespace"] != kt.pod.namespace ||
			s.labels["kubernetes_pod_node_name"] != kt.pod.node.name || s.labels["app_kubernetes_io_name"] != kubeAppLabel {
			return fmt.Errorf("discovered as %s/%s on %q with app_kubernetes_io_name %q, want %s on %q with %q",
				s.labels["kubernetes_namespace"], s.labels["kubernetes_pod_name"], s.labels["kubernetes_pod_node_name"],
				s.labels["app_kubernetes_io_name"], kt.pod.key(), kt.pod.node.name, kubeAppLabel)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	for _, fn := range []string{"min_over_time", "max_over_time"} {
		if err := checkEachTarget(prom, fn+"(fake_kubelet_marker[1h])", at, nodeTargets, func(kt kubeTarget, s promSample) error {
			wantEndpoint := "metrics"
			if kt.job != jobKubeKubelet {
				wantEndpoint = "cadvisor"
			}
			if hostname := s.labels["kubernetes_io_hostname"]; hostname != kt.node.name {
				return fmt.Errorf("has the node label kubernetes_io_hostname=%q, want %q", hostname, kt.node.name)
			}
			if s.labels["node"] != kt.node.name || s.labels["endpoint"] != wantEndpoint || s.value != float64(kt.node.n) {
				return fmt.Errorf("got fake_kubelet_marker{node=%q,endpoint=%q} %v, want {node=%q,endpoint=%q} %d",
					s.labels["node"], s.labels["endpoint"], s.value, kt.node.name, wantEndpoint, kt.node.n)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	// The gateway's labels for a pod are those Prometheus's own Kubernetes
	// discovery gives it.
	if compared, err := comparePodLabels(prom, gw.addr, scraped); err != nil {
		t.Error(err)
	} else {
		t.Logf("the gateway's /sd/pods labels equal those of Prometheus's own discovery (%d values compared)", compared)
	}

	// 10. Direct requests: a live pod is served; an address no pod has,
	// and a port its pod does not declare, are refused; a kubelet is
	// served, unless its certificate is not trusted.
	for _, c := range []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/pods/" + live.ip + "/" + live.port + live.metricsPath(), http.StatusOK, fmt.Sprintf("fake_pod_info{pod=%q} 1", live.name)},
		{"/pods/" + kubeDecoyIP + "/" + live.port + "/metrics", http.StatusForbidden, ""},
		{"/pods/" + live.ip + "/" + strconv.Itoa(int(portNumber(live.port))+1) + live.metricsPath(), http.StatusForbidden, ""},
		{"/nodes/" + nodes[0].name + "/metrics", http.StatusOK, fmt.Sprintf("fake_kubelet_marker{node=%q,endpoint=\"metrics\"} %d", nodes[0].name, nodes[0].n)},
		{"/nodes/" + nodes[1].name + "/metrics/cadvisor", http.StatusOK, fmt.Sprintf("fake_kubelet_marker{node=%q,endpoint=\"cadvisor\"} %d", nodes[1].name, nodes[1].n)},
		{"/nodes/" + untrusted.name + "/metrics", http.StatusBadGateway, ""},
		{"/nodes/kube-e2e-no-such-node/metrics", http.StatusBadRequest, ""},
	} {
		if err := checkGatewayGet(gw.addr, c.path, c.wantStatus, c.wantBody); err != nil {
			t.Error(err)
		}
	}

	// 11. A pod deleted, another completed: both leave the gateway's
	// discovery, and it refuses them, while their servers still answer.
	status, tag, _, err := sdGet(gw.addr, "/sd/pods", etag)
	if err != nil || status != http.StatusNotModified {
		t.Errorf("/sd/pods with If-None-Match: %q, nothing changed: status %d (%v), want 304", etag, status, err)
	} else if tag != etag {
		t.Errorf("/sd/pods answered 304 with ETag %q, want the unchanged %q", tag, etag)
	}
	if err := k.client.CoreV1().Pods(deleted.namespace).Delete(ctx, deleted.name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatalf("cannot delete pod %s: %v", deleted.key(), err)
	}
	completed.phase = corev1.PodSucceeded
	setKubePodStatus(t, k, completed)
	remaining := scraped[2:]
	var newETag string
	waitFor(t, e2eStartTimeout, fmt.Sprintf("/sd/pods to drop %s (deleted) and %s (completed)", deleted.key(), completed.key()), procs, func() error {
		status, tag, groups, err := sdGet(gw.addr, "/sd/pods", etag)
		switch {
		case err != nil:
			return err
		case status == http.StatusNotModified:
			return errors.New("/sd/pods still answers 304 Not Modified to the ETag from before")
		case status != http.StatusOK:
			return fmt.Errorf("/sd/pods: status %d", status)
		}
		newETag = tag
		return checkPodSD("/sd/pods", gw.addr, groups, remaining)
	})
	if newETag == etag || newETag == "" {
		t.Errorf("/sd/pods changed, but its ETag is %q, was %q", newETag, etag)
	}
	if status, _, _, err := sdGet(gw.addr, "/sd/pods", newETag); err != nil || status != http.StatusNotModified {
		t.Errorf("/sd/pods with If-None-Match: %q, nothing changed since: status %d (%v), want 304", newETag, status, err)
	}
	for _, p := range []*kubePod{deleted, completed} {
		path := "/pods/" + p.ip + "/" + p.port + p.metricsPath()
		waitFor(t, e2eStartTimeout, "the gateway to refuse "+path+" of "+p.key(), procs, func() error {
			return checkGatewayGet(gw.addr, path, http.StatusForbidden, "")
		})
	}
	if err := checkGatewayGet(gw.addr, "/pods/"+live.ip+"/"+live.port+live.metricsPath(), http.StatusOK, fmt.Sprintf("fake_pod_info{pod=%q} 1", live.name)); err != nil {
		t.Error(err)
	}
	// Prometheus follows: the deleted pod is no target, the completed one
	// is only in the jobs with their own discovery, and refused there.
	targets = kubeTargets(gw.addr, remaining, nodes, untrusted)
	for _, job := range kubeOwnSDPodJobs {
		targets = append(targets, kubePodTarget(job, gw.addr, succeeded, "403"), kubePodTarget(job, gw.addr, completed, "403"))
	}
	waitFor(t, kubeScrapeTimeout, "Prometheus's targets to follow the deleted and the completed pod", procs, func() error {
		return checkKubeTargets(prom, targets)
	})

	// 12. Nothing ever reached the pods that must not be scraped, nor a
	// kubelet without the token, nor the untrusted kubelet at all; and the
	// API server refused the gateway nothing.
	for _, p := range []*fakePod{unannotated.fakePod, succeeded.fakePod, decoy} {
		if n := p.requests.Load(); n != 0 {
			t.Errorf("%s (%s) was scraped %d times, want never", p.name, p.addr, n)
		}
	}
	if n, hs := untrusted.requests.Load()+untrusted.badAuth.Load()+untrusted.wrongPaths.Load(), untrusted.failedHandshakes.Load(); n != 0 || hs == 0 {
		t.Errorf("the kubelet with an untrusted certificate got %d HTTP requests, want none, and %d failed TLS handshakes, want some", n, hs)
	}
	for _, n := range nodes {
		if bad, wrong, good := n.badAuth.Load(), n.wrongPaths.Load(), n.requests.Load(); bad != 0 || wrong != 0 || good == 0 {
			t.Errorf("kubelet of %s: %d requests without the token and %d for other paths, want none; %d good ones, want some", n.name, bad, wrong, good)
		}
	}
	if denials := rbacDenials(gw.proc.out.String(), kubeGatewayNamespace, kubeGatewaySA); len(denials) > 0 {
		t.Errorf("the API server refused the gateway, running with the RBAC of deploy/base, %d times:\n%s", len(denials), strings.Join(denials, "\n"))
	}

	// 13. SIGTERM: the gateway stops its informers and exits 0.
	stopStart := time.Now()
	gw.proc.signal(t, syscall.SIGTERM)
	gw.proc.wantExitZero(t, "SIGTERM")
	t.Logf("gateway exited %s after SIGTERM; whole test took %s", time.Since(stopStart).Round(time.Millisecond), since())
}

// checkGatewayDiscovery checks the gateway's /sd/pods, with each query
// parameter, and /sd/nodes, and returns the ETag of /sd/pods.
func checkGatewayDiscovery(t *testing.T, gw *gatewayProc, procs []*process, pods []*kubePod, nodes []*fakeKubelet) string {
	t.Helper()
	scraped := slices.DeleteFunc(slices.Clone(pods), func(p *kubePod) bool { return !p.annotated || p.phase != corev1.PodRunning })
	var etag string
	waitFor(t, e2eStartTimeout, "the gateway's /sd/pods to list every annotated running pod", procs, func() error {
		status, tag, groups, err := sdGet(gw.addr, "/sd/pods", "")
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("/sd/pods: status %d", status)
		}
		if err != nil {
			return err
		}
		etag = tag
		return checkPodSD("/sd/pods", gw.addr, groups, scraped)
	})
	if etag == "" {
		t.Errorf("/sd/pods has no ETag header")
	}
	for _, q := range []struct {
		query string
		want  func(*kubePod) bool
	}{
		{"namespace=" + kubeNamespaces[0], func(p *kubePod) bool {
			return p.annotated && p.phase == corev1.PodRunning && p.namespace == kubeNamespaces[0]
		}},
		{"selector=" + url.QueryEscape("shard=even"), func(p *kubePod) bool { return p.annotated && p.phase == corev1.PodRunning && p.n%2 == 0 }},
		{"selector=" + url.QueryEscape("shard!=even,app.kubernetes.io/name=") + kubeAppLabel + "&namespace=" + kubeNamespaces[1], func(p *kubePod) bool {
			return p.annotated && p.phase == corev1.PodRunning && p.n%2 == 1 && p.namespace == kubeNamespaces[1]
		}},
		{"namespace=" + kubeNamespaces[0] + "&namespace=" + kubeNamespaces[1], func(p *kubePod) bool { return p.annotated && p.phase == corev1.PodRunning }},
		{"all=true", func(p *kubePod) bool { return p.phase == corev1.PodRunning }},
	} {
		path := "/sd/pods?" + q.query
		status, _, groups, err := sdGet(gw.addr, path, "")
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("%s: status %d", path, status)
		}
		if err == nil {
			err = checkPodSD(path, gw.addr, groups, slices.DeleteFunc(slices.Clone(pods), func(p *kubePod) bool { return !q.want(p) }))
		}
		if err != nil {
			t.Error(err)
		}
	}
	// Without -advertise-address, targets are the host the request was
	// sent to.
	const otherHost = "scrapegate.example.com:31000"
	if status, _, groups, err := sdRequest(gw.addr, otherHost, "/sd/pods", ""); err != nil || status != http.StatusOK {
		t.Errorf("/sd/pods with Host: %s: status %d (%v), want 200", otherHost, status, err)
	} else if err := checkPodSD("/sd/pods with Host: "+otherHost, otherHost, groups, scraped); err != nil {
		t.Error(err)
	}
	for _, path := range []string{"/metrics", "/metrics/cadvisor"} {
		sdPath := "/sd/nodes"
		if path != "/metrics" {
			sdPath += "?path=" + url.QueryEscape(path)
		}
		status, _, groups, err := sdGet(gw.addr, sdPath, "")
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("%s: status %d", sdPath, status)
		}
		if err == nil {
			err = checkNodeSD(sdPath, gw.addr, groups, nodes, path)
		}
		if err != nil {
			t.Error(err)
		}
	}

	return etag
}

// checkScrapeCounts checks that each target that must be up was scraped
// successfully at least e2eMinScrapes times by at, and the others never.
func checkScrapeCounts(prom *promProc, at time.Time, targets []kubeTarget) error {
	return checkEachTarget(prom, "sum_over_time(up[1h])", at, targets, func(kt kubeTarget, s promSample) error {
		if kt.wantErr == "" && s.value < e2eMinScrapes {
			return fmt.Errorf("%v successful scrapes so far", s.value)
		}
		if kt.wantErr != "" && s.value != 0 {
			return fmt.Errorf("%v successful scrapes, want none", s.value)
		}
		return nil
	})
}

// kubeScrapeTimeout bounds every target of every job being up, then scraped
// a few times, on a loaded 2-core machine.
const kubeScrapeTimeout = 120 * time.Second

// portNumber returns a port that a listener's address gave as a string.
func portNumber(port string) int32 {
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		panic("BUG: not a port number: " + port)
	}
	return int32(n)
}

// validateDeployKustomizations runs `kubectl apply --dry-run=server -k` on
// every directory under deploy/ with a kustomization, so that the API
// server validates everything the repository ships. The namespaces a
// kustomization creates are created first, for real: a server-side dry run
// refuses objects in a namespace that exists only in the same dry run.
func validateDeployKustomizations(t *testing.T, k *kubeAPI, kubectlBin string) {
	t.Helper()
	root := filepath.Join("..", "..", "deploy")
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && slices.Contains([]string{"kustomization.yaml", "kustomization.yml", "Kustomization"}, d.Name()) {
			dirs = append(dirs, filepath.Dir(path))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no kustomization.yaml under %s", root)
	}
	var validated []string
	for _, dir := range dirs {
		rel, _ := filepath.Rel(root, dir)
		rel = filepath.ToSlash(filepath.Join("deploy", rel))
		if err := createKustomizationNamespaces(k, kubectlBin, dir); err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if _, err := k.tryKubectl(kubectlBin, "apply", "--dry-run=server", "-k", dir); err != nil {
			t.Errorf("%s is not accepted by the API server: %v", rel, err)
			continue
		}
		validated = append(validated, rel)
	}
	t.Logf("kubectl apply --dry-run=server accepted %d of %d kustomizations: %s", len(validated), len(dirs), strings.Join(validated, ", "))
}

// createKustomizationNamespaces creates the namespaces the kustomization in
// dir renders, and nothing else of it.
func createKustomizationNamespaces(k *kubeAPI, kubectlBin, dir string) error {
	rendered, err := k.tryKubectl(kubectlBin, "apply", "--dry-run=client", "-o", "json", "-k", dir)
	if err != nil {
		return err
	}
	var list struct {
		Items []struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(rendered), &list); err != nil {
		return fmt.Errorf("cannot parse the objects kubectl rendered: %w", err)
	}
	for _, obj := range list.Items {
		if obj.Kind != "Namespace" {
			continue
		}
		if _, err := k.tryKubectl(kubectlBin, "create", "namespace", obj.Metadata.Name); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
			return err
		}
	}
	return nil
}

// createKubeObjects creates the test's namespaces, the nodes with their
// kubelets' addresses, and the pods with their status.
func createKubeObjects(t *testing.T, k *kubeAPI, nodes []*fakeKubelet, pods []*kubePod) {
	t.Helper()
	ctx := context.Background()
	for _, ns := range kubeNamespaces {
		if _, err := k.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("cannot create namespace %s: %v", ns, err)
		}
	}
	for _, n := range nodes {
		createKubeletNode(t, k, n)
	}
	// Pods, a few at a time.
	work := make(chan *kubePod)
	errs := make(chan error, len(pods))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for p := range work {
				errs <- createKubePod(k, p)
			}
		})
	}
	for _, p := range pods {
		work <- p
	}
	close(work)
	wg.Wait()
	close(errs)
	var problems []string
	for err := range errs {
		if err != nil {
			problems = append(problems, err.Error())
		}
	}
	if err := problemsErr("creating pods", problems); err != nil {
		t.Fatal(err)
	}
}

// createKubeletNode creates n's Node, with its kubelet's address and port.
func createKubeletNode(t *testing.T, k *kubeAPI, n *fakeKubelet) {
	t.Helper()
	ctx := context.Background()
	node, err := k.client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   n.name,
		Labels: map[string]string{"kubernetes.io/hostname": n.name},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("cannot create node %s: %v", n.name, err)
	}
	node.Status = corev1.NodeStatus{
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: n.name},
			{Type: corev1.NodeInternalIP, Address: n.ip},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: portNumber(n.port)}},
		Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
	}
	if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("cannot set the status of node %s: %v", n.name, err)
	}
}

func kubePodObject(p *kubePod) *corev1.Pod {
	shard := "odd"
	if p.n%2 == 0 {
		shard = "even"
	}
	annotations := map[string]string{}
	if p.annotated {
		annotations["prometheus.io/scrape"] = "true"
		annotations["prometheus.io/port"] = p.port
		if p.path != "" {
			annotations["prometheus.io/path"] = p.path
		}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        p.name,
			Namespace:   p.namespace,
			Labels:      map[string]string{"app.kubernetes.io/name": kubeAppLabel, "shard": shard},
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			NodeName: p.node.name,
			Containers: []corev1.Container{{
				Name:  "exporter",
				Image: "registry.example/fake-exporter:1",
				Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: portNumber(p.port), Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
}

func createKubePod(k *kubeAPI, p *kubePod) error {
	created, err := k.client.CoreV1().Pods(p.namespace).Create(context.Background(), kubePodObject(p), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("cannot create pod %s: %v", p.key(), err)
	}
	return updateKubePodStatus(k, created, p)
}

// setKubePodStatus sets the status of p's pod from p.
func setKubePodStatus(t *testing.T, k *kubeAPI, p *kubePod) {
	t.Helper()
	pod, err := k.client.CoreV1().Pods(p.namespace).Get(context.Background(), p.name, metav1.GetOptions{})
	if err == nil {
		err = updateKubePodStatus(k, pod, p)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// updateKubePodStatus sets the status a kubelet would give pod: p's phase,
// its IP, and Ready when running.
func updateKubePodStatus(k *kubeAPI, pod *corev1.Pod, p *kubePod) error {
	now := metav1.Now()
	ready := corev1.ConditionFalse
	state := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}}
	if p.phase == corev1.PodRunning {
		ready = corev1.ConditionTrue
		state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
	}
	pod.Status = corev1.PodStatus{
		Phase:     p.phase,
		HostIP:    p.node.ip,
		HostIPs:   []corev1.HostIP{{IP: p.node.ip}},
		PodIP:     p.ip,
		PodIPs:    []corev1.PodIP{{IP: p.ip}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: ready, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:    "exporter",
			Image:   pod.Spec.Containers[0].Image,
			ImageID: "registry.example/fake-exporter@sha256:" + strings.Repeat("0", 64),
			Ready:   ready == corev1.ConditionTrue,
			Started: new(p.phase == corev1.PodRunning),
			State:   state,
		}},
	}
	if _, err := k.client.CoreV1().Pods(p.namespace).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("cannot set the status of pod %s: %v", p.key(), err)
	}
	return nil
}

// Relabelling rules of deploy/prometheus/kubernetes-sd.yml and proxy-url.yml
// that several jobs of the end-to-end tests share, comments aside.
const (
	// relabelAnnotatedPods keeps the pods annotated prometheus.io/scrape,
	// but not the gateway's own.
	relabelAnnotatedPods = `      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        action: keep
        regex: true
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
        action: drop
        regex: scrapegate
`
	// relabelAnnotatedPort keeps the pods that name their port in the
	// prometheus.io/port annotation.
	relabelAnnotatedPort = `      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_port]
        action: keep
        regex: \d+
`
	// relabelPodsPath makes a pod's target the gateway's /pods/ (or
	// /pods/https/) route to its IP, port and path, /metrics by default.
	relabelPodsPath = `      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        regex: ""
        target_label: __meta_kubernetes_pod_annotation_prometheus_io_path
        replacement: /metrics
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port, __meta_kubernetes_pod_annotation_prometheus_io_path]
        action: replace
        target_label: __metrics_path__
        regex: (.+);(\d+);(.+)
        replacement: /pods/$1/$2$3
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme, __meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port, __meta_kubernetes_pod_annotation_prometheus_io_path]
        action: replace
        target_label: __metrics_path__
        regex: https;([^;]+);(\d+);(.+)
        replacement: /pods/https/$1/$2$3
`
)

// kubePrometheusConfig returns the Prometheus configuration: every job of
// deploy/prometheus/ pointed at this test's gateway and API server, the
// gateway's own discovery (http-sd.yml) and Prometheus's Kubernetes
// discovery (kubernetes-sd.yml, proxy-url.yml). Their relabeling is copied
// here, comments aside.
func kubePrometheusConfig(gwAddr string, k *kubeAPI) string {
	var namespaces []string
	for _, ns := range kubeNamespaces {
		namespaces = append(namespaces, strconv.Quote(ns))
	}
	kubeSD := func(role string) string {
		s := fmt.Sprintf(`    kubernetes_sd_configs:
      - role: %s
        api_server: %q
        authorization:
          credentials_file: %q
        tls_config:
          ca_file: %q
`, role, k.url, k.adminTokenFile, k.caFile)
		if role == "pod" {
			s += fmt.Sprintf("        namespaces:\n          names: [%s]\n", strings.Join(namespaces, ", "))
		}
		return s
	}
	httpSD := func(path string) string {
		return fmt.Sprintf("    http_sd_configs:\n      - url: %q\n        refresh_interval: 1s\n", "http://"+gwAddr+path)
	}
	podNames := `      - source_labels: [__meta_kubernetes_namespace]
        action: replace
        target_label: kubernetes_namespace
      - source_labels: [__meta_kubernetes_pod_name]
        action: replace
        target_label: kubernetes_pod_name
      - source_labels: [__meta_kubernetes_pod_node_name]
        action: replace
        target_label: kubernetes_pod_node_name
`
	nodeLabels := `    relabel_configs:
      - action: labelmap
        regex: __meta_kubernetes_node_label_(.+)
      - target_label: cluster
        replacement: test
`
	var b strings.Builder
	b.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n")

	// http-sd.yml
	fmt.Fprintf(&b, "  - job_name: %s\n    follow_redirects: false\n%s", jobKubeHTTPSD, httpSD("/sd/pods"))
	b.WriteString(`    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
        action: drop
        regex: scrapegate
      - action: labelmap
        regex: __meta_kubernetes_pod_label_(.+)
      - target_label: cluster
        replacement: test
` + podNames)
	fmt.Fprintf(&b, "  - job_name: %s\n    follow_redirects: false\n%s%s", jobKubeKubelet, httpSD("/sd/nodes?path=/metrics"), nodeLabels)
	fmt.Fprintf(&b, "  - job_name: %s\n    follow_redirects: false\n%s%s", jobKubeCadvisor, httpSD("/sd/nodes?path=/metrics/cadvisor"), nodeLabels)

	// kubernetes-sd.yml
	fmt.Fprintf(&b, "  - job_name: %s\n    follow_redirects: false\n%s", jobKubePsystrike, kubeSD("pod"))
	fmt.Fprintf(&b, "    relabel_configs:\n"+relabelAnnotatedPods+relabelAnnotatedPort+relabelPodsPath+`      - action: labelmap
        regex: __meta_kubernetes_pod_label_(.+)
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        target_label: instance
        regex: (.+);(\d+)
        replacement: $1:$2
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        target_label: instance
        regex: (.*:.*);(\d+)
        replacement: '[$1]:$2'
      - target_label: __address__
        replacement: %s
      - target_label: cluster
        replacement: test
%s`, gwAddr, podNames)
	fmt.Fprintf(&b, "  - job_name: %s\n    follow_redirects: false\n%s", jobKubeSDCadvisor, kubeSD("node"))
	fmt.Fprintf(&b, `    relabel_configs:
      - action: labelmap
        regex: __meta_kubernetes_node_label_(.+)
      - source_labels: [__meta_kubernetes_node_name]
        target_label: __metrics_path__
        replacement: /nodes/$1/metrics/cadvisor
      - source_labels: [__meta_kubernetes_node_name]
        target_label: instance
      - target_label: __address__
        replacement: %s
      - target_label: cluster
        replacement: test
`, gwAddr)

	// proxy-url.yml
	fmt.Fprintf(&b, "  - job_name: %s\n    proxy_url: %q\n%s", jobKubeProxy, "http://"+gwAddr, kubeSD("pod"))
	b.WriteString("    relabel_configs:\n" + relabelAnnotatedPods + relabelAnnotatedPort + `      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path]
        action: replace
        target_label: __metrics_path__
        regex: (.+)
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        action: replace
        target_label: __address__
        regex: (.+);(\d+)
        replacement: $1:$2
      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        action: replace
        target_label: __address__
        regex: (.*:.*);(\d+)
        replacement: '[$1]:$2'
      - action: labelmap
        regex: __meta_kubernetes_pod_label_(.+)
      - target_label: cluster
        replacement: test
` + podNames)
	return b.String()
}

// kubeTarget is a target Prometheus must have: up, or down with an error.
type kubeTarget struct {
	job, instance, scrapeURL string
	pod                      *kubePod     // a pod's target, or
	node                     *fakeKubelet // a kubelet's
	// wantErr is "" for a target that must be up, else a part of the
	// lastError it must be down with.
	wantErr string
}

func (kt kubeTarget) key() string { return kt.job + "/" + kt.instance }

func (kt kubeTarget) wantUp() float64 {
	if kt.wantErr == "" {
		return 1
	}
	return 0
}

func (kt kubeTarget) String() string {
	if kt.pod != nil {
		return kt.key() + " (" + kt.pod.key() + ")"
	}
	return kt.key()
}

// kubePodTarget returns p's target in a pod job.
func kubePodTarget(job, gwAddr string, p *kubePod, wantErr string) kubeTarget {
	kt := kubeTarget{job: job, instance: p.addr, pod: p, wantErr: wantErr,
		scrapeURL: "http://" + gwAddr + "/pods/" + p.ip + "/" + p.port + p.metricsPath()}
	if job == jobKubeProxy {
		kt.scrapeURL = "http://" + p.addr + p.metricsPath()
	}
	return kt
}

// kubeTargets returns the targets of pods and nodes: each pod in each pod
// job, each kubelet in the kubelet and both cAdvisor jobs; all up but the
// untrusted kubelet, which the gateway cannot reach (502).
func kubeTargets(gwAddr string, pods []*kubePod, nodes []*fakeKubelet, untrusted *fakeKubelet) []kubeTarget {
	var targets []kubeTarget
	for _, job := range kubePodJobs {
		for _, p := range pods {
			targets = append(targets, kubePodTarget(job, gwAddr, p, ""))
		}
	}
	for _, n := range append(slices.Clone(nodes), untrusted) {
		wantErr := ""
		if n == untrusted {
			wantErr = "502"
		}
		targets = append(targets,
			kubeTarget{job: jobKubeKubelet, instance: n.name, node: n, wantErr: wantErr, scrapeURL: "http://" + gwAddr + "/nodes/" + n.name + "/metrics"},
			kubeTarget{job: jobKubeCadvisor, instance: n.name, node: n, wantErr: wantErr, scrapeURL: "http://" + gwAddr + "/nodes/" + n.name + "/metrics/cadvisor"},
			kubeTarget{job: jobKubeSDCadvisor, instance: n.name, node: n, wantErr: wantErr, scrapeURL: "http://" + gwAddr + "/nodes/" + n.name + "/metrics/cadvisor"})
	}
	return targets
}

// checkKubeTargets returns an error unless Prometheus's active targets are
// exactly targets, each scraping its URL, up or down as it must be.
func checkKubeTargets(prom *promProc, targets []kubeTarget) error {
	return checkActiveTargets(prom, keyedTargets(targets), func(_ string, kt kubeTarget, tg promTarget) []string {
		return checkScrape(kt.String(), kt.scrapeURL, kt.wantErr, tg)
	})
}

// sdGroup is a target group of Prometheus's HTTP service discovery.
type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// sdGet gets one of the gateway's discovery endpoints, with If-None-Match
// if etag is not empty, and returns the status, the ETag, and for a 200 the
// target groups.
func sdGet(gwAddr, path, etag string) (int, string, []sdGroup, error) {
	return sdRequest(gwAddr, "", path, etag)
}

// sdRequest is sdGet with a Host header other than gwAddr, unless host is empty.
func sdRequest(gwAddr, host, path, etag string) (int, string, []sdGroup, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+gwAddr+path, nil)
	if err != nil {
		return 0, "", nil, err
	}
	if host != "" {
		req.Host = host
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, resp.Header.Get("ETag"), nil, nil
	}
	// Prometheus refuses any other type.
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return 0, "", nil, fmt.Errorf("GET %s: Content-Type %q, want application/json", path, ct)
	}
	var groups []sdGroup
	if err := json.NewDecoder(resp.Body).Decode(&groups); err != nil {
		return 0, "", nil, fmt.Errorf("GET %s: %v", path, err)
	}
	return resp.StatusCode, resp.Header.Get("ETag"), groups, nil
}

// checkPodSD returns an error unless groups, from the gateway's /sd/pods,
// are one for each of want, scraped through the gateway at gwAddr, with the
// labels Prometheus's Kubernetes discovery would give the pod.
func checkPodSD(what, gwAddr string, groups []sdGroup, want []*kubePod) error {
	byKey := map[string]*kubePod{}
	for _, p := range want {
		byKey[p.key()] = p
	}
	var problems []string
	seen := map[string]bool{}
	for _, g := range groups {
		key := g.Labels["__meta_kubernetes_namespace"] + "/" + g.Labels["__meta_kubernetes_pod_name"]
		p, ok := byKey[key]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("unexpected group %s: %v", key, g.Labels))
			continue
		case seen[key]:
			problems = append(problems, "more than one group for "+key)
		}
		seen[key] = true
		if !slices.Equal(g.Targets, []string{gwAddr}) {
			problems = append(problems, fmt.Sprintf("%s: targets %q, want [%q]", key, g.Targets, gwAddr))
		}
		wantLabels := map[string]string{
			"__metrics_path__":                "/pods/" + p.ip + "/" + p.port + p.metricsPath(),
			"__scheme__":                      "http",
			"instance":                        p.addr,
			"__meta_kubernetes_pod_ip":        p.ip,
			"__meta_kubernetes_pod_node_name": p.node.name,
			"__meta_kubernetes_pod_phase":     string(corev1.PodRunning),
			"__meta_kubernetes_pod_ready":     "true",
			"__meta_kubernetes_pod_label_app_kubernetes_io_name": kubeAppLabel,
			"__meta_kubernetes_pod_container_name":               "exporter",
			"__meta_kubernetes_pod_container_port_name":          "metrics",
			"__meta_kubernetes_pod_container_port_number":        p.port,
		}
		if p.annotated {
			wantLabels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"] = "true"
			wantLabels["__meta_kubernetes_pod_annotation_prometheus_io_port"] = p.port
		} else if v, ok := g.Labels["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]; ok {
			problems = append(problems, fmt.Sprintf("%s is not annotated, but has __meta_kubernetes_pod_annotation_prometheus_io_scrape=%q", key, v))
		}
		if p.path != "" {
			wantLabels["__meta_kubernetes_pod_annotation_prometheus_io_path"] = p.path
		}
		for name, v := range wantLabels {
			if got, ok := g.Labels[name]; !ok || got != v {
				problems = append(problems, fmt.Sprintf("%s: label %s=%q (present: %v), want %q", key, name, got, ok, v))
			}
		}
	}
	for key := range byKey {
		if !seen[key] {
			problems = append(problems, "no group for "+key)
		}
	}
	return problemsErr(fmt.Sprintf("%s: %d groups", what, len(groups)), problems)
}

// checkNodeSD returns an error unless groups, from the gateway's
// /sd/nodes, are one for each node, scraping its kubelet's path through the
// gateway at gwAddr.
func checkNodeSD(what, gwAddr string, groups []sdGroup, nodes []*fakeKubelet, path string) error {
	var problems []string
	seen := map[string]bool{}
	for _, g := range groups {
		name := g.Labels["instance"]
		i := slices.IndexFunc(nodes, func(n *fakeKubelet) bool { return n.name == name })
		switch {
		case i < 0:
			problems = append(problems, fmt.Sprintf("unexpected group %v", g.Labels))
			continue
		case seen[name]:
			problems = append(problems, "more than one group for "+name)
		}
		seen[name] = true
		if !slices.Equal(g.Targets, []string{gwAddr}) {
			problems = append(problems, fmt.Sprintf("%s: targets %q, want [%q]", name, g.Targets, gwAddr))
		}
		if got, want := g.Labels["__metrics_path__"], "/nodes/"+name+path; got != want {
			problems = append(problems, fmt.Sprintf("%s: __metrics_path__ %q, want %q", name, got, want))
		}
	}
	for _, n := range nodes {
		if !seen[n.name] {
			problems = append(problems, "no group for "+n.name)
		}
	}
	return problemsErr(fmt.Sprintf("%s: %d groups", what, len(groups)), problems)
}

// comparePodLabels returns an error unless every __meta_kubernetes_ label
// the gateway's /sd/pods gives each of pods has the value Prometheus's own
// Kubernetes discovery gives it, and returns how many values it compared.
func comparePodLabels(prom *promProc, gwAddr string, pods []*kubePod) (int, error) {
	status, _, groups, err := sdGet(gwAddr, "/sd/pods", "")
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("/sd/pods: status %d", status)
	}
	if err != nil {
		return 0, err
	}
	active, err := promActiveTargets(prom)
	if err != nil {
		return 0, err
	}
	podKey := func(l map[string]string) string {
		return l["__meta_kubernetes_namespace"] + "/" + l["__meta_kubernetes_pod_name"]
	}
	discovered := map[string]map[string]string{}
	for _, tg := range active {
		if tg.ScrapePool == jobKubePsystrike {
			discovered[podKey(tg.DiscoveredLabels)] = tg.DiscoveredLabels
		}
	}
	var problems []string
	compared := 0
	for _, g := range groups {
		key := podKey(g.Labels)
		prometheus, ok := discovered[key]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: no discoveredLabels in Prometheus's job %s", key, jobKubePsystrike))
			continue
		}
		for name, v := range g.Labels {
			if !strings.HasPrefix(name, "__meta_kubernetes_") {
				continue
			}
			pv, ok := prometheus[name]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s: the gateway gives %s=%q, Prometheus's discovery has no such label", key, name, v))
			case pv != v:
				problems = append(problems, fmt.Sprintf("%s: the gateway gives %s=%q, Prometheus's discovery %q", key, name, v, pv))
			default:
				compared++
			}
		}
	}
	if len(groups) != len(pods) {
		problems = append(problems, fmt.Sprintf("/sd/pods has %d groups, want %d", len(groups), len(pods)))
	}
	return compared, problemsErr(fmt.Sprintf("the gateway's /sd/pods labels against Prometheus's discovery (%d equal)", compared), problems)
}

// checkGatewayGet gets path from the gateway and returns an error unless it
// answers wantStatus with a body containing wantBody.
func checkGatewayGet(gwAddr, path string, wantStatus int, wantBody string) error {
	status, _, body, err := secGet(httpClient, "http://"+gwAddr+path, "")
	if err != nil {
		return err
	}
	if status != wantStatus {
		return fmt.Errorf("GET %s: %d %s, want %d", path, status, strings.TrimSpace(string(body)), wantStatus)
	}
	if !strings.Contains(string(body), wantBody) {
		return fmt.Errorf("GET %s: %d, but the body lacks %q", path, status, wantBody)
	}
	return nil
}

// checkGatewaySynced returns an error unless the gateway's /metrics shows
// its informers synced: scrapegate_kubernetes_synced is 1 (in each of its
// series, should it have labels), and the Service and EndpointSlice
// informers hold what the cluster has.
func checkGatewaySynced(gwAddr string) error {
	body, err := httpGet("http://" + gwAddr + "/metrics")
	if err != nil {
		return err
	}
	var series []string
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "scrapegate_kubernetes_synced{") && !strings.HasPrefix(line, "scrapegate_kubernetes_synced ") {
			continue
		}
		series = append(series, line)
		if f := strings.Fields(line); f[len(f)-1] != "1" {
			return fmt.Errorf("gateway /metrics: %s, want 1", line)
		}
	}
	if len(series) == 0 {
		return errors.New("gateway /metrics: no scrapegate_kubernetes_synced")
	}
	// Every cluster has the Service default/kubernetes: the Service
	// informer, running with deploy/base's RBAC, has listed it.
	if !regexp.MustCompile(`(?m)^scrapegate_kubernetes_objects\{resource="services"\} [1-9]`).Match(body) {
		return errors.New(`gateway /metrics: scrapegate_kubernetes_objects{resource="services"} is not at least 1 (default/kubernetes)`)
	}
	if !regexp.MustCompile(`(?m)^scrapegate_kubernetes_objects\{resource="endpointslices"\} [0-9]`).Match(body) {
		return errors.New(`gateway /metrics: no scrapegate_kubernetes_objects{resource="endpointslices"}`)
	}
	return nil
}

// checkGatewayWithoutRBAC starts a gateway as a ServiceAccount that no RBAC
// binding grants anything, and checks that it never becomes ready, refuses
// to scrape pod (which exists) rather than allow it unseen, logs why, and
// stops on SIGTERM.
func checkGatewayWithoutRBAC(t *testing.T, k *kubeAPI, gatewayBin string, pod *kubePod) {
	t.Helper()
	const sa = "kube-e2e-no-rbac"
	if _, err := k.client.CoreV1().ServiceAccounts(kubeGatewayNamespace).Create(context.Background(),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("cannot create ServiceAccount %s/%s: %v", kubeGatewayNamespace, sa, err)
	}
	gw := awaitServing(t, startProcess(t, "gateway without RBAC", gatewayBin, slices.Concat(e2eGatewayArgs, []string{
		"--kubernetes",
		"--kubeconfig=" + k.serviceAccountKubeconfig(t, kubeGatewayNamespace, sa),
		"--kubelet-token-file=",
		"--control-plane-token-file=",
	}), "SCRAPEGATE_"))
	proc, addr := gw.proc, gw.addr
	procs := []*process{proc}
	// The API server's refusal, logged: from then on, the checks below
	// cannot pass by being early. client-go lists in watch-list mode first,
	// a watch request that RBAC refuses as "cannot watch".
	waitFor(t, e2eStartTimeout, "the gateway without RBAC to log that it may not list pods", procs, func() error {
		for _, line := range rbacDenials(proc.out.String(), kubeGatewayNamespace, sa) {
			line = strings.ReplaceAll(line, `\"`, `"`)
			if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, `"resource":"pods"`) &&
				(strings.Contains(line, `cannot list resource "pods"`) || strings.Contains(line, `cannot watch resource "pods"`)) {
				return nil
			}
		}
		return errors.New(`no warning with the API server's refusal to list pods ("... cannot list resource \"pods\" ..." or "cannot watch")`)
	})
	for _, c := range []struct{ path, what string }{
		{"/readyz", "report not ready"},
		{"/sd/pods", "refuse to list pods it has not seen"},
	} {
		if err := checkGatewayGet(addr, c.path, http.StatusServiceUnavailable, ""); err != nil {
			t.Errorf("a gateway whose informers cannot sync must %s: %v", c.what, err)
		}
	}
	podPath := "/pods/" + pod.ip + "/" + pod.port + pod.metricsPath()
	before := pod.requests.Load()
	status, _, body, err := secGet(httpClient, "http://"+addr+podPath, "")
	switch {
	case err != nil:
		t.Errorf("GET %s from the gateway without RBAC: %v", podPath, err)
	case status != http.StatusForbidden && status != http.StatusServiceUnavailable:
		t.Errorf("GET %s from the gateway without RBAC, which cannot know that %s exists: %d %s, want 403 or 503",
			podPath, pod.key(), status, strings.TrimSpace(string(body)))
	}
	if n := pod.requests.Load() - before; n != 0 {
		t.Errorf("the gateway without RBAC passed %d requests on to %s", n, pod.key())
	}
	proc.signal(t, syscall.SIGTERM)
	proc.wantExitZero(t, "SIGTERM before its informers synced")
}

// rbacDenials returns the lines of a gateway's log that report the API
// server's refusal of a request by the ServiceAccount namespace/name:
// `User "system:serviceaccount:<namespace>:<name>" cannot <verb> resource ...`,
// with the quotes escaped in JSON logs.
func rbacDenials(log, namespace, name string) []string {
	user := "system:serviceaccount:" + namespace + ":" + name
	var lines []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, user+`" cannot `) || strings.Contains(line, user+`\" cannot `) {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}
