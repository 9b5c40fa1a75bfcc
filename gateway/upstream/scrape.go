package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
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

// Refusals of Begin.
var (
	ErrTooManyInflight  = errors.New("too many scrapes in flight (-max-inflight)")
	ErrTooManyEndpoints = errors.New("too many pod endpoints pooled (-max-endpoints); idle ones are dropped after -endpoint-idle-ttl")
)

// Begin starts a scrape of key for the caller on conn, ending at
// deadline: it takes an in-flight slot and the endpoint's pool, or refuses
// with ErrTooManyInflight or ErrTooManyEndpoints. Everything it takes is
// released when the scrape finishes.
func (p *Pool) Begin(key Key, caller net.Conn, deadline time.Time) (*Scrape, error) {
	if p.inflight.Add(1) > int64(p.opts.MaxInflight) {
		p.inflight.Add(-1)
		return nil, ErrTooManyInflight
	}
	ep := p.acquire(key)
	if ep == nil {
		p.inflight.Add(-1)
		return nil, ErrTooManyEndpoints
	}
	s := scrapePool.Get().(*Scrape)
	s.pool, s.ep, s.key, s.limit = p, ep, key, p.opts.MaxResponseBodyBytes
	s.caller, s.deadline = caller, deadline
	return s, nil
}

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

// releaseConn returns what Send took from the endpoint's pool: the
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
// logged at now (Unix nanoseconds): at most once per errorLogInterval.
// One that may not is counted for TakeSuppressed.
func (s *Scrape) TakeLogTurn(now int64) bool {
	ep := s.ep
	last := ep.lastErrLog.Load()
	if now-last < int64(errorLogInterval) || !ep.lastErrLog.CompareAndSwap(last, now) {
		ep.suppressedErr.Add(1)
		return false
	}
	return true
}

// TakeSuppressed returns how many failures of the endpoint TakeLogTurn
// held back since the last line that was written, and starts counting
// again.
func (s *Scrape) TakeSuppressed() int64 { return s.ep.suppressedErr.Swap(0) }

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

// Finish releases everything the scrape holds, its slot and endpoint
// included; s must not be used after. The pod connection is reused only
// if its response was read to the end.
func (s *Scrape) Finish() {
	_ = s.resp.CloseBodyStream()
	s.releaseConn(s.eof && s.readErr == nil)
	s.pool.end(s.ep)
	if s.connectFailed {
		// After end: an endpoint still active is not dropped to make room.
		s.pool.failed(s.key, s.ep)
	}
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
