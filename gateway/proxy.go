package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/gateway/upstream"
)

// proxy is one scrape of an admitted target t: take an in-flight slot and
// the pod endpoint's pool, send the scrape with the caller's deadline, pass
// on the pod's response headers, and hand the body stream to the server,
// which writes it to the caller (upstream.Scrape.WriteTo) and then closes
// it, which releases the scrape (upstream.Scrape.CloseWithError). Every
// route that scrapes (/pods/, /nodes/, /apiservers/, /services/,
// /endpoints/, absolute-form) ends here.
func (g *Gateway) proxy(ctx *fasthttp.RequestCtx, rt route, t *scrapeTarget) {
	uri := ctx.Request.Header.RequestURI()
	timeout := g.scrapeTimeout(&ctx.Request.Header)
	start := time.Now()
	s, err := g.pool.Begin(upstream.Key{Addr: t.Addr, TLS: t.TLS, Kind: t.Kind}, ctx.Conn(), start.Add(timeout))
	if err != nil {
		retryAfter := "1"
		if err == upstream.ErrTooManyEndpoints {
			retryAfter = "10"
		}
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, retryAfter)
		g.reject(ctx, rt, reasonOverloaded, uri, err.Error())
		return
	}
	s.Tag = int(rt)
	s.Request = g.appendUpstreamRequest(s.Request, &ctx.Request.Header, &t.Target, g.authorization(t))
	err = s.Send(ctx.IsHead())
	if err == upstream.ErrCallerGone {
		g.callerGone(ctx, s, uri, "the caller hung up before the pod answered")
		return
	}
	if err != nil {
		r := classifyUpstreamError(err)
		g.upstreamFailed(s, r, err)
		if r == reasonRefused || r == reasonUnreachable || r == reasonTLS {
			s.ConnectFailed()
		}
		s.Finish()
		detail := err.Error()
		switch {
		case r == reasonTimeout:
			detail = fmt.Sprintf("no response from %s within the %s scrape deadline", t.Addr, timeout)
		case r == reasonRefused && t.component != nil:
			detail = g.componentRefused(t)
		}
		g.writeError(ctx, rt, r, uri, detail)
		return
	}
	g.metrics.upstreamTime.UpdateDuration(start)
	resp := s.Response()
	if code := resp.StatusCode(); code < 200 {
		// fasthttp reads past 100 Continue and the like; a final 1xx such
		// as 101 Switching Protocols is no answer to a scrape.
		g.refuseResponse(ctx, rt, uri, s, reasonBadResponse, fmt.Errorf("status %d", code),
			fmt.Sprintf("the pod answered %d, not a response to a scrape", code))
		return
	}
	if code := resp.StatusCode(); code >= 300 && code < 400 && code != fasthttp.StatusNotModified {
		location := string(truncate(resp.Header.Peek(fasthttp.HeaderLocation)))
		g.refuseResponse(ctx, rt, uri, s, reasonRedirect, fmt.Errorf("status %d to %q", code, location),
			fmt.Sprintf("the pod answered %d redirecting to %q; scrapegate does not pass redirects on", code, location))
		return
	}
	if limit, cl := g.cfg.MaxResponseBodyBytes, int64(resp.Header.ContentLength()); limit > 0 && cl > limit {
		g.refuseResponse(ctx, rt, uri, s, reasonBodyTooLarge, fmt.Errorf("Content-Length %d exceeds -max-response-body-bytes %d", cl, limit),
			fmt.Sprintf("the pod's body of %d bytes exceeds -max-response-body-bytes (%d)", cl, limit))
		return
	}

	copyResponseHeaders(&ctx.Response.Header, &resp.Header)
	if resp.BodyStream() == nil {
		// HEAD, 204 and 304 carry no body.
		if cl := resp.Header.ContentLength(); cl >= 0 {
			ctx.Response.Header.SetContentLength(cl)
		}
		g.metrics.countRequest(rt, resp.StatusCode())
		s.Finish()
		return
	}
	size := resp.Header.ContentLength()
	if size < 0 {
		// Chunked or close-delimited: how the caller gets it is decided by
		// what arrives first.
		switch read, err := s.ReadAhead(); {
		case err == io.EOF:
			size = read // all of it
		case err == upstream.ErrCallerGone:
			g.callerGone(ctx, s, uri, "the caller hung up before the pod sent its body")
			return
		case err != nil:
			// Nothing was sent on yet: the caller gets a proper answer.
			r, detail := reasonBodyFailed, "the pod failed after its headers, before the gateway sent anything on: "+err.Error()
			switch {
			case err == upstream.ErrBodyTooLarge:
				r, detail = reasonBodyTooLarge, fmt.Sprintf("the pod's body exceeds -max-response-body-bytes (%d)", g.cfg.MaxResponseBodyBytes)
			case errors.Is(err, os.ErrDeadlineExceeded):
				r, detail = reasonTimeout, fmt.Sprintf("no body from %s within the %s scrape deadline", t.Addr, timeout)
			}
			g.refuseResponse(ctx, rt, uri, s, r, err, detail)
			return
		case !ctx.Request.Header.IsHTTP11():
			// An HTTP/1.0 caller cannot read chunked: the body ends
			// where the connection does.
			g.streamUntilClose(ctx, s)
			return
		default:
			size = -1 // chunked; the caller's connection stays open
		}
	}
	ctx.SetBodyStream(s, size)
}

// streamUntilClose sends s's response as HTTP/1.0 does, delimited by
// closing the connection. The fasthttp server frames every body of unknown
// length as chunked, so the connection is taken over once the handler
// returns (and the server has sent any response before this one). Writes
// go straight to the connection: HTTP/1.0 callers are rare.
//
// fasthttp may also drop the connection without handing it over (when
// flushing an earlier, pipelined response fails): the scrape then ends at
// its deadline, like any other, whoever comes first owning it.
func (g *Gateway) streamUntilClose(ctx *fasthttp.RequestCtx, s *upstream.Scrape) {
	ctx.Response.Header.SetContentLength(-2) // no length, and Connection: close
	var owned atomic.Bool
	own := func() bool { return owned.CompareAndSwap(false, true) }
	g.hijacked.Add(1)
	reclaim := time.AfterFunc(time.Until(s.WriteDeadline()), func() {
		if own() {
			_ = s.CloseWithError(errNotHandedOver)
			g.hijacked.Done()
		}
	})
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		if !own() {
			return
		}
		reclaim.Stop()
		_ = c.SetWriteDeadline(s.WriteDeadline())
		_, err := c.Write(ctx.Response.Header.Header())
		if err == nil {
			_, err = s.WriteTo(c)
		}
		_ = s.CloseWithError(err)
		g.hijacked.Done()
	})
}

var errNotHandedOver = errors.New("the caller's connection closed before the response could be sent")

// callerGone ends a scrape whose caller hung up. Its answer, uncounted,
// reaches only a caller that half-closed its connection.
func (g *Gateway) callerGone(ctx *fasthttp.RequestCtx, s *upstream.Scrape, uri []byte, detail string) {
	g.metrics.countFailure(reasonClientGone)
	s.Finish()
	ctx.SetConnectionClose()
	g.writeErrorUncounted(ctx, reasonClientGone, uri, detail)
}

// refuseResponse answers with reason r instead of passing on the pod's
// response. Its body is not read to the end, so its connection is closed,
// not pooled.
func (g *Gateway) refuseResponse(ctx *fasthttp.RequestCtx, rt route, uri []byte, s *upstream.Scrape, r reason, err error, detail string) {
	g.upstreamFailed(s, r, err)
	s.Abandon()
	g.writeError(ctx, rt, r, uri, detail)
}

// scrapeTimeout is the deadline for one scrape: Prometheus's own timeout minus
// a margin so the gateway's 504 arrives before Prometheus gives up, clamped to
// -scrape-timeout-max.
func (g *Gateway) scrapeTimeout(h *fasthttp.RequestHeader) time.Duration {
	v := h.Peek("X-Prometheus-Scrape-Timeout-Seconds")
	if len(v) == 0 {
		return g.cfg.ScrapeTimeoutDefault
	}
	secs, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(v), len(v)), 64)
	if err != nil || !(secs > 0) {
		return g.cfg.ScrapeTimeoutDefault
	}
	// Past twice the maximum the answer is the maximum; the bound also keeps
	// the conversion below from overflowing.
	if secs > 2*(g.cfg.ScrapeTimeoutMax+g.cfg.ScrapeTimeoutMargin).Seconds() {
		return g.cfg.ScrapeTimeoutMax
	}
	d := time.Duration(secs * float64(time.Second))
	return min(d-min(g.cfg.ScrapeTimeoutMargin, d/2), g.cfg.ScrapeTimeoutMax)
}

// upstreamFailed counts a failed scrape and logs it, at most once per
// interval per endpoint (Scrape.TakeLogTurn).
func (g *Gateway) upstreamFailed(s *upstream.Scrape, r reason, err error) {
	g.metrics.countFailure(r)
	if !s.TakeLogTurn(timeNow().UnixNano()) {
		return
	}
	// Also sampled across endpoints: one caller scanning many of them must
	// not flood the log.
	if e := g.upstreamLog.Warn(); e.Enabled() {
		e.Str("target", s.Target().String()).Str("reason", r.String()).Err(err).
			Int64("suppressed_since_last", s.TakeSuppressed()).Msg("scrape failed")
	}
}

// timeNow is time.Now; the tests of the per-endpoint log interval move it.
var timeNow = time.Now

// scrapeReporter is the Gateway as the upstream.Reporter of its pool.
type scrapeReporter Gateway

// BodyEnded counts how a streamed body ended.
func (sr *scrapeReporter) BodyEnded(s *upstream.Scrape, readErr, writeErr error) {
	g := (*Gateway)(sr)
	switch {
	case readErr != nil:
		// The server aborts the connection when a read fails, so the caller
		// sees a broken response rather than a clean, truncated one.
		r := reasonBodyFailed
		if readErr == upstream.ErrBodyTooLarge {
			r = reasonBodyTooLarge
		}
		g.upstreamFailed(s, r, readErr)
	case writeErr != nil:
		g.metrics.countFailure(callerFailure(writeErr))
	default:
		g.metrics.countRequest(route(s.Tag), s.Response().StatusCode())
	}
	g.metrics.responseBytes.Add(int(s.BodyBytes()))
}
