package upstream

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

// Scrape is one proxied scrape's hold on its pod and its caller: the
// in-flight slot and endpoint Begin took, the pooled connection and reader
// Send took, the response, and the deadline by which all of it ends. Once
// the headers are passed on, it is also the body stream handed to the
// fasthttp server: it reads the pod's body as the server writes it to the
// caller, and when the server closes it, reports the outcome and releases
// everything. Reading it to EOF returns the pod connection to the pool;
// closing it earlier closes that connection, so a half-read connection is
// never reused. Scrapes are pooled: a proxied scrape allocates nothing.
type Scrape struct {
	// Request is the request to send to the pod, appended to Request[:0]
	// by the caller before Send.
	Request []byte
	// Tag is the caller's own label for the scrape, for its Reporter.
	Tag int

	pool *Pool
	ep   *endpoint
	key  Key
	resp *fasthttp.Response
	// caller is the caller's connection; deadline ends the whole scrape:
	// the pod's answer is read by it, the caller's copy written by it
	// plus CallerWriteGrace.
	caller   net.Conn
	deadline time.Time
	// callerFD is the caller's socket plus one; 0: not looked up yet.
	callerFD int
	// limit is -max-response-body-bytes; 0 means none.
	limit int64
	// head is set for a HEAD request, whose response has no body.
	head bool
	// Set by Send: the connection from the endpoint's pool (pooled), the
	// gateway's view of it (conn), and the pool's reader over it.
	pooled    pooledConn
	conn      *upstreamConn
	br        *bufio.Reader
	closeConn bool
	// connectFailed marks a scrape that could not connect (ConnectFailed).
	connectFailed bool

	body io.Reader // resp's body stream
	// buf is the copy buffer, taken on first use; ahead is the start of
	// a body of unknown length that ReadAhead read into it.
	buf     *[copyBufSize]byte
	ahead   []byte
	n       int64
	eof     bool
	readErr error
}

// CallerWriteGrace is how long past a scrape's deadline its last bytes may
// take to reach the caller: a pod that answers just in time still gets
// through, and a caller that stops reading holds the pod connection and
// the in-flight slot no longer than that.
const CallerWriteGrace = time.Second

var (
	errChunkedBodyTruncated = errors.New("the pod closed the connection before the last chunk of its body")
	// ErrBodyTooLarge ends a body that grows past -max-response-body-bytes.
	ErrBodyTooLarge = errors.New("the pod's body exceeds -max-response-body-bytes")
)

var scrapePool = sync.Pool{New: func() any { return &Scrape{resp: new(fasthttp.Response)} }}

// Target is the pod endpoint scraped.
func (s *Scrape) Target() netip.AddrPort { return s.key.Addr }

// Response is the pod's response once Send has succeeded; its body, if
// any, is read through s.
func (s *Scrape) Response() *fasthttp.Response { return s.resp }

// WriteDeadline is when the last byte of the body must have reached the
// caller: the scrape's deadline plus CallerWriteGrace.
func (s *Scrape) WriteDeadline() time.Time { return s.deadline.Add(CallerWriteGrace) }

// BodyBytes is how much of the pod's body has been read.
func (s *Scrape) BodyBytes() int64 { return s.n }

// ConnectFailed records that the scrape could not connect to its pod: an
// endpoint that never answered is the first to make room when the pool
// is full, so that scanning closed ports cannot crowd out real pods.
func (s *Scrape) ConnectFailed() { s.connectFailed = true }

// errorLogInterval is how often one endpoint may log an upstream error; the
// ones in between are counted and reported with the next line.
const errorLogInterval = time.Minute

// TakeLogTurn reports whether a failure of this scrape's endpoint may be
// logged at now (Unix nanoseconds): at most once per errorLogInterval. It
// returns how many failures were not logged since the last one that was.
func (s *Scrape) TakeLogTurn(now int64) (suppressed int64, ok bool) {
	ep := s.ep
	last := ep.lastErrLog.Load()
	if now-last < int64(errorLogInterval) || !ep.lastErrLog.CompareAndSwap(last, now) {
		ep.suppressedErr.Add(1)
		return 0, false
	}
	return ep.suppressedErr.Swap(0), true
}

// Finish releases everything the scrape holds, its slot and endpoint
// included; s must not be used after. The pod connection is reused only
// if its response was read to the end.
func (s *Scrape) Finish() {
	_ = s.resp.CloseBodyStream()
	s.releaseConn(s.eof && s.readErr == nil)
	if s.connectFailed {
		s.pool.failed(s.key, s.ep)
	}
	s.pool.end(s.ep)
	if s.buf != nil {
		copyBufPool.Put(s.buf)
	}
	resp, req := s.resp, s.Request[:0]
	resp.Reset()
	*s = Scrape{resp: resp, Request: req}
	scrapePool.Put(s)
}

// Abandon is Finish for a response not passed on: its body is not read to
// the end, so its connection is closed, not pooled.
func (s *Scrape) Abandon() {
	s.eof = false
	s.Finish()
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

// ReadAhead reads the start of a body of unknown length (chunked or
// close-delimited) before the response is committed, up to what has
// arrived: a pod that fails before sending any of its body then gets its
// caller a clean 502 rather than a response cut short, and a body that has
// arrived whole goes out with a Content-Length, in one write, rather than
// in chunks. It returns how many bytes it read, and io.EOF when that is
// the whole body.
func (s *Scrape) ReadAhead() (read int, err error) {
	if s.br.Buffered() == 0 {
		// The wait for the first bytes watches for the caller hanging up,
		// as the wait for the headers does. Any other failure is left for
		// reading the body, which tells what it means for this framing.
		if _, err := s.awaitBytes(s.pooled.Conn(), s.br); err == ErrCallerGone || errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, err
		}
	}
	buf := s.copyBuf()
	n := 0
	for n < len(buf) {
		m, err := s.readPod(buf[n:])
		n += m
		s.ahead = buf[:n]
		if err != nil {
			return n, err
		}
		// A pod that closed right after its last bytes (a close-delimited
		// body) has its EOF held back for the next read.
		if n > 0 && s.br.Buffered() == 0 && !s.conn.eofNext {
			return n, nil // the rest is still on its way
		}
	}
	return n, nil
}

func (s *Scrape) copyBuf() *[copyBufSize]byte {
	if s.buf == nil {
		s.buf = copyBufPool.Get().(*[copyBufSize]byte)
	}
	return s.buf
}

// WriteTo copies the body to the caller, every byte by the scrape's
// deadline plus CallerWriteGrace: the server's own write timeout spans
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
func (s *Scrape) WriteTo(w io.Writer) (int64, error) {
	_ = s.caller.SetWriteDeadline(s.deadline.Add(CallerWriteGrace))
	var written int64
	if len(s.ahead) > 0 {
		n, err := w.Write(s.ahead)
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
	if s.eof { // ReadAhead read it all
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
func (s *Scrape) SupportsBodyWriteTo() bool { return true }

// Read returns what ReadAhead read, then the rest of the pod's body.
func (s *Scrape) Read(p []byte) (int, error) {
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
func (s *Scrape) readPod(p []byte) (int, error) {
	n, err := s.body.Read(p)
	s.n += int64(n)
	if s.limit > 0 && s.n > s.limit {
		// The bytes past the limit are never passed on.
		n -= int(s.n - s.limit)
		s.n = s.limit
		s.readErr = ErrBodyTooLarge
		return n, ErrBodyTooLarge
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
// Implementing it lets the Reporter tell a pod that failed mid-body from a
// caller that went away. It must not also implement io.Closer: fasthttp
// would call both.
func (s *Scrape) CloseWithError(writeErr error) error {
	s.pool.opts.Reporter.BodyEnded(s, s.readErr, writeErr)
	s.Finish()
	return nil
}
