package upstream

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
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
	if key.TLS || key.Kubelet {
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

// Send sends s.Request to the scrape's endpoint and reads the response
// headers into s.Response(), all before the scrape's deadline, which also
// bounds reading the body; head is set for a HEAD request, whose response
// has no body. On success s holds the connection until it finishes; the
// body, if any, is still on it. It returns ErrCallerGone if the caller hung
// up meanwhile.
//
// A scrape is sent once. The single exception: a pooled connection the pod
// closed while it sat idle fails at once, before any byte of a response
// arrives; the scrape is then sent again on a fresh connection, as net/http
// does. A pod that drops a fresh connection, or a reused one later, has
// failed the scrape, and is not asked twice.
func (s *Scrape) Send(head bool) error {
	s.head = head
	stale, err := s.exchange()
	if err != nil && stale && isStaleConnError(err) {
		// The endpoint's other idle connections idled as long as this one:
		// if the pod restarted they are all dead, and the retry must not
		// pick one.
		s.ep.client.CloseIdleConnections()
		_, err = s.exchange()
	}
	if err == io.EOF {
		err = fasthttp.ErrConnectionClosed
	}
	if err == nil && !s.ep.answered.Load() {
		s.ep.answered.Store(true)
	}
	return err
}

// exchange is one attempt of Send. stale reports whether the connection had
// served a response before and brought no byte of this one: a failure then
// may be the pod having closed it while it sat idle.
func (s *Scrape) exchange() (stale bool, err error) {
	hc := s.ep.client
	deadline := s.deadline
	timeout := time.Until(deadline)
	if timeout <= 0 {
		return false, fasthttp.ErrTimeout
	}
	cc, err := hc.AcquireConn(timeout, false)
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	uc := upstreamConnOf(conn)
	uc.inUse.Store(true)
	if time.Until(deadline) < timeout-HangupCheckInterval && s.callerHungUp() {
		// It waited for a busy endpoint's connection, and its caller gave
		// up meanwhile: the pod is not asked.
		uc.inUse.Store(false)
		hc.ReleaseConn(cc)
		return false, ErrCallerGone
	}
	reused, received := uc.served.Load(), uc.received
	// A connection the pod closed while it sat idle fails at once: its FIN
	// is already there, or the request draws a reset. One that fails later
	// failed the scrape, which is not sent twice.
	failed := func(err error, atOnce bool) (bool, error) {
		return reused && atOnce && uc.received == received, err
	}
	// One deadline for the whole scrape: the write, the headers and the body.
	if err := conn.SetWriteDeadline(deadline); err != nil {
		hc.CloseConn(cc)
		return failed(err, true)
	}
	if _, err := conn.Write(s.Request); err != nil {
		hc.CloseConn(cc)
		return failed(err, true)
	}

	resp := s.resp
	resp.SkipBody = s.head
	resp.StreamBody = true
	br := upstreamReaders.Get().(*bufio.Reader)
	br.Reset(conn)
	atOnce, err := s.awaitBytes(conn, br)
	if err == nil {
		err = resp.ReadLimitBody(br, 0)
	}
	if err != nil {
		releaseUpstreamReader(br)
		hc.CloseConn(cc)
		return failed(err, atOnce)
	}
	uc.served.Store(true)
	s.conn, s.br, s.pooled = uc, br, cc
	// fasthttp only sees "Connection: close" spelt exactly so, and takes a
	// body that ends when the connection does, with Connection: Upgrade,
	// for one that leaves it reusable. (A final 1xx, such as 101, is
	// refused by the gateway, which abandons the scrape.)
	s.closeConn = resp.ConnectionClose() || ListsToken(resp.Header.PeekAll(fasthttp.HeaderConnection), []byte("close"))
	s.body = resp.BodyStream()
	if s.body == nil {
		// HEAD, 204 and 304 carry no body: the connection is done.
		s.eof = true
	} else if resp.Header.ContentLength() == -2 {
		s.closeConn = true
	}
	return false, nil
}

// HangupCheckInterval is how long a scrape waits for its pod's bytes before
// it first checks whether its caller has hung up; each later check comes
// twice as late, up to maxHangupCheckInterval. Most pods answer within the
// first interval, and a long wait costs a wake-up a second at most.
const (
	HangupCheckInterval    = 100 * time.Millisecond
	maxHangupCheckInterval = time.Second
)

// ErrCallerGone ends a scrape whose caller hung up before the pod answered.
var ErrCallerGone = errors.New("the caller hung up before the pod answered")

// awaitBytes waits, until the scrape's deadline, for the pod to send more
// on conn, and leaves conn's read deadline at the scrape's deadline. Now
// and then it checks whether the caller is still there: one that hung up
// (Prometheus after its own timeout, a restarted one) must not hold the pod
// connection and the in-flight slot until the deadline. atOnce reports a
// failure within the first interval.
func (s *Scrape) awaitBytes(conn net.Conn, br *bufio.Reader) (atOnce bool, err error) {
	interval := HangupCheckInterval
	for first := true; ; first = false {
		check := time.Now().Add(interval)
		if !check.Before(s.deadline) {
			return first, conn.SetReadDeadline(s.deadline)
		}
		if err := conn.SetReadDeadline(check); err != nil {
			return first, err
		}
		_, err := br.Peek(1)
		if err == nil {
			return false, conn.SetReadDeadline(s.deadline)
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return first, err
		}
		if s.callerHungUp() {
			return false, ErrCallerGone
		}
		interval = min(2*interval, maxHangupCheckInterval)
	}
}

// callerHungUp reports whether the scrape's caller has closed or reset its
// connection. The socket is looked up once per scrape, when first needed.
func (s *Scrape) callerHungUp() bool {
	if s.callerFD == 0 {
		s.callerFD = socketFD(s.caller) + 1
	}
	return s.callerFD > 0 && hungUp(s.callerFD-1)
}

// The readers of responses from pods are shared by all endpoints, not pooled
// per HostClient as fasthttp's own client does: with thousands of endpoints,
// per-endpoint pools would hold a reader for each until the next garbage
// collection, which a gateway that allocates nothing per scrape seldom runs.
// Shared, they number about the scrapes in flight. 16 KiB holds what one read
// from a pod brings: a typical scrape's headers and (gzip-compressed) body.
var upstreamReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

func releaseUpstreamReader(br *bufio.Reader) {
	br.Reset(nil)
	upstreamReaders.Put(br)
}

// isStaleConnError reports the errors of a pooled connection the pod closed
// while it sat idle.
func isStaleConnError(err error) bool {
	return errors.Is(err, fasthttp.ErrConnectionClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// pooledConn is fasthttp's pooled connection, whose type is unexported.
type pooledConn interface{ Conn() net.Conn }

// giveBack hands cc to f, a HostClient method taking fasthttp's unexported
// connection type, which C is inferred from.
func giveBack[C pooledConn](f func(C), cc pooledConn) { f(cc.(C)) }

// releaseConn returns what send took from the endpoint's pool: the
// connection goes back for reuse only if keep is set and nothing says it is
// done, otherwise it is closed.
func (s *Scrape) releaseConn(keep bool) {
	if s.pooled == nil {
		return
	}
	hc := s.ep.client
	// Bytes past the response are ones nobody asked for: such a connection
	// is not reused either.
	keep = keep && !s.closeConn && !s.resp.ConnectionClose() && !s.conn.peerClosed.Load() && s.br.Buffered() == 0
	releaseUpstreamReader(s.br)
	if keep {
		s.conn.inUse.Store(false)
		giveBack(hc.ReleaseConn, s.pooled)
	} else {
		giveBack(hc.CloseConn, s.pooled)
	}
	s.pooled, s.br, s.conn = nil, nil, nil
}

// ListsToken reports whether token is one of the comma-separated tokens of
// the header values, compared case-insensitively: how a Connection header
// names the headers that are hop-by-hop, and asks for the connection to
// close.
func ListsToken(values [][]byte, token []byte) bool {
	for _, v := range values {
		for len(v) > 0 {
			var tok []byte
			tok, v, _ = bytes.Cut(v, []byte(","))
			if bytes.EqualFold(bytes.TrimSpace(tok), token) {
				return true
			}
		}
	}
	return false
}
