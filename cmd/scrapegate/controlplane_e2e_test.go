package main

// The control plane through the gateway (TestEndToEndControlPlane), and
// deploy/base's accounts against the real kube-scheduler and
// kube-controller-manager without it (TestEndToEndControlPlaneMetricsRBAC):
// what docs/security.md says of them, that the accounts granted get on
// /metrics read these components' metrics, and the kubelet token does not.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

func TestEndToEndControlPlaneMetricsRBAC(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test against a real API server, scheduler and controller-manager; skipped with -short")
	}
	netnsKubeBinaries(t, "etcd", "kube-apiserver", "kubectl", "kube-scheduler", "kube-controller-manager")
	if !inNetworkNamespace(t) {
		return
	}
	k := startKubeAPIAt(t, netnsAPIServerIP)
	out := k.kubectl(t, kubeTestbin(t, "kubectl"), "apply", "-k", filepath.Join("..", "..", "deploy", "base"))
	t.Logf("kubectl apply -k deploy/base:\n%s", strings.TrimSpace(out))
	components := startKubeComponents(t, k, netnsAPIServerIP, "kube-scheduler", "kube-controller-manager")

	gateway := k.serviceAccountToken(t, kubeGatewayNamespace, kubeGatewaySA)
	scraper := k.serviceAccountToken(t, kubeGatewayNamespace, kubeScraperSA)
	kubelet := k.serviceAccountToken(t, kubeGatewayNamespace, "scrapegate-kubelet")
	client := kubeComponentClient()
	f := func(component, authorization string, wantStatus int, wantBody string) {
		t.Helper()
		u := "https://" + components[component].addr + "/metrics"
		status, _, body, err := secGet(client, u, authorization)
		switch {
		case err != nil:
			t.Errorf("%s: GET /metrics with Authorization %.20q: %v", component, authorization, err)
		case status != wantStatus || !strings.Contains(string(body), wantBody):
			t.Errorf("%s: GET /metrics with Authorization %.20q: %d %.200q, want %d with %q", component, authorization, status, body, wantStatus, wantBody)
		}
	}
	forbidden := func(user string) string {
		return fmt.Sprintf(`forbidden: User \"%s\" cannot get path \"/metrics\"`, user)
	}
	for component, family := range map[string]string{
		"kube-scheduler":          "\nscheduler_",
		"kube-controller-manager": "\nworkqueue_",
	} {
		f(component, "Bearer "+gateway, http.StatusOK, family)
		f(component, "Bearer "+scraper, http.StatusOK, family)
		f(component, "Bearer "+kubelet, http.StatusForbidden, forbidden("system:serviceaccount:"+kubeGatewayNamespace+":scrapegate-kubelet"))
		// No token is not 401: the components' delegated authentication
		// lets anonymous requests through, as system:anonymous, whom the
		// SubjectAccessReview then refuses.
		f(component, "", http.StatusForbidden, forbidden("system:anonymous"))
		f(component, "Bearer wrong-"+secRandom(t), http.StatusUnauthorized, "Unauthorized")
	}
}

// Control-plane nodes of TestEndToEndControlPlane, in the test's network
// namespace. On cpDirect the components listen on the node's address; on
// cpLocal, as kubeadm binds them, on 127.0.0.1 only (the namespace's one
// loopback, which only the node agents reach); cpWorker runs kube-proxy
// only, on its node's address.
var (
	cpDirect = &svcNode{"cp-direct", "10.250.3.1"}
	cpLocal  = &svcNode{"cp-local", "10.250.3.2"}
	cpWorker = &svcNode{"cp-worker", "10.250.3.3"}
)

const (
	cpAgentSA        = "scrapegate-node-agent" // deploy/overlays/node-agent
	cpAgentNamespace = "scrapegate-node-agent"
	cpAgentAudience  = "scrapegate-node-agent"
	cpAgentPort      = "10271"
	// A decoy: labelled as the scheduler is, in a namespace that is not
	// kube-system, on the worker; no token may reach it.
	cpDecoyIP = "10.244.7.7"
)

// TestEndToEndControlPlane scrapes the control plane through the gateway,
// every component real but kube-proxy (a stand-in: its /metrics is plain
// http): the API server, kube-scheduler and kube-controller-manager
// checking the gateway's token by TokenReview and SubjectAccessReview,
// etcd's --listen-metrics-urls. First directly (/components/ dials the
// component's pod), where the components bound to 127.0.0.1 fail with a
// 502 that says so; then through the node agents (-node-agent-port), which
// reach them; a real Prometheus scrapes /sd/control-plane both ways.
func TestEndToEndControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test against a real API server, scheduler, controller-manager, etcd and Prometheus; skipped with -short")
	}
	begin := time.Now()
	since := func() time.Duration { return time.Since(begin).Round(time.Millisecond) }
	netnsKubeBinaries(t, "etcd", "kube-apiserver", "kubectl", "kube-scheduler", "kube-controller-manager", "prometheus")
	var env []string
	if !inNetns() {
		env = append(env, netnsGatewayEnv+"="+buildGateway(t, raceEnabled()))
	}
	if !inNetworkNamespace(t, env...) {
		return
	}
	gatewayBin := os.Getenv(netnsGatewayEnv)
	ctx := context.Background()

	// 1. The API server, its etcd serving metrics on cp-direct's address
	// and on 127.0.0.1 (kubeadm's --listen-metrics-urls), deploy/base and
	// the node-agent overlay applied.
	k := startKubeAPIAt(t, netnsAPIServerIP, "--listen-metrics-urls=http://"+cpDirect.ip+":2381,http://127.0.0.1:2381")
	kubectlBin := kubeTestbin(t, "kubectl")
	out := k.kubectl(t, kubectlBin, "apply", "-k", filepath.Join("..", "..", "deploy", "overlays", "node-agent"))
	t.Logf("API server ready at %s, deploy/overlays/node-agent applied after %s:\n%s", k.url, since(), strings.TrimSpace(out))
	if _, err := k.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: svcAppsNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*svcNode{cpDirect, cpLocal, cpWorker} {
		createSvcNode(t, k, n)
	}
	// As kubeadm labels them (with the admin's credentials: a kubelet may
	// not set node-role labels on its own node).
	for _, n := range []*svcNode{cpDirect, cpLocal} {
		patch := []byte(`{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}`)
		if _, err := k.client.CoreV1().Nodes().Patch(ctx, n.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("cannot label node %s as the control plane: %v", n.name, err)
		}
	}

	// 2. The components, at their default ports, and a kube-proxy
	// stand-in on each node; decoys where no token may go.
	startKubeComponentsAt(t, k,
		kubeComponentAt{"kube-scheduler", cpDirect.ip + ":10259"},
		kubeComponentAt{"kube-controller-manager", cpDirect.ip + ":10257"},
		kubeComponentAt{"kube-scheduler", "127.0.0.1:10259"},
		kubeComponentAt{"kube-controller-manager", "127.0.0.1:10257"})
	proxies := map[string]*recordingServer{}
	for ip, n := range map[string]*svcNode{cpDirect.ip: cpDirect, "127.0.0.1": cpLocal, cpWorker.ip: cpWorker} {
		proxies[n.name] = startRecordingServer(t, ip, "10249", "kubeproxy_sync_proxy_rules_last_timestamp_seconds{node=\""+n.name+"\"} 1\n")
	}
	decoys := []*recordingServer{
		startRecordingServer(t, cpDecoyIP, "10259", "decoy 1\n"),   // the labelled pod in e2e-apps
		startRecordingServer(t, cpWorker.ip, "10259", "decoy 1\n"), // the worker, which runs no scheduler
	}
	t.Logf("components started after %s", since())

	// 3. Their pods, as the kubelet would publish kubeadm's static pods and
	// kube-proxy's DaemonSet: hostNetwork, Running at the node's address.
	var cpPods []*corev1.Pod
	for _, n := range []*svcNode{cpDirect, cpLocal} {
		for _, c := range []string{"kube-scheduler", "kube-controller-manager", "etcd"} {
			cpPods = append(cpPods, createComponentPod(t, k, metav1.NamespaceSystem, c+"-"+n.name, n, n.ip, true,
				map[string]string{"component": c, "tier": "control-plane"}))
		}
	}
	for _, n := range []*svcNode{cpDirect, cpLocal, cpWorker} {
		cpPods = append(cpPods, createComponentPod(t, k, metav1.NamespaceSystem, "kube-proxy-"+n.name, n, n.ip, true,
			map[string]string{"k8s-app": "kube-proxy"}))
	}
	createComponentPod(t, k, svcAppsNamespace, "kube-scheduler-"+cpWorker.name, cpWorker, cpDecoyIP, false,
		map[string]string{"component": "kube-scheduler", "tier": "control-plane"})
	// What the worker's kubelet may do itself (NodeRestriction lets it
	// create mirror pods bound to its node, in any namespace, with any
	// labels): a "scheduler" in kube-system, on a node that is not the
	// control plane.
	createComponentPod(t, k, metav1.NamespaceSystem, "kube-scheduler-"+cpWorker.name, cpWorker, cpWorker.ip, true,
		map[string]string{"component": "kube-scheduler", "tier": "control-plane"})

	// 4. The gateway, dialling components directly, as deploy/base's
	// account; their certificates are self-signed, as kubeadm's are.
	controlPlaneTokenFile := filepath.Join(t.TempDir(), "control-plane-token")
	testutil.WriteFile(t, controlPlaneTokenFile, []byte(k.serviceAccountToken(t, kubeGatewayNamespace, kubeGatewaySA)+"\n"))
	gatewayArgs := []string{
		"--listen=127.0.0.1:0",
		"--drain-delay=0s",
		"--log-format=json",
		"--kubernetes",
		"--kubeconfig=" + k.serviceAccountKubeconfig(t, kubeGatewayNamespace, kubeGatewaySA),
		"--kubelet-token-file=",
		"--control-plane-ca-file=" + k.caFile,
		"--control-plane-token-file=" + controlPlaneTokenFile,
	}
	direct := awaitServing(t, startProcess(t, "gateway-direct", gatewayBin, append(slices.Clone(gatewayArgs), "--control-plane-insecure-skip-verify"), "SCRAPEGATE_"))
	procs := []*process{direct.proc, k.apiserver, k.etcd}
	waitFor(t, e2eStartTimeout, "the direct gateway's /readyz to answer 200", procs, func() error {
		_, err := httpGet("http://" + direct.addr + "/readyz")
		return err
	})
	t.Logf("direct gateway ready on %s after %s", direct.addr, since())

	apiServerAddr := strings.TrimPrefix(k.url, "https://")
	apiServerIP, apiServerPort, _ := strings.Cut(apiServerAddr, ":")
	type get struct {
		path       string
		wantStatus int
		wantBody   string
	}
	check := func(gwAddr string, gets []get) {
		t.Helper()
		for _, g := range gets {
			if err := checkServiceGet(gwAddr, "http://"+gwAddr+g.path, g.wantStatus, "", g.wantBody); err != nil {
				t.Error(err)
			}
		}
	}
	const refusedHint = "127.0.0.1"
	check(direct.addr, []get{
		{"/components/kube-scheduler/cp-direct/metrics", http.StatusOK, "\nscheduler_"},
		{"/components/kube-scheduler/cp-direct/metrics/slis", http.StatusOK, "kubernetes_healthcheck"},
		{"/components/kube-controller-manager/cp-direct/metrics", http.StatusOK, "\nworkqueue_"},
		{"/components/etcd/cp-direct/metrics", http.StatusOK, "etcd_server_has_leader"},
		{"/components/kube-proxy/cp-direct/metrics", http.StatusOK, `node="cp-direct"`},
		{"/components/kube-proxy/cp-worker/metrics", http.StatusOK, `node="cp-worker"`},
		// Bound to 127.0.0.1: refused at the node's address, and said so.
		{"/components/kube-scheduler/cp-local/metrics", http.StatusBadGateway, refusedHint},
		{"/components/etcd/cp-local/metrics", http.StatusBadGateway, refusedHint},
		{"/components/kube-proxy/cp-local/metrics", http.StatusBadGateway, refusedHint},
		// Where the token must never go.
		{"/components/kube-scheduler/cp-worker/metrics", http.StatusNotFound, "node-role.kubernetes.io/control-plane"},
		{"/components/kube-scheduler/no-such-node/metrics", http.StatusNotFound, "no-such-node"},
		{"/components/kube-scheduler/cp-direct/configz", http.StatusBadRequest, "/metrics"},
		{"/components/etcd/cp-direct/metrics/slis", http.StatusBadRequest, "/metrics"},
		{"/components/kube-apiserver/cp-direct/metrics", http.StatusBadRequest, "kube-scheduler"},
		{"/apiservers/" + cpDecoyIP + "/10259/metrics", http.StatusForbidden, "is not an endpoint of the default/kubernetes Service"},
		{"/apiservers/" + apiServerIP + "/" + apiServerPort + "/metrics", http.StatusOK, "apiserver_request_total"},
	})

	// 5. The node agents, one per node on its address, as the overlay's
	// account; and a gateway that sends /components/ through them.
	agentTokenFile := filepath.Join(t.TempDir(), "agent-token")
	testutil.WriteFile(t, agentTokenFile, []byte(k.serviceAccountToken(t, cpAgentNamespace, cpAgentSA)+"\n"))
	agentKubeconfig := k.serviceAccountKubeconfig(t, cpAgentNamespace, cpAgentSA)
	var agents []*gatewayProc
	for _, n := range []*svcNode{cpDirect, cpLocal, cpWorker} {
		a := awaitServing(t, startProcess(t, "agent-"+n.name, gatewayBin, []string{
			"agent",
			"--listen=" + n.ip + ":" + cpAgentPort,
			"--log-format=json",
			"--kubeconfig=" + agentKubeconfig,
			"--control-plane-token-file=" + agentTokenFile,
		}, "SCRAPEGATE_"))
		agents = append(agents, a)
		procs = append(procs, a.proc)
	}
	gatewayTokenForAgents := k.serviceAccountTokenFor(t, kubeGatewayNamespace, kubeGatewaySA, cpAgentAudience)
	nodeAgentTokenFile := filepath.Join(t.TempDir(), "node-agent-token")
	testutil.WriteFile(t, nodeAgentTokenFile, []byte(gatewayTokenForAgents+"\n"))
	viaAgents := awaitServing(t, startProcess(t, "gateway-via-agents", gatewayBin, append(slices.Clone(gatewayArgs),
		"--node-agent-port="+cpAgentPort, "--node-agent-token-file="+nodeAgentTokenFile), "SCRAPEGATE_"))
	procs = append(procs, viaAgents.proc)
	waitFor(t, e2eStartTimeout, "the agent gateway's /readyz to answer 200", procs, func() error {
		_, err := httpGet("http://" + viaAgents.addr + "/readyz")
		return err
	})
	t.Logf("node agents and the gateway using them ready after %s", since())
	check(viaAgents.addr, []get{
		{"/components/kube-scheduler/cp-local/metrics", http.StatusOK, "\nscheduler_"},
		{"/components/kube-controller-manager/cp-local/metrics", http.StatusOK, "\nworkqueue_"},
		{"/components/etcd/cp-local/metrics", http.StatusOK, "etcd_server_has_leader"},
		{"/components/kube-proxy/cp-local/metrics", http.StatusOK, `node="cp-local"`},
		{"/components/kube-scheduler/cp-worker/metrics", http.StatusNotFound, "kube-scheduler"},
	})

	// 6. What an agent must refuse, asked directly: only the gateway's
	// account, with a token for the agents' audience, that has not
	// expired; only the four components' metrics paths.
	agentURL := "http://" + cpLocal.ip + ":" + cpAgentPort
	agentClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	agentGet := func(method, path, token string, wantStatus int) {
		t.Helper()
		req, err := http.NewRequest(method, agentURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := agentClient.Do(req)
		if err != nil {
			t.Errorf("agent: %s %s: %v", method, path, err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantStatus {
			t.Errorf("agent: %s %s with token %.12q: %d %.200q, want %d", method, path, token, resp.StatusCode, body, wantStatus)
		}
	}
	saUID := func(namespace, name string) string {
		sa, err := k.client.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(sa.UID)
	}
	gatewayUID := saUID(kubeGatewayNamespace, kubeGatewaySA)
	agentGet(http.MethodGet, "/kube-scheduler/metrics", gatewayTokenForAgents, http.StatusOK)
	// The control for the expired token below: the same hand-signed token,
	// still valid, is accepted.
	agentGet(http.MethodGet, "/etcd/metrics", k.signServiceAccountToken(t, kubeGatewayNamespace, kubeGatewaySA, gatewayUID, cpAgentAudience, time.Now().Add(time.Hour)), http.StatusOK)
	agentGet(http.MethodGet, "/etcd/metrics", k.signServiceAccountToken(t, kubeGatewayNamespace, kubeGatewaySA, gatewayUID, cpAgentAudience, time.Now().Add(-time.Minute)), http.StatusUnauthorized)
	agentGet(http.MethodGet, "/etcd/metrics", "", http.StatusUnauthorized)
	agentGet(http.MethodGet, "/etcd/metrics", "not-a-token-"+secRandom(t), http.StatusUnauthorized)
	// The gateway's token for the API server's audience: not for agents.
	agentGet(http.MethodGet, "/etcd/metrics", k.serviceAccountToken(t, kubeGatewayNamespace, kubeGatewaySA), http.StatusUnauthorized)
	// Another account's token for the agents' audience: refused by its
	// claims, without a TokenReview (401, not 403: unverified, its
	// account is only the caller's word).
	agentGet(http.MethodGet, "/etcd/metrics", k.serviceAccountTokenFor(t, kubeGatewayNamespace, kubeScraperSA, cpAgentAudience), http.StatusUnauthorized)
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodPost, "/kube-scheduler/metrics", http.StatusMethodNotAllowed},
		{http.MethodGet, "/kube-scheduler/configz", http.StatusNotFound},
		{http.MethodGet, "/kube-scheduler/debug/pprof/", http.StatusNotFound},
		{http.MethodGet, "/kube-apiserver/metrics", http.StatusNotFound},
		{http.MethodGet, "/pods/" + cpDecoyIP + "/10259/metrics", http.StatusNotFound},
		{http.MethodGet, "/127.0.0.1:2379/metrics", http.StatusNotFound},
		{http.MethodGet, "/etcd:2379/metrics", http.StatusNotFound},
		{http.MethodGet, "/sd/control-plane", http.StatusNotFound},
	} {
		agentGet(c.method, c.path, gatewayTokenForAgents, c.want)
	}

	// 7. Prometheus scrapes /sd/control-plane through both gateways: every
	// component up through the agents; directly, those on 127.0.0.1 down
	// with the gateway's 502.
	prom := startPrometheus(t, kubeTestbin(t, "prometheus"), controlPlanePrometheusConfig(t, direct.addr, viaAgents.addr))
	procs = append(procs, prom.proc)
	var targets []kubeTarget
	for _, gw := range []struct {
		job, addr string
		agents    bool
	}{{jobControlPlaneDirect, direct.addr, false}, {jobControlPlane, viaAgents.addr, true}} {
		targets = append(targets, kubeTarget{job: gw.job, instance: apiServerAddr,
			scrapeURL: "http://" + gw.addr + "/apiservers/" + apiServerIP + "/" + apiServerPort + "/metrics"})
		for _, p := range cpPods {
			component := p.Labels["component"]
			if component == "" {
				component = "kube-proxy"
			}
			wantErr := ""
			if p.Spec.NodeName == cpLocal.name && !gw.agents {
				wantErr = "502"
			}
			targets = append(targets, kubeTarget{job: gw.job, instance: controlPlaneInstance(component, p),
				scrapeURL: "http://" + gw.addr + "/components/" + component + "/" + p.Spec.NodeName + "/metrics", wantErr: wantErr})
		}
	}
	// deploy/prometheus/control-plane-per-component.yml, through the agents:
	// one job per component, kube-prometheus' names, and the SLIs.
	perComponentJob := map[string]string{"kube-apiserver": "apiserver", "kube-scheduler": "kube-scheduler",
		"kube-controller-manager": "kube-controller-manager", "etcd": "kube-etcd", "kube-proxy": "kube-proxy"}
	for _, kt := range slices.Clone(targets) {
		if kt.job != jobControlPlane {
			continue
		}
		component := "kube-apiserver"
		if _, path, ok := strings.Cut(kt.scrapeURL, "/components/"); ok {
			component, _, _ = strings.Cut(path, "/")
		}
		perComponent := kt
		perComponent.job = perComponentJob[component]
		targets = append(targets, perComponent)
		if component == "kube-apiserver" || component == "kube-scheduler" || component == "kube-controller-manager" {
			slis := kt
			slis.job, slis.scrapeURL = jobControlPlaneSLIs, kt.scrapeURL+"/slis"
			targets = append(targets, slis)
		}
	}
	waitFor(t, kubeScrapeTimeout, "every control-plane target up through the agents, those on 127.0.0.1 down directly", procs, func() error {
		return checkKubeTargets(prom, targets)
	})
	t.Logf("Prometheus scraped the whole control plane through the gateways after %s", since())

	// 8. No token reached a decoy, nor any kube-proxy; the agents got only
	// the gateway's agent token.
	for _, d := range decoys {
		if n := d.conns.Load(); n != 0 {
			t.Errorf("decoy %s accepted %d connections, want none", d.addr, n)
		}
	}
	for node, p := range proxies {
		if auth := p.authorizations(); len(auth) != 0 {
			t.Errorf("kube-proxy on %s got Authorization headers %q, want none: it is http", node, auth)
		}
		if p.requests.Load() == 0 {
			t.Errorf("kube-proxy on %s was never scraped", node)
		}
	}
	for _, gw := range []*gatewayProc{direct, viaAgents} {
		if denials := rbacDenials(gw.proc.out.String(), kubeGatewayNamespace, kubeGatewaySA); len(denials) > 0 {
			t.Errorf("the API server refused the gateway %d times:\n%s", len(denials), strings.Join(denials, "\n"))
		}
	}
	for _, a := range agents {
		a.proc.signal(t, syscall.SIGTERM)
		a.proc.wantExitZero(t, "SIGTERM")
	}
	t.Logf("whole test took %s", since())
}

// Prometheus jobs of TestEndToEndControlPlane: deploy/prometheus/
// control-plane.yml's, through the gateway using the agents, and the same
// job through the gateway dialling components directly.
const (
	jobControlPlane       = "kubernetes-control-plane-cluster-a"
	jobControlPlaneDirect = "kubernetes-control-plane-direct"
	jobControlPlaneSLIs   = "kubernetes-control-plane-slis" // of control-plane-per-component.yml
)

// controlPlanePrometheusConfig returns deploy/prometheus/control-plane.yml's
// first job pointed at viaAgents, a copy of it named jobControlPlaneDirect
// pointed at direct, and control-plane-per-component.yml's jobs pointed at
// viaAgents.
func controlPlanePrometheusConfig(t *testing.T, direct, viaAgents string) string {
	t.Helper()
	jobs := deployPrometheusJobs(t, "control-plane.yml", viaAgents)
	first, _, _ := strings.Cut(strings.TrimPrefix(jobs, "  - job_name:"), "\n  - job_name:")
	first = "  - job_name:" + first
	if !strings.Contains(first, "job_name: "+jobControlPlane+"\n") {
		t.Fatalf("deploy/prometheus/control-plane.yml's first job is not %s:\n%s", jobControlPlane, first)
	}
	directJob := strings.NewReplacer("job_name: "+jobControlPlane+"\n", "job_name: "+jobControlPlaneDirect+"\n", viaAgents, direct).Replace(first)
	return "global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\nscrape_configs:\n" + first + directJob +
		deployPrometheusJobs(t, "control-plane-per-component.yml", viaAgents)
}

// controlPlaneInstance is the instance label /sd/control-plane gives a
// component's pod: its node and the component's port.
func controlPlaneInstance(component string, p *corev1.Pod) string {
	port := map[string]string{"kube-scheduler": "10259", "kube-controller-manager": "10257", "etcd": "2381", "kube-proxy": "10249"}[component]
	return net.JoinHostPort(p.Status.PodIP, port)
}

// createComponentPod creates a pod as the kubelet publishes a static pod or
// a DaemonSet's pod: bound to node, Running and ready at ip.
func createComponentPod(t *testing.T, k *kubeAPI, namespace, name string, node *svcNode, ip string, hostNetwork bool, labels map[string]string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	container := strings.TrimSuffix(name, "-"+node.name)
	pod, err := k.client.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:    node.name,
			HostNetwork: hostNetwork,
			Containers:  []corev1.Container{{Name: container, Image: "registry.k8s.io/" + container + ":v1.36.3"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("cannot create pod %s/%s: %v", namespace, name, err)
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: node.ip, HostIPs: []corev1.HostIP{{IP: node.ip}},
		PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, StartTime: &now,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: container, Ready: true, Started: new(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}},
	}
	if pod, err = k.client.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("cannot set the status of pod %s/%s: %v", namespace, name, err)
	}
	return pod
}

// recordingServer is an http /metrics server that counts the connections
// it accepts (a TLS client's too, which never becomes a request) and its
// requests, and records their Authorization headers.
type recordingServer struct {
	addr            string
	body            string
	conns, requests atomic.Int64
	mu              sync.Mutex
	auth            []string
}

func startRecordingServer(t *testing.T, ip, port, body string) *recordingServer {
	t.Helper()
	s := &recordingServer{body: body}
	ln := netnsListen(t, ip, port)
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ConnState: func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.conns.Add(1)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *recordingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if a := r.Header.Get("Authorization"); a != "" {
		s.mu.Lock()
		s.auth = append(s.auth, a)
		s.mu.Unlock()
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = io.WriteString(w, s.body)
}

func (s *recordingServer) authorizations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.auth)
}
