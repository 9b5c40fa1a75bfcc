package gateway

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"

	"github.com/valyala/fasthttp"
)

// What the gateway does to each caller connection besides serving it.

// closeAfterBody makes a request that has a body the last one on its
// connection. Scrapes have no body; where a request with one ends is what
// request smuggling plays on (Content-Length against chunked, RFC 9112
// section 6.3), so nothing after it is read.
func closeAfterBody(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if h.ContentLength() != -2 { // -2: neither Content-Length nor chunked
		h.SetConnectionClose()
	}
	return fasthttp.RequestConfig{}
}

// silentTimeoutListener makes a connection that times out before sending a
// single byte close silently. fasthttp answers a first request that times
// out like a malformed one, but a connection that never sent anything is
// usually one an HTTP client opened and then did not need (Go's, and so
// Prometheus's, dials while it waits for a pooled connection and keeps the
// loser): an answer to it arrives at the client as a response to nothing,
// or to its next request on that connection. Idle keep-alive connections are
// closed silently by fasthttp itself. On a TLS listener it wraps the TLS
// connection, not the TCP one: a completed handshake is no request.
type silentTimeoutListener struct{ net.Listener }

func (l silentTimeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &silentTimeoutConn{Conn: c}
	if tc, ok := c.(*tls.Conn); ok {
		return silentTimeoutTLSConn{sc, tc}, nil
	}
	return sc, nil
}

// silentTimeoutTLSConn is a silentTimeoutConn over TLS. fasthttp tells TLS
// connections (ctx.IsTLS, ctx.TLSConnectionState) by these two methods.
type silentTimeoutTLSConn struct {
	*silentTimeoutConn
	tls *tls.Conn
}

func (c silentTimeoutTLSConn) Handshake() error                     { return c.tls.Handshake() }
func (c silentTimeoutTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

type silentTimeoutConn struct {
	net.Conn
	spoke bool // a byte has arrived
}

// NetConn returns the connection underneath, for checking its socket.
func (c *silentTimeoutConn) NetConn() net.Conn { return c.Conn }

func (c *silentTimeoutConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.spoke = true
	} else if !c.spoke && errors.Is(err, os.ErrDeadlineExceeded) {
		// fasthttp closes the connection without an answer on EOF.
		return 0, io.EOF
	}
	return n, err
}
