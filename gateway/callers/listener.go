package callers

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// listener is NewListener's: it counts each caller's open connections.
type listener struct {
	net.Listener
	allow    []netip.Prefix
	maxConns int
	log      zerolog.Logger // sampled
	onReject func(r Rejection)

	mu    sync.Mutex
	conns map[netip.Addr]int
}

// NewListener returns a listener that closes, right after accepting them and
// before any byte (or TLS handshake) is read, connections from callers
// outside allow (-allow-caller-cidrs; all allowed if empty) and a caller's
// connections past maxConns open at once (-max-conns-per-caller; unlimited
// if <= 0). It reports each to onReject and logs it on log, which should be
// sampled: refusals can come in floods.
func NewListener(inner net.Listener, allow []netip.Prefix, maxConns int, log zerolog.Logger, onReject func(Rejection)) net.Listener {
	return &listener{
		Listener: inner,
		allow:    allow,
		maxConns: maxConns,
		log:      log,
		onReject: onReject,
		conns:    make(map[netip.Addr]int),
	}
}

// Rejection is why a connection was closed unserved; its String is the
// reason label of scrapegate_rejected_connections_total.
type Rejection int

const (
	// NotAllowed: the caller is outside -allow-caller-cidrs.
	NotAllowed Rejection = iota
	// TooManyConns: the caller has -max-conns-per-caller connections open.
	TooManyConns
	// ClientCertUntrusted: the caller's TLS certificate does not verify
	// against -tls-client-ca-file. The TLS layer reports it; it is counted
	// here so that one metric holds every connection closed unserved.
	ClientCertUntrusted
	// ClientCertNameNotAllowed: the caller's TLS certificate carries none of
	// -tls-client-allowed-names.
	ClientCertNameNotAllowed
	// NumRejections is the number of Rejections, for arrays indexed by them.
	NumRejections
)

var rejectionNames = [NumRejections]string{"caller_not_allowed", "too_many_conns", "client_cert_untrusted", "client_cert_name_not_allowed"}

// String returns r's metric label value.
func (r Rejection) String() string { return rejectionNames[r] }

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if len(l.allow) > 0 && !containsIP(l.allow, ip) {
			l.reject(c, ip, NotAllowed, "caller address is not in -allow-caller-cidrs")
			continue
		}
		if l.maxConns <= 0 {
			return c, nil
		}
		key := Key(ip)
		l.mu.Lock()
		n := l.conns[key]
		if n >= l.maxConns {
			l.mu.Unlock()
			l.reject(c, ip, TooManyConns, "caller has -max-conns-per-caller connections open")
			continue
		}
		l.conns[key] = n + 1
		l.mu.Unlock()
		return &conn{Conn: c, l: l, key: key}, nil
	}
}

func (l *listener) reject(c net.Conn, ip netip.Addr, r Rejection, why string) {
	_ = c.Close()
	l.onReject(r)
	if e := l.log.Warn(); e.Enabled() {
		e.Str("caller", ip.String()).Str("reason", r.String()).Msg("connection refused: " + why)
	}
}

func (l *listener) release(key netip.Addr) {
	l.mu.Lock()
	if n := l.conns[key] - 1; n > 0 {
		l.conns[key] = n
	} else {
		delete(l.conns, key)
	}
	l.mu.Unlock()
}

// conn gives its caller's slot back when it closes.
type conn struct {
	net.Conn
	l      *listener
	key    netip.Addr
	closed atomic.Bool
}

func (c *conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.release(c.key)
	}
	return c.Conn.Close()
}

// NetConn returns the connection underneath, for checking its socket.
func (c *conn) NetConn() net.Conn { return c.Conn }

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

func containsIP(ps []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
