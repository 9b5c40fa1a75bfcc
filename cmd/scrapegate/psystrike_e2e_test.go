package main

// psystrike's own example Prometheus configuration against the gateway
// (issue 16): testdata/psystrike-example-prometheus.yml, a copy of
// psystrike's example/external-prometheus/prometheus.yml, loaded by a real
// Prometheus with only its addresses replaced. Its four Kubernetes jobs
// discover through the gateway's read-only discovery API (api_server: the
// gateway) and scrape through /apiservers/, /api/v1/nodes/{node}/proxy/...
// and /pods/ on the one port that serves TLS and plain HTTP. A second,
// reference Prometheus runs the same file with api_server the real API
// server: both must see the same targets with the same labels.
//
// In the test's network namespace (netns_test.go): the API server is
// advertised on 10.250.0.1, so default/kubernetes has its endpoint; nodes
// and their fake kubelets are on 10.250.6.x, pods on 10.244.6.x.

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

const (
	// psyExampleFile is psystrike's example, with its license header.
	psyExampleFile = "testdata/psystrike-example-prometheus.yml"
	// The example's addresses: psystrike's NodePort, and Prometheus itself.
	psyExampleGateway    = "localhost:31000"
	psyExamplePrometheus = "localhost:9090"

	psyNamespace = "psy-apps"

	// psyLastApplied is the annotation kubectl apply writes, a copy of the
	// whole object as applied, env values included. The gateway drops it
	// (docs/migrating-from-psystrike.md), so its labels are the one
	// difference allowed between the two Prometheus servers' discovery.
	psyLastApplied = "kubectl.kubernetes.io/last-applied-configuration"
)

// psyLastAppliedLabels are the labels Prometheus's kubernetes_sd makes of
// psyLastApplied on a pod, in role pod and role endpoints alike.
var psyLastAppliedLabels = []string{
	"__meta_kubernetes_pod_annotation_kubectl_kubernetes_io_last_applied_configuration",
	"__meta_kubernetes_pod_annotationpresent_kubectl_kubernetes_io_last_applied_configuration",
}

func TestEndToEndPsystrikeExample(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test against a real API server and Prometheus; skipped with -short")
	}
	begin := time.Now()
	since := func() time.Duration { return time.Since(begin).Round(time.Millisecond) }
	netnsKubeBinaries(t, "etcd", "kube-apiserver", "kubectl", "prometheus")
	var env []string
	if !inNetns() {
		env = append(env, netnsGatewayEnv+"="+buildGateway(t, raceEnabled()))
	}
	if !inNetworkNamespace(t, env...) {
		return
	}
	gatewayBin := os.Getenv(netnsGatewayEnv)
	promBin := kubeTestbin(t, "prometheus")
	example, err := os.ReadFile(psyExampleFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// 1. The API server at 10.250.0.1, publishing itself in
	// default/kubernetes (Endpoints and EndpointSlice), with deploy/base
	// applied: its RBAC must be all the gateway needs, the discovery API's
	// core/v1 Endpoints included.
	k := startKubeAPIAt(t, netnsAPIServerIP)
	out := k.kubectl(t, kubeTestbin(t, "kubectl"), "apply", "-k", filepath.Join("..", "..", "deploy", "base"))
	t.Logf("API server ready at %s, deploy/base applied after %s:\n%s", k.url, since(), strings.TrimSpace(out))
	for _, verb := range []string{"list", "watch"} {
		checkGatewayMay(t, k, verb, "endpoints")
	}
	if _, err := k.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: psyNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("cannot create namespace %s: %v", psyNamespace, err)
	}

	// 2. Nodes, each with a fake kubelet serving https on its InternalIP,
	// checking the gateway's kubelet token.
	kubeletCA := testutil.NewCA(t, "kubelets")
	kubeletToken := secRandom(t)
	kubeletTokenFile := filepath.Join(t.TempDir(), "kubelet-token")
	testutil.WriteFile(t, kubeletTokenFile, []byte(kubeletToken+"\n"))
	var nodes []*fakeKubelet
	for n := 1; n <= 2; n++ {
		kl := startFakeKubeletOn(t, netnsListen(t, "10.250.6."+strconv.Itoa(n), "0"), n, "psy-node-"+strconv.Itoa(n), kubeletCA, kubeletToken)
		createKubeletNode(t, k, kl)
		nodes = append(nodes, kl)
	}

	// 3. Pods, each with exactly one declared container port: the
	// example's kubernetes-pods rule takes the pod's IP from __address__,
	// ip:port of a declared port (a pod without one would be scraped at
	// the gateway's own /metrics, and one with two would be two targets
	// scraping the same URL). Annotated ones with prometheus.io/path: the
	// rule appends it as is, and no path means "/". The first carries a
	// secret in an env var, and kubectl's copy of itself with that value.
	type psyPod struct {
		namespace, path string
		port            string
		annotated       bool
	}
	var pods []*kubePod
	for i, pp := range []psyPod{
		{psyNamespace, "/metrics", "8080", true},
		{psyNamespace, "/metrics", "8080", true},
		{metav1.NamespaceDefault, "/custom/metrics", "9102", true},
		{psyNamespace, "/metrics", "8080", false},
	} {
		n := i + 1
		ln := netnsListen(t, "10.244.6."+strconv.Itoa(n), pp.port)
		p := &kubePod{fakePod: newFakePod(n, ln.Addr().(*net.TCPAddr)), namespace: pp.namespace, node: nodes[i%len(nodes)],
			path: pp.path, annotated: pp.annotated, phase: corev1.PodRunning}
		serveHTTP(t, ln, p)
		pods = append(pods, p)
	}
	scraped, quiet := pods[:3], pods[3]
	secret := "psy-secret-" + secRandom(t)
	for i, p := range pods {
		obj := kubePodObject(p)
		if i == 0 {
			obj.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DB_PASSWORD", Value: secret}}
			applied, err := json.Marshal(obj)
			if err != nil {
				t.Fatal(err)
			}
			obj.Annotations[psyLastApplied] = string(applied)
		}
		created, err := k.client.CoreV1().Pods(p.namespace).Create(ctx, obj, metav1.CreateOptions{})
		if err == nil {
			err = updateKubePodStatus(k, created, p)
		}
		if err != nil {
			t.Fatalf("cannot create pod %s: %v", p.key(), err)
		}
	}

	// 4. A Service in front of the psy-apps pods, with the Endpoints the
	// endpoints controller would write (none runs): role endpoints
	// discovers them, and the apiservers job drops them.
	svc := createService(t, k, psyNamespace, "web", map[string]string{"prometheus.io/scrape": "true"}, map[string]string{"app.kubernetes.io/name": kubeAppLabel},
		corev1.ServicePort{Name: "metrics", Port: 8080, TargetPort: intstr.FromString("metrics")})
	createPsyEndpoints(t, k, svc, []*kubePod{pods[0], pods[1]}, quiet)
	t.Logf("nodes, pods, Service and Endpoints created after %s", since())

	// 5. The gateway, as deploy/base's account, TLS and plain HTTP on one
	// port, as psystrike serves them; -access-log for what Prometheus asks.
	controlPlaneTokenFile := filepath.Join(t.TempDir(), "control-plane-token")
	testutil.WriteFile(t, controlPlaneTokenFile, []byte(k.serviceAccountToken(t, kubeGatewayNamespace, kubeGatewaySA)+"\n"))
	gwArgs := []string{
		"--listen=127.0.0.1:0",
		"--drain-delay=0s",
		"--log-format=json",
		"--log-level=info",
		"--access-log",
		"--kubernetes",
		"--kubeconfig=" + k.serviceAccountKubeconfig(t, kubeGatewayNamespace, kubeGatewaySA),
		"--kubelet-ca-file=" + kubeletCA.CertFile,
		"--kubelet-token-file=" + kubeletTokenFile,
		"--control-plane-ca-file=" + k.caFile,
		"--control-plane-token-file=" + controlPlaneTokenFile,
		"--tls-self-signed",
		"--tls-allow-plain",
	}
	gw := awaitServing(t, startProcess(t, "gateway", gatewayBin, gwArgs, "SCRAPEGATE_"))
	procs := []*process{gw.proc, k.apiserver, k.etcd}
	gwTLS := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the example's insecure_skip_verify
	waitFor(t, e2eStartTimeout, "the gateway's /readyz to answer 200 over plain HTTP and over TLS", procs, func() error {
		if _, err := httpGet("http://" + gw.addr + "/readyz"); err != nil {
			return err
		}
		status, _, body, err := secGet(gwTLS, "https://"+gw.addr+"/readyz", "")
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("https /readyz: %d %s", status, body)
		}
		return err
	})
	t.Logf("gateway ready on %s after %s", gw.addr, since())
	// -tls-self-signed: what it serves is the certificate whose SHA-256
	// fingerprint it logged, in whatever spelling (hex, with colons or not).
	conn, err := tls.Dial("tcp", gw.addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the certificate is what is checked
	if err != nil {
		t.Fatalf("cannot connect to the gateway over TLS: %v", err)
	}
	fingerprint := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
	conn.Close()
	if logged := strings.ToLower(strings.ReplaceAll(gw.proc.out.String(), ":", "")); !strings.Contains(logged, hex.EncodeToString(fingerprint[:])) {
		t.Errorf("the gateway serves a certificate with SHA-256 fingerprint %x, which its log does not name", fingerprint)
	}

	// 6. The two Prometheus servers: the example with only its addresses
	// replaced, and the reference, whose discovery asks the API server.
	promAddr := testutil.FreeAddr(t, "127.0.0.1").String()
	refAddr := testutil.FreeAddr(t, "127.0.0.1").String()
	config := psyExampleConfig(t, string(example), gw.addr, promAddr)
	prom := startPrometheusAt(t, "prometheus", promBin, promAddr, config)
	ref := startPrometheusAt(t, "prometheus-reference", promBin, refAddr, psyReferenceConfig(t, string(example), gw.addr, refAddr, k))
	procs = append(procs, prom.proc, ref.proc)
	t.Logf("Prometheus on %s, the reference on %s, after %s", prom.addr, ref.addr, since())

	// 7. Every target of every job up, in both.
	apiServerIP, apiServerPort, _ := strings.Cut(strings.TrimPrefix(k.url, "https://"), ":")
	want := func(own string) []string {
		urls := []string{
			"prometheus http://" + own + "/metrics",
			"kubernetes-apiservers https://" + gw.addr + "/apiservers/" + apiServerIP + "/" + apiServerPort + "/metrics",
		}
		for _, n := range nodes {
			urls = append(urls,
				"kubernetes-nodes https://"+gw.addr+"/api/v1/nodes/"+n.name+"/proxy/metrics",
				"kubernetes-cadvisor https://"+gw.addr+"/api/v1/nodes/"+n.name+"/proxy/metrics/cadvisor")
		}
		for _, p := range scraped {
			urls = append(urls, "kubernetes-pods http://"+gw.addr+"/pods/"+p.ip+"/"+p.port+p.metricsPath())
		}
		return urls
	}
	for _, pr := range []*promProc{prom, ref} {
		waitFor(t, kubeScrapeTimeout, "every target of "+pr.proc.name+" up", procs, func() error {
			return checkPsyTargetsUp(pr, want(pr.addr))
		})
	}
	t.Logf("every target up in both after %s", since())

	// 8. The same targets with the same labels, after relabeling and as
	// discovered, through the gateway as from the API server.
	var compared int
	waitFor(t, kubeScrapeTimeout, "the targets through the gateway's discovery API to equal those of the API server's", procs, func() error {
		compared, err = comparePsyTargets(prom, ref, secret)
		return err
	})
	t.Logf("the targets of both equal (%d targets compared) after %s", compared, since())

	// 9. The discovery API serves the pod without its secret, in JSON
	// and protobuf alike (Prometheus asks for protobuf).
	for _, accept := range []string{"application/json", "application/vnd.kubernetes.protobuf"} {
		req, err := http.NewRequest(http.MethodGet, "https://"+gw.addr+"/api/v1/namespaces/"+psyNamespace+"/pods", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", accept)
		resp, err := gwTLS.Do(req)
		if err != nil {
			t.Errorf("GET /api/v1/namespaces/%s/pods (%s): %v", psyNamespace, accept, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			t.Errorf("GET /api/v1/namespaces/%s/pods (%s): %v", psyNamespace, accept, err)
		case resp.StatusCode != http.StatusOK || !strings.Contains(string(body), pods[0].name):
			t.Errorf("GET /api/v1/namespaces/%s/pods (%s): %d %.300q, want 200 listing %s", psyNamespace, accept, resp.StatusCode, body, pods[0].name)
		case strings.Contains(string(body), secret):
			t.Errorf("GET /api/v1/namespaces/%s/pods (%s) shows the env value of %s", psyNamespace, accept, pods[0].key())
		}
	}

	// 10. The kubelets got only requests with the token, on both metrics
	// paths; the pods that are targets were scraped, the other never.
	for _, n := range nodes {
		if bad, wrong, good := n.badAuth.Load(), n.wrongPaths.Load(), n.requests.Load(); bad != 0 || wrong != 0 || good == 0 {
			t.Errorf("kubelet of %s: %d requests without the token and %d for other paths, want none; %d good ones, want some", n.name, bad, wrong, good)
		}
	}
	for _, p := range scraped {
		if p.requests.Load() == 0 {
			t.Errorf("%s was never scraped", p.key())
		}
	}
	if n := quiet.requests.Load(); n != 0 {
		t.Errorf("%s, not annotated, was scraped %d times", quiet.key(), n)
	}
	// Prometheus listed and watched through the gateway what the
	// example's roles read: role node nodes, role pod pods, role
	// endpoints Endpoints, Services and pods, all cluster-wide.
	asked := psyDiscoveryRequests(gw.proc.out.String())
	var lines []string
	for r, n := range asked {
		lines = append(lines, fmt.Sprintf("\t%s: %d", r, n))
	}
	slices.Sort(lines)
	t.Logf("what the gateway's discovery API was asked:\n%s", strings.Join(lines, "\n"))
	for _, resource := range []string{"nodes", "pods", "endpoints", "services"} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "\tGET /api/v1/"+resource+" ") }) {
			t.Errorf("the gateway's access log has no GET /api/v1/%s: Prometheus's discovery did not ask the gateway", resource)
		}
	}
	if denials := rbacDenials(gw.proc.out.String(), kubeGatewayNamespace, kubeGatewaySA); len(denials) > 0 {
		t.Errorf("the API server refused the gateway, running with the RBAC of deploy/base, %d times:\n%s", len(denials), strings.Join(denials, "\n"))
	}

	// 11. Ten more watchers cost the API server no watch: they share the
	// gateway's.
	checkWatchersShareOneWatch(t, k, gw.addr, psyNamespace, procs)
	t.Logf("ten watchers shared the gateway's watch after %s", since())

	// Hostile requests for what psystrike passes on with its token
	// (secrets, configmaps, serviceaccounts/token, pods/exec, other verbs,
	// traversal and encoding tricks) are refused, and none reaches the API
	// server.
	checkHostileNeverReachesAPIServer(t, k, gw.addr, psyNamespace)
	t.Logf("hostile requests refused, none reached the API server, after %s", since())

	// 12. A client-go informer on the gateway survives its restart: the
	// new process's resourceVersions are not the old one's (410), and the
	// informer lists again, seeing what changed while the gateway was down.
	informer := startSurvivingInformer(t, gw.addr, psyNamespace, procs)
	createBarePod(t, k, psyNamespace, "psy-gone-during-restart")
	waitFor(t, kubeScrapeTimeout, "the informer on the gateway to see a new pod", procs, func() error {
		if !informer.has(psyNamespace, "psy-gone-during-restart") {
			return fmt.Errorf("no pod %s/psy-gone-during-restart in the informer", psyNamespace)
		}
		return nil
	})
	oldRV := informer.informer.LastSyncResourceVersion()

	// 13. SIGTERM: the gateway exits 0 while Prometheus's and the
	// informer's watches are open.
	gw.proc.signal(t, syscall.SIGTERM)
	gw.proc.wantExitZero(t, "SIGTERM with Prometheus's watches open")
	if err := k.client.CoreV1().Pods(psyNamespace).Delete(ctx, "psy-gone-during-restart", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	createBarePod(t, k, psyNamespace, "psy-made-during-restart")
	gw = awaitServing(t, startProcess(t, "gateway-restarted", gatewayBin, append(gwArgs, "--listen="+gw.addr), "SCRAPEGATE_"))
	procs = []*process{gw.proc, k.apiserver, k.etcd, prom.proc, ref.proc}
	waitFor(t, kubeScrapeTimeout, "the informer to see what changed while the gateway was down", procs, func() error {
		if informer.has(psyNamespace, "psy-gone-during-restart") || !informer.has(psyNamespace, "psy-made-during-restart") {
			return fmt.Errorf("the informer has psy-gone-during-restart %v (want false), psy-made-during-restart %v (want true)",
				informer.has(psyNamespace, "psy-gone-during-restart"), informer.has(psyNamespace, "psy-made-during-restart"))
		}
		return nil
	})
	checkOldVersionGone(t, gw.addr, psyNamespace, oldRV)
	t.Logf("the informer survived the gateway's restart (%d watch errors 410 seen by it) after %s", informer.expired.Load(), since())
	gw.proc.signal(t, syscall.SIGTERM)
	gw.proc.wantExitZero(t, "SIGTERM of the restarted gateway")
	t.Logf("whole test took %s", since())
}

// psyExampleConfig returns the example with psystrike's address replaced by
// the gateway's and Prometheus's own by own, as plain string replacement,
// failing the test unless replacing them back gives the example again:
// nothing else differs.
func psyExampleConfig(t *testing.T, example, gwAddr, own string) string {
	t.Helper()
	if n := strings.Count(example, psyExampleGateway); n != 10 {
		// Four api_server lines, four __address__ replacements, the
		// commented-out http:// api_server of kubernetes-pods, and the
		// header's comment.
		t.Fatalf("%s names %s %d times, want 10", psyExampleFile, psyExampleGateway, n)
	}
	if n := strings.Count(example, psyExamplePrometheus); n != 1 {
		t.Fatalf("%s names %s %d times, want once", psyExampleFile, psyExamplePrometheus, n)
	}
	config := strings.NewReplacer(psyExampleGateway, gwAddr, psyExamplePrometheus, own).Replace(example)
	if back := strings.NewReplacer(gwAddr, psyExampleGateway, own, psyExamplePrometheus).Replace(config); back != example {
		t.Fatalf("the example with its addresses replaced is not the example but for them:\n%s", config)
	}
	return config
}

// psyReferenceConfig returns psyExampleConfig's configuration with each
// api_server line naming k's API server instead of the gateway, and the
// admin's token to ask it with. The example's tls_config beside it
// (insecure_skip_verify) stays, now for the API server's self-signed
// certificate; everything else is the example's.
func psyReferenceConfig(t *testing.T, example, gwAddr, own string, k *kubeAPI) string {
	t.Helper()
	var b strings.Builder
	n := 0
	for line := range strings.Lines(psyExampleConfig(t, example, gwAddr, own)) {
		trimmed := strings.TrimLeft(line, " ")
		if trimmed != "api_server: https://"+gwAddr+"/\n" {
			b.WriteString(line)
			continue
		}
		indent := line[:len(line)-len(trimmed)]
		n++
		fmt.Fprintf(&b, "%sapi_server: %q\n%sauthorization:\n%s  credentials_file: %q\n", indent, k.url, indent, indent, k.adminTokenFile)
	}
	if n != 4 {
		t.Fatalf("%s has %d api_server lines naming the gateway, want 4", psyExampleFile, n)
	}
	return b.String()
}

// checkGatewayMay fails the test unless deploy/base lets the gateway's
// ServiceAccount verb resource (core group) cluster-wide.
func checkGatewayMay(t *testing.T, k *kubeAPI, verb, resource string) {
	t.Helper()
	user := "system:serviceaccount:" + kubeGatewayNamespace + ":" + kubeGatewaySA
	sar, err := k.client.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + kubeGatewayNamespace},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("cannot review whether %s may %s %s: %v", user, verb, resource, err)
	}
	if !sar.Status.Allowed {
		t.Fatalf("deploy/base does not let %s %s %s, which the discovery API serves (role: endpoints): %s", user, verb, resource, sar.Status.Reason)
	}
}

// createPsyEndpoints creates the Endpoints of svc the endpoints controller
// would write: ready pods' addresses, and notReady's among the not ready.
func createPsyEndpoints(t *testing.T, k *kubeAPI, svc *corev1.Service, ready []*kubePod, notReady *kubePod) {
	t.Helper()
	address := func(p *kubePod) corev1.EndpointAddress {
		return corev1.EndpointAddress{IP: p.ip, NodeName: &p.node.name,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.namespace, Name: p.name}}
	}
	subset := corev1.EndpointSubset{NotReadyAddresses: []corev1.EndpointAddress{address(notReady)},
		Ports: []corev1.EndpointPort{{Name: "metrics", Port: 8080, Protocol: corev1.ProtocolTCP}}}
	for _, p := range ready {
		subset.Addresses = append(subset.Addresses, address(p))
	}
	if _, err := k.client.CoreV1().Endpoints(svc.Namespace).Create(context.Background(), &corev1.Endpoints{ //nolint:staticcheck // the deprecated API is what role: endpoints reads
		ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: svc.Labels},
		Subsets:    []corev1.EndpointSubset{subset},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("cannot create Endpoints %s/%s: %v", svc.Namespace, svc.Name, err)
	}
}

// checkPsyTargetsUp returns an error unless prom's active targets are
// exactly want ("<job> <scrape URL>"), all up: told apart by URL, the one
// thing that shows each went to the gateway's route for its own target.
func checkPsyTargetsUp(prom *promProc, want []string) error {
	active, err := promActiveTargets(prom)
	if err != nil {
		return err
	}
	var problems []string
	seen := map[string]bool{}
	for _, tg := range active {
		key := tg.ScrapePool + " " + tg.ScrapeURL
		switch {
		case !slices.Contains(want, key):
			problems = append(problems, fmt.Sprintf("unexpected target %s (%s)", key, tg.Health))
			continue
		case seen[key]:
			problems = append(problems, "duplicate target "+key)
		}
		seen[key] = true
		problems = append(problems, checkScrape(key, tg.ScrapeURL, "", tg)...)
	}
	for _, key := range want {
		if !seen[key] {
			problems = append(problems, "missing target "+key)
		}
	}
	return problemsErr(fmt.Sprintf("%s: %d active targets", prom.proc.name, len(active)), problems)
}

// psyAnyTargets returns every target of prom, active and dropped, one line
// each: state, labels after relabeling (active ones), discovered labels.
// Prometheus's own address (the prometheus job's target, localhost:9090 in
// the example) is written <own address>: the two servers listen on two.
func psyAnyTargets(prom *promProc) ([]string, error) {
	var resp struct {
		ActiveTargets  []promTarget `json:"activeTargets"`
		DroppedTargets []struct {
			DiscoveredLabels map[string]string `json:"discoveredLabels"`
		} `json:"droppedTargets"`
	}
	if err := promAPI(prom, "/api/v1/targets?state=any", &resp); err != nil {
		return nil, err
	}
	own := func(l map[string]string, name string) map[string]string {
		l = maps.Clone(l)
		if l["job"] == "prometheus" && l[name] == prom.addr {
			l[name] = "<own address>"
		}
		return l
	}
	var lines []string
	for _, tg := range resp.ActiveTargets {
		lines = append(lines, "active "+psyLabels(own(tg.Labels, "instance"))+" discovered "+psyLabels(own(tg.DiscoveredLabels, "__address__")))
	}
	for _, tg := range resp.DroppedTargets {
		lines = append(lines, "dropped discovered "+psyLabels(tg.DiscoveredLabels))
	}
	slices.Sort(lines)
	return lines, nil
}

func psyLabels(l map[string]string) string {
	b, _ := json.Marshal(l) // sorted by name
	return string(b)
}

// comparePsyTargets returns an error unless prom, discovering through the
// gateway, and ref, discovering from the API server, have the same targets
// with the same labels, and returns how many it compared.
//
// What may differ, and why: no label of Prometheus's kubernetes_sd is made
// from api_server (it only says where to list and watch; __address__ is the
// object's address, and both scrape through the same gateway address), and
// the objects are the same ones, uids and all. So only two things do:
// Prometheus's own address in the prometheus job (psyAnyTargets), and the
// psyLastApplied annotation, which the gateway drops: ref must have it on
// the pod that carries it, prom nowhere. Beyond the labels' equality, no
// value prom has may contain secret.
func comparePsyTargets(prom, ref *promProc, secret string) (int, error) {
	got, err := psyAnyTargets(prom)
	if err != nil {
		return 0, err
	}
	reference, err := psyAnyTargets(ref)
	if err != nil {
		return 0, err
	}
	var problems []string
	for _, line := range got {
		if strings.Contains(line, secret) {
			problems = append(problems, "through the gateway, a label has the pod's env value: "+line)
		}
	}
	withLastApplied := 0
	for i, line := range reference {
		// Decode the labels back to drop the two: the lines are
		// "<state> [<labels>] discovered <labels>".
		head, discovered, _ := strings.Cut(line, " discovered ")
		var l map[string]string
		if err := json.Unmarshal([]byte(discovered), &l); err != nil {
			return 0, fmt.Errorf("%s: %v", line, err)
		}
		if _, ok := l[psyLastAppliedLabels[0]]; !ok {
			continue
		}
		withLastApplied++
		for _, name := range psyLastAppliedLabels {
			delete(l, name)
		}
		reference[i] = head + " discovered " + psyLabels(l)
	}
	if withLastApplied == 0 {
		problems = append(problems, "the reference discovered no target with the "+psyLastApplied+" annotation: the test's pod lacks it")
	}
	slices.Sort(reference)
	for _, line := range psyMinus(got, reference) {
		problems = append(problems, "only through the gateway: "+line)
	}
	for _, line := range psyMinus(reference, got) {
		problems = append(problems, "only from the API server: "+line)
	}
	return len(got), problemsErr(fmt.Sprintf("targets through the gateway (%d) against those from the API server (%d)", len(got), len(reference)), problems)
}

// psyMinus returns the lines of a that b lacks, counting repeats; both sorted.
func psyMinus(a, b []string) []string {
	var out []string
	for i, j := 0, 0; i < len(a); {
		switch {
		case j == len(b) || a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			j++
		default:
			i++
			j++
		}
	}
	return out
}

// psyDiscoveryRequests counts the gateway's access log lines for the
// discovery API by "<method> <path> <status>", the query dropped.
func psyDiscoveryRequests(log string) map[string]int {
	counts := map[string]int{}
	for line := range strings.Lines(log) {
		var entry struct {
			Message, Method, URI string
			Status               int
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Message != "request" {
			continue
		}
		path, _, _ := strings.Cut(entry.URI, "?")
		discovery := path == "/version" || path == "/api" || path == "/apis" || strings.HasPrefix(path, "/api/") || strings.HasPrefix(path, "/apis/")
		if discovery && !strings.Contains(path, "/proxy/") {
			counts[fmt.Sprintf("%s %s %d", entry.Method, path, entry.Status)]++
		}
	}
	return counts
}
