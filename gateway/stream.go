package gateway

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// scrape is one proxied scrape's hold on its pod and its caller: the
// endpoint, the pooled connection and reader send took, the response, and
// the deadline by which all of it ends. Once the headers are passed on, it
// is also the body stream handed to the fasthttp server: it reads the pod's
// body as the server writes it to the caller, and when the server closes
// it, releases everything and counts the outcome. Reading it to EOF returns
// the pod connection to the pool; closing it earlier closes that
// connection, so a half-read connection is never reused. Scrapes are
// pooled: a proxied scrape allocates nothing.
type scrape struct {
	g      *Gateway
	ep     *endpoint
	resp   *fasthttp.Response
	target netip.AddrPort
	route  route
	// caller is the caller's connection; deadline ends the whole scrape:
	// the pod's answer is read by it, the caller's copy written by it
	// plus callerWriteGrace.
	caller   net.Conn
	deadline time.Time
	// callerFD is the caller's socket plus one; 0: not looked up yet.
	callerFD int
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

	body io.Reader // resp's body stream
	// buf is the copy buffer, taken on first use; ahead is the start of
	// a body of unknown length that readAhead read into it.
	buf     *[copyBufSize]byte
	ahead   []byte
	n       int64
	eof     bool
	readErr error
}

// callerWriteGrace is how long past a scrape's deadline its last bytes may
// take to reach the caller: a pod that answers just in time still gets
// through, and a caller that stops reading holds the pod connection and
// the in-flight slot no longer than that.
const callerWriteGrace = time.Second

var (
	errChunkedBodyTruncated = errors.New("the pod closed the connection before the last chunk of its body")
	errBodyTooLarge         = errors.New("the pod's body exceeds -max-response-body-bytes")
)

var scrapePool = sync.Pool{New: func() any { return &scrape{resp: new(fasthttp.Response)} }}

// acquireScrape returns a scrape of ep, which the caller has acquired, for
// the caller on conn, ending at deadline.
func (g *Gateway) acquireScrape(ep *endpoint, target netip.AddrPort, rt route, conn net.Conn, deadline time.Time) *scrape {
	s := scrapePool.Get().(*scrape)
	s.g, s.ep, s.target, s.route, s.limit = g, ep, target, rt, g.cfg.MaxResponseBodyBytes
	s.caller, s.deadline = conn, deadline
	return s
}

// finish releases everything the scrape holds, the endpoint included. The
// pod connection is reused only if its response was read to the end.
func (s *scrape) finish() {
	_ = s.resp.CloseBodyStream()
	s.releaseConn(s.eof && s.readErr == nil)
	s.g.endScrape(s.ep)
	if s.buf != nil {
		copyBufPool.Put(s.buf)
	}
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

// readAhead reads the start of a body of unknown length (chunked or
// close-delimited) before the response is committed, up to what has
// arrived: a pod that fails before sending any of its body then gets its
// caller a clean 502 rather than a response cut short, and a body that has
// arrived whole goes out with a Content-Length, in one write, rather than
// in chunks. It returns io.EOF when the whole body is in s.ahead.
func (s *scrape) readAhead() error {
	if s.br.Buffered() == 0 {
		// The wait for the first bytes watches for the caller hanging up,
		// as the wait for the headers does. Any other failure is left for
		// reading the body, which tells what it means for this framing.
		if _, err := s.awaitBytes(s.pooled.Conn(), s.br); err == errCallerGone || errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
	}
	buf := s.copyBuf()
	n := 0
	for n < len(buf) {
		m, err := s.readPod(buf[n:])
		n += m
		s.ahead = buf[:n]
		if err != nil {
			return err
		}
		// A pod that closed right after its last bytes (a close-delimited
		// body) has its EOF held back for the next read.
		if n > 0 && s.br.Buffered() == 0 && !s.conn.eofNext {
			return nil // the rest is still on its way
		}
	}
	return nil
}

func (s *scrape) copyBuf() *[copyBufSize]byte {
	if s.buf == nil {
		s.buf = copyBufPool.Get().(*[copyBufSize]byte)
	}
	return s.buf
}

// WriteTo copies the body to the caller, every byte by the scrape's
// deadline plus callerWriteGrace: the server's own write timeout spans
// any response, not one scrape. Without WriteTo, the server's copy would
// end up in net.TCPConn.ReadFrom, which allocates a fresh 32 KiB buffer per
// scrape.
//
// A body of known length is first read from the pod straight into the
// server's write buffer, behind the response headers: a typical scrape
// leaves in one write, with no copy in between. What does not fit goes
// through the copy buffer, whose writes bypass the server's buffer once it
// is empty. A chunked body goes through the copy buffer: the server frames
// and sends each piece anyway, the first (s.ahead) with the headers.
//
// When the pod fails, what the caller can already have is sent before the
// error is returned, the headers above all: a connection closed with
// nothing on it looks to an HTTP client like a request never processed,
// which net/http (and so Prometheus) then sends again on a new connection.
// Cut short after its headers, a response is plainly broken instead.
func (s *scrape) WriteTo(w io.Writer) (int64, error) {
	_ = s.caller.SetWriteDeadline(s.deadline.Add(callerWriteGrace))
	var written int64
	if len(s.ahead) > 0 {
		n, err := w.Write(s.ahead)
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
	if s.eof { // readAhead read it all
		return written, nil
	}
	bw, _ := w.(*bufio.Writer)
	for bw != nil && bw.Available() >= minBodyRead {
		buf := bw.AvailableBuffer()
		n, err := s.readPod(buf[:cap(buf)])
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
			_ = bw.Flush()
			return written, err
		}
	}
	if bw != nil {
		if err := bw.Flush(); err != nil {
			return written, err
		}
	}
	buf := s.copyBuf()
	for {
		n, err := s.readPod(buf[:])
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
			if bw != nil {
				_ = bw.Flush() // a small last piece may still sit in it
			}
			return written, err
		}
	}
}

// SupportsBodyWriteTo tells fasthttp that WriteTo writes exactly what Read
// would return, so it may use WriteTo for chunked bodies too.
func (s *scrape) SupportsBodyWriteTo() bool { return true }

// Read returns what readAhead read, then the rest of the pod's body.
func (s *scrape) Read(p []byte) (int, error) {
	if len(s.ahead) > 0 {
		n := copy(p, s.ahead)
		s.ahead = s.ahead[n:]
		if len(s.ahead) == 0 && s.eof {
			return n, io.EOF
		}
		return n, nil
	}
	if s.eof {
		return 0, io.EOF
	}
	return s.readPod(p)
}

// readPod reads the pod's body, enforcing -max-response-body-bytes and
// telling a chunked body cut off between two chunks from a complete one.
func (s *scrape) readPod(p []byte) (int, error) {
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
		g.metrics.countFailure(callerFailure(writeErr))
	default:
		g.metrics.countRequest(s.route, s.resp.StatusCode())
	}
	g.metrics.responseBytes.Add(int(s.n))
	s.finish()
	return nil
}
