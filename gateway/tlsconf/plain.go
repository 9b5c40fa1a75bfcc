package tlsconf

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// recordTypeHandshake is the first byte of every TLS connection: the
// ClientHello travels in a handshake record (RFC 8446 section 5.1). An HTTP
// request line starts with a method, a letter.
const recordTypeHandshake = 0x16

// NewTLSOrPlainListener returns a listener that serves TLS with cfg and
// plain HTTP on the same port (-tls-allow-plain): each connection inner
// accepts is TLS if its first byte starts a TLS handshake, plain otherwise.
// TLS connections are returned as *tls.Conn, unhandshaken (fasthttp does the
// handshake and tells TLS connections by their Handshake and
// ConnectionState methods); plain ones replay the byte that was read.
//
// Accept never waits on a client: the accept loop runs in a goroutine of its
// own and reads each connection's first byte in another, with firstByte as
// its deadline, so a client that connects and stays silent delays no one
// behind it. A connection that sends nothing within firstByte, or closes
// first, is closed and never returned. Close closes inner and every
// connection not yet returned, and makes Accept return net.ErrClosed.
func NewTLSOrPlainListener(inner net.Listener, cfg *tls.Config, firstByte time.Duration) net.Listener {
	l := &tlsOrPlainListener{
		inner:     inner,
		cfg:       cfg,
		firstByte: firstByte,
		ready:     make(chan accepted),
		closed:    make(chan struct{}),
		failed:    make(chan struct{}),
		pending:   make(map[net.Conn]struct{}),
	}
	go l.acceptLoop()
	return l
}

type tlsOrPlainListener struct {
	inner     net.Listener
	cfg       *tls.Config
	firstByte time.Duration

	// ready hands a sorted connection, or an accept error that may pass,
	// to Accept. Unbuffered: a connection is either pending or returned.
	ready chan accepted
	// closed is closed by Close.
	closed    chan struct{}
	closeOnce sync.Once
	// failed is closed when inner's Accept failed for good, with err.
	failed chan struct{}
	err    error

	mu      sync.Mutex
	pending map[net.Conn]struct{} // accepted, not yet returned by Accept
}

type accepted struct {
	conn net.Conn
	err  error
}

func (l *tlsOrPlainListener) Accept() (net.Conn, error) {
	var a accepted
	select {
	case a = <-l.ready:
	case <-l.closed:
	case <-l.failed:
		a.err = l.err
	}
	select {
	case <-l.closed:
		// Also when a connection or inner's error (closed by Close) was
		// ready at the same time.
		if a.conn != nil {
			_ = a.conn.Close()
		}
		return nil, net.ErrClosed
	default:
		return a.conn, a.err
	}
}

func (l *tlsOrPlainListener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		close(l.closed)
		err = l.inner.Close()
		l.mu.Lock()
		for c := range l.pending {
			_ = c.Close() // unblocks its first-byte read
		}
		l.mu.Unlock()
	})
	return err
}

func (l *tlsOrPlainListener) Addr() net.Addr { return l.inner.Addr() }

func (l *tlsOrPlainListener) acceptLoop() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Passed on, as a plain listener's would be: the server
				// decides whether to retry.
				select {
				case l.ready <- accepted{err: err}:
					continue
				case <-l.closed:
					return
				}
			}
			l.err = err
			close(l.failed)
			return
		}
		l.mu.Lock()
		select {
		case <-l.closed:
			l.mu.Unlock()
			_ = c.Close()
			return
		default:
		}
		l.pending[c] = struct{}{}
		l.mu.Unlock()
		go l.sort(c)
	}
}

// sort reads c's first byte and hands c to Accept as TLS or plain.
func (l *tlsOrPlainListener) sort(c net.Conn) {
	out, err := l.firstByteConn(c)
	if err == nil {
		select {
		case l.ready <- accepted{conn: out}:
		case <-l.closed:
			err = net.ErrClosed
		}
	}
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	if err != nil {
		_ = c.Close()
	}
}

func (l *tlsOrPlainListener) firstByteConn(c net.Conn) (net.Conn, error) {
	if err := c.SetReadDeadline(time.Now().Add(l.firstByte)); err != nil {
		return nil, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return nil, err
	}
	// The server sets deadlines of its own from here.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	rc := &replayConn{Conn: c, first: b[0], unread: true}
	if b[0] == recordTypeHandshake {
		return tls.Server(rc, l.cfg), nil
	}
	return rc, nil
}

// replayConn returns the byte a tlsOrPlainListener read before what
// follows on the connection. It is read by one goroutine at a time, as every
// net.Conn is by the server.
type replayConn struct {
	net.Conn
	first  byte
	unread bool
}

func (c *replayConn) Read(p []byte) (int, error) {
	if !c.unread || len(p) == 0 {
		return c.Conn.Read(p)
	}
	p[0] = c.first
	c.unread = false
	return 1, nil
}

// NetConn returns the connection underneath, for checking its socket.
func (c *replayConn) NetConn() net.Conn { return c.Conn }
