package gateway

// The gateway's own answers: its pages (/metrics, /healthz, /readyz), and
// what it says to a request no route takes or the server cannot parse.

import (
	"errors"
	"net"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

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
	if g.agent != nil {
		g.plainText(ctx, routeOther, fasthttp.StatusNotFound, g.agent.notFound)
		return
	}
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
