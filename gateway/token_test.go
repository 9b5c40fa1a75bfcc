package gateway

import (
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/internal/testutil"
)

// tokenConfig is kubeConfig with the scrape token of tokenFile for the
// namespace monitoring, https targets verified by ca, and the kubelet proxy
// with its own token.
func tokenConfig(t *testing.T, ca *testutil.CA, tokenFile string) Config {
	dir := t.TempDir()
	cfg := kubeConfig()
	cfg.TargetTLSCAFile = testutil.WriteCABundle(t, ca)
	cfg.TargetTokenFile = tokenFile
	cfg.TargetTokenNamespaces = []string{"monitoring"}
	cfg.KubeletTokenFile = filepath.Join(dir, "kubelet-token")
	testutil.WriteFile(t, cfg.KubeletTokenFile, []byte("kubelet-token\n"))
	cfg.KubeletCAFile = cfg.TargetTLSCAFile
	return cfg
}

// startTLSPodAt is an https pod on ip with a certificate of ca for ip.
func startTLSPodAt(t *testing.T, ca *testutil.CA, ip string) (*testutil.TLSPod, netip.AddrPort) {
	t.Helper()
	pod := testutil.StartTLSPod(t, ip+":0", ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr(ip)}).TLS, nil)
	return pod, netip.MustParseAddrPort(pod.Addr)
}

// TestScrapeTokenRules: the token goes to an https target only when its namespace is listed and it opted in,
// through its pod or its Service; never over http; and the file is re-read.
func TestScrapeTokenRules(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	optedIn, optedInAddr := startTLSPodAt(t, ca, "127.0.0.11")
	elsewhere, elsewhereAddr := startTLSPodAt(t, ca, "127.0.0.13")
	quiet, quietAddr := startTLSPodAt(t, ca, "127.0.0.14")
	ksm, ksmAddr := startTLSPodAt(t, ca, "127.0.0.15")
	quietSvc, quietSvcAddr := startTLSPodAt(t, ca, "127.0.0.16")
	var plainAuth sync.Map
	plain := startPod(t, "127.0.0.12", func(w http.ResponseWriter, r *http.Request) {
		plainAuth.Store(r.Header.Get("Authorization"), true)
		fmt.Fprint(w, "plain")
	})
	optIn := []string{kube.AnnotationScrapeToken, "true"}
	client := fake.NewClientset(
		podObject("monitoring", "opted-in", optedInAddr, optIn...),
		podObject("monitoring", "plain", plain.addr, optIn...),
		podObject("elsewhere", "opted-in", elsewhereAddr, optIn...),
		podObject("monitoring", "quiet", quietAddr),
		podObject("monitoring", "ksm-0", ksmAddr),
		serviceObject("monitoring", "ksm", "https-main", 8443, append([]string{"prometheus.io/scheme", "https"}, optIn...)...),
		sliceObject("monitoring", "ksm", "ksm-1", "https-main", ksmAddr, true, "monitoring/ksm-0"),
		podObject("monitoring", "quiet-svc-0", quietSvcAddr),
		serviceObject("monitoring", "quiet-svc", "https-main", 8443, "prometheus.io/scheme", "https"),
		sliceObject("monitoring", "quiet-svc", "quiet-svc-1", "https-main", quietSvcAddr, true, "monitoring/quiet-svc-0"),
	)
	tokenFile := filepath.Join(t.TempDir(), "token")
	testutil.WriteFile(t, tokenFile, []byte("scraper-token-1\n"))
	g, gw := startKubeGateway(t, tokenConfig(t, ca, tokenFile), client)

	f := func(target string, pod *testutil.TLSPod, wantAuth string) {
		t.Helper()
		if r := get(t, gw, target); r.StatusCode != 200 {
			t.Fatalf("%s: %d %q", target, r.StatusCode, r.body)
		}
		if got := pod.LastAuthorization(t); got != wantAuth {
			t.Errorf("%s: the target got Authorization %q, want %q", target, got, wantAuth)
		}
	}
	pods := func(addr netip.AddrPort) string {
		return fmt.Sprintf("/pods/https/%s/%d/metrics", addr.Addr(), addr.Port())
	}
	f(pods(optedInAddr), optedIn, "Bearer scraper-token-1")
	f(fmt.Sprintf("https://%s/metrics", optedInAddr), optedIn, "Bearer scraper-token-1")
	f(pods(elsewhereAddr), elsewhere, "") // not in -target-token-namespaces
	f(pods(quietAddr), quiet, "")         // its pod did not opt in
	f("/services/monitoring/ksm/https-main/metrics", ksm, "Bearer scraper-token-1")
	f("https://ksm.monitoring.svc:8443/metrics", ksm, "Bearer scraper-token-1")
	f(fmt.Sprintf("/endpoints/monitoring/ksm/%s/%d/metrics", ksmAddr.Addr(), ksmAddr.Port()), ksm, "Bearer scraper-token-1")
	f("/services/monitoring/quiet-svc/https-main/metrics", quietSvc, "") // nor did its Service
	for _, target := range []string{plain.podPath("/metrics"), fmt.Sprintf("http://%s/metrics", plain.addr)} {
		if r := get(t, gw, target); r.StatusCode != 200 {
			t.Fatalf("%s: %d %q", target, r.StatusCode, r.body)
		}
	}
	plainAuth.Range(func(k, _ any) bool {
		if k.(string) != "" {
			t.Errorf("an opted-in pod got Authorization %q over http", k)
		}
		return true
	})

	// Projected tokens rotate: the next scrape carries the new one.
	testutil.WriteFile(t, tokenFile, []byte("scraper-token-2"))
	g.reloadAll()
	f(pods(optedInAddr), optedIn, "Bearer scraper-token-2")
	f("/services/monitoring/ksm/https-main/metrics", ksm, "Bearer scraper-token-2")
	if v := metricValue(t, g, `scrapegate_file_reloads_total{flag="target-token-file",result="success"}`); v != 1 {
		t.Errorf(`file_reloads_total{flag="target-token-file",result="success"} = %v, want 1`, v)
	}
}

// Kubelets get the kubelet token, never the scrape token.
func TestScrapeTokenNeverToKubelets(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	kubelet := startFakeKubelet(t, ca, "127.0.0.3")
	tokenFile := filepath.Join(t.TempDir(), "token")
	testutil.WriteFile(t, tokenFile, []byte("scraper-token\n"))
	_, gw := startKubeGateway(t, tokenConfig(t, ca, tokenFile), fake.NewClientset(nodeObject("node-1", kubelet.addr)))
	checkGet(t, gw)("/nodes/node-1/metrics", 200, "kubelet /metrics")
	if got := kubelet.lastAuth(); got != "Bearer kubelet-token" {
		t.Errorf("the kubelet got Authorization %q, want its own token only", got)
	}
}

// The scrape token must not be the kubelet token, the gateway's own: at
// startup that is an error, and a reload to it keeps the last good token.
func TestScrapeTokenEqualToKubeletTokenRefused(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	tokenFile := filepath.Join(t.TempDir(), "token")
	testutil.WriteFile(t, tokenFile, []byte("kubelet-token"))
	_, err := newGateway(tokenConfig(t, ca, tokenFile), zerolog.Nop(), fake.NewClientset())
	if err == nil || !strings.Contains(err.Error(), "-target-token-file") || !strings.Contains(err.Error(), "-kubelet-token-file") {
		t.Fatalf("a scrape token equal to the kubelet token: %v, want an error naming both flags", err)
	}

	testutil.WriteFile(t, tokenFile, []byte("scraper-token"))
	g, _ := startKubeGateway(t, tokenConfig(t, ca, tokenFile), fake.NewClientset())
	testutil.WriteFile(t, tokenFile, []byte("kubelet-token\n"))
	g.reloadAll()
	if v := metricValue(t, g, `scrapegate_file_reloads_total{flag="target-token-file",result="failure"}`); v != 1 {
		t.Errorf(`a reload to the kubelet token: file_reloads_total{flag="target-token-file",result="failure"} = %v, want 1`, v)
	}
	if got := string(*g.scrapeToken.auth.Load()); got != "Bearer scraper-token" {
		t.Errorf("after a refused reload the token in force is %q, want the last good one", got)
	}
}

// The gateway's own ServiceAccount token is refused by its contents too:
// Config.Validate sees only the path, and the kubelet's ..data/token
// symlink is the same file by another name.
func TestScrapeTokenEqualToOwnServiceAccountTokenRefused(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, "own-token")
	testutil.WriteFile(t, own, []byte("own-token\n"))
	defer func(old string) { ownServiceAccountToken = old }(ownServiceAccountToken)
	ownServiceAccountToken = own

	ca := testutil.NewCA(t, "cluster CA")
	tokenFile := filepath.Join(dir, "token")
	testutil.WriteFile(t, tokenFile, []byte("own-token"))
	_, err := newGateway(tokenConfig(t, ca, tokenFile), zerolog.Nop(), fake.NewClientset())
	if err == nil || !strings.Contains(err.Error(), "own ServiceAccount token") {
		t.Fatalf("a scrape token equal to the gateway's own: %v, want an error saying so", err)
	}
	testutil.WriteFile(t, tokenFile, []byte("scraper-token"))
	if _, err := newGateway(tokenConfig(t, ca, tokenFile), zerolog.Nop(), fake.NewClientset()); err != nil {
		t.Fatalf("another token: %v", err)
	}
}

// EndpointSlices are written by whoever may write them in a Service's
// namespace: an opted-in Service's token must not follow them to another
// namespace's pod, to an address with no pod behind it, or to an address
// whose targetRef names an opted-in pod that does not have it.
func TestScrapeTokenNeverFollowsASliceElsewhere(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	other, otherAddr := startTLSPodAt(t, ca, "127.0.0.21")
	bare, bareAddr := startTLSPodAt(t, ca, "127.0.0.22")
	forged, forgedAddr := startTLSPodAt(t, ca, "127.0.0.23")
	_, optedAddr := startTLSPodAt(t, ca, "127.0.0.24")
	optIn := []string{"prometheus.io/scheme", "https", kube.AnnotationScrapeToken, "true"}
	client := fake.NewClientset(
		podObject("elsewhere", "victim", otherAddr),
		podObject("elsewhere", "forged", forgedAddr),
		podObject("monitoring", "node-exporter", optedAddr, kube.AnnotationScrapeToken, "true"),
		serviceObject("monitoring", "other", "https-main", 8443, optIn...),
		sliceObject("monitoring", "other", "other-1", "https-main", otherAddr, true, "elsewhere/victim"),
		serviceObject("monitoring", "bare", "https-main", 8443, optIn...),
		sliceObject("monitoring", "bare", "bare-1", "https-main", bareAddr, true, ""),
		serviceObject("monitoring", "quiet", "https-main", 8443, "prometheus.io/scheme", "https"),
		sliceObject("monitoring", "quiet", "quiet-1", "https-main", forgedAddr, true, "monitoring/node-exporter"),
	)
	tokenFile := filepath.Join(t.TempDir(), "token")
	testutil.WriteFile(t, tokenFile, []byte("scraper-token\n"))
	cfg := tokenConfig(t, ca, tokenFile)
	cfg.TargetPolicy = TargetPolicyCIDR // or the forged and bare slices are refused outright
	_, gw := startKubeGateway(t, cfg, client)
	for _, c := range []struct {
		target, endpoint string
		pod              *testutil.TLSPod
	}{
		{"/services/monitoring/other/https-main/metrics", otherAddr.String() + "; pod=elsewhere/victim", other},
		{"/services/monitoring/bare/https-main/metrics", bareAddr.String(), bare},
		{"/services/monitoring/quiet/https-main/metrics", forgedAddr.String(), forged},
	} {
		r := get(t, gw, c.target)
		if r.StatusCode != 200 || r.Header.Get("Scrapegate-Endpoint") != c.endpoint {
			t.Errorf("%s: %d, Scrapegate-Endpoint %q; want 200 from %q", c.target, r.StatusCode, r.Header.Get("Scrapegate-Endpoint"), c.endpoint)
		}
		if got := c.pod.LastAuthorization(t); got != "" {
			t.Errorf("%s: the target got Authorization %q, want none", c.target, got)
		}
	}
}

// The scrape token must not be the control-plane token either, which the
// API servers accept: an error at startup.
func TestScrapeTokenEqualToControlPlaneTokenRefused(t *testing.T) {
	ca := testutil.NewCA(t, "cluster CA")
	cfg := tokenConfig(t, ca, testutil.TempFile(t, "token", []byte("cp-token\n")))
	cfg.ControlPlaneTokenFile = testutil.TempFile(t, "control-plane-token", []byte("cp-token"))
	cfg.ControlPlaneCAFile = testutil.WriteCABundle(t, ca)
	_, err := newGateway(cfg, zerolog.Nop(), fake.NewClientset())
	if err == nil || !strings.Contains(err.Error(), "-target-token-file") || !strings.Contains(err.Error(), "-control-plane-token-file") {
		t.Fatalf("a scrape token equal to the control-plane token: %v, want an error naming both flags", err)
	}
}
