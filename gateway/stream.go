package gateway

import (
	"errors"
	"io"
	"net/netip"
	"sync"

	"github.com/valyala/fasthttp"
)

// upstreamBody is the body stream handed to the fasthttp server: it reads the
// pod's response as the server writes it to the caller, and when the server
// closes it, releases everything the scrape held. Reading it to EOF returns the
// pod connection to the pool; closing it earlier closes that connection, so a
// half-read connection is never reused.
type upstreamBody struct {
	g      *Gateway
	ep     *endpoint
	resp   *fasthttp.Response
	body   io.Reader
	target netip.AddrPort
	// chunkedConn is the pod connection of a chunked body, to tell its
	// clean end from a truncation (see upstreamConn).
	chunkedConn *upstreamConn

	// limit is -max-response-body-bytes; 0 means none.
	limit int64

	n       int64
	eof     bool
	readErr error
}

var (
	errChunkedBodyTruncated = errors.New("the pod closed the connection before the last chunk of its body")
	errBodyTooLarge         = errors.New("the pod's body exceeds -max-response-body-bytes")
)

var upstreamBodyPool = sync.Pool{New: func() any { return new(upstreamBody) }}

// copyBufSize bounds what one scrape holds besides its connections' own
// 4 KiB buffers, whatever the body size.
const copyBufSize = 16 << 10

var copyBufPool = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// WriteTo copies the body to the caller through a pooled buffer. Without it,
// the server's copy would end up in net.TCPConn.ReadFrom, which allocates a
// fresh 32 KiB buffer per scrape.
func (b *upstreamBody) WriteTo(w io.Writer) (int64, error) {
	buf := copyBufPool.Get().(*[copyBufSize]byte)
	defer copyBufPool.Put(buf)
	var written int64
	for {
		n, err := b.Read(buf[:])
		if n > 0 {
			nw, werr := w.Write(buf[:n])
			written += int64(nw)
			if werr != nil {
				return written, werr
			}
		}
		if err == io.EOF {
			return written, nil
		}
		if err != nil {
			return written, err
		}
	}
}

// SupportsBodyWriteTo tells fasthttp that WriteTo writes exactly what Read
// would return, so it may use WriteTo for chunked bodies too.
func (b *upstreamBody) SupportsBodyWriteTo() bool { return true }

func (b *upstreamBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.n += int64(n)
	if b.limit > 0 && b.n > b.limit {
		// The bytes past the limit are never passed on.
		n -= int(b.n - b.limit)
		b.n = b.limit
		b.readErr = errBodyTooLarge
		return n, errBodyTooLarge
	}
	if err == io.EOF && b.chunkedConn != nil && b.chunkedConn.peerClosed.Load() {
		err = errChunkedBodyTruncated
	}
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.readErr = err
	}
	return n, err
}

// CloseWithError is called by the fasthttp server once it has written the
// response, or failed to: writeErr is the reason the write stopped early.
// Implementing it lets the gateway tell a pod that failed mid-body from a
// caller that went away. It must not also implement io.Closer: fasthttp would
// call both.
func (b *upstreamBody) CloseWithError(writeErr error) error {
	g := b.g
	switch {
	case b.readErr != nil:
		// The server aborts the connection when a read fails, so the caller
		// sees a broken response rather than a clean, truncated one.
		r := reasonBodyFailed
		if b.readErr == errBodyTooLarge {
			r = reasonBodyTooLarge
		}
		g.upstreamFailed(b.ep, b.target, r, b.readErr)
	case writeErr != nil:
		g.metrics.countFailure(reasonClientGone)
	}
	_ = b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	g.metrics.responseBytes.Add(int(b.n))
	g.endScrape(b.ep)

	*b = upstreamBody{}
	upstreamBodyPool.Put(b)
	return nil
}
