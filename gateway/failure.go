package gateway

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/valyala/fasthttp"
)

// reason is why a scrape failed. Each has one HTTP status and one metric label.
type reason int

const (
	reasonBadTarget    reason = iota // malformed path or absolute URI
	reasonMethod                     // a method other than GET or HEAD
	reasonForbidden                  // target refused by policy
	reasonLoop                       // the request already went through a scrapegate
	reasonURITooLong                 // request target longer than -max-uri-bytes
	reasonRateLimited                // caller over -caller-rate-limit
	reasonOverloaded                 // -max-inflight reached
	reasonDraining                   // shutting down
	reasonNotSynced                  // -target-policy=kubernetes before the informers synced
	reasonRefused                    // pod refused the connection
	reasonUnreachable                // no route to the pod, or another dial failure
	reasonTLS                        // the TLS handshake with the pod or kubelet failed
	reasonReset                      // connection reset or closed before a response
	reasonBadResponse                // the pod's answer was not valid HTTP
	reasonTimeout                    // deadline passed before the response headers arrived
	reasonBodyFailed                 // the pod failed after the headers, mid-body
	reasonBodyTooLarge               // the pod's body exceeds -max-response-body-bytes
	reasonRedirect                   // the pod answered with a redirect
	reasonClientGone                 // the caller went away mid-body
	numReasons
)

var reasonInfo = [numReasons]struct {
	name     string
	status   int
	upstream bool // counted in scrapegate_upstream_errors_total
}{
	reasonBadTarget:   {"bad_target", fasthttp.StatusBadRequest, false},
	reasonMethod:      {"method_not_allowed", fasthttp.StatusMethodNotAllowed, false},
	reasonForbidden:   {"forbidden", fasthttp.StatusForbidden, false},
	reasonLoop:        {"loop", fasthttp.StatusLoopDetected, false},
	reasonURITooLong:  {"uri_too_long", fasthttp.StatusRequestURITooLong, false},
	reasonRateLimited: {"rate_limited", fasthttp.StatusTooManyRequests, false},
	reasonOverloaded:  {"overloaded", fasthttp.StatusServiceUnavailable, false},
	reasonDraining:    {"draining", fasthttp.StatusServiceUnavailable, false},
	reasonNotSynced:   {"not_synced", fasthttp.StatusServiceUnavailable, false},
	reasonRefused:     {"connect_refused", fasthttp.StatusBadGateway, true},
	reasonUnreachable: {"connect_failed", fasthttp.StatusBadGateway, true},
	reasonTLS:         {"tls_failed", fasthttp.StatusBadGateway, true},
	reasonReset:       {"connection_reset", fasthttp.StatusBadGateway, true},
	reasonBadResponse: {"bad_response", fasthttp.StatusBadGateway, true},
	reasonTimeout:     {"timeout", fasthttp.StatusGatewayTimeout, true},
	reasonBodyFailed:  {"body_failed", 0, true}, // headers already sent: the connection is aborted instead
	// 502 when Content-Length announces it; an abort when the body grows past it.
	reasonBodyTooLarge: {"body_too_large", fasthttp.StatusBadGateway, true},
	// A caller following a redirect would take its gateway credentials to
	// wherever the pod pointed.
	reasonRedirect:   {"redirect", fasthttp.StatusBadGateway, true},
	reasonClientGone: {"client_gone", 0, false},
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
	case isTLSError(err):
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

// errTLSHandshake wraps every failed TLS handshake with a pod.
var errTLSHandshake = errors.New("TLS handshake with the target failed")

func isTLSError(err error) bool {
	return errors.Is(err, errTLSHandshake)
}

func isDialError(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}
