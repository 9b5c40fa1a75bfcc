package gateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/gateway/upstream"
)

// reason is why a scrape failed. Each has one HTTP status and one metric label.
type reason int

const (
	reasonBadTarget        reason = iota // malformed path or absolute URI
	reasonMethod                         // a method other than GET or HEAD
	reasonForbidden                      // target refused by policy
	reasonLoop                           // the request already went through a scrapegate
	reasonURITooLong                     // request target longer than -max-uri-bytes
	reasonRateLimited                    // caller over -caller-rate-limit
	reasonOverloaded                     // -max-inflight reached
	reasonDraining                       // shutting down
	reasonNotSynced                      // -target-policy=kubernetes, or a Service target, before the informers synced
	reasonUnknownService                 // no such Service, Service port or endpoint of the Service
	reasonUnknownComponent               // no such node, or no pod of the component on it
	reasonNoReadyEndpoint                // the Service has no ready endpoint for the port
	reasonRefused                        // pod refused the connection
	reasonUnreachable                    // no route to the pod, or another dial failure
	reasonTLS                            // the TLS handshake with the pod or kubelet failed
	reasonReset                          // connection reset or closed before a response
	reasonBadResponse                    // the pod's answer was not valid HTTP
	reasonTimeout                        // deadline passed before the response headers arrived
	reasonBodyFailed                     // the pod failed after the headers, mid-body
	reasonBodyTooLarge                   // the pod's body exceeds -max-response-body-bytes
	reasonRedirect                       // the pod answered with a redirect
	reasonClientGone                     // the caller hung up before the body was fully sent
	reasonCallerStalled                  // the caller stopped reading and the deadline passed
	numReasons
)

// reasonFamily is the counter family a reason is counted in.
type reasonFamily int

const (
	familyRejected reasonFamily = iota // scrapegate_rejected_requests_total: refused before any connection to a pod
	familyUpstream                     // scrapegate_upstream_errors_total: failed between the gateway and the pod
	familyCaller                       // scrapegate_client_aborts_total: failed between the gateway and the caller
)

var reasonInfo = [numReasons]struct {
	name   string
	status int
	family reasonFamily
}{
	reasonBadTarget:   {"bad_target", fasthttp.StatusBadRequest, familyRejected},
	reasonMethod:      {"method_not_allowed", fasthttp.StatusMethodNotAllowed, familyRejected},
	reasonForbidden:   {"forbidden", fasthttp.StatusForbidden, familyRejected},
	reasonLoop:        {"loop", fasthttp.StatusLoopDetected, familyRejected},
	reasonURITooLong:  {"uri_too_long", fasthttp.StatusRequestURITooLong, familyRejected},
	reasonRateLimited: {"rate_limited", fasthttp.StatusTooManyRequests, familyRejected},
	reasonOverloaded:  {"overloaded", fasthttp.StatusServiceUnavailable, familyRejected},
	reasonDraining:    {"draining", fasthttp.StatusServiceUnavailable, familyRejected},
	reasonNotSynced:   {"not_synced", fasthttp.StatusServiceUnavailable, familyRejected},
	// The Service target names nothing the cluster has (a typo, a deleted
	// Service, an endpoint gone from its slices): as /pods/ to a refused
	// address, nothing is dialled.
	reasonUnknownService: {"unknown_service", fasthttp.StatusNotFound, familyRejected},
	// As unknown_service, for /components/: the node is unknown, or no pod
	// of the component runs on it.
	reasonUnknownComponent: {"unknown_component", fasthttp.StatusNotFound, familyRejected},
	reasonNoReadyEndpoint:  {"no_ready_endpoint", fasthttp.StatusServiceUnavailable, familyRejected},
	reasonRefused:          {"connect_refused", fasthttp.StatusBadGateway, familyUpstream},
	reasonUnreachable:      {"connect_failed", fasthttp.StatusBadGateway, familyUpstream},
	reasonTLS:              {"tls_failed", fasthttp.StatusBadGateway, familyUpstream},
	reasonReset:            {"connection_reset", fasthttp.StatusBadGateway, familyUpstream},
	reasonBadResponse:      {"bad_response", fasthttp.StatusBadGateway, familyUpstream},
	reasonTimeout:          {"timeout", fasthttp.StatusGatewayTimeout, familyUpstream},
	// 502 while nothing of the response was sent (a body of unknown length
	// is read ahead for that); once the headers are out, the connection is
	// aborted instead.
	reasonBodyFailed: {"body_failed", fasthttp.StatusBadGateway, familyUpstream},
	// 502 when Content-Length announces it; an abort when the body grows past it.
	reasonBodyTooLarge: {"body_too_large", fasthttp.StatusBadGateway, familyUpstream},
	// A caller following a redirect would take its gateway credentials to
	// wherever the pod pointed.
	reasonRedirect: {"redirect", fasthttp.StatusBadGateway, familyUpstream},
	// Nobody is left to read an answer; a caller that only half-closed its
	// connection gets a 502.
	reasonClientGone:    {"client_gone", fasthttp.StatusBadGateway, familyCaller},
	reasonCallerStalled: {"caller_stalled", 0, familyCaller},
}

func (r reason) String() string { return reasonInfo[r].name }

// classifyUpstreamError maps an error from HostClient.Do to a reason.
func classifyUpstreamError(err error) reason {
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout), errors.Is(err, fasthttp.ErrNoFreeConns),
		errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return reasonTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return reasonRefused
	case errors.Is(err, upstream.ErrTLSHandshake):
		return reasonTLS
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return reasonReset
	case isDialError(err):
		return reasonUnreachable
	default:
		return reasonBadResponse
	}
}

// callerFailure tells why writing to the caller failed: it stopped reading
// until the write deadline passed, or it hung up.
func callerFailure(writeErr error) reason {
	var netErr net.Error
	if errors.As(writeErr, &netErr) && netErr.Timeout() {
		return reasonCallerStalled
	}
	return reasonClientGone
}

func isDialError(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// reject answers a request refused before any connection to a pod.
func (g *Gateway) reject(ctx *fasthttp.RequestCtx, rt route, r reason, uri []byte, detail string) {
	g.metrics.countFailure(r)
	// Refusals can come in floods (an overload, a scanner): build the log
	// line only when it will be written.
	if e := g.rejectLog.Debug(); e.Enabled() {
		e.Str("reason", r.String()).Bytes("uri", truncate(uri)).Str("caller", ctx.RemoteIP().String()).Msg(detail)
	}
	g.writeError(ctx, rt, r, uri, detail)
}

// writeError answers with the reason's status and a one-line plain-text body
// naming the target and the reason.
func (g *Gateway) writeError(ctx *fasthttp.RequestCtx, rt route, r reason, uri []byte, detail string) {
	g.plainText(ctx, rt, reasonInfo[r].status, errorText(r, uri, detail))
}

// writeErrorUncounted is writeError for an answer that is not counted in
// scrapegate_requests_total, because nobody is likely to read it.
func (g *Gateway) writeErrorUncounted(ctx *fasthttp.RequestCtx, r reason, uri []byte, detail string) {
	setPlainText(ctx, reasonInfo[r].status, errorText(r, uri, detail))
}

func errorText(r reason, uri []byte, detail string) string {
	return fmt.Sprintf("scrapegate: %d %s: %q: %s", reasonInfo[r].status, r, truncate(uri), oneLine(detail))
}

func truncate(b []byte) []byte {
	const maxLen = 256
	if len(b) > maxLen {
		return b[:maxLen]
	}
	return b
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
