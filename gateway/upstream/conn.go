package upstream

import (
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
)

// upstreamConn is a connection to a pod that remembers whether it has served
// a response and whether the pod closed it. fasthttp v1.74.0 reports a
// chunked body cut off between two chunks as a clean io.EOF, exactly like a
// complete one; only the connection knows that the pod hung up before sending
// the terminating chunk. A complete chunked body never needs a read past its
// terminator, so a peer EOF seen by the time the body ends means the body was
// truncated.
type upstreamConn struct {
	net.Conn
	// fd is the socket's descriptor, for checking an idle connection
	// without reading it (Pool.CloseDeadIdleConns); -1 if unknown.
	fd int
	// inUse is set while a scrape holds the connection; closed once it
	// is closed.
	inUse, closed atomic.Bool
	peerClosed    atomic.Bool
	// served is set once the connection has carried a response: from then
	// on it is a reused connection (see Scrape.Send).
	served atomic.Bool
	// received counts the bytes read, to tell whether an attempt got any
	// of a response. Only the scrape holding the connection reads it.
	received int64
	// eofNext holds back an EOF that came with the last bytes (crypto/tls
	// returns a TLS 1.2 close_notify together with the record before it)
	// until the next read: peerClosed must mean that the parser needed
	// bytes past what the pod sent, not that the pod closed right after.
	eofNext bool
}

// newUpstreamConn wraps c, the connection to the pod (TLS or not), whose
// socket is raw's.
func newUpstreamConn(c, raw net.Conn) *upstreamConn {
	// Not inUse until a scrape takes it: fasthttp may pool a connection
	// it dialled for a scrape that gave up waiting.
	return &upstreamConn{Conn: c, fd: socketFD(raw)}
}

func (c *upstreamConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	if c.eofNext {
		c.peerClosed.Store(true)
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	c.received += int64(n)
	switch {
	case err != io.EOF:
	case n > 0:
		c.eofNext, err = true, nil
	default:
		c.peerClosed.Store(true)
	}
	return n, err
}

// upstreamTLSConn is an upstreamConn over TLS. Its Handshake method tells
// fasthttp that the connection is TLS already.
type upstreamTLSConn struct{ *upstreamConn }

func (c upstreamTLSConn) Handshake() error { return c.Conn.(*tls.Conn).Handshake() }

// upstreamConnOf returns the upstreamConn under a connection the gateway's
// dialer made.
func upstreamConnOf(c net.Conn) *upstreamConn {
	switch c := c.(type) {
	case *upstreamConn:
		return c
	case upstreamTLSConn:
		return c.upstreamConn
	}
	panic("BUG: a pod connection that the gateway's dialer did not make")
}
