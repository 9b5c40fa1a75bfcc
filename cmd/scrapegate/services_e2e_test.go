package main

// End-to-end test of Services through the gateway (issue 14), in the test's
// own network namespace (netns_test.go): a real API server advertised on
// 10.250.0.1, Services and EndpointSlices created through it pointing at
// fake exporters on 10.244.x.y, the gateway with deploy/base's
// ServiceAccount and RBAC and its default -allow-cidrs, and a real
// Prometheus with the jobs of deploy/prometheus/endpoints-sd.yml,
// kube-state-metrics.yml and apiservers.yml, plus its own role:
// endpointslice discovery to compare labels with. The API server itself is
// scraped through /apiservers/ with the gateway's ServiceAccount token.
//
// No controller runs: the test writes the EndpointSlices the EndpointSlice
// controller would, and sets pods' status as a kubelet would.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

const (
	// netnsGatewayEnv passes the gateway binary, built outside where
	// the module cache may need the network, to the test in the namespace.
	netnsGatewayEnv = "E2E_SCRAPEGATE_GATEWAY_BIN"

	svcAppsNamespace = "e2e-apps"
	// svcKSMPods sizes kube-system's kube-state-metrics body: ~22 MB.
	svcKSMPods = 20000
	svcKSMName = "kube-state-metrics.kube-system.svc.cluster.local:8080"
	svcWebPort = "8080"
	svcDBPort  = "9187"

	// Prometheus jobs: those of deploy/prometheus/, and one of its own
	// discovery, which scrapes nothing (every target dropped).
	jobSvcEndpoints   = "kubernetes-service-endpoints-cluster-a"
	jobSvcKSM         = "kube-state-metrics-cluster-a"
	jobSvcKSMProxyURL = "kube-state-metrics-proxy-url-cluster-a"
	jobSvcOwnSD       = "kube-sd-endpointslice"
	jobAPIServers     = "kubernetes-apiservers-cluster-a"

	// deployGatewayHost is the gateway's address in deploy/prometheus/.
	deployGatewayHost = "scrapegate.cluster-a.example.com:31000"
)

// svcPod is a pod behind a Service: an API object, running and ready
// unless the test says otherwise.
type svcPod struct {
	namespace, name, ip string
	node                *svcNode
	hostNetwork         bool
	ports               []corev1.ContainerPort
	annotations         map[string]string
}

func (p *svcPod) key() string { return p.namespace + "/" + p.name }

// svcNode is a Node object; no kubelet runs.
type svcNode struct{ name, ip string }

// sliceEndpoint is an endpoint of an EndpointSlice: a pod's, or with pod
// nil an address with no pod (a manually managed slice).
type sliceEndpoint struct {
	ip       string
	pod      *svcPod
	notReady bool // terminating: not ready, still serving
}

func TestEndToEndServices(t *testing.T) {
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
	ctx := context.Background()

	// 1. The API server at 10.250.0.1, publishing itself in
	// default/kubernetes, with deploy/base applied.
	k := startKubeAPIAt(t, netnsAPIServerIP)
	out := k.kubectl(t, kubeTestbin(t, "kubectl"), "apply", "-k", filepath.Join("..", "..", "deploy", "base"))
	t.Logf("API server ready at %s, deploy/base applied after %s:\n%s", k.url, since(), strings.TrimSpace(out))
	for _, ns := range []string{kubeMonitoringNamespace, svcAppsNamespace} {
		if _, err := k.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("cannot create namespace %s: %v", ns, err)
		}
	}
	nodes := []*svcNode{{"svc-node-1", "10.250.1.1"}, {"svc-node-2", "10.250.1.2"}}
	for _, n := range nodes {
		createSvcNode(t, k, n)
	}
	proxyCA := testutil.NewCA(t, "kube-rbac-proxy")

	// 2. kube-system/kube-state-metrics: the large body, plain http on the
	// pod's 8080, scraped by its name.
	ksm := newKSMStandIn(t, "kube-system/kube-state-metrics-0", svcKSMPods)
	ksmPod := &svcPod{namespace: "kube-system", name: "kube-state-metrics-0", ip: "10.244.1.10", node: nodes[0],
		ports: []corev1.ContainerPort{{Name: "http-metrics", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}
	serveHTTP(t, netnsListen(t, ksmPod.ip, "8080"), ksm)
	t.Logf("kube-state-metrics body: %d bytes, %d gzipped, %d series", len(ksm.plain), len(ksm.gzipped), ksm.samples)

	// 3. monitoring/kube-state-metrics behind kube-rbac-proxy (https-main
	// 8443), opted in to the scrape token; monitoring/node-exporter behind
	// kube-rbac-proxy on each node's address (hostNetwork), not opted in.
	scrapeAnnotations := func(scheme string, extra ...string) map[string]string {
		a := map[string]string{"prometheus.io/scrape": "true"}
		if scheme != "" {
			a["prometheus.io/scheme"] = scheme
		}
		for i := 0; i+1 < len(extra); i += 2 {
			a[extra[i]] = extra[i+1]
		}
		return a
	}
	monKSM := newKSMStandIn(t, "monitoring/kube-state-metrics-0", 200)
	monKSMLn := testutil.Listen(t, "127.0.0.1")
	serveHTTP(t, monKSMLn, monKSM)
	monKSMPod := &svcPod{namespace: kubeMonitoringNamespace, name: "kube-state-metrics-0", ip: "10.244.2.10", node: nodes[1],
		ports: []corev1.ContainerPort{{Name: "https-main", ContainerPort: 8443, Protocol: corev1.ProtocolTCP}}}
	monKSMProxy := startRBACProxyStandIn(t, k, rbacProxyAccount(t, k, kubeMonitoringNamespace, "kube-state-metrics"),
		netnsListen(t, monKSMPod.ip, "8443"), proxyCA, "http://"+monKSMLn.Addr().String())
	nodeExporterToken := rbacProxyAccount(t, k, kubeMonitoringNamespace, "node-exporter")
	var nodeExporterPods []*svcPod
	var nodeExporterProxies []*rbacProxyStandIn
	var nodeExporters []*nodeExporterStandIn
	for i, n := range nodes {
		ne := newNodeExporterStandIn(n.name)
		ln := testutil.Listen(t, "127.0.0.1")
		serveHTTP(t, ln, ne)
		nodeExporters = append(nodeExporters, ne)
		nodeExporterProxies = append(nodeExporterProxies, startRBACProxyStandIn(t, k, nodeExporterToken, netnsListen(t, n.ip, "9100"), proxyCA, "http://"+ln.Addr().String()))
		nodeExporterPods = append(nodeExporterPods, &svcPod{namespace: kubeMonitoringNamespace, name: "node-exporter-" + strconv.Itoa(i), ip: n.ip, node: n, hostNetwork: true,
			ports: []corev1.ContainerPort{{Name: "https", ContainerPort: 9100, HostPort: 9100, Protocol: corev1.ProtocolTCP}}})
	}

	// 4. e2e-apps/web: four pods, three in the slice at first (the fourth
	// joins later); e2e-apps/external-db: a slice the test manages itself,
	// with an address and no pod.
	var webServers []*fakePod
	for i := 1; i <= 4; i++ {
		ln := netnsListen(t, "10.244.3."+strconv.Itoa(i), svcWebPort)
		p := newFakePod(i, ln.Addr().(*net.TCPAddr))
		serveHTTP(t, ln, p)
		webServers = append(webServers, p)
	}
	var webPods []*svcPod
	for i, s := range webServers {
		webPods = append(webPods, &svcPod{namespace: svcAppsNamespace, name: "web-" + strconv.Itoa(i+1), ip: s.ip, node: nodes[i%len(nodes)],
			ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}})
	}
	dbLn := netnsListen(t, "10.244.9.9", svcDBPort)
	db := newFakePod(99, dbLn.Addr().(*net.TCPAddr))
	serveHTTP(t, dbLn, db)

	for _, p := range slices.Concat([]*svcPod{ksmPod, monKSMPod}, nodeExporterPods, webPods) {
		createSvcPod(t, k, p)
	}
	ksmSvc := createService(t, k, "kube-system", "kube-state-metrics", nil, map[string]string{"app.kubernetes.io/name": "kube-state-metrics"},
		corev1.ServicePort{Name: "http-metrics", Port: 8080, TargetPort: intstr.FromString("http-metrics")})
	createSlice(t, k, ksmSvc, "kube-state-metrics-abcde", []discoveryv1.EndpointPort{slicePort("http-metrics", 8080)}, []sliceEndpoint{{ip: ksmPod.ip, pod: ksmPod}})
	monKSMSvc := createService(t, k, kubeMonitoringNamespace, "kube-state-metrics", scrapeAnnotations("https", kubeAnnotationScrapeToken, "true"),
		map[string]string{"app.kubernetes.io/name": "kube-state-metrics"},
		corev1.ServicePort{Name: "https-main", Port: 8443, TargetPort: intstr.FromString("https-main")})
	createSlice(t, k, monKSMSvc, "kube-state-metrics-fghij", []discoveryv1.EndpointPort{slicePort("https-main", 8443)}, []sliceEndpoint{{ip: monKSMPod.ip, pod: monKSMPod}})
	neSvc := createService(t, k, kubeMonitoringNamespace, "node-exporter", scrapeAnnotations("https"), map[string]string{"app.kubernetes.io/name": "node-exporter"},
		corev1.ServicePort{Name: "https", Port: 9100, TargetPort: intstr.FromString("https")})
	var neEndpoints []sliceEndpoint
	for _, p := range nodeExporterPods {
		neEndpoints = append(neEndpoints, sliceEndpoint{ip: p.ip, pod: p})
	}
	createSlice(t, k, neSvc, "node-exporter-klmno", []discoveryv1.EndpointPort{slicePort("https", 9100)}, neEndpoints)
	webSvc := createService(t, k, svcAppsNamespace, "web", scrapeAnnotations("", "prometheus.io/path", "/metrics"), map[string]string{"app": "web"},
		corev1.ServicePort{Name: "metrics", Port: 8080, TargetPort: intstr.FromString("metrics")})
	var webEndpoints []sliceEndpoint
	for _, p := range webPods[:3] {
		webEndpoints = append(webEndpoints, sliceEndpoint{ip: p.ip, pod: p})
	}
	createSlice(t, k, webSvc, "web-pqrst", []discoveryv1.EndpointPort{slicePort("metrics", 8080)}, webEndpoints)
	dbSvc := createService(t, k, svcAppsNamespace, "external-db", scrapeAnnotations(""), nil,
		corev1.ServicePort{Name: "metrics", Port: 9187, TargetPort: intstr.FromInt32(9187)})
	createSlice(t, k, dbSvc, "external-db-manual", []discoveryv1.EndpointPort{slicePort("metrics", 9187)}, []sliceEndpoint{{ip: db.ip}})
	t.Logf("Services, EndpointSlices and pods created after %s", since())

	// 5. The gateway, as deploy/base's account, its default -allow-cidrs,
	// the scraper's token for the monitoring namespace, and its own
	// account's token for the API servers, as in a pod.
	scraperTokenFile := filepath.Join(t.TempDir(), "scraper-token")
	testutil.WriteFile(t, scraperTokenFile, []byte(k.serviceAccountToken(t, kubeGatewayNamespace, kubeScraperSA)+"\n"))
	controlPlaneTokenFile := filepath.Join(t.TempDir(), "control-plane-token")
	testutil.WriteFile(t, controlPlaneTokenFile, []byte(k.serviceAccountToken(t, kubeGatewayNamespace, kubeGatewaySA)+"\n"))
	gw := awaitServing(t, startProcess(t, "gateway", gatewayBin, []string{
		"--listen=127.0.0.1:0",
		"--drain-delay=0s",
		"--log-format=json",
		"--log-level=info",
		"--kubernetes",
		"--kubeconfig=" + k.serviceAccountKubeconfig(t, kubeGatewayNamespace, kubeGatewaySA),
		"--kubelet-token-file=",
		"--target-token-file=" + scraperTokenFile,
		"--target-token-namespaces=" + kubeMonitoringNamespace,
		"--target-tls-ca-file=" + proxyCA.CertFile,
		"--control-plane-ca-file=" + k.caFile,
		"--control-plane-token-file=" + controlPlaneTokenFile,
		// The API server's port, denied as 6443 is by default: /apiservers/
		// is not judged by the port rules.
		"--deny-ports=2379-2380,6443,10250,10255," + k.url[strings.LastIndexByte(k.url, ':')+1:],
	}, "SCRAPEGATE_"))
	procs := []*process{gw.proc, k.apiserver, k.etcd}
	waitFor(t, e2eStartTimeout, "the gateway's /readyz to answer 200", procs, func() error {
		_, err := httpGet("http://" + gw.addr + "/readyz")
		return err
	})
	t.Logf("gateway ready on %s after %s", gw.addr, since())

	// 6. /sd/endpoints lists every endpoint of the annotated Services.
	wantSD := []svcEndpoint{
		{svcAppsNamespace, "web", webPods[0].ip, svcWebPort, "/metrics", true},
		{svcAppsNamespace, "web", webPods[1].ip, svcWebPort, "/metrics", true},
		{svcAppsNamespace, "web", webPods[2].ip, svcWebPort, "/metrics", true},
		{svcAppsNamespace, "external-db", db.ip, svcDBPort, "/metrics", true},
		{kubeMonitoringNamespace, "kube-state-metrics", monKSMPod.ip, "8443", "/metrics", true},
		{kubeMonitoringNamespace, "node-exporter", nodes[0].ip, "9100", "/metrics", true},
		{kubeMonitoringNamespace, "node-exporter", nodes[1].ip, "9100", "/metrics", true},
	}
	waitFor(t, e2eStartTimeout, "/sd/endpoints to list every endpoint of the annotated Services", procs, func() error {
		return checkEndpointsSD(gw.addr, wantSD)
	})

	// 7. Scrapes by Service name, each naming the endpoint it used.
	ksmEndpoint := "10.244.1.10:8080; pod=kube-system/kube-state-metrics-0"
	for _, c := range []struct {
		path, wantEndpoint string
		wantStatus         int
		wantBody           string
	}{
		{"/services/kube-system/kube-state-metrics/8080/metrics", ksmEndpoint, http.StatusOK, ksmEndMarker + `{exporter="kube-system/kube-state-metrics-0"} 1`},
		{"/services/kube-system/kube-state-metrics/http-metrics/metrics", ksmEndpoint, http.StatusOK, ksmEndMarker},
		{"/services/e2e-apps/external-db/9187/metrics", db.addr, http.StatusOK, "fake_pod_value 99"},
		{"/services/e2e-apps/external-db/metrics/metrics", db.addr, http.StatusOK, "fake_pod_value 99"},
		// The scrape token reaches the opted-in target behind kube-rbac-proxy ...
		{"/services/monitoring/kube-state-metrics/https-main/metrics", "10.244.2.10:8443; pod=monitoring/kube-state-metrics-0", http.StatusOK, ksmEndMarker + `{exporter="monitoring/kube-state-metrics-0"} 1`},
		// ... and not the one that did not opt in: its proxy's 401.
		{"/services/monitoring/node-exporter/https/metrics", "", http.StatusUnauthorized, "Unauthorized"},
		{"/services/kube-system/no-such-service/8080/metrics", "", http.StatusNotFound, ""},
		{"/services/kube-system/kube-state-metrics/9999/metrics", "", http.StatusNotFound, ""},
		{"/services/kube-system/kube-state-metrics/no-such-port/metrics", "", http.StatusNotFound, ""},
	} {
		if err := checkServiceGet(gw.addr, "http://"+gw.addr+c.path, c.wantStatus, c.wantEndpoint, c.wantBody); err != nil {
			t.Error(err)
		}
	}
	for _, name := range []string{"kube-state-metrics.kube-system.svc:8080", svcKSMName} {
		if err := checkServiceGet(gw.addr, "http://"+name+"/metrics", http.StatusOK, ksmEndpoint, ksmEndMarker); err != nil {
			t.Errorf("through the gateway as a forward proxy: %v", err)
		}
	}

	// 7b. The API server through /apiservers/: only at its endpoint of
	// default/kubernetes, whatever -allow-cidrs and -deny-ports (6443...)
	// say, and only on its two metrics paths.
	apiServerAddr := strings.TrimPrefix(k.url, "https://")
	apiServerIP, apiServerPort, _ := strings.Cut(apiServerAddr, ":")
	for _, c := range []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/apiservers/" + apiServerIP + "/" + apiServerPort + "/metrics", http.StatusOK, "apiserver_request_total"},
		{"/apiservers/" + apiServerIP + "/" + apiServerPort + "/metrics/slis", http.StatusOK, "kubernetes_healthcheck"},
		{"/apiservers/" + webPods[0].ip + "/" + apiServerPort + "/metrics", http.StatusForbidden, "is not an endpoint of the default/kubernetes Service"},
		{"/apiservers/" + webPods[0].ip + "/" + svcWebPort + "/metrics", http.StatusForbidden, "is not an endpoint of the default/kubernetes Service"},
		{"/apiservers/" + apiServerIP + "/" + apiServerPort + "/api/v1/secrets", http.StatusBadRequest, "must be one of /metrics, /metrics/slis"},
	} {
		if err := checkServiceGet(gw.addr, "http://"+gw.addr+c.path, c.wantStatus, "", c.wantBody); err != nil {
			t.Error(err)
		}
	}
	if n := webServers[0].requests.Load(); n != 0 {
		t.Errorf("web-1 got %d requests from /apiservers/, want none", n)
	}

	// 8. Prometheus: the jobs of deploy/prometheus/ and its own discovery.
	prom := startPrometheus(t, promBin, servicesPrometheusConfig(t, gw.addr, k))
	procs = append(procs, prom.proc)
	t.Logf("Prometheus ready on %s after %s", prom.addr, since())
	targets := append(servicesTargets(gw.addr, wantSD), kubeTarget{job: jobAPIServers, instance: apiServerAddr,
		scrapeURL: "http://" + gw.addr + "/apiservers/" + apiServerIP + "/" + apiServerPort + "/metrics"})
	waitFor(t, kubeScrapeTimeout, "every Service target up, but node-exporter down with 401", procs, func() error {
		return checkKubeTargets(prom, targets)
	})
	waitFor(t, kubeScrapeTimeout, fmt.Sprintf("%d successful scrapes of each target that must be up", e2eMinScrapes), procs, func() error {
		return checkScrapeCounts(prom, time.Now(), targets)
	})
	t.Logf("every target scraped %d times after %s", e2eMinScrapes, since())
	if samples, err := promQuery(prom, `count(apiserver_request_total{job="`+jobAPIServers+`"})`, time.Now()); err != nil || len(samples) != 1 || samples[0].value == 0 {
		t.Errorf("Prometheus has no apiserver_request_total series of job %s: %v (%v)", jobAPIServers, samples, err)
	}

	// 9. kube-state-metrics' whole body, every time: each successful
	// scrape stored the marker at its end, and counted every series.
	at := time.Now()
	// Only the kube-state-metrics jobs: the stand-in's marker carries an
	// exporter label, which on(job, instance) ignores.
	const ksmJobs = `{job=~"kube-state-metrics.*"}`
	ksmTargets := slices.DeleteFunc(slices.Clone(targets), func(kt kubeTarget) bool { return kt.job == jobSvcEndpoints || kt.job == jobAPIServers })
	if err := checkEachTarget(prom, "sum_over_time(up"+ksmJobs+"[1h]) - on(job, instance) count_over_time("+ksmEndMarker+ksmJobs+"[1h])", at, ksmTargets, func(_ kubeTarget, s promSample) error {
		if s.value != 0 {
			return fmt.Errorf("%v successful scrapes lack the body's last series", s.value)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	for _, fn := range []string{"min_over_time", "max_over_time"} {
		if err := checkEachTarget(prom, fn+"(scrape_samples_scraped"+ksmJobs+"[1h])", at, ksmTargets, func(_ kubeTarget, s promSample) error {
			if s.value != float64(ksm.samples) {
				return fmt.Errorf("%s of scrape_samples_scraped is %v, want all %d series", fn, s.value, ksm.samples)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	if ksm.gzipReqs.Load() == 0 {
		t.Errorf("kube-state-metrics answered %d requests, none asking for gzip: Prometheus's Accept-Encoding did not reach it", ksm.requests.Load())
	}
	if samples, err := promQuery(prom, "max_over_time(scrape_duration_seconds"+ksmJobs+"[1h])", at); err == nil {
		for _, s := range samples {
			t.Logf("kube-state-metrics' %d-byte body (%d gzipped) through the gateway, job %s: slowest scrape %.3fs", len(ksm.plain), len(ksm.gzipped), s.labels["job"], s.value)
		}
	}

	// 10. The gateway's labels for each endpoint are those of Prometheus's
	// own role: endpointslice.
	if compared, err := compareEndpointLabels(prom, gw.addr); err != nil {
		t.Error(err)
	} else {
		t.Logf("the gateway's /sd/endpoints labels equal Prometheus's own discovery's (%d values compared)", compared)
	}

	// 11. The scrape token went to the opted-in target only, as the scraper.
	scraperUser := "system:serviceaccount:" + kubeGatewayNamespace + ":" + kubeScraperSA
	if users := monKSMProxy.allowedUsers(); len(users) != 1 || users[scraperUser] == 0 || monKSMProxy.unauthorized.Load() != 0 || monKSMProxy.forbidden.Load() != 0 {
		t.Errorf("monitoring/kube-state-metrics's proxy let through %v and refused %d (401) and %d (403), want only %s and no refusal",
			users, monKSMProxy.unauthorized.Load(), monKSMProxy.forbidden.Load(), scraperUser)
	}
	for i, p := range nodeExporterProxies {
		if p.allowed.Load() != 0 || p.forbidden.Load() != 0 || p.unauthorized.Load() == 0 || nodeExporters[i].requests.Load() != 0 {
			t.Errorf("node-exporter on %s, not opted in: its proxy let %d through and refused %d (401) and %d (403), want only 401s: no token",
				nodes[i].name, p.allowed.Load(), p.unauthorized.Load(), p.forbidden.Load())
		}
	}

	// 12. Churn while Prometheus scrapes. /services/ spreads over the
	// ready endpoints ...
	webService := "http://" + gw.addr + "/services/e2e-apps/web/metrics/metrics"
	if used := serviceEndpointsUsed(t, gw.addr, webService, 12); len(used) != 3 {
		t.Errorf("12 scrapes of e2e-apps/web used endpoints %v, want each of its 3", used)
	}
	// ... a fourth endpoint joins ...
	webEndpoints = append(webEndpoints, sliceEndpoint{ip: webPods[3].ip, pod: webPods[3]})
	updateSlice(t, k, webSvc, "web-pqrst", []discoveryv1.EndpointPort{slicePort("metrics", 8080)}, webEndpoints)
	wantSD = append(wantSD, svcEndpoint{svcAppsNamespace, "web", webPods[3].ip, svcWebPort, "/metrics", true})
	waitFor(t, e2eStartTimeout, "/sd/endpoints to list web-4", procs, func() error { return checkEndpointsSD(gw.addr, wantSD) })
	// ... web-2 turns not ready: still listed (as Prometheus lists it),
	// never used by /services/ ...
	webEndpoints[1].notReady = true
	updateSlice(t, k, webSvc, "web-pqrst", []discoveryv1.EndpointPort{slicePort("metrics", 8080)}, webEndpoints)
	wantSD[1].ready = false
	waitFor(t, e2eStartTimeout, "/sd/endpoints to show web-2 not ready", procs, func() error { return checkEndpointsSD(gw.addr, wantSD) })
	if used := serviceEndpointsUsed(t, gw.addr, webService, 12); len(used) != 3 || used[webPods[1].ip+":"+svcWebPort+"; pod=e2e-apps/web-2"] != 0 {
		t.Errorf("12 scrapes of e2e-apps/web with web-2 not ready used %v, want web-1, web-3 and web-4 only", used)
	}
	// Its conditions (not ready, serving, terminating) are labelled as
	// Prometheus's own discovery labels them, once that has seen them too.
	waitFor(t, e2eStartTimeout, "/sd/endpoints' labels to equal Prometheus's own discovery's with web-2 terminating", procs, func() error {
		_, err := compareEndpointLabels(prom, gw.addr)
		return err
	})
	// ... and web-3 leaves: gone from /sd/endpoints, refused at once.
	webEndpoints = slices.Delete(webEndpoints, 2, 3)
	updateSlice(t, k, webSvc, "web-pqrst", []discoveryv1.EndpointPort{slicePort("metrics", 8080)}, webEndpoints)
	wantSD = slices.Delete(wantSD, 2, 3)
	waitFor(t, e2eStartTimeout, "/sd/endpoints to drop web-3", procs, func() error { return checkEndpointsSD(gw.addr, wantSD) })
	removed := "/endpoints/e2e-apps/web/" + webPods[2].ip + "/" + svcWebPort + "/metrics"
	if err := checkServiceGet(gw.addr, "http://"+gw.addr+removed, http.StatusNotFound, "", ""); err != nil {
		t.Errorf("web-3, removed from the slice: %v", err)
	}
	before := webServers[2].requests.Load()
	targets = append(servicesTargets(gw.addr, wantSD), targets[len(targets)-1])
	waitFor(t, kubeScrapeTimeout, "Prometheus's targets to follow the churn", procs, func() error {
		return checkKubeTargets(prom, targets)
	})
	if used := serviceEndpointsUsed(t, gw.addr, webService, 12); used[webPods[2].ip+":"+svcWebPort+"; pod=e2e-apps/web-3"] != 0 || webServers[2].requests.Load() != before {
		t.Errorf("web-3 was scraped after it left the slice: endpoints used %v", used)
	}

	// 13. The API server refused the gateway nothing; SIGTERM stops it.
	if denials := rbacDenials(gw.proc.out.String(), kubeGatewayNamespace, kubeGatewaySA); len(denials) > 0 {
		t.Errorf("the API server refused the gateway, running with the RBAC of deploy/base, %d times:\n%s", len(denials), strings.Join(denials, "\n"))
	}
	gw.proc.signal(t, syscall.SIGTERM)
	gw.proc.wantExitZero(t, "SIGTERM")
	t.Logf("whole test took %s", since())
}

// kubeAnnotationScrapeToken is kube.AnnotationScrapeToken, spelled out:
// the test says what users write.
const kubeAnnotationScrapeToken = "scrapegate.io/scrape-token"

// svcEndpoint is a target /sd/endpoints must list.
type svcEndpoint struct {
	namespace, service, ip, port, path string
	ready                              bool
}

func (e svcEndpoint) addr() string { return net.JoinHostPort(e.ip, e.port) }

func (e svcEndpoint) metricsPath() string {
	return "/endpoints/" + e.namespace + "/" + e.service + "/" + e.ip + "/" + e.port + e.path
}

// servicesTargets returns the targets Prometheus must have: each endpoint
// of sd in the endpoints job, up but node-exporter (401: no token), and
// kube-state-metrics by name in both of its jobs.
func servicesTargets(gwAddr string, sd []svcEndpoint) []kubeTarget {
	var targets []kubeTarget
	for _, e := range sd {
		wantErr := ""
		if e.service == "node-exporter" {
			wantErr = "401"
		}
		targets = append(targets, kubeTarget{job: jobSvcEndpoints, instance: e.addr(), wantErr: wantErr, scrapeURL: "http://" + gwAddr + e.metricsPath()})
	}
	return append(targets,
		kubeTarget{job: jobSvcKSM, instance: svcKSMName, scrapeURL: "http://" + gwAddr + "/services/kube-system/kube-state-metrics/8080/metrics"},
		kubeTarget{job: jobSvcKSMProxyURL, instance: svcKSMName, scrapeURL: "http://" + svcKSMName + "/metrics"})
}

// checkEndpointsSD returns an error unless the gateway's /sd/endpoints is
// one group per endpoint of want, scraped through the gateway.
func checkEndpointsSD(gwAddr string, want []svcEndpoint) error {
	status, _, groups, err := sdGet(gwAddr, "/sd/endpoints", "")
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("/sd/endpoints: status %d", status)
	}
	if err != nil {
		return err
	}
	byPath := map[string]svcEndpoint{}
	for _, e := range want {
		byPath[e.metricsPath()] = e
	}
	var problems []string
	seen := map[string]bool{}
	for _, g := range groups {
		path := g.Labels["__metrics_path__"]
		e, ok := byPath[path]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("unexpected group %s: %v", path, g.Labels))
			continue
		case seen[path]:
			problems = append(problems, "more than one group for "+path)
		}
		seen[path] = true
		if !slices.Equal(g.Targets, []string{gwAddr}) {
			problems = append(problems, fmt.Sprintf("%s: targets %q, want [%q]", path, g.Targets, gwAddr))
		}
		for name, v := range map[string]string{
			"__scheme__":                           "http",
			"instance":                             e.addr(),
			"__meta_kubernetes_namespace":          e.namespace,
			"__meta_kubernetes_service_name":       e.service,
			"__meta_kubernetes_endpointslice_port": e.port,
			"__meta_kubernetes_endpointslice_endpoint_conditions_ready": strconv.FormatBool(e.ready),
		} {
			if got, ok := g.Labels[name]; !ok || got != v {
				problems = append(problems, fmt.Sprintf("%s: label %s=%q (present: %v), want %q", path, name, got, ok, v))
			}
		}
	}
	for path := range byPath {
		if !seen[path] {
			problems = append(problems, "no group for "+path)
		}
	}
	return problemsErr(fmt.Sprintf("/sd/endpoints: %d groups", len(groups)), problems)
}

// checkServiceGet gets u, from the gateway at gwAddr (directly, or as its
// forward proxy when u's host is not the gateway), and returns an error
// unless it answers wantStatus with a body containing wantBody and, unless
// wantEndpoint is "", the Scrapegate-Endpoint header wantEndpoint.
func checkServiceGet(gwAddr, u string, wantStatus int, wantEndpoint, wantBody string) error {
	status, header, body, err := serviceGet(gwAddr, u)
	switch {
	case err != nil:
		return err
	case status != wantStatus:
		return fmt.Errorf("GET %s: %d %.300s, want %d", u, status, strings.TrimSpace(string(body)), wantStatus)
	case !strings.Contains(string(body), wantBody):
		return fmt.Errorf("GET %s: %d, but the body lacks %q", u, status, wantBody)
	case wantEndpoint != "" && header.Get("Scrapegate-Endpoint") != wantEndpoint:
		return fmt.Errorf("GET %s: Scrapegate-Endpoint %q, want %q", u, header.Get("Scrapegate-Endpoint"), wantEndpoint)
	}
	return nil
}

func serviceGet(gwAddr, u string) (int, http.Header, []byte, error) {
	transport := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if parsed, err := url.Parse(u); err == nil && parsed.Host != gwAddr {
		transport.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: gwAddr})
	}
	return secGet(&http.Client{Timeout: 30 * time.Second, Transport: transport}, u, "")
}

// serviceEndpointsUsed scrapes u n times and counts the Scrapegate-Endpoint
// headers of the answers.
func serviceEndpointsUsed(t *testing.T, gwAddr, u string, n int) map[string]int {
	t.Helper()
	used := map[string]int{}
	for range n {
		status, header, body, err := serviceGet(gwAddr, u)
		if err != nil || status != http.StatusOK {
			t.Errorf("GET %s: %d %.200s (%v), want 200", u, status, body, err)
			continue
		}
		used[header.Get("Scrapegate-Endpoint")]++
	}
	return used
}

// servicesPrometheusConfig returns the jobs of deploy/prometheus/
// endpoints-sd.yml, kube-state-metrics.yml and apiservers.yml pointed at the
// gateway (and apiservers.yml's discovery at k), with intervals for a test,
// and a role: endpointslice job of Prometheus's own that drops every target
// it discovers, for their labels.
func servicesPrometheusConfig(t *testing.T, gwAddr string, k *kubeAPI) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("global:\n  scrape_interval: 2s\n  scrape_timeout: 2s\nscrape_configs:\n")
	for _, file := range []string{"endpoints-sd.yml", "kube-state-metrics.yml", "apiservers.yml"} {
		b.WriteString(strings.NewReplacer(
			"https://k8s-api.cluster-a.example.com:6443", k.url,
			"/etc/prometheus/cluster-a/token", k.adminTokenFile,
			"/etc/prometheus/cluster-a/ca.crt", k.caFile,
		).Replace(deployPrometheusJobs(t, file, gwAddr)))
	}
	fmt.Fprintf(&b, `  - job_name: %s
    kubernetes_sd_configs:
      - role: endpointslice
        api_server: %q
        authorization:
          credentials_file: %q
        tls_config:
          ca_file: %q
    relabel_configs:
      - action: drop
        source_labels: [__address__]
        regex: .*
`, jobSvcOwnSD, k.url, k.adminTokenFile, k.caFile)
	return b.String()
}

// deployPrometheusJobs returns the scrape_configs list of a file of
// deploy/prometheus/, with the gateway at gwAddr instead of the example
// address, and intervals of a test instead of production ones. In the
// kube-state-metrics jobs, the stand-in's kube_pod_* series are dropped
// after the scrape (scrape_samples_scraped still counts them): Prometheus
// need not keep tens of thousands of series twice a second.
func deployPrometheusJobs(t *testing.T, file, gwAddr string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "prometheus", file))
	if err != nil {
		t.Fatal(err)
	}
	_, jobs, ok := strings.Cut(string(raw), "\nscrape_configs:\n")
	if !ok || !strings.Contains(jobs, deployGatewayHost) {
		t.Fatalf("deploy/prometheus/%s: no scrape_configs: with jobs for the gateway at %s", file, deployGatewayHost)
	}
	for from, to := range map[string]string{
		deployGatewayHost:       gwAddr,
		"refresh_interval: 30s": "refresh_interval: 1s",
		"refresh_interval: 60s": "refresh_interval: 1s",
		"scrape_interval: 30s":  "scrape_interval: 5s",
		"scrape_timeout: 25s":   "scrape_timeout: 5s",
	} {
		jobs = strings.ReplaceAll(jobs, from, to)
	}
	var out strings.Builder
	for line := range strings.Lines(jobs) {
		out.WriteString(line)
		if strings.HasPrefix(line, "  - job_name: kube-state-metrics") {
			out.WriteString("    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: kube_pod_.+\n        action: drop\n")
		}
	}
	return out.String()
}

// compareEndpointLabels returns an error unless, for each endpoint of the
// gateway's /sd/endpoints?all=true, Prometheus's own role: endpointslice
// discovered a target with exactly the same __meta_kubernetes_ labels, and
// returns how many values it compared. Prometheus's extra targets for pod
// container ports that no slice lists have no endpointslice_port label and
// are not compared.
func compareEndpointLabels(prom *promProc, gwAddr string) (int, error) {
	status, _, groups, err := sdGet(gwAddr, "/sd/endpoints?all=true", "")
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("/sd/endpoints?all=true: status %d", status)
	}
	if err != nil {
		return 0, err
	}
	var targets struct {
		DroppedTargets []struct {
			DiscoveredLabels map[string]string `json:"discoveredLabels"`
		} `json:"droppedTargets"`
	}
	if err := promAPI(prom, "/api/v1/targets?state=dropped", &targets); err != nil {
		return 0, err
	}
	key := func(l map[string]string, ip string) string {
		return l["__meta_kubernetes_namespace"] + "/" + l["__meta_kubernetes_endpointslice_name"] + "/" + ip + "/" + l["__meta_kubernetes_endpointslice_port"]
	}
	discovered := map[string]map[string]string{}
	for _, tg := range targets.DroppedTargets {
		l := tg.DiscoveredLabels
		if l["job"] != jobSvcOwnSD || l["__meta_kubernetes_endpointslice_port"] == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(l["__address__"])
		if err != nil {
			return 0, fmt.Errorf("Prometheus's discovery: __address__ %q: %v", l["__address__"], err)
		}
		discovered[key(l, ap.Addr().String())] = l
	}
	var problems []string
	compared := 0
	for _, g := range groups {
		// /endpoints/{namespace}/{service}/{ip}/{port}{path}
		parts := strings.SplitN(g.Labels["__metrics_path__"], "/", 7)
		if len(parts) < 6 || parts[1] != "endpoints" {
			problems = append(problems, fmt.Sprintf("group with __metrics_path__ %q, want /endpoints/...", g.Labels["__metrics_path__"]))
			continue
		}
		k := key(g.Labels, strings.Trim(parts[4], "[]"))
		theirs, ok := discovered[k]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: not among the %d targets of Prometheus's role endpointslice", k, len(discovered)))
			continue
		}
		delete(discovered, k)
		for name, v := range g.Labels {
			if !strings.HasPrefix(name, "__meta_kubernetes_") {
				continue
			}
			switch pv, ok := theirs[name]; {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s: the gateway gives %s=%q, Prometheus's discovery has no such label", k, name, v))
			case pv != v:
				problems = append(problems, fmt.Sprintf("%s: the gateway gives %s=%q, Prometheus's discovery %q", k, name, v, pv))
			default:
				compared++
			}
		}
		for name, pv := range theirs {
			if _, ok := g.Labels[name]; strings.HasPrefix(name, "__meta_kubernetes_") && !ok {
				problems = append(problems, fmt.Sprintf("%s: Prometheus's discovery gives %s=%q, the gateway has no such label", k, name, pv))
			}
		}
	}
	for k := range discovered {
		problems = append(problems, fmt.Sprintf("%s: Prometheus's discovery has it, /sd/endpoints?all=true does not", k))
	}
	return compared, problemsErr(fmt.Sprintf("the gateway's /sd/endpoints?all=true labels against Prometheus's role endpointslice (%d equal)", compared), problems)
}

func createSvcNode(t *testing.T, k *kubeAPI, n *svcNode) {
	t.Helper()
	ctx := context.Background()
	node, err := k.client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: n.name, Labels: map[string]string{"kubernetes.io/hostname": n.name},
	}}, metav1.CreateOptions{})
	if err == nil {
		node.Status = corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: n.name}, {Type: corev1.NodeInternalIP, Address: n.ip}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		}
		_, err = k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("cannot create node %s: %v", n.name, err)
	}
}

// createSvcPod creates p's pod, running and ready on its node at its IP.
func createSvcPod(t *testing.T, k *kubeAPI, p *svcPod) {
	t.Helper()
	ctx := context.Background()
	pod, err := k.client.CoreV1().Pods(p.namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: p.namespace, Annotations: p.annotations,
			Labels: map[string]string{"app.kubernetes.io/name": strings.TrimRight(p.name, "-0123456789")}},
		Spec: corev1.PodSpec{
			NodeName:    p.node.name,
			HostNetwork: p.hostNetwork,
			Containers:  []corev1.Container{{Name: "exporter", Image: "registry.example/exporter:1", Ports: p.ports}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("cannot create pod %s: %v", p.key(), err)
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: p.node.ip, HostIPs: []corev1.HostIP{{IP: p.node.ip}},
		PodIP: p.ip, PodIPs: []corev1.PodIP{{IP: p.ip}}, StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "exporter", Image: "registry.example/exporter:1", ImageID: "registry.example/exporter@sha256:" + strings.Repeat("0", 64),
			Ready: true, Started: new(true), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	if _, err := k.client.CoreV1().Pods(p.namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("cannot set the status of pod %s: %v", p.key(), err)
	}
}

// createService creates a ClusterIP Service; with a nil selector, one whose
// EndpointSlices someone manages by hand.
func createService(t *testing.T, k *kubeAPI, namespace, name string, annotations, selector map[string]string, port corev1.ServicePort) *corev1.Service {
	t.Helper()
	port.Protocol = corev1.ProtocolTCP
	svc, err := k.client.CoreV1().Services(namespace).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations,
			Labels: map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "e2e"}},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{port}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("cannot create Service %s/%s: %v", namespace, name, err)
	}
	return svc
}

func slicePort(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: new(corev1.ProtocolTCP)}
}

// sliceObject is the EndpointSlice the EndpointSlice controller would write
// for svc (for a Service without a selector: one its owner manages).
func sliceObject(svc *corev1.Service, name string, ports []discoveryv1.EndpointPort, eps []sliceEndpoint) *discoveryv1.EndpointSlice {
	managedBy := "endpointslice-controller.k8s.io"
	if svc.Spec.Selector == nil {
		managedBy = "staff.example.com"
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: svc.Namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: managedBy},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
				Controller: new(true), BlockOwnerDeletion: new(true)}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{
			Ready: new(!e.notReady), Serving: new(true), Terminating: new(e.notReady)}}
		if e.pod != nil {
			ep.NodeName = &e.pod.node.name
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: e.pod.namespace, Name: e.pod.name}
		}
		slice.Endpoints = append(slice.Endpoints, ep)
	}
	return slice
}

func createSlice(t *testing.T, k *kubeAPI, svc *corev1.Service, name string, ports []discoveryv1.EndpointPort, eps []sliceEndpoint) {
	t.Helper()
	if _, err := k.client.DiscoveryV1().EndpointSlices(svc.Namespace).Create(context.Background(), sliceObject(svc, name, ports, eps), metav1.CreateOptions{}); err != nil {
		t.Fatalf("cannot create EndpointSlice %s/%s: %v", svc.Namespace, name, err)
	}
}

func updateSlice(t *testing.T, k *kubeAPI, svc *corev1.Service, name string, ports []discoveryv1.EndpointPort, eps []sliceEndpoint) {
	t.Helper()
	client := k.client.DiscoveryV1().EndpointSlices(svc.Namespace)
	current, err := client.Get(context.Background(), name, metav1.GetOptions{})
	if err == nil {
		slice := sliceObject(svc, name, ports, eps)
		slice.ResourceVersion = current.ResourceVersion
		_, err = client.Update(context.Background(), slice, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatalf("cannot update EndpointSlice %s/%s: %v", svc.Namespace, name, err)
	}
}
