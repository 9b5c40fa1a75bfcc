package upstream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// newHostClient returns the connection pool of one pod endpoint. Only its
// pool and dialer are used: Scrape.Send runs the exchange itself, so that a
// scrape holds its connection in pooled state instead of the closures
// fasthttp's streaming client allocates for every response.
func (p *Pool) newHostClient(key Key, ep *endpoint) *fasthttp.HostClient {
	addr := key.Addr.String()
	var tlsConfig *tls.Config
	// Kind alone says nothing of TLS: etcd and kube-proxy (KindComponent)
	// serve http.
	if key.TLS {
		tlsConfig = p.opts.TLSConfig(key)
	}
	o := &p.opts
	return &fasthttp.HostClient{
		Addr:     addr,
		IsTLS:    key.TLS,
		MaxConns: o.MaxConnsPerEndpoint,
		// Wait for a busy endpoint's connection up to the scrape deadline
		// (Send caps the wait) instead of failing at once.
		MaxConnWaitTimeout: o.MaxConnWait,
		// fasthttp's cleaner of idle connections sleeps this long between
		// rounds and keeps the HostClient alive meanwhile, even once the pool
		// has evicted the endpoint: capping it at the endpoint TTL keeps
		// what pod churn leaves behind bounded by that TTL. A connection
		// idle longer would be closed at eviction anyway.
		MaxIdleConnDuration: min(o.UpstreamIdleConnTimeout, o.EndpointIdleTTL),
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			// fasthttp dials with no timeout at all (0) when it replaces a
			// closed connection for a scrape queued on a busy endpoint.
			if timeout <= 0 || timeout > o.DialTimeout {
				timeout = o.DialTimeout
			}
			deadline := time.Now().Add(timeout)
			c, err := p.dialer.DialDualStackTimeout(addr, timeout)
			if err != nil {
				return nil, err
			}
			if tlsConfig == nil {
				return ep.track(newUpstreamConn(c, c)), nil
			}
			return handshakeUpstream(ep, c, tlsConfig, deadline)
		},
	}
}

// handshakeUpstream runs the TLS handshake with a pod within the dial
// deadline. Left to fasthttp, the handshake would run inside the first write
// with no deadline at all, and a pod that never answers the ClientHello would
// hold the scrape forever. The upstreamConn wraps the TLS connection, not the
// TCP one, so that it sees the EOF of a close_notify alert.
func handshakeUpstream(ep *endpoint, c net.Conn, cfg *tls.Config, deadline time.Time) (net.Conn, error) {
	tc := tls.Client(c, cfg)
	_ = tc.SetDeadline(deadline)
	if err := tc.Handshake(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w: %w", ErrTLSHandshake, err)
	}
	_ = tc.SetDeadline(time.Time{})
	return upstreamTLSConn{ep.track(newUpstreamConn(tc, c))}, nil
}

// ErrTLSHandshake wraps every failed TLS handshake with a pod.
var ErrTLSHandshake = errors.New("TLS handshake with the target failed")
