package gateway

// The node agent, `scrapegate agent`: the Gateway on a node's host network
// that reaches the control-plane components bound to 127.0.0.1 there for
// the central gateway (issue 15). It serves GET /{component}/{path} for
// kube.DefaultComponents' paths and nothing else of the gateway's routes,
// and admits callers by TokenReview or client certificate.

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"k8s.io/client-go/kubernetes"

	"github.com/scrapegate/scrapegate/gateway/auth"
	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/gateway/target"
)

// NodeAgentConfig is what `scrapegate agent` adds to a Config: who may call
// the agent. The components' ports are Config's, as the gateway's.
type NodeAgentConfig struct {
	AllowedServiceAccounts []string      // -allowed-serviceaccounts: namespace/name; empty: client certificates only
	TokenAudiences         []string      // -token-audiences
	TokenReviewCacheTTL    time.Duration // -token-review-cache-ttl
}

// The rate of a node agent's TokenReviews. client-go's default, 5/s with
// bursts of 10, is shared by every review: a few callers sending new
// tokens would make the gateway's review wait behind theirs until it
// timed out. The reviews are bounded by auth.MaxReviewsInFlight and each
// caller's failed logins instead; this only caps the worst case an agent
// can ask of the API server.
const (
	agentReviewQPS   = 50
	agentReviewBurst = 100
)

// DefaultNodeAgentConfig returns the defaults every flag of `scrapegate
// agent` starts from.
func DefaultNodeAgentConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = ":10271"
	// kubeadm's scheduler and controller-manager sign their own serving
	// certificates at start: no CA can verify them, and the connection
	// never leaves the node.
	cfg.ControlPlaneCAFile = ""
	cfg.NodeAgent = &NodeAgentConfig{
		AllowedServiceAccounts: []string{"scrapegate/scrapegate"},
		TokenAudiences:         []string{"scrapegate-node-agent"},
		TokenReviewCacheTTL:    time.Minute,
	}
	return cfg
}

// validateNodeAgent checks what only a node agent is told.
func (c *Config) validateNodeAgent(bad func(flagName, format string, args ...any)) {
	a := c.NodeAgent
	if len(a.AllowedServiceAccounts) == 0 && c.TLSClientCAFile == "" {
		bad("allowed-serviceaccounts", "is empty and so is -tls-client-ca-file: the agent would admit nobody; list the gateway's ServiceAccount (namespace/name), or set client certificates")
	}
	for _, sa := range a.AllowedServiceAccounts {
		namespace, name, ok := strings.Cut(sa, "/")
		// A namespace is a DNS label, a ServiceAccount's name a DNS
		// subdomain (prometheus.k8s).
		if !ok || checkLabel("namespace", namespace, false) != nil || !isDNSName(name) {
			bad("allowed-serviceaccounts", "%q is not namespace/name of a ServiceAccount, such as scrapegate/scrapegate", sa)
		}
	}
	if len(a.AllowedServiceAccounts) > 0 && len(a.TokenAudiences) == 0 {
		bad("token-audiences", "is empty: callers would present tokens the API server itself accepts, which every node's agent could replay; "+
			"set the audience of the gateway's projected token, such as scrapegate-node-agent")
	}
	if a.TokenReviewCacheTTL <= 0 {
		bad("token-review-cache-ttl", "must be positive, got %s", a.TokenReviewCacheTTL)
	}
	_, listenPort, _ := net.SplitHostPort(c.Listen)
	for _, comp := range c.components() {
		if listenPort == fmt.Sprint(comp.Port) {
			// The agent would forward to itself.
			bad(comp.Name+"-port", "%d is the port of -listen %q", comp.Port, c.Listen)
		}
	}
	for _, f := range []struct{ flag, value string }{
		{"kubernetes", fmt.Sprint(c.Kubernetes)},
		{"auth-bearer-tokens-file", c.AuthBearerTokensFile},
		{"auth-htpasswd-file", c.AuthHTPasswdFile},
	} {
		if f.value != "" && f.value != "false" {
			bad(f.flag, "%q has no effect on a node agent, which authenticates callers by TokenReview or client certificate", f.value)
		}
	}
}

// agentState is what a node agent has instead of the gateway's routes.
type agentState struct {
	// components are kube.DefaultComponents at the agent's ports
	// (their selectors unused: an agent reads no pods).
	components []kube.Component
	// controlPlane is the token to the https components and their TLS
	// configuration; nil without -control-plane-token-file.
	controlPlane *kube.Credentials
	// notFound is the 404 answer (notFoundText).
	notFound string
}

// setUpAgent prepares a node agent: its components, their credentials and
// the TokenReviews of its callers' tokens through client (nil without
// -allowed-serviceaccounts). It returns the files to load with the others.
func (g *Gateway) setUpAgent(client kubernetes.Interface) ([]*reload.Files, error) {
	cfg := &g.cfg
	a := &agentState{components: cfg.components()}
	a.notFound = a.notFoundText()
	g.agent = a
	if client != nil {
		g.auth = auth.NewTokenReview(auth.TokenReviewOptions{
			Reviews:         client.AuthenticationV1().TokenReviews(),
			Audiences:       cfg.NodeAgent.TokenAudiences,
			ServiceAccounts: cfg.NodeAgent.AllowedServiceAccounts,
			TTL:             cfg.NodeAgent.TokenReviewCacheTTL,
			Observe:         g.tokenReviewObserver(),
		})
	}
	if cfg.ControlPlaneTokenFile == "" {
		return nil, nil
	}
	if err := serviceAccountFilesExist("control-plane", "the https components (kube-scheduler, kube-controller-manager)", cfg.ControlPlaneTokenFile, cfg.ControlPlaneCAFile); err != nil {
		return nil, err
	}
	creds, files, err := kube.NewCredentials("control-plane", cfg.ControlPlaneTokenFile, cfg.ControlPlaneCAFile, "", cfg.ControlPlaneCAFile == "")
	if err != nil {
		return nil, err
	}
	a.controlPlane = creds
	return files, nil
}

// tokenReviewObserver counts the TokenReview verdicts, and logs the
// reviews that failed.
func (g *Gateway) tokenReviewObserver() func(auth.Review, bool, error) {
	var reviews, hits [auth.NumReviews]*metrics.Counter
	for r := range auth.NumReviews {
		reviews[r] = g.metrics.set.NewCounter(fmt.Sprintf(`scrapegate_token_reviews_total{result=%q}`, r))
		hits[r] = g.metrics.set.NewCounter(fmt.Sprintf(`scrapegate_token_review_cache_hits_total{result=%q}`, r))
	}
	return func(r auth.Review, cached bool, err error) {
		if cached {
			hits[r].Inc()
			return
		}
		reviews[r].Inc()
		if err == nil {
			return
		}
		if e := g.authLog.Warn(); e.Enabled() {
			e.Err(err).Msg("a caller's token could not be reviewed: the API server must be reachable and the agent's ServiceAccount allowed to create tokenreviews (deploy/overlays/node-agent/rbac.yaml)")
		}
	}
}

// routeOf tells which route a raw request target is for: the package's
// routeOf, or a node agent's own. An agent serves /metrics, /healthz,
// /readyz and its components' metrics paths; everything else, the
// gateway's routes and absolute-form targets included (an agent is no
// proxy), is routeOther: 404.
func (g *Gateway) routeOf(uri []byte) route {
	if g.agent == nil {
		return routeOf(uri)
	}
	if target.IsAbsoluteForm(uri) {
		return routeOther
	}
	path, _ := target.SplitQuery(uri)
	for _, r := range []route{routeMetrics, routeHealthz, routeReadyz} {
		if string(path) == routes[r].pattern {
			return r
		}
	}
	if _, _, ok := g.agent.component(path); ok {
		return routeAgent
	}
	return routeOther
}

// component finds the component whose metrics path /{component}/{path}
// is, and its own path, which aliases path.
func (a *agentState) component(path []byte) (*kube.Component, []byte, bool) {
	rest, _ := bytes.CutPrefix(path, []byte("/"))
	name, _, _ := bytes.Cut(rest, []byte("/"))
	for i := range a.components {
		c := &a.components[i]
		if string(name) != c.Name {
			continue
		}
		componentPath := rest[len(name):]
		for _, p := range c.Paths {
			if string(componentPath) == p {
				return c, componentPath, true
			}
		}
		break
	}
	return nil, nil, false
}

// loopback is where a node agent's components listen.
var loopback = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// parseAgentPath parses the node agent's /{component}/{path} (routeOf has
// found the component): the target is that component on 127.0.0.1, over
// https with the control-plane token for kube-scheduler and
// kube-controller-manager, over http with no token for etcd and
// kube-proxy. It is fixed by construction, so no target policy judges it.
func (g *Gateway) parseAgentPath(uri []byte) (scrapeTarget, error) {
	path, query := target.SplitQuery(uri)
	c, componentPath, _ := g.agent.component(path)
	if err := target.CheckQuery(query); err != nil {
		return scrapeTarget{}, err
	}
	if c.TLS && (g.agent.controlPlane == nil || g.agent.controlPlane.Authorization() == nil) {
		return scrapeTarget{}, target.Invalid("/" + c.Name + "/ is off: -control-plane-token-file is empty")
	}
	return scrapeTarget{Target: target.Target{Addr: netip.AddrPortFrom(loopback, c.Port), Path: componentPath, Query: query,
		TLS: c.TLS, Kind: target.KindComponent}}, nil
}

// notFoundText is a node agent's 404 answer: every path it serves.
func (a *agentState) notFoundText() string {
	var paths []string
	for _, c := range a.components {
		for _, p := range c.Paths {
			paths = append(paths, "/"+c.Name+p)
		}
	}
	return "scrapegate agent: 404 not found: a node agent serves " + strings.Join(paths, ", ") + ", /metrics, /healthz and /readyz only"
}

// authorization is the Authorization header a node agent adds to a scrape
// of t: the control-plane token to the https components, nothing to etcd
// and kube-proxy, which serve http.
func (a *agentState) authorization(t *scrapeTarget) []byte {
	if !t.TLS {
		return nil
	}
	return a.controlPlane.Authorization()
}
