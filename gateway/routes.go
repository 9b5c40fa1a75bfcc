package gateway

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/gateway/target"
)

// route is one row of the route table: one kind of request, and its label
// in scrapegate_requests_total.
type route int

const (
	routeProxy   route = iota // absolute-form (forward proxy) requests
	routePods                 // /pods/{ip}/{port}/{path}
	routeNodes                // /nodes/{node}/{path}
	routeSD                   // /sd/pods, /sd/nodes
	routeMetrics              // /metrics
	routeHealthz              // /healthz
	routeReadyz               // /readyz
	routeOther                // anything else: 404
	numRoutes
)

// routes is every request the gateway answers, one row per route. A
// request's route is found from its raw request target (routeOf), before
// anything else is read of it, with no router: fasthttp/router, used
// before, matched three static paths and cost the hot path nothing it
// saved, so it was dropped.
//
//   - An absolute-form target (http://ip:port/path, from callers that use
//     the gateway as their proxy_url) is the proxy route whatever its
//     path, which could be "/metrics": it is the pod's.
//   - A pattern ending in '/' matches every target it starts; any other
//     matches the path exactly, whatever the query.
//   - open rows are served to anyone: probes come from kubelets and load
//     balancers. Every other row is served only to admitted callers
//     (Gateway.admit).
//   - usage is what the 404 answer lists.
var routes = [numRoutes]struct {
	name    string // the route label
	pattern string
	open    bool
	usage   string
	// parse is set for the routes that scrape: it reads the target from
	// the request target, for admit to check and proxy to scrape.
	parse func(g *Gateway, uri []byte) (target.Target, error)
	// serve answers the other routes.
	serve func(g *Gateway, ctx *fasthttp.RequestCtx)
}{
	routeProxy:   {name: "proxy", parse: func(_ *Gateway, uri []byte) (target.Target, error) { return target.ParseAbsoluteURI(uri) }},
	routePods:    {name: "pods", pattern: target.PodsPrefix, usage: "/pods/{ip}/{port}/{path}", parse: func(_ *Gateway, uri []byte) (target.Target, error) { return target.ParsePodPath(uri) }},
	routeNodes:   {name: "nodes", pattern: nodesPrefix, usage: "/nodes/{node}/{path}", parse: (*Gateway).parseNodePath},
	routeSD:      {name: "sd", pattern: sdPrefix, usage: "/sd/pods, /sd/nodes", serve: (*Gateway).serveSD},
	routeMetrics: {name: "metrics", pattern: "/metrics", usage: "/metrics", serve: page((*Gateway).serveMetrics)},
	routeHealthz: {name: "healthz", pattern: "/healthz", open: true, usage: "/healthz", serve: page((*Gateway).serveHealthz)},
	routeReadyz:  {name: "readyz", pattern: "/readyz", open: true, usage: "/readyz", serve: page((*Gateway).serveReadyz)},
	routeOther:   {name: "other", serve: (*Gateway).serveOther},
}

// routeOf tells which route a raw request target is for.
func routeOf(uri []byte) route {
	if target.IsAbsoluteForm(uri) {
		return routeProxy
	}
	path, _ := target.SplitQuery(uri)
	for r := routePods; r < routeOther; r++ {
		p := routes[r].pattern
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
	rt := routeOf(uri)
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

// page serves one of the gateway's own pages, which answer GET and HEAD.
func page(serve func(*Gateway, *fasthttp.RequestCtx)) func(*Gateway, *fasthttp.RequestCtx) {
	return func(g *Gateway, ctx *fasthttp.RequestCtx) {
		if !ctx.IsGet() && !ctx.IsHead() {
			g.serveMethodNotAllowed(ctx)
			return
		}
		serve(g, ctx)
	}
}

func (g *Gateway) serveMetrics(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	g.metrics.writePrometheus(ctx)
	g.metrics.countRequest(routeMetrics, fasthttp.StatusOK)
}

func (g *Gateway) serveHealthz(ctx *fasthttp.RequestCtx) {
	g.plainText(ctx, routeHealthz, fasthttp.StatusOK, "ok")
}

func (g *Gateway) serveReadyz(ctx *fasthttp.RequestCtx) {
	if g.state.Load() != stateServing {
		g.plainText(ctx, routeReadyz, fasthttp.StatusServiceUnavailable, "draining")
		return
	}
	if g.kube != nil && !g.kube.cluster.Synced() {
		why := "waiting for the Kubernetes informers to sync"
		if err := g.kube.cluster.SyncFailure(); err != nil {
			why += ": " + err.Error()
		}
		g.plainText(ctx, routeReadyz, fasthttp.StatusServiceUnavailable, why)
		return
	}
	g.plainText(ctx, routeReadyz, fasthttp.StatusOK, "ready")
}

// notFoundText is the 404 answer: every route's usage.
var notFoundText string

func init() {
	var usages []string
	for _, row := range routes {
		if row.usage != "" {
			usages = append(usages, row.usage)
		}
	}
	last := len(usages) - 1
	notFoundText = "scrapegate: 404 not found: use " + strings.Join(usages[:last], ", ") + " or " + usages[last]
}

// serveOther answers a request no route matches. (The asterisk-form
// target "*", of OPTIONS * and HTTP/2's PRI *, is absolute-form to
// target.IsAbsoluteForm: the proxy route refuses it.)
func (g *Gateway) serveOther(ctx *fasthttp.RequestCtx) {
	g.plainText(ctx, routeOther, fasthttp.StatusNotFound, notFoundText)
}

func (g *Gateway) serveMethodNotAllowed(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, HEAD")
	g.plainText(ctx, routeOther, fasthttp.StatusMethodNotAllowed, "scrapegate: 405 method not allowed: only GET and HEAD")
}

// serveBadRequest answers requests the server could not parse at all. The
// body never quotes the error: fasthttp's errors quote the request, and with
// it any credentials in its headers.
func (g *Gateway) serveBadRequest(ctx *fasthttp.RequestCtx, err error) {
	// The server sets no write deadline for this answer: without one, a
	// scrape's, ended on this connection, would cut it off.
	_ = ctx.Conn().SetWriteDeadline(time.Now().Add(g.server.WriteTimeout))
	var tooLarge *fasthttp.ErrSmallBuffer
	if errors.As(err, &tooLarge) {
		g.plainText(ctx, routeOther, fasthttp.StatusRequestHeaderFieldsTooLarge,
			"scrapegate: 431 the request line and headers exceed -max-request-header-bytes")
		return
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		g.plainText(ctx, routeOther, fasthttp.StatusRequestTimeout,
			"scrapegate: 408 the request line and headers did not arrive within -client-read-timeout")
		return
	}
	g.plainText(ctx, routeOther, fasthttp.StatusBadRequest, "scrapegate: 400 cannot parse the request as HTTP/1.1")
}

func (g *Gateway) plainText(ctx *fasthttp.RequestCtx, rt route, status int, body string) {
	setPlainText(ctx, status, body)
	g.metrics.countRequest(rt, status)
}

func setPlainText(ctx *fasthttp.RequestCtx, status int, body string) {
	ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
	ctx.SetStatusCode(status)
	ctx.SetBodyString(body + "\n")
}
