package gateway

import (
	"io"
	"net"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// upstreamConn is a connection to a pod that remembers whether it has served
// a response and whether the pod closed it. fasthttp v1.74.0 reports a chunked body cut off between two chunks as a
// clean io.EOF, exactly like a complete one; only the connection knows that
// the pod hung up before sending the terminating chunk. A complete chunked body
// never needs a read past its terminator, so a peer EOF seen by the time the
// body ends means the body was truncated.
type upstreamConn struct {
	net.Conn
	local      upstreamLocalAddr
	peerClosed atomic.Bool
	// served is set once the connection has carried a response: from then
	// on it is a reused connection (see staleConnTransport).
	served atomic.Bool
}

// upstreamLocalAddr is the connection's local address, carrying a pointer back
// to the connection. fasthttp records a response's LocalAddr, and that is the
// only way from a response back to the connection that carried it.
type upstreamLocalAddr struct {
	net.Addr
	conn *upstreamConn
}

func newUpstreamConn(c net.Conn) *upstreamConn {
	uc := &upstreamConn{Conn: c}
	uc.local = upstreamLocalAddr{Addr: c.LocalAddr(), conn: uc}
	return uc
}

func (c *upstreamConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		c.peerClosed.Store(true)
	}
	return n, err
}

func (c *upstreamConn) LocalAddr() net.Addr { return &c.local }

// connOf returns the connection that carried resp, or nil if it was not
// dialled by the gateway.
func connOf(resp *fasthttp.Response) *upstreamConn {
	if a, ok := resp.LocalAddr().(*upstreamLocalAddr); ok {
		return a.conn
	}
	return nil
}
