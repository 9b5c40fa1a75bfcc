package main

// The kube-rbac-proxy stand-in (standins_test.go) judged by the real API
// server's RBAC, without the gateway: deploy/base's scrapegate-scraper may
// get /metrics, nothing else may.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

const (
	// netnsAPIServerIP is the API server's address in the test's network
	// namespace, advertised and published in default/kubernetes.
	netnsAPIServerIP = "10.250.0.1"
	// kubeScraperSA is deploy/base's account for the scrape token.
	kubeScraperSA = "scrapegate-scraper"
	// kubeMonitoringNamespace is where kube-prometheus puts its exporters.
	kubeMonitoringNamespace = "monitoring"
)

// netnsKubeBinaries builds (or finds cached) what an end-to-end test in the
// network namespace runs, while the network is there: the namespace has
// none, and .ci/testbin then only prints the cached paths.
func netnsKubeBinaries(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		kubeTestbin(t, name)
	}
}

func TestEndToEndRBACProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test against a real API server; skipped with -short")
	}
	netnsKubeBinaries(t, "etcd", "kube-apiserver", "kubectl")
	if !inNetworkNamespace(t) {
		return
	}
	k := startKubeAPIAt(t, netnsAPIServerIP)
	out := k.kubectl(t, kubeTestbin(t, "kubectl"), "apply", "-k", filepath.Join("..", "..", "deploy", "base"))
	t.Logf("kubectl apply -k deploy/base:\n%s", strings.TrimSpace(out))
	ctx := context.Background()
	if _, err := k.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kubeMonitoringNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// kube-state-metrics on 127.0.0.1 of its pod, kube-rbac-proxy in front
	// on the pod's address.
	ksm := newKSMStandIn(t, kubeMonitoringNamespace+"/kube-state-metrics-0", 100)
	ksmLn := testutil.Listen(t, "127.0.0.1")
	serveHTTP(t, ksmLn, ksm)
	ca := testutil.NewCA(t, "kube-rbac-proxy")
	proxy := startRBACProxyStandIn(t, k, rbacProxyAccount(t, k, kubeMonitoringNamespace, "kube-state-metrics"),
		netnsListen(t, "10.244.2.10", "8443"), ca, "http://"+ksmLn.Addr().String())

	scraper := k.serviceAccountToken(t, kubeGatewayNamespace, kubeScraperSA)
	gateway := k.serviceAccountToken(t, kubeGatewayNamespace, kubeGatewaySA)
	kubelet := k.serviceAccountToken(t, kubeGatewayNamespace, "scrapegate-kubelet")
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	forbidden := func(sa string) string {
		return fmt.Sprintf("Forbidden (user=system:serviceaccount:%s:%s, verb=get, resource=, subresource=)", kubeGatewayNamespace, sa)
	}
	f := func(path, authorization string, wantStatus int, wantBody string) {
		t.Helper()
		status, _, body, err := secGet(client, "https://"+proxy.addr+path, authorization)
		switch {
		case err != nil:
			t.Errorf("GET %s with Authorization %.20q: %v", path, authorization, err)
		case status != wantStatus || !strings.Contains(string(body), wantBody):
			t.Errorf("GET %s with Authorization %.20q: %d %.200q, want %d with %q", path, authorization, status, body, wantStatus, wantBody)
		}
	}
	f("/metrics", "Bearer "+scraper, http.StatusOK, ksmEndMarker+`{exporter="monitoring/kube-state-metrics-0"} 1`)
	f("/metrics", "bearer "+scraper, http.StatusOK, ksmEndMarker)
	// /metrics/slis is granted too: the upstream answers (it has no such page).
	f("/metrics/slis", "Bearer "+scraper, http.StatusNotFound, "404 page not found")
	f("/", "Bearer "+scraper, http.StatusForbidden, "Forbidden (user=system:serviceaccount:scrapegate:scrapegate-scraper, verb=get")
	f("/metrics", "", http.StatusUnauthorized, "Unauthorized")
	f("/metrics", "Bearer ", http.StatusUnauthorized, "Unauthorized")
	f("/metrics", "Bearer wrong-"+secRandom(t), http.StatusUnauthorized, "Unauthorized")
	f("/metrics", "Basic "+testutil.BasicAuth("prometheus", scraper), http.StatusUnauthorized, "Unauthorized")
	f("/metrics", "Bearer "+k.adminToken[:len(k.adminToken)-1], http.StatusUnauthorized, "Unauthorized")
	// The kubelet token may read kubelets' metrics only. The gateway's own
	// token may get /metrics (deploy/base grants it for /apiservers/), so
	// the real RBAC lets it through; the gateway never sends it to a
	// target, and refuses it as -target-token-file.
	f("/metrics", "Bearer "+kubelet, http.StatusForbidden, forbidden("scrapegate-kubelet"))
	f("/metrics", "Bearer "+gateway, http.StatusOK, ksmEndMarker)

	if got := ksm.authorization.Load().(string); got != "" {
		t.Errorf("kube-state-metrics behind the proxy got Authorization %.20q, want none: the proxy removes it", got)
	}
	if got, want := ksm.requests.Load(), int64(3); got != want {
		t.Errorf("kube-state-metrics got %d requests, want %d (only those allowed on /metrics)", got, want)
	}
	users := proxy.allowedUsers()
	if len(users) != 2 || users["system:serviceaccount:scrapegate:scrapegate-scraper"] != 3 || users["system:serviceaccount:scrapegate:scrapegate"] != 1 {
		t.Errorf("the proxy let through %v, want system:serviceaccount:scrapegate:scrapegate-scraper 3 times and system:serviceaccount:scrapegate:scrapegate once", users)
	}
	t.Logf("the proxy answered %d allowed, %d 401, %d 403", proxy.allowed.Load(), proxy.unauthorized.Load(), proxy.forbidden.Load())
}
