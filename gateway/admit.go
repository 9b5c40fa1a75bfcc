package gateway

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/gateway/auth"
	"github.com/scrapegate/scrapegate/gateway/target"
)

// admit decides whether a request on route rt may be served, and answers
// it itself when not. Open routes admit everyone. Every check a request can fail before anything is
// asked of a pod is here, cheapest first: the caller's rate (before any
// password check, which costs a bcrypt), its client certificate and
// credentials, and the request target's length. For a scrape then: a loop
// through a scrapegate, the method, the target as the route parses it, the
// target policy, and whether the gateway still takes scrapes; a scrape's
// target is returned. A Service target is resolved to its endpoint as it
// is parsed, and that endpoint is what the policy judges. Connection-level limits (-allow-caller-cidrs,
// -max-conns-per-caller) are applied earlier, as the connection is
// accepted (callers.NewListener).
func (g *Gateway) admit(ctx *fasthttp.RequestCtx, rt route, uri []byte) (t scrapeTarget, ok bool) {
	if routes[rt].open {
		return t, true // probes come from kubelets and load balancers
	}
	if g.limiter != nil {
		ip, _ := netip.AddrFromSlice(ctx.RemoteIP())
		if ok, wait := g.limiter.Allow(ip, ctx.Time().UnixNano()); !ok {
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(int(wait/time.Second)+1))
			g.reject(ctx, rt, reasonRateLimited, uri, "too many requests from this caller (-caller-rate-limit)")
			return t, false
		}
	}
	if (rt != routeMetrics || g.cfg.MetricsRequireAuth) && !g.authenticateCaller(ctx, rt) {
		return t, false
	}
	if len(uri) > g.cfg.MaxURIBytes {
		g.reject(ctx, rt, reasonURITooLong, uri, fmt.Sprintf("the request target is %d bytes long, more than -max-uri-bytes (%d)", len(uri), g.cfg.MaxURIBytes))
		return t, false
	}
	parse := routes[rt].parse
	if parse == nil {
		return t, true // the gateway's own pages forward nothing: no loop
	}
	// A node agent's callers are gateways, and its targets cannot lead
	// back to it (Config.validateNodeAgent).
	for _, via := range ctx.Request.Header.PeekAll(fasthttp.HeaderVia) {
		if rt != routeAgent && bytes.Contains(bytes.ToLower(via), []byte("scrapegate")) {
			g.reject(ctx, rt, reasonLoop, uri, "the request already went through a scrapegate (Via: "+string(via)+"); a target must not lead back to a gateway")
			return t, false
		}
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, HEAD")
		detail := "only GET and HEAD are proxied"
		if ctx.IsConnect() {
			detail = "CONNECT tunnels are not supported: send absolute http:// or https:// URIs, or use /pods/https/{ip}/{port}/{path}"
		}
		g.reject(ctx, rt, reasonMethod, uri, detail)
		return t, false
	}
	t, err := parse(g, uri)
	if err != nil {
		r := refusalOf(err)
		if r == reasonNotSynced || r == reasonNoReadyEndpoint {
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "5")
		}
		g.reject(ctx, rt, r, uri, err.Error())
		return t, false
	}
	if t.Service {
		// On every answer from here on, refusals too: which endpoint a
		// Service scrape went to is what its caller cannot tell.
		ctx.Response.Header.Set(endpointHeader, endpointHeaderValue(&t.endpoint))
	}
	// A kubelet target is a known node's kubelet metrics endpoint by
	// construction (parseNodePath): only its address is checked. An API
	// server target is an endpoint of default/kubernetes by construction
	// (parseAPIServerPath), whatever the CIDR and port rules say. A
	// component or node agent target is a component's pod, or its node, by
	// construction (parseComponentPath): only its address is checked.
	var v target.Verdict
	switch {
	case rt == routeAgent:
		v = target.VerdictAllowed // 127.0.0.1 at a component's port, by construction (parseAgentPath)
	case t.Kind == target.KindKubelet:
		v = g.policy.CheckKubelet(t.Addr)
	case t.Kind == target.KindComponent, t.Kind == target.KindNodeAgent:
		v = g.policy.CheckComponent(t.Addr)
	case t.Kind == target.KindAPIServer:
		v = g.policy.CheckAPIServer(t.Addr)
	default:
		v = g.policy.Check(&t.Target)
	}
	switch v {
	case target.VerdictAllowed:
	case target.VerdictNotSynced:
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "5")
		g.reject(ctx, rt, reasonNotSynced, uri, v.String())
		return t, false
	default:
		g.reject(ctx, rt, reasonForbidden, uri, v.String()+": "+t.Addr.String())
		return t, false
	}
	if g.state.Load() == stateStopping {
		g.reject(ctx, rt, reasonDraining, uri, "the gateway is shutting down; retry on another replica")
		return t, false
	}
	if t.Service {
		g.metrics.serviceScrapes[targetKindOf(t.endpoint.TargetKind)].Inc()
	}
	return t, true
}

// authenticateCaller checks the caller's client certificate and
// credentials, and answers when they do not do. The gateway asks for all
// that is configured: with -tls-client-ca-file and a tokens or htpasswd
// file, both. A node agent asks for one: a client certificate where
// -tls-client-ca-file is set and the caller presents one (its token is
// then not looked at), else a token the API server vouches for.
func (g *Gateway) authenticateCaller(ctx *fasthttp.RequestCtx, rt route) bool {
	if g.agent != nil && g.clientCerts != nil {
		if cs := ctx.TLSConnectionState(); g.auth == nil || cs != nil && len(cs.PeerCertificates) > 0 {
			return g.clientCertValid(ctx, rt)
		}
	} else if g.clientCerts != nil && !g.clientCertValid(ctx, rt) {
		return false
	}
	return g.auth == nil || g.authenticate(ctx, rt)
}

// authenticate checks the caller's credentials and answers 401 (407 for a
// forward-proxy request) when they are missing or wrong. A forward-proxy
// client sends the credentials of its proxy URL as Proxy-Authorization;
// Authorization is accepted too.
func (g *Gateway) authenticate(ctx *fasthttp.RequestCtx, rt route) bool {
	h := &ctx.Request.Header
	header := h.Peek(fasthttp.HeaderAuthorization)
	if rt == routeProxy {
		if pa := h.Peek(fasthttp.HeaderProxyAuthorization); len(pa) > 0 {
			header = pa
		}
	}
	ip, _ := netip.AddrFromSlice(ctx.RemoteIP())
	result, user := g.auth.Check(header, ip, ctx.Time().UnixNano())
	if result == auth.OK {
		return true
	}
	if result != auth.BadPassword && result != auth.NotAllowed {
		// Only a name from the htpasswd file, or one the API server
		// vouched for, is logged: an unknown one may be a password typed
		// in the wrong field.
		user = ""
	}
	g.authFailed(ctx, rt, result, user)
	return false
}

// authFailed counts and logs a refused caller and answers 401, or 407 for a
// forward-proxy request.
func (g *Gateway) authFailed(ctx *fasthttp.RequestCtx, rt route, result auth.Result, user string) {
	g.metrics.authFailures[result].Inc()
	if e := g.authLog.Warn(); e.Enabled() {
		e.Str("reason", result.String()).Str("caller", ctx.RemoteIP().String()).Str("user", user).
			Bytes("uri", truncate(ctx.Request.Header.RequestURI())).Msg("authentication failed")
	}
	switch result {
	case auth.Busy, auth.ReviewFailed, auth.ReviewsBusy:
		retryAfter := "1"
		if result == auth.ReviewFailed {
			retryAfter = "5" // the API server is down, or its answers slow
		}
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, retryAfter)
		g.plainText(ctx, rt, fasthttp.StatusServiceUnavailable, "scrapegate: 503 "+result.Text())
		return
	case auth.NotAllowed:
		g.plainText(ctx, rt, fasthttp.StatusForbidden, "scrapegate: 403 forbidden: "+result.Text())
		return
	case auth.TooManyFailures:
		ip, _ := netip.AddrFromSlice(ctx.RemoteIP())
		wait := g.auth.Failures.Wait(ip, ctx.Time().UnixNano())
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(int(wait/time.Second)+1))
		g.plainText(ctx, rt, fasthttp.StatusTooManyRequests, "scrapegate: 429 "+result.Text())
		return
	}
	status, challenge := fasthttp.StatusUnauthorized, fasthttp.HeaderWWWAuthenticate
	if rt == routeProxy {
		status, challenge = fasthttp.StatusProxyAuthRequired, fasthttp.HeaderProxyAuthenticate
	}
	if g.auth != nil {
		for _, c := range g.auth.Challenges() {
			ctx.Response.Header.Add(challenge, c)
		}
	}
	g.plainText(ctx, rt, status, fmt.Sprintf("scrapegate: %d unauthorized: %s", status, result.Text()))
}

// clientCertValid checks the caller's client certificate on every request,
// not only at the handshake: the CA file may have changed since, or the
// certificate expired. The handshake has verified any it presented.
func (g *Gateway) clientCertValid(ctx *fasthttp.RequestCtx, rt route) bool {
	cs := ctx.TLSConnectionState()
	if cs == nil || len(cs.PeerCertificates) == 0 {
		g.authFailed(ctx, rt, auth.NoClientCert, "")
		return false
	}
	if !g.clientCerts.StillValid(cs.PeerCertificates, ctx.Time()) {
		// The connection goes: a new one must pass the handshake again.
		ctx.SetConnectionClose()
		g.authFailed(ctx, rt, auth.ClientCertInvalid, "")
		return false
	}
	return true
}
