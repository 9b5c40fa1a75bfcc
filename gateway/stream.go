package gateway

import (
	"bufio"
	"errors"
	"io"
	"net/netip"
	"sync"

	"github.com/valyala/fasthttp"
)

// scrape is one proxied scrape's hold on its pod: the endpoint, the pooled
// connection and reader send took, and the response. Once the headers are
// passed on, it is also the body stream handed to the fasthttp server: it
// reads the pod's body as the server writes it to the caller, and when the
// server closes it, releases everything. Reading it to EOF returns the pod
// connection to the pool; closing it earlier closes that connection, so a
// half-read connection is never reused. Scrapes are pooled: a proxied scrape
// allocates nothing.
type scrape struct {
	g      *Gateway
	ep     *endpoint
	resp   *fasthttp.Response
	target netip.AddrPort
	// limit is -max-response-body-bytes; 0 means none.
	limit int64
	// req is the request to the pod (appendUpstreamRequest); head is set
	// for a HEAD request, whose response has no body.
	req  []byte
	head bool

	// Set by send: the connection from the endpoint's pool (pooled), the
	// gateway's view of it (conn), and the pool's reader over it.
	pooled    pooledConn
	conn      *upstreamConn
	br        *bufio.Reader
	closeConn bool

	body    io.Reader // resp's body stream
	n       int64
	eof     bool
	readErr error
}

var (
	errChunkedBodyTruncated = errors.New("the pod closed the connection before the last chunk of its body")
	errBodyTooLarge         = errors.New("the pod's body exceeds -max-response-body-bytes")
)

var scrapePool = sync.Pool{New: func() any { return &scrape{resp: new(fasthttp.Response)} }}

// acquireScrape returns a scrape of ep, which the caller has acquired.
func (g *Gateway) acquireScrape(ep *endpoint, target netip.AddrPort) *scrape {
	s := scrapePool.Get().(*scrape)
	s.g, s.ep, s.target, s.limit = g, ep, target, g.cfg.MaxResponseBodyBytes
	return s
}

// finish releases everything the scrape holds, the endpoint included. The
// pod connection is reused only if its response was read to the end.
func (s *scrape) finish() {
	_ = s.resp.CloseBodyStream()
	s.releaseConn(s.eof && s.readErr == nil)
	s.g.endScrape(s.ep)
	resp, req := s.resp, s.req[:0]
	resp.Reset()
	*s = scrape{resp: resp, req: req}
	scrapePool.Put(s)
}

// copyBufSize is the buffer a body is copied through when it does not fit
// in the server's write buffer. Large bodies move in pieces of this size: one
// read from the pod and one write to the caller each. 64 KiB pieces take
// half the system calls and wake-ups of 32 KiB ones (httputil's), and 64
// scrapes of large bodies at once hold 4 MiB.
const copyBufSize = 64 << 10

var copyBufPool = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// minBodyRead is the least room in the server's write buffer worth reading
// the pod into; with less, the buffer is sent first.
const minBodyRead = 4 << 10

// WriteTo copies the body to the caller. Without it, the server's copy would
// end up in net.TCPConn.ReadFrom, which allocates a fresh 32 KiB buffer per
// scrape.
//
// A body of known length is first read from the pod straight into the
// server's write buffer, behind the response headers: a typical scrape
// leaves in one write, with no copy in between. What does not fit goes
// through a pooled copy buffer, whose writes bypass the server's buffer once
// it is empty. A chunked body goes through the copy buffer: the server frames
// and sends each piece anyway.
func (s *scrape) WriteTo(w io.Writer) (int64, error) {
	var written int64
	bw, _ := w.(*bufio.Writer)
	for bw != nil && bw.Available() >= minBodyRead {
		buf := bw.AvailableBuffer()
		n, err := s.Read(buf[:cap(buf)])
		// It fits: this copies the bytes onto themselves, and never flushes;
		// it fails only with an earlier flush's error.
		if _, werr := bw.Write(buf[:n]); werr != nil {
			return written, werr
		}
		written += int64(n)
		if err == io.EOF {
			return written, nil
		}
		if err != nil {
			return written, err
		}
	}
	if bw != nil {
		if err := bw.Flush(); err != nil {
			return written, err
		}
	}
	buf := copyBufPool.Get().(*[copyBufSize]byte)
	defer copyBufPool.Put(buf)
	for {
		n, err := s.Read(buf[:])
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
func (s *scrape) SupportsBodyWriteTo() bool { return true }

func (s *scrape) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	s.n += int64(n)
	if s.limit > 0 && s.n > s.limit {
		// The bytes past the limit are never passed on.
		n -= int(s.n - s.limit)
		s.n = s.limit
		s.readErr = errBodyTooLarge
		return n, errBodyTooLarge
	}
	if err == io.EOF && s.resp.Header.ContentLength() == -1 && s.conn.peerClosed.Load() {
		err = errChunkedBodyTruncated
	}
	if err == io.EOF {
		s.eof = true
	} else if err != nil {
		s.readErr = err
	}
	return n, err
}

// CloseWithError is called by the fasthttp server once it has written the
// response, or failed to: writeErr is the reason the write stopped early.
// Implementing it lets the gateway tell a pod that failed mid-body from a
// caller that went away. It must not also implement io.Closer: fasthttp would
// call both.
func (s *scrape) CloseWithError(writeErr error) error {
	g := s.g
	switch {
	case s.readErr != nil:
		// The server aborts the connection when a read fails, so the caller
		// sees a broken response rather than a clean, truncated one.
		r := reasonBodyFailed
		if s.readErr == errBodyTooLarge {
			r = reasonBodyTooLarge
		}
		g.upstreamFailed(s.ep, s.target, r, s.readErr)
	case writeErr != nil:
		g.metrics.countFailure(reasonClientGone)
	}
	g.metrics.responseBytes.Add(int(s.n))
	s.finish()
	return nil
}
