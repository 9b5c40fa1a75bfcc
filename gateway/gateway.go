// Package gateway is scrapegate: the HTTP server through which a Prometheus
// outside a Kubernetes cluster scrapes pods, kubelets and the gateway's own
// service discovery inside it, and the Services in front of them. It owns the request path and the server's
// lifecycle, one file per step:
//
//   - gateway.go: Gateway, New, the route table (every path the gateway
//     answers) and handle, where every request enters; Serve, Shutdown.
//   - admit.go: every check a request can fail before a pod is asked.
//   - proxy.go: one scrape of an admitted target, handed to package
//     upstream; headers.go: which headers cross each way.
//   - reasons.go: every refusal and failure with its status, text and
//     metric label; metrics.go: the self-metrics.
//   - pages.go: the gateway's own answers (/metrics, /healthz, /readyz,
//     404, 405, and 400, 408 or 431 to what cannot be parsed); conn.go:
//     what is done to each caller connection.
//   - kubernetes.go: what -kubernetes adds (the live-pod policy, /sd/
//     documents, the kubelet proxy /nodes/), served from package kube;
//     kubeapi.go: the read-only Kubernetes discovery API under /api/ and
//     /apis/, and the /api/v1/nodes/{node}/proxy/ aliases of /nodes/;
//     apiservers.go and components.go: the control plane (/apiservers/,
//     /components/); services.go: Service targets (/services/, /endpoints/ and .svc names
//     in absolute form), resolved from the cluster's EndpointSlices;
//     token.go: the scrape token some https targets get.
//   - agent.go: the node agent (`scrapegate agent`, Config.NodeAgent): its
//     own routes, the components on 127.0.0.1 and its callers' TokenReviews.
//   - config.go: Config and its validation; reload.go: the loop that
//     reloads changed files; log.go: the logger.
//
// The route table is matched against the raw request target with no
// router: an absolute-form target must be told apart before any path is
// looked at, and the scrape routes are prefixes. fasthttp/router only ever
// matched /metrics, /healthz and /readyz, a second routing step, and was
// dropped.
//
// Jobs of their own are subpackages: target (target forms and the target
// policy), auth (bearer and basic credentials), tlsconf (listener and
// upstream TLS), callers (per-caller connection and rate limits), reload
// (files reloaded when they change), upstream (endpoint pools and the
// scrape stream) and kube (informers, service discovery and the kubelet
// credentials).
// docs/architecture.md follows one scrape through them.
package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"k8s.io/client-go/kubernetes"

	"github.com/scrapegate/scrapegate/gateway/auth"
	"github.com/scrapegate/scrapegate/gateway/callers"
	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/gateway/target"
	"github.com/scrapegate/scrapegate/gateway/tlsconf"
	"github.com/scrapegate/scrapegate/gateway/upstream"
)

// Lifecycle states; see Shutdown.
const (
	stateServing  int32 = iota
	stateDraining       // /readyz 503, every response closes its connection
	stateStopping       // listener closed; new scrapes get 503
)

// Gateway is one scrapegate server.
type Gateway struct {
	cfg       Config
	log       zerolog.Logger
	rejectLog zerolog.Logger // sampled: refused requests can come in floods
	authLog   zerolog.Logger // sampled: failed logins can come in floods
	// upstreamLog is sampled across endpoints; each endpoint also logs at
	// most once per errorLogInterval.
	upstreamLog zerolog.Logger
	policy      *target.Policy
	// forwardHeaders is -forward-request-headers.
	forwardHeaders [][]byte
	auth           *auth.Authenticator         // nil: no credentials required
	limiter        *callers.RateLimiter        // nil: no per-caller rate limit
	serverTLS      *tls.Config                 // nil: plain HTTP
	clientCerts    *tlsconf.ClientCertVerifier // nil: no client certificates required
	upstreamTLS    *tlsconf.Upstream           // configures https pod endpoints
	kube           *kubernetesState            // nil without -kubernetes
	agent          *agentState                 // nil but for a node agent (Config.NodeAgent)
	scrapeToken    *scrapeToken                // nil without -target-token-file
	reloadables    []*reload.Files
	pool           *upstream.Pool
	metrics        *gatewayMetrics
	server         *fasthttp.Server

	// hijacked counts responses to HTTP/1.0 callers still streaming on a
	// connection the server no longer tracks (streamUntilClose).
	hijacked sync.WaitGroup
	// watches are the discovery API's watches, also on hijacked
	// connections (kubeapi.go); Shutdown ends them.
	watches kubeWatches
	state   atomic.Int32
	stop    chan struct{} // ends the background loops Serve starts

	listenersMu sync.Mutex // orders Serve against Shutdown
	listeners   []net.Listener
	loopsOnce   sync.Once

	shutdownOnce sync.Once
	shutdownErr  error
}

// New returns a Gateway for a validated Config.
func New(cfg Config, log zerolog.Logger) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := newClient(&cfg)
	if err != nil {
		return nil, err
	}
	return newGateway(cfg, log, client)
}

// newClient connects to the API server for cfg: nil, nil when cfg needs
// no client.
func newClient(cfg *Config) (kubernetes.Interface, error) {
	switch {
	case cfg.NodeAgent != nil && len(cfg.NodeAgent.AllowedServiceAccounts) > 0:
		// A node agent's client only reviews its callers' tokens, with
		// its own rate (agentReviewQPS).
		return kube.NewClient(cfg.Kubeconfig, "scrapegate-agent", agentReviewQPS, agentReviewBurst)
	case cfg.Kubernetes:
		// client-go's defaults, 5/s with bursts of 10: the informers list
		// once, then watch.
		return kube.NewClient(cfg.Kubeconfig, "scrapegate", 0, 0)
	}
	return nil, nil
}

// newGateway is New with the Kubernetes client given: nil without
// -kubernetes (a node agent's: without -allowed-serviceaccounts), a fake
// one in tests.
func newGateway(cfg Config, log zerolog.Logger, client kubernetes.Interface) (*Gateway, error) {
	g := &Gateway{
		cfg:            cfg,
		log:            log,
		rejectLog:      log.Sample(&zerolog.BurstSampler{Burst: 10, Period: 10 * time.Second}),
		authLog:        log.Sample(&zerolog.BurstSampler{Burst: 10, Period: 10 * time.Second}),
		upstreamLog:    log.Sample(&zerolog.BurstSampler{Burst: 20, Period: 10 * time.Second}),
		policy:         target.NewPolicy(cfg.targetRules()),
		forwardHeaders: headerNames(cfg.ForwardRequestHeaders...),
		limiter:        callers.NewRateLimiter(cfg.CallerRateLimit, cfg.CallerRateBurst),
		stop:           make(chan struct{}),
	}
	g.metrics = newGatewayMetrics(
		func() float64 { return float64(g.pool.Inflight()) },
		func() float64 { return float64(g.pool.Len()) },
	)
	g.pool = upstream.NewPool(upstream.Options{
		MaxInflight:             cfg.MaxInflight,
		MaxEndpoints:            cfg.MaxEndpoints,
		MaxConnsPerEndpoint:     cfg.MaxConnsPerEndpoint,
		EndpointIdleTTL:         cfg.EndpointIdleTTL,
		UpstreamIdleConnTimeout: cfg.UpstreamIdleConnTimeout,
		DialTimeout:             cfg.DialTimeout,
		MaxConnWait:             cfg.ScrapeTimeoutMax,
		MaxResponseBodyBytes:    cfg.MaxResponseBodyBytes,
		TLSConfig:               g.upstreamTLSConfig,
		Reporter:                (*scrapeReporter)(g),
		OnEvict:                 g.metrics.evicted.Inc,
	})
	if g.limiter != nil {
		g.metrics.set.NewGauge("scrapegate_rate_limited_callers", func() float64 { return float64(g.limiter.Limited(time.Now().UnixNano())) })
	}
	var kubeFiles []*reload.Files
	var err error
	switch {
	case cfg.NodeAgent != nil:
		kubeFiles, err = g.setUpAgent(client)
	case client != nil:
		kubeFiles, err = g.setUpKubernetes(client)
	}
	if err != nil {
		return nil, err
	}
	if err := g.setUpSecurity(kubeFiles); err != nil {
		return nil, err
	}

	g.server = &fasthttp.Server{
		Handler:               g.handle,
		ErrorHandler:          g.serveBadRequest,
		Logger:                fasthttpLogger{log},
		NoDefaultServerHeader: true, // the pod's own Server header passes through
		NoDefaultContentType:  true, // and so does its Content-Type, or its absence
		SecureErrorLogMessage: true, // parse errors must not log requests, credentials included
		CloseOnShutdown:       true,
		ReadBufferSize:        cfg.MaxRequestHeaderBytes,
		// Scrape bodies are read into it (upstream.Scrape.WriteTo): one write sends
		// the headers and a body of up to about this size.
		WriteBufferSize: 16 << 10,
		ReadTimeout:     cfg.ClientReadTimeout,
		IdleTimeout:     cfg.ClientIdleTimeout,
		// Bounds writing the gateway's own answers (/sd/ documents, errors,
		// /metrics) to a caller that stops reading. A scrape's body is
		// bounded by the scrape's own deadline instead (upstream.Scrape.WriteTo).
		WriteTimeout:       cfg.ScrapeTimeoutMax + 10*time.Second,
		MaxRequestBodySize: 64 << 10, // scrapes carry no body
		HeaderReceived:     closeAfterBody,
	}
	return g, nil
}

// route is one row of the route table: one kind of request, and its label
// in scrapegate_requests_total.
type route int

const (
	routeProxy      route = iota // absolute-form (forward proxy) requests
	routePods                    // /pods/{ip}/{port}/{path}
	routeNodes                   // /nodes/{node}/{path}
	routeAPIServers              // /apiservers/{ip}/{port}/{path}
	routeComponents              // /components/{component}/{node}/{path}
	routeServices                // /services/{namespace}/{service}/{port}/{path}
	routeEndpoints               // /endpoints/{namespace}/{service}/{ip}/{port}/{path}
	routeSD                      // /sd/pods, /sd/nodes, /sd/endpoints, /sd/control-plane
	routeNodeProxy               // /api/v1/nodes/{node}/proxy/{path}: /nodes/ as the API server's node proxy
	routeKubeAPI                 // /version, /api, /api/..., /apis, /apis/...: the discovery API (kubeapi.go)
	routeMetrics                 // /metrics
	routeHealthz                 // /healthz
	routeReadyz                  // /readyz
	routeAgent                   // the node agent's /{component}/{path} (agent.go)
	routeOther                   // anything else: 404
	numRoutes
)

// routes is every request the gateway answers, one row per route. A
// request's route is found from its raw request target (routeOf), before
// anything else is read of it.
//
//   - An absolute-form target (http://ip:port/path, from callers that use
//     the gateway as their proxy_url) is the proxy route whatever its
//     path, which could be "/metrics": it is the pod's.
//   - A pattern ending in '/' matches every target it starts; any other
//     matches the path exactly, whatever the query. A row with match
//     instead takes the paths it says: the Kubernetes API's, which no
//     prefix describes.
//   - open rows are served to anyone: probes come from kubelets and load
//     balancers. Every other row is served only to admitted callers
//     (Gateway.admit).
//   - parse rows scrape: parse reads the target for admit to check and
//     proxy to scrape. serve answers the other rows.
//   - usage is what the 404 answer lists.
var routes = [numRoutes]struct {
	name    string // the route label
	pattern string
	match   func(path []byte) bool
	open    bool
	usage   string
	parse   func(g *Gateway, uri []byte) (scrapeTarget, error)
	serve   func(g *Gateway, ctx *fasthttp.RequestCtx)
}{
	routeProxy: {name: "proxy", parse: (*Gateway).parseProxyURI},
	routePods: {name: "pods", pattern: target.PodsPrefix, usage: "/pods/{ip}/{port}/{path}", parse: func(_ *Gateway, uri []byte) (scrapeTarget, error) {
		t, err := target.ParsePodPath(uri)
		return scrapeTarget{Target: t}, err
	}},
	routeNodes:      {name: "nodes", pattern: nodesPrefix, usage: "/nodes/{node}/{path}", parse: (*Gateway).parseNodePath},
	routeAPIServers: {name: "apiservers", pattern: apiServersPrefix, usage: "/apiservers/{ip}/{port}/{path}", parse: (*Gateway).parseAPIServerPath},
	routeComponents: {name: "components", pattern: componentsPrefix, usage: "/components/{component}/{node}/{path}", parse: (*Gateway).parseComponentPath},
	routeServices:   {name: "services", pattern: servicesPrefix, usage: "/services/{namespace}/{service}/{port}/{path}", parse: (*Gateway).parseServicePath},
	routeEndpoints:  {name: "endpoints", pattern: endpointsPrefix, usage: "/endpoints/{namespace}/{service}/{ip}/{port}/{path}", parse: (*Gateway).parseEndpointsPath},
	routeSD:         {name: "sd", pattern: sdPrefix, usage: "/sd/pods, /sd/nodes, /sd/endpoints, /sd/control-plane", serve: (*Gateway).serveSD},
	routeNodeProxy:  {name: "node_proxy", match: isNodeProxyAlias, usage: "/api/v1/nodes/{node}/proxy/{path}", parse: (*Gateway).parseNodeProxyPath},
	routeKubeAPI:    {name: "kubeapi", match: isKubeAPIPath, usage: "/api/v1/... and /apis/discovery.k8s.io/v1/... (Kubernetes list and watch)", serve: (*Gateway).serveKubeAPI},
	routeMetrics:    {name: "metrics", pattern: "/metrics", usage: "/metrics", serve: page((*Gateway).serveMetrics)},
	routeHealthz:    {name: "healthz", pattern: "/healthz", open: true, usage: "/healthz", serve: page((*Gateway).serveHealthz)},
	routeReadyz:     {name: "readyz", pattern: "/readyz", open: true, usage: "/readyz", serve: page((*Gateway).serveReadyz)},
	routeAgent:      {name: "agent", parse: (*Gateway).parseAgentPath},
	routeOther:      {name: "other", serve: (*Gateway).serveOther},
}

// routeOf tells which route a raw request target is for.
func routeOf(uri []byte) route {
	if target.IsAbsoluteForm(uri) {
		return routeProxy
	}
	path, _ := target.SplitQuery(uri)
	for r := routePods; r < routeOther; r++ {
		if m := routes[r].match; m != nil {
			if m(path) {
				return r
			}
			continue
		}
		p := routes[r].pattern
		if p == "" {
			continue // routeAgent: only a node agent's routeOf finds it
		}
		if strings.HasSuffix(p, "/") && bytes.HasPrefix(uri, []byte(p)) || string(path) == p {
			return r
		}
	}
	return routeOther
}

// handle serves one request as its route's row says, once admit has let
// it in: a scrape of the target admit returns, or the row's own answer.
func (g *Gateway) handle(ctx *fasthttp.RequestCtx) {
	uri := ctx.Request.Header.RequestURI()
	rt := g.routeOf(uri)
	row := &routes[rt]
	switch t, ok := g.admit(ctx, rt, uri); {
	case !ok:
	case row.parse != nil:
		g.proxy(ctx, rt, &t)
	default:
		row.serve(g, ctx)
	}
	if g.state.Load() != stateServing {
		// Move keep-alive connections to another replica: also those whose
		// scrape began before the drain did.
		ctx.SetConnectionClose()
	}
	if g.cfg.AccessLog {
		g.log.Info().Bytes("method", ctx.Method()).Bytes("uri", truncate(ctx.Request.Header.RequestURI())).
			Str("caller", ctx.RemoteIP().String()).Int("status", ctx.Response.StatusCode()).
			Dur("headers_after", time.Since(ctx.Time())).Msg("request")
	}
}

// setUpSecurity builds what New needs to admit callers and reach https pods
// from the configuration, and loads every file involved, kubeFiles too: a
// file that cannot be loaded at startup is an error.
func (g *Gateway) setUpSecurity(kubeFiles []*reload.Files) error {
	cfg := &g.cfg
	g.reloadables = append(g.reloadables, kubeFiles...)
	if g.kube != nil {
		// After the kubelet and control-plane tokens, which it is compared with.
		var tokenFile *reload.Files
		if g.scrapeToken, tokenFile = newScrapeToken(cfg, g.kube); tokenFile != nil {
			g.reloadables = append(g.reloadables, tokenFile)
		}
	}
	var rs []*reload.Files
	if g.agent == nil { // a node agent's callers have their tokens reviewed (setUpAgent)
		g.auth, rs = auth.New(cfg.AuthBearerTokensFile, cfg.AuthHTPasswdFile)
		g.reloadables = append(g.reloadables, rs...)
	}
	var err error
	var selfSigned *tls.Certificate
	if cfg.TLSSelfSigned {
		selfSigned, err = g.makeSelfSigned()
	}
	if err == nil && (cfg.TLSCertFile != "" || selfSigned != nil) {
		g.serverTLS, g.clientCerts, rs, err = tlsconf.NewServer(tlsconf.ServerOptions{
			CertFile:             cfg.TLSCertFile,
			KeyFile:              cfg.TLSKeyFile,
			Certificate:          selfSigned,
			ClientCAFile:         cfg.TLSClientCAFile,
			ClientAllowedNames:   cfg.TLSClientAllowedNames,
			OnClientCertRejected: g.clientCertRejected,
		})
		g.reloadables = append(g.reloadables, rs...)
	}
	if err == nil {
		g.upstreamTLS, rs, err = tlsconf.NewUpstream(tlsconf.UpstreamOptions{
			Flags:              "target-tls",
			CAFile:             cfg.TargetTLSCAFile,
			InsecureSkipVerify: cfg.TargetTLSInsecureSkipVerify,
			ServerName:         cfg.TargetTLSServerName,
			CertFile:           cfg.TargetTLSCertFile,
			KeyFile:            cfg.TargetTLSKeyFile,
		})
		g.reloadables = append(g.reloadables, rs...)
	}
	if err != nil {
		return err
	}
	return reload.LoadAll(g.reloadables, g.log)
}

// makeSelfSigned makes the certificate of -tls-self-signed, for this host's
// name and the -listen address, and logs its fingerprint: clients have
// nothing else to check it against.
func (g *Gateway) makeSelfSigned() (*tls.Certificate, error) {
	hostname, _ := os.Hostname() // "" on error: localhost and addresses only
	var listenIP net.IP
	if host, _, err := net.SplitHostPort(g.cfg.Listen); err == nil {
		listenIP = net.ParseIP(host)
	}
	cert, fingerprint, err := tlsconf.SelfSigned(hostname, listenIP, time.Now())
	if err != nil {
		return nil, err
	}
	leaf := cert.Leaf
	ips := make([]string, len(leaf.IPAddresses))
	for i, ip := range leaf.IPAddresses {
		ips[i] = ip.String()
	}
	g.log.Info().Str("sha256_fingerprint", fingerprint).Strs("dns_names", leaf.DNSNames).Strs("ip_addresses", ips).
		Time("not_after", leaf.NotAfter).Msg("serving a self-signed TLS certificate made at start (-tls-self-signed): clients must pin this fingerprint or skip verification")
	return cert, nil
}

// clientCertRejected counts and logs a TLS handshake that failed on the
// caller's certificate.
func (g *Gateway) clientCertRejected(reason, detail string) {
	r := callers.ClientCertUntrusted
	if reason == tlsconf.ClientCertNameNotAllowed {
		r = callers.ClientCertNameNotAllowed
	}
	g.metrics.rejectedConnections[r].Inc()
	if e := g.authLog.Warn(); e.Enabled() {
		e.Str("reason", r.String()).Str("certificate", detail).Msg("client certificate refused")
	}
}

// Serve serves on ln until Shutdown. It returns nil after a Shutdown. ln is a
// plain TCP listener: Serve adds the caller checks and TLS.
func (g *Gateway) Serve(ln net.Listener) error {
	g.policy.AddSelf(ln.Addr())
	cfg := &g.cfg
	e := g.log.Info().Str("listen", ln.Addr().String()).Bool("tls", g.serverTLS != nil).Bool("plain_http_too", cfg.TLSAllowPlain).Bool("client_certs", cfg.TLSClientCAFile != "").
		Bool("auth", g.auth != nil)
	if g.agent != nil {
		// An agent's targets are fixed (127.0.0.1): what applies to it is
		// who may call it.
		e = e.Strs("allowed_serviceaccounts", cfg.NodeAgent.AllowedServiceAccounts).Strs("token_audiences", cfg.NodeAgent.TokenAudiences).
			Str("allow_caller_cidrs", target.FormatCIDRs(cfg.AllowCallerCIDRs))
	} else {
		e = e.Str("allow_cidrs", target.FormatCIDRs(cfg.AllowCIDRs))
	}
	e.Msg("serving")
	if g.auth == nil && cfg.TLSClientCAFile == "" {
		g.log.Warn().Msg("no caller authentication configured: anyone who reaches the listener can scrape every target the policy allows; see docs/security.md")
	}
	if cfg.TLSAllowPlain {
		g.log.Warn().Msg("serving plain HTTP beside TLS (-tls-allow-plain): a caller that connects without TLS sends its credentials and gets its scrapes in clear")
	}
	if len(g.cfg.AllowCallerCIDRs) > 0 || g.cfg.MaxConnsPerCaller > 0 {
		ln = callers.NewListener(ln, g.cfg.AllowCallerCIDRs, g.cfg.MaxConnsPerCaller, g.rejectLog,
			func(r callers.Rejection) { g.metrics.rejectedConnections[r].Inc() })
	}
	switch {
	case g.serverTLS != nil && cfg.TLSAllowPlain:
		// Bounded as a TLS handshake or a request is: a client silent this
		// long is one that would be closed anyway.
		ln = tlsconf.NewTLSOrPlainListener(ln, g.serverTLS, cfg.ClientReadTimeout)
	case g.serverTLS != nil:
		ln = tls.NewListener(ln, g.serverTLS)
	}
	ln = silentTimeoutListener{ln}
	g.listenersMu.Lock()
	if g.state.Load() == stateStopping {
		g.listenersMu.Unlock()
		return ln.Close()
	}
	g.listeners = append(g.listeners, ln)
	g.listenersMu.Unlock()
	g.loopsOnce.Do(func() {
		go every(upstream.MaintainInterval, g.stop, g.pool.Maintain)
		go every(g.cfg.ReloadInterval, g.stop, func(time.Time) { g.reloadAll() })
		if g.kube != nil {
			go g.kube.cluster.Run(g.stop)
		}
		if g.limiter != nil {
			// Forget callers whose buckets have refilled.
			go every(time.Minute, g.stop, func(now time.Time) { g.limiter.Sweep(now.UnixNano()) })
		}
		if g.auth != nil {
			// Forget callers whose failed logins have refilled.
			go every(time.Minute, g.stop, func(now time.Time) { g.auth.Failures.Sweep(now.UnixNano()) })
		}
	})

	err := g.server.Serve(ln)
	if err != nil && !(g.state.Load() == stateStopping && errors.Is(err, net.ErrClosed)) {
		return fmt.Errorf("cannot serve on %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown drains and stops the gateway: /readyz turns 503 and every response
// closes its connection for -drain-delay (or until ctx is done), so load
// balancers and keep-alive callers move to other replicas; then the listener
// closes and scrapes already running get up to -shutdown-timeout to finish,
// while later requests on surviving connections get 503. Later calls return
// the first one's result.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.shutdownOnce.Do(func() { g.shutdownErr = g.shutdown(ctx) })
	return g.shutdownErr
}

func (g *Gateway) shutdown(ctx context.Context) error {
	g.state.Store(stateDraining)
	g.log.Info().Stringer("drain_delay", g.cfg.DrainDelay).Msg("draining: /readyz reports 503")
	drain := time.NewTimer(g.cfg.DrainDelay)
	select {
	case <-drain.C:
	case <-ctx.Done():
		drain.Stop()
	}

	g.listenersMu.Lock()
	g.state.Store(stateStopping)
	listeners := g.listeners
	g.listenersMu.Unlock()
	g.log.Info().Int64("inflight", g.pool.Inflight()).Stringer("timeout", g.cfg.ShutdownTimeout).Msg("stopping: waiting for in-flight scrapes")
	// Watches last up to an hour: they end now, and their clients watch
	// again elsewhere. One a handler starts from here on is refused.
	g.watches.closeAll()
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownTimeout)
	defer cancel()
	err := g.server.ShutdownWithContext(sctx)
	if err == nil {
		// No handler runs any more, so none adds to hijacked.
		err = waitGroupContext(sctx, &g.hijacked)
	}
	if err == nil {
		err = waitGroupContext(sctx, &g.watches.wg)
	}
	// The server only knows listeners its Serve has reached; one handed to
	// Serve an instant ago is closed here, or it would serve forever.
	for _, ln := range listeners {
		_ = ln.Close()
	}
	close(g.stop)
	g.pool.CloseIdle()
	if err != nil {
		return fmt.Errorf("in-flight scrapes did not finish within -shutdown-timeout: %w", err)
	}
	g.log.Info().Msg("stopped")
	return nil
}

// every calls f with the time every interval until stop is closed.
func every(interval time.Duration, stop <-chan struct{}, f func(now time.Time)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// upstreamTLSConfig is the TLS configuration for connections to a pod
// endpoint over https, to a kubelet, to an API server, to a component or
// to a node agent.
func (g *Gateway) upstreamTLSConfig(key upstream.Key) *tls.Config {
	switch {
	case g.agent != nil:
		// Only https components: parseAgentPath refuses them without
		// -control-plane-token-file.
		return g.agent.controlPlane.TLSConfig(key.Addr.String())
	case key.Kind == target.KindKubelet:
		return g.kube.kubelets.TLSConfig(key.Addr.String())
	case key.Kind == target.KindAPIServer:
		return g.kube.apiServers.TLSConfig(key.Addr.String())
	case key.Kind == target.KindComponent:
		return g.kube.componentsTLS.ForTarget(key.Addr.String())
	case key.Kind == target.KindNodeAgent:
		return g.kube.nodeAgent.tls.ForTarget(key.Addr.String())
	}
	return g.upstreamTLS.ForTarget(key.Addr.String())
}

// waitGroupContext waits for wg, or until ctx is done.
func waitGroupContext(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Inflight is how many scrapes are in flight: holding a slot of
// -max-inflight, their body not yet sent or abandoned.
func (g *Gateway) Inflight() int64 { return g.pool.Inflight() }
