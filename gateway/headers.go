package gateway

import (
	"bytes"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/scrapegate/scrapegate/gateway/target"
	"github.com/scrapegate/scrapegate/gateway/upstream"
)

// What crosses the gateway each way: of a caller's request headers only a
// scrape's own (and -forward-request-headers) reach a pod, and of a pod's
// response headers everything but the hop-by-hop ones reaches the caller.

// appendUpstreamRequest appends the request to the pod to dst: the caller's
// method, raw path and query, the pod's address as Host, and of the
// caller's headers only those a scrape needs (scrapeHeaders) and, but for
// kubelets and API servers, those of -forward-request-headers; and
// authorization, if not nil, as the Authorization header (a kubelet's
// token, the control-plane token, or the scrape token:
// Gateway.authorization). It is written out directly: copying each header
// into a fasthttp.Request only to serialise it again cost a tenth of the
// gateway's CPU per scrape. The caller's header names and values were
// validated when its request was parsed.
func (g *Gateway) appendUpstreamRequest(dst []byte, in *fasthttp.RequestHeader, t *target.Target, authorization []byte) []byte {
	dst = append(dst, in.Method()...)
	dst = append(dst, ' ')
	dst = append(dst, t.Path...)
	if len(t.Query) > 0 {
		dst = append(dst, '?')
		dst = append(dst, t.Query...)
	}
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = t.Addr.AppendTo(dst)
	dst = append(dst, "\r\n"...)
	connection := in.PeekAll(fasthttp.HeaderConnection)
	for k, v := range in.All() {
		if !isListedHeader(scrapeHeaders, k) && (t.Kind != target.KindPod || !isListedHeader(g.forwardHeaders, k)) || upstream.ListsToken(connection, k) {
			continue
		}
		dst = appendHeader(dst, k, v)
	}
	if authorization != nil {
		dst = appendHeader(dst, []byte(fasthttp.HeaderAuthorization), authorization)
	}
	// Marks the request as having passed through a scrapegate: one that
	// arrives back at any scrapegate is a loop (see Gateway.admit).
	return append(dst, "Via: "+viaToken+"\r\n\r\n"...)
}

// scrapeHeaders are the headers of a Prometheus scrape: all of the caller's
// headers a pod gets unless -forward-request-headers names more. Whatever
// else a caller sends stays at the gateway, whether it means something to
// the pod's server or a proxy in front of it (X-Forwarded-For, Forwarded,
// X-Real-IP, X-Original-URL, X-HTTP-Method-Override), to a metadata service
// (Metadata-Flavor, X-aws-ec2-metadata-token), or to the Kubernetes
// authentication stack (Impersonate-User, X-Remote-User) a kubelet asks
// with the gateway's token; and credentials meant for the gateway never
// reach a pod.
var scrapeHeaders = headerNames("Accept", "Accept-Encoding", "User-Agent", "X-Prometheus-Scrape-Timeout-Seconds")

func headerNames(names ...string) [][]byte {
	bs := make([][]byte, len(names))
	for i, name := range names {
		bs[i] = []byte(name)
	}
	return bs
}

func isListedHeader(names [][]byte, k []byte) bool {
	for _, name := range names {
		if len(k) == len(name) && bytes.EqualFold(k, name) {
			return true
		}
	}
	return false
}

func appendHeader(dst, k, v []byte) []byte {
	dst = append(dst, k...)
	dst = append(dst, ": "...)
	dst = append(dst, v...)
	return append(dst, "\r\n"...)
}

// viaToken is the Via header value scrapegate adds to requests to pods.
const viaToken = "1.1 scrapegate"

// copyResponseHeaders copies the pod's status and headers, minus hop-by-hop
// headers. Content-Length is set by the body stream.
func copyResponseHeaders(dst *fasthttp.ResponseHeader, src *fasthttp.ResponseHeader) {
	dst.SetStatusCode(src.StatusCode())
	// Otherwise a pod that sent no Content-Type would seem to have sent
	// fasthttp's default one.
	src.SetNoDefaultContentType(true)
	connection := src.PeekAll(fasthttp.HeaderConnection)
	for k, v := range src.All() {
		if dropResponseHeader(k) || upstream.ListsToken(connection, k) {
			continue
		}
		dst.AddBytesKV(k, v)
	}
}

// isHopByHop reports RFC 9110 section 7.6.1 connection-specific headers, and
// the non-standard ones proxies have used (Keep-Alive, Proxy-Connection).
func isHopByHop(k []byte) bool {
	switch {
	case len(k) > 6 && bytes.EqualFold(k[:6], []byte("Proxy-")):
		return true // Proxy-Connection, Proxy-Authenticate, Proxy-Authorization...
	case bytes.EqualFold(k, []byte("Connection")), bytes.EqualFold(k, []byte("Keep-Alive")),
		bytes.EqualFold(k, []byte("TE")), bytes.EqualFold(k, []byte("Trailer")),
		bytes.EqualFold(k, []byte("Transfer-Encoding")), bytes.EqualFold(k, []byte("Upgrade")):
		return true
	}
	return false
}

// tchars are the bytes of an RFC 9110 token.
const tchars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"

// isToken reports whether s is an RFC 9110 token, the syntax of a header name.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(tchars, s[i]) < 0 {
			return false
		}
	}
	return s != ""
}

// neverForwarded reports request headers -forward-request-headers may not
// name: hop-by-hop ones, those the gateway sets itself, a length that would
// desynchronise the pod's connection, and credentials meant for the gateway.
func neverForwarded(k string) bool {
	b := []byte(k)
	return isHopByHop(b) || isListedHeader(headerNames("Host", "Content-Length", "Via", "Authorization", "Cookie"), b)
}

func dropResponseHeader(k []byte) bool {
	return isHopByHop(k) ||
		// The gateway's own, about a Service target: a pod cannot forge it.
		bytes.EqualFold(k, []byte(endpointHeader)) ||
		bytes.EqualFold(k, []byte("Content-Length")) ||
		// The server sets its own Date; copying the pod's would send two.
		bytes.EqualFold(k, []byte("Date"))
}
