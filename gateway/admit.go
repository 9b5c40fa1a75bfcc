package gateway

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/gateway/auth"
	"github.com/scrapegate/scrapegate/gateway/callers"
	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/gateway/tlsconf"
)

// setUpSecurity builds what New needs to admit callers and reach https pods
// from the configuration, and loads every file involved, kubeFiles too: a
// file that cannot be loaded at startup is an error.
func (g *Gateway) setUpSecurity(kubeFiles []*reload.Files) error {
	cfg := &g.cfg
	g.reloadables = append(g.reloadables, kubeFiles...)
	var rs []*reload.Files
	g.auth, rs = auth.New(cfg.AuthBearerTokensFile, cfg.AuthHTPasswdFile)
	g.reloadables = append(g.reloadables, rs...)
	if cfg.TLSCertFile != "" {
		var err error
		g.serverTLS, g.clientCerts, rs, err = tlsconf.NewServer(tlsconf.ServerOptions{
			CertFile:             cfg.TLSCertFile,
			KeyFile:              cfg.TLSKeyFile,
			ClientCAFile:         cfg.TLSClientCAFile,
			ClientAllowedNames:   cfg.TLSClientAllowedNames,
			OnClientCertRejected: g.clientCertRejected,
		})
		if err != nil {
			return err
		}
		g.reloadables = append(g.reloadables, rs...)
	}
	var err error
	g.upstreamTLS, rs, err = tlsconf.NewUpstream(tlsconf.UpstreamOptions{
		Flags:              "target-tls",
		CAFile:             cfg.TargetTLSCAFile,
		InsecureSkipVerify: cfg.TargetTLSInsecureSkipVerify,
		ServerName:         cfg.TargetTLSServerName,
		CertFile:           cfg.TargetTLSCertFile,
		KeyFile:            cfg.TargetTLSKeyFile,
	})
	if err != nil {
		return err
	}
	g.reloadables = append(g.reloadables, rs...)
	return reload.LoadAll(g.reloadables, g.log)
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

// admit applies the per-request checks on the caller, cheapest first, and
// answers the request itself when one fails: the rate limit, credentials,
// the request target's length, and loops through a scrapegate.
func (g *Gateway) admit(ctx *fasthttp.RequestCtx, rt route, uri []byte) bool {
	if g.limiter != nil {
		ip, _ := netip.AddrFromSlice(ctx.RemoteIP())
		if ok, wait := g.limiter.Allow(ip, ctx.Time().UnixNano()); !ok {
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(int(wait/time.Second)+1))
			g.reject(ctx, rt, reasonRateLimited, uri, "too many requests from this caller (-caller-rate-limit)")
			return false
		}
	}
	if rt != routeMetrics || g.cfg.MetricsRequireAuth {
		if g.clientCerts != nil && !g.clientCertValid(ctx, rt) {
			return false
		}
		if g.auth != nil && !g.authenticate(ctx, rt) {
			return false
		}
	}
	if len(uri) > g.cfg.MaxURIBytes {
		g.reject(ctx, rt, reasonURITooLong, uri, fmt.Sprintf("the request target is %d bytes long, more than -max-uri-bytes (%d)", len(uri), g.cfg.MaxURIBytes))
		return false
	}
	if rt != routePods && rt != routeProxy && rt != routeNodes {
		return true // the gateway's own pages forward nothing: no loop
	}
	for _, via := range ctx.Request.Header.PeekAll(fasthttp.HeaderVia) {
		if bytes.Contains(bytes.ToLower(via), []byte("scrapegate")) {
			g.reject(ctx, rt, reasonLoop, uri, "the request already went through a scrapegate (Via: "+string(via)+"); a target must not lead back to a gateway")
			return false
		}
	}
	return true
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
	if result != auth.BadPassword {
		// Only a name from the htpasswd file is logged: an unknown one may
		// be a password typed in the wrong field.
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
	case auth.Busy:
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		g.plainText(ctx, rt, fasthttp.StatusServiceUnavailable, "scrapegate: 503 "+result.Text())
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
