package main

// deploy/base's accounts against the real kube-scheduler and
// kube-controller-manager, without the gateway: what docs/security.md says
// of them, that the accounts granted get on /metrics read these
// components' metrics, and the kubelet token does not.

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
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
