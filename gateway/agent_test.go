package gateway

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

const (
	agentAudience = "scrapegate-node-agent"
	gatewayUser   = "system:serviceaccount:scrapegate:scrapegate"
)

var (
	// gatewayToken is a token of the gateway's ServiceAccount, bound to
	// the agent's audience, and agentCaller the header presenting it.
	gatewayToken = testutil.ServiceAccountJWT("scrapegate/scrapegate", time.Time{}, agentAudience)
	agentCaller  = "Authorization: Bearer " + gatewayToken
)

// agentComponents stand in for the four components on 127.0.0.1: the
// scheduler and the controller-manager over https, etcd and kube-proxy
// over http, which answer with their name, the request's path and query
// and its Authorization header; each counts its connections.
type agentComponents struct {
	scheduler, controllerManager *testutil.TLSPod
	etcd, proxy                  *testPod
}

func startAgentComponents(t *testing.T, ca *testutil.CA) *agentComponents {
	t.Helper()
	cert := ca.IssueServer(t, []string{"localhost"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")}).TLS
	c := &agentComponents{
		scheduler:         testutil.StartTLSPod(t, "127.0.0.1:0", cert, nil),
		controllerManager: testutil.StartTLSPod(t, "127.0.0.1:0", cert, nil),
	}
	http := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s?%s Authorization=%q\n", name, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"))
		}
	}
	c.etcd = startPod(t, "127.0.0.1", http("etcd"))
	c.proxy = startPod(t, "127.0.0.1", http("kube-proxy"))
	return c
}

// dials is how many connections the components accepted in all.
func (c *agentComponents) dials() int {
	return c.scheduler.Conns() + c.controllerManager.Conns() + int(c.etcd.conns.Load()+c.proxy.conns.Load())
}

// agentConfig is a node agent for c, with the control-plane token
// "cp-token" in a file, admitting the gateway's ServiceAccount.
func agentConfig(t *testing.T, c *agentComponents) Config {
	cfg := DefaultNodeAgentConfig()
	cfg.DrainDelay = 0
	port := func(addr string) uint16 { return netip.MustParseAddrPort(addr).Port() }
	cfg.KubeSchedulerPort = port(c.scheduler.Addr)
	cfg.KubeControllerManagerPort = port(c.controllerManager.Addr)
	cfg.EtcdPort = c.etcd.addr.Port()
	cfg.KubeProxyPort = c.proxy.addr.Port()
	cfg.ControlPlaneTokenFile = testutil.TempFile(t, "control-plane-token", []byte("cp-token\n"))
	return cfg
}

// startAgent serves a node agent whose TokenReviews the returned fake
// answers; the gateway's token is valid for the agent's audience.
func startAgent(t *testing.T, cfg Config) (*Gateway, string, *testutil.TokenReviews) {
	t.Helper()
	client := fake.NewClientset()
	reviews := testutil.FakeTokenReviews(client)
	reviews.Add(gatewayToken, gatewayUser, agentAudience)
	g, err := newGateway(cfg, zerolog.Nop(), client)
	if err != nil {
		t.Fatalf("newGateway: %s", err)
	}
	return g, serveGateway(t, g), reviews
}

// TestAgentForwardsOnlyComponentMetrics: the agent forwards exactly the
// four components' metrics paths, each to 127.0.0.1 at its port, with
// the control-plane token to the https ones only; every other request is
// refused without a dial.
func TestAgentForwardsOnlyComponentMetrics(t *testing.T) {
	c := startAgentComponents(t, testutil.NewCA(t, "components"))
	g, gw, _ := startAgent(t, agentConfig(t, c))
	f := checkGet(t, gw, agentCaller)

	f("/kube-scheduler/metrics", 200, "up 1")
	f("/kube-scheduler/metrics/slis", 200, "up 1")
	if got := c.scheduler.LastAuthorization(t); got != "Bearer cp-token" {
		t.Errorf("kube-scheduler got Authorization %q; want the control-plane token, never the caller's", got)
	}
	f("/kube-controller-manager/metrics", 200, "up 1")
	f("/kube-controller-manager/metrics/slis?x=1", 200, "up 1")
	if got := c.controllerManager.LastAuthorization(t); got != "Bearer cp-token" {
		t.Errorf("kube-controller-manager got Authorization %q; want the control-plane token", got)
	}
	// Over http, no token.
	f("/etcd/metrics", 200, `etcd /metrics? Authorization=""`)
	f("/kube-proxy/metrics?name[]=up", 200, `kube-proxy /metrics?name[]=up Authorization=""`)
	// The central gateway marks its scrapes as a scrapegate's: no loop,
	// since an agent cannot reach itself.
	checkGet(t, gw, agentCaller, "Via: 1.1 scrapegate")("/kube-proxy/metrics", 200, "kube-proxy /metrics")
	if v := metricValue(t, g, `scrapegate_requests_total{route="agent",code="200"}`); v != 7 {
		t.Errorf(`scrapegate_requests_total{route="agent",code="200"} = %v; want 7`, v)
	}

	dials := c.dials()
	etcd := c.etcd.addr.String()
	for _, target := range []string{
		"/kube-scheduler/metrics/", "/kube-scheduler/debug/pprof/", "/kube-scheduler", "/kube-scheduler/",
		"/etcd/metrics/slis", "/etcd/health", "/kube-proxy/metrics/slis", "/kube-apiserver/metrics",
		"/kube-proxy/../etcd/metrics", "//etcd/metrics", "/%65tcd/metrics", "/ETCD/metrics", "/etcd/metrics#x", "/",
		// The gateway's own routes are not an agent's.
		"/pods/" + strings.Replace(etcd, ":", "/", 1) + "/metrics", "/nodes/node-1/metrics", "/sd/pods",
		"/apiservers/127.0.0.1/6443/metrics", "/components/etcd/node-1/metrics",
		"/services/kube-system/etcd/2381/metrics",
		// Nor is it a proxy, to any port.
		"http://" + etcd + "/metrics", "http://127.0.0.1:10250/metrics", "*",
	} {
		f(target, 404, "a node agent serves /kube-scheduler/metrics, /kube-scheduler/metrics/slis")
	}
	for _, method := range []string{"POST", "PUT", "DELETE", "CONNECT"} {
		if r := rawGet(t, gw, method, "/etcd/metrics", agentCaller); r.StatusCode != 405 {
			t.Errorf("%s /etcd/metrics: %d %q; want 405", method, r.StatusCode, r.body)
		}
	}
	f("/etcd/metrics?a=%00", 400, "bad_target")
	if got := c.dials(); got != dials {
		t.Errorf("the components accepted %d connections for requests the agent refuses", got-dials)
	}
}

// TestAgentAuthenticatesCallers: only a token of an allowed
// ServiceAccount for the agent's audience is admitted; everything else is
// refused, and nothing is dialled for it.
func TestAgentAuthenticatesCallers(t *testing.T) {
	c := startAgentComponents(t, testutil.NewCA(t, "components"))
	g, gw, reviews := startAgent(t, agentConfig(t, c))
	jwt := func(sa string, exp time.Time, audiences ...string) string {
		return "Authorization: Bearer " + testutil.ServiceAccountJWT(sa, exp, audiences...)
	}
	// A token claiming the gateway's account that the API server takes
	// for another user (an authenticator other than the ServiceAccounts').
	otherUser := testutil.JWT(map[string]string{"alg": "RS256"}, map[string]any{"sub": gatewayUser, "aud": agentAudience, "jti": "other"})
	reviews.Add(otherUser, "alice", agentAudience)

	f := func(header string, want int, wantBody string) {
		t.Helper()
		var headers []string
		if header != "" {
			headers = append(headers, header)
		}
		for _, target := range []string{"/etcd/metrics", "/kube-scheduler/metrics"} {
			r := get(t, gw, target, headers...)
			if r.StatusCode != want || !strings.Contains(r.body, wantBody) {
				t.Errorf("%.60q %s: %d %q; want %d with %q", header, target, r.StatusCode, r.body, want, wantBody)
			}
			if want == 401 && r.Header.Get("WWW-Authenticate") != `Bearer realm="scrapegate"` {
				t.Errorf("%.60q %s: WWW-Authenticate %q; want the Bearer challenge", header, target, r.Header.Get("WWW-Authenticate"))
			}
		}
	}
	f("", 401, "credentials required")
	// Refused without a TokenReview: not a JWT, another account, the API
	// server's audience (a node must never receive a token it could
	// replay), expired.
	f("Authorization: Bearer not-a-jwt", 401, "not an unexpired ServiceAccount token (JWT) of -allowed-serviceaccounts")
	f(jwt("apps/web", time.Time{}, agentAudience), 401, "not an unexpired ServiceAccount token")
	f(jwt("scrapegate/scrapegate", time.Time{}, "https://kubernetes.default.svc"), 401, "not an unexpired ServiceAccount token")
	f(jwt("scrapegate/scrapegate", time.Now().Add(-time.Minute), agentAudience), 401, "not an unexpired ServiceAccount token")
	if n := reviews.Calls(); n != 0 {
		t.Errorf("%d TokenReviews for tokens that cannot pass one; want none", n)
	}
	// Reviewed: forged (the API server knows it not), another user.
	f(jwt("scrapegate/scrapegate", time.Now().Add(time.Hour), agentAudience), 401, "invalid credentials")
	f("Authorization: "+testutil.BasicAuth("scrapegate", "x"), 401, "scheme not accepted")
	f("Authorization: Bearer "+otherUser, 403, "-allowed-serviceaccounts")
	reviews.Fail(errors.New("connection refused"))
	f(jwt("scrapegate/scrapegate", time.Now().Add(2*time.Hour), agentAudience), 503, "TokenReview with the API server failed")
	if r := get(t, gw, "/etcd/metrics", jwt("scrapegate/scrapegate", time.Now().Add(3*time.Hour), agentAudience)); r.Header.Get("Retry-After") == "" {
		t.Error("an unreachable API server: no Retry-After")
	}
	if got := c.dials(); got != 0 {
		t.Errorf("the components accepted %d connections for refused callers", got)
	}
	for series, want := range map[string]float64{
		`scrapegate_auth_failures_total{reason="missing"}`:                              2,
		`scrapegate_auth_failures_total{reason="token_refused_unreviewed"}`:             8,
		`scrapegate_auth_failures_total{reason="serviceaccount_not_allowed"}`:           2,
		`scrapegate_auth_failures_total{reason="token_review_failed"}`:                  3,
		`scrapegate_token_reviews_total{result="serviceaccount_not_allowed"}`:           1,
		`scrapegate_token_review_cache_hits_total{result="serviceaccount_not_allowed"}`: 1,
		`scrapegate_token_reviews_total{result="unauthenticated"}`:                      1,
		`scrapegate_token_reviews_total{result="error"}`:                                2,
		`scrapegate_token_review_cache_hits_total{result="error"}`:                      1,
	} {
		if got := metricValue(t, g, series); got != want {
			t.Errorf("%s = %v; want %v", series, got, want)
		}
	}

	// Probes need nothing; the agent's own /metrics needs the token.
	reviews.Fail(nil)
	checkGet(t, gw)("/healthz", 200, "ok")
	checkGet(t, gw)("/readyz", 200, "ready")
	checkGet(t, gw)("/metrics", 401, "credentials required")
	calls := reviews.Calls()
	checkGet(t, gw, agentCaller)("/metrics", 200, `scrapegate_token_reviews_total{result="allowed"} 1`)
	checkGet(t, gw, agentCaller)("/etcd/metrics", 200, "etcd")
	if got := reviews.Calls(); got != calls+1 {
		t.Errorf("%d TokenReviews for one token within -token-review-cache-ttl; want 1", got-calls)
	}
	if got := metricValue(t, g, `scrapegate_token_review_cache_hits_total{result="allowed"}`); got != 1 {
		t.Errorf("cache hits of allowed tokens = %v; want 1", got)
	}
}

// TestAgentStreamsLargeBodies: a body far larger than any buffer passes
// through whole, as the pod sent it.
func TestAgentStreamsLargeBodies(t *testing.T) {
	c := startAgentComponents(t, testutil.NewCA(t, "components"))
	const size = 64 << 20
	chunk := []byte(strings.Repeat("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 12345\n", 1000))
	want := sha256.New()
	for left := size; left > 0; left -= len(chunk) {
		want.Write(chunk[:min(left, len(chunk))])
	}
	c.proxy = startPod(t, "127.0.0.1", func(w http.ResponseWriter, r *http.Request) {
		for left := size; left > 0; left -= len(chunk) { // chunked: no Content-Length
			if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
				return
			}
		}
	})
	_, gw, _ := startAgent(t, agentConfig(t, c))
	conn := dialGateway(t, gw)
	fmt.Fprintf(conn, "GET /kube-proxy/metrics HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n", agentCaller)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	if resp.StatusCode != 200 || err != nil || n != size || string(got.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatalf("%d, %d bytes, %v; want 200 and kube-proxy's %d bytes as sent", resp.StatusCode, n, err, size)
	}
}

// TestAgentClientCertificates: with -tls-client-ca-file an allowed client
// certificate is enough, without a token; without one, the token decides;
// with no ServiceAccounts allowed, only certificates do.
func TestAgentClientCertificates(t *testing.T) {
	c := startAgentComponents(t, testutil.NewCA(t, "components"))
	ca, callerCA := testutil.NewCA(t, "agent CA"), testutil.NewCA(t, "callers CA")
	serverCert := ca.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	cfg := agentConfig(t, c)
	cfg.TLSCertFile, cfg.TLSKeyFile = serverCert.CertFile, serverCert.KeyFile
	cfg.TLSClientCAFile = testutil.WriteCABundle(t, callerCA)
	cfg.TLSClientAllowedNames = []string{"scrapegate"}
	gatewayCert := callerCA.IssueClient(t, "scrapegate").TLS
	intruderCert := callerCA.IssueClient(t, "someone-else").TLS

	get := func(gw string, cert *tls.Certificate, header string) (int, string, error) {
		t.Helper()
		clientCfg := &tls.Config{RootCAs: ca.Pool()}
		if cert != nil {
			clientCfg.Certificates = []tls.Certificate{*cert}
		}
		req, _ := http.NewRequest("GET", "https://"+gw+"/etcd/metrics", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: clientCfg, DisableKeepAlives: true}}).Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	f := func(gw string, cert *tls.Certificate, header string, want int, wantBody string) {
		t.Helper()
		status, body, err := get(gw, cert, header)
		if err != nil || status != want || !strings.Contains(body, wantBody) {
			t.Errorf("certificate %v, %q: %d %q %v; want %d with %q", cert != nil, header, status, body, err, want, wantBody)
		}
	}

	_, gw, reviews := startAgent(t, cfg)
	f(gw, &gatewayCert, "", 200, "etcd")
	// The certificate decides: the token is not even looked at.
	f(gw, &gatewayCert, "Bearer wrong", 200, "etcd")
	if n := reviews.Calls(); n != 0 {
		t.Errorf("%d TokenReviews for callers with a certificate; want none", n)
	}
	f(gw, nil, "Bearer "+gatewayToken, 200, "etcd")
	dials := c.dials()
	f(gw, nil, "", 401, "credentials required")
	if _, _, err := get(gw, &intruderCert, "Bearer "+gatewayToken); err == nil {
		t.Error("a certificate with a name not allowed passed the handshake")
	}

	cfg.NodeAgent.AllowedServiceAccounts = nil
	g, err := newGateway(cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatalf("newGateway without ServiceAccounts: %s", err)
	}
	gw = serveGateway(t, g)
	f(gw, &gatewayCert, "", 200, "etcd")
	dials = c.dials()
	f(gw, nil, "Bearer "+gatewayToken, 401, "a client certificate is required")
	if got := c.dials(); got != dials {
		t.Errorf("the components accepted %d connections for refused callers", got-dials)
	}
}

// TestAgentComponentTLS: the https components' certificates are not
// verified by default (kubeadm's sign themselves); with
// -control-plane-ca-file they must verify for 127.0.0.1. Without
// -control-plane-token-file the https components are off, the http ones
// not.
func TestAgentComponentTLS(t *testing.T) {
	c := startAgentComponents(t, testutil.NewCA(t, "self-signed"))
	cfg := agentConfig(t, c)
	_, gw, _ := startAgent(t, cfg)
	checkGet(t, gw, agentCaller)("/kube-scheduler/metrics", 200, "up 1")

	cfg.ControlPlaneCAFile = testutil.WriteCABundle(t, testutil.NewCA(t, "cluster CA"))
	_, gw, _ = startAgent(t, cfg)
	checkGet(t, gw, agentCaller)("/kube-scheduler/metrics", 502, "tls_failed")
	if n := c.scheduler.Requests(); n != 1 {
		t.Errorf("kube-scheduler answered %d requests; want 1: none over a connection that did not verify", n)
	}

	cfg = agentConfig(t, c)
	cfg.ControlPlaneTokenFile = ""
	_, gw, _ = startAgent(t, cfg)
	checkGet(t, gw, agentCaller)("/kube-controller-manager/metrics", 400, "/kube-controller-manager/ is off: -control-plane-token-file is empty")
	checkGet(t, gw, agentCaller)("/kube-proxy/metrics", 200, "kube-proxy")
	if n := c.controllerManager.Conns(); n != 0 {
		t.Errorf("kube-controller-manager accepted %d connections with no token to send", n)
	}
}

// TestNodeAgentConfigValidate: what a node agent cannot be told.
func TestNodeAgentConfigValidate(t *testing.T) {
	f := func(change func(*Config), want string) {
		t.Helper()
		cfg := DefaultNodeAgentConfig()
		change(&cfg)
		err := cfg.Validate()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("Validate() = %v; want %q", err, want)
		}
	}
	f(func(*Config) {}, "")
	f(func(c *Config) { c.Kubeconfig = "/etc/kubeconfig" }, "")
	f(func(c *Config) { c.NodeAgent.AllowedServiceAccounts = nil }, "-allowed-serviceaccounts: is empty and so is -tls-client-ca-file")
	f(func(c *Config) { c.NodeAgent.AllowedServiceAccounts = []string{"scrapegate"} }, `-allowed-serviceaccounts: "scrapegate" is not namespace/name`)
	f(func(c *Config) { c.NodeAgent.AllowedServiceAccounts = []string{"Scrapegate/x"} }, "is not namespace/name")
	f(func(c *Config) { c.NodeAgent.AllowedServiceAccounts = []string{"monitoring/prometheus.k8s"} }, "")
	f(func(c *Config) {
		c.NodeAgent.AllowedServiceAccounts = []string{"monitoring/" + strings.Repeat("a", 63) + "." + strings.Repeat("b", 63)}
	}, "")
	f(func(c *Config) {
		c.NodeAgent.AllowedServiceAccounts = []string{"monitoring/" + strings.Repeat("a.", 127)}
	}, "is not namespace/name")
	f(func(c *Config) { c.NodeAgent.AllowedServiceAccounts = []string{"monitoring/prometheus..k8s"} }, "is not namespace/name")
	f(func(c *Config) { c.NodeAgent.AllowedServiceAccounts = []string{"mon.itoring/prometheus"} }, "is not namespace/name")
	f(func(c *Config) { c.NodeAgent.TokenAudiences = nil }, "-token-audiences: is empty")
	f(func(c *Config) { c.NodeAgent.TokenReviewCacheTTL = 0 }, "-token-review-cache-ttl: must be positive")
	f(func(c *Config) { c.EtcdPort = 0 }, "-etcd-port: must be a port 1-65535, got 0")
	f(func(c *Config) { c.Listen = "127.0.0.1:10249" }, `-kube-proxy-port: 10249 is the port of -listen "127.0.0.1:10249"`)
	f(func(c *Config) { c.Kubernetes = true }, "-kubernetes: \"true\" has no effect on a node agent")
	f(func(c *Config) { c.AuthBearerTokensFile = "tokens" }, "-auth-bearer-tokens-file")
}

// TestAgentClientRate: a node agent's TokenReviews have a rate of their
// own (agentReviewQPS), not client-go's 5/s shared by every review; the
// gateway's client keeps client-go's.
func TestAgentClientRate(t *testing.T) {
	kubeconfig := testutil.TempFile(t, "kubeconfig", []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`))
	f := func(cfg Config, wantQPS float32) {
		t.Helper()
		cfg.Kubeconfig = kubeconfig
		client, err := newClient(&cfg)
		if err != nil {
			t.Fatalf("newClient: %s", err)
		}
		if got := client.(*kubernetes.Clientset).AuthenticationV1().RESTClient().GetRateLimiter().QPS(); got != wantQPS {
			t.Errorf("QPS %v; want %v", got, wantQPS)
		}
	}
	f(DefaultNodeAgentConfig(), agentReviewQPS)
	gateway := DefaultConfig()
	gateway.Kubernetes = true
	f(gateway, 5)
}

// TestAgentCallerLimits: -allow-caller-cidrs and -caller-rate-limit hold
// for a node agent as for the gateway (a host-network pod is rarely
// covered by a NetworkPolicy), and its "serving" line says who may call
// it, not the target CIDRs it does not use.
func TestAgentCallerLimits(t *testing.T) {
	c := startAgentComponents(t, testutil.NewCA(t, "components"))
	cfg := agentConfig(t, c)
	cfg.AllowCallerCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	var logs testutil.LogBuffer
	log, err := NewLogger(&logs, "json", "info")
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	testutil.FakeTokenReviews(client).Add(gatewayToken, gatewayUser, agentAudience)
	g, err := newGateway(cfg, log, client)
	if err != nil {
		t.Fatalf("newGateway: %s", err)
	}
	gw := serveGateway(t, g)
	conn := dialGateway(t, gw)
	fmt.Fprintf(conn, "GET /etcd/metrics HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n", agentCaller)
	if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("a caller outside -allow-caller-cidrs was answered (%d bytes, %v); want the connection closed", n, err)
	}
	if got := metricValue(t, g, `scrapegate_rejected_connections_total{reason="caller_not_allowed"}`); got != 1 {
		t.Errorf("caller_not_allowed = %v; want 1", got)
	}
	if c.dials() != 0 {
		t.Error("a component was dialled for a caller outside -allow-caller-cidrs")
	}
	lines := logs.Lines(`"message":"serving"`)
	if len(lines) != 1 || !strings.Contains(lines[0], `"allowed_serviceaccounts":["scrapegate/scrapegate"]`) ||
		!strings.Contains(lines[0], `"allow_caller_cidrs":"10.0.0.0/8"`) || strings.Contains(lines[0], "allow_cidrs") {
		t.Errorf("serving lines %q; want one with allowed_serviceaccounts and allow_caller_cidrs, and no allow_cidrs", lines)
	}

	cfg = agentConfig(t, c)
	cfg.CallerRateLimit, cfg.CallerRateBurst = 0.001, 1 // no refill within the test
	_, gw, _ = startAgent(t, cfg)
	checkGet(t, gw, agentCaller)("/etcd/metrics", 200, "etcd")
	checkGet(t, gw, agentCaller)("/etcd/metrics", 429, "-caller-rate-limit")
}
