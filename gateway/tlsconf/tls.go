// Package tlsconf builds the gateway's TLS configurations: the listener's
// (its certificate, or one made at start by SelfSigned, and mutual TLS with
// client CA and allowed names) and the one towards https pods and kubelets
// (their CA, server name, client certificate). Every file involved is a
// reload.Files, so certificates and CAs rotate without a restart, including
// for connections already open. It also owns the listener that serves TLS
// and plain HTTP on one port (NewTLSOrPlainListener).
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/scrapegate/scrapegate/gateway/reload"
)

// Reasons a client certificate is refused, as passed to
// ServerOptions.OnClientCertRejected.
const (
	// clientCertUntrusted: the certificate does not chain to a client CA,
	// is not valid for client authentication, or has expired.
	clientCertUntrusted = "untrusted"
	// ClientCertNameNotAllowed: the certificate is trusted but carries none
	// of ServerOptions.ClientAllowedNames.
	ClientCertNameNotAllowed = "name_not_allowed"
)

// tls12CipherSuites are the TLS 1.2 suites the listener accepts: forward
// secret (ECDHE) and authenticated encryption (AEAD) only. Go's defaults
// still include the ECDHE CBC suites. TLS 1.3 suites are not configurable in
// Go and are all AEAD.
var tls12CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerOptions configure the listener's TLS.
type ServerOptions struct {
	// CertFile and KeyFile are the certificate served, or Certificate
	// (-tls-self-signed), fixed for the process's life: one or the other.
	CertFile, KeyFile string
	Certificate       *tls.Certificate
	// ClientCAFile turns on mutual TLS: when set, every client must present
	// a certificate issued (possibly through intermediates it presents) by
	// a CA in this PEM bundle, valid for client authentication.
	ClientCAFile string
	// ClientAllowedNames, when non-empty, further requires the client
	// certificate to carry one of these names: exact, case-sensitive match
	// against the subject CommonName, DNS SANs, URI SANs (the full URI, e.g.
	// spiffe://cluster.local/ns/monitoring/sa/prometheus) and email SANs.
	// It requires ClientCAFile.
	ClientAllowedNames []string
	// OnClientCertRejected, if not nil, is called for every client
	// certificate refused, with a reason ("untrusted" or
	// ClientCertNameNotAllowed) and a one-line detail that is safe to log
	// (subject, issuer, serial and SANs; never keys). It runs in the
	// handshake and must not block.
	OnClientCertRejected func(reason, detail string)
}

// NewServer returns the listener's TLS configuration, the verifier of client
// certificates (nil without ClientCAFile) and the files involved, which the
// caller loads (reload.LoadAll) before serving and reloads periodically, as
// for every file the gateway reads. Serve with tls.NewListener(ln, cfg), or
// NewTLSOrPlainListener (not fasthttp's ServeTLS, which wants files of its
// own).
//
// The certificate is served through GetCertificate, so a rotated one applies
// to the next handshake. Client certificates are verified in
// VerifyConnection against the CA pool in force at that handshake, not by
// crypto/tls against a pool fixed at startup, so the client CA file reloads
// too. That also applies to resumed sessions: crypto/tls calls
// VerifyConnection for them with the certificates from the session ticket,
// so a session established under a CA no longer trusted does not resume.
func NewServer(o ServerOptions) (*tls.Config, *ClientCertVerifier, []*reload.Files, error) {
	if o.Certificate != nil && (o.CertFile != "" || o.KeyFile != "") {
		return nil, nil, nil, errors.New("TLS needs a certificate file and a key file or a certificate, not both")
	}
	if o.Certificate == nil && (o.CertFile == "" || o.KeyFile == "") {
		return nil, nil, nil, errors.New("TLS needs both a certificate file and a key file")
	}
	if len(o.ClientAllowedNames) > 0 && o.ClientCAFile == "" {
		return nil, nil, nil, errors.New("allowed client certificate names need a client CA file")
	}
	allowed := make(map[string]struct{}, len(o.ClientAllowedNames))
	for _, n := range o.ClientAllowedNames {
		if n == "" {
			return nil, nil, nil, errors.New("an allowed client certificate name is empty")
		}
		allowed[n] = struct{}{}
	}

	var cert atomic.Pointer[tls.Certificate]
	var rs []*reload.Files
	if o.Certificate != nil {
		cert.Store(o.Certificate)
	} else {
		rs = append(rs, reload.New("tls-cert-file", func(contents [][]byte) error {
			c, err := parseKeyPair(contents[0], contents[1], time.Now())
			if err != nil {
				return err
			}
			cert.Store(c)
			return nil
		}, o.CertFile, o.KeyFile))
	}

	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: tls12CipherSuites,
		// CurvePreferences is left nil on purpose: Go 1.26's default is
		// X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024, X25519,
		// P-256, P-384, P-521, i.e. post-quantum hybrids first, then only
		// modern curves. That is a superset, in the same order, of the
		// suggested X25519MLKEM768/X25519/P-256, keeps clients that only
		// offer P-384 working, follows future Go releases, and stays under
		// the tlsmlkem/tlssecpmlkem GODEBUG switches.
		NextProtos: []string{"http/1.1"}, // fasthttp does not speak h2
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c := cert.Load()
			if c == nil {
				return nil, errors.New("no TLS certificate loaded")
			}
			return c, nil
		},
	}

	var verifier *ClientCertVerifier
	if o.ClientCAFile != "" {
		verifier = &ClientCertVerifier{allowed: allowed}
		verifier.verified.Store(&verifiedCerts{})
		rs = append(rs, reload.New("tls-client-ca-file", func(contents [][]byte) error {
			p, err := parseCertPool(contents[0])
			if err != nil {
				return err
			}
			verifier.pool.Store(p)
			// Connections verified under the old CAs are checked again.
			verifier.verified.Store(&verifiedCerts{})
			return nil
		}, o.ClientCAFile))

		// RequestClientCert, not RequireAnyClientCert: a client without a
		// certificate completes the handshake (see below). crypto/tls
		// still checks that the client owns the key of any certificate it
		// sends (CertificateVerify).
		//
		// ClientCAs stays nil, so the CertificateRequest names no
		// acceptable CAs and clients send their certificate whatever its
		// issuer; a certificate from a wrong CA is then reported as
		// untrusted rather than missing.
		cfg.ClientAuth = tls.RequestClientCert
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				// Allowed at this layer so that kubelet and load balancer
				// probes, which present no certificate, reach /healthz and
				// /readyz; every other request without one gets a 401
				// (Gateway.admit), which says what is missing more clearly
				// than a failed handshake.
				return nil
			}
			reason, detail, _ := verifier.check(cs.PeerCertificates)
			if reason == "" {
				return nil
			}
			detail = escapeControl(detail) // x509 errors may quote the certificate's strings
			if o.OnClientCertRejected != nil {
				o.OnClientCertRejected(reason, detail)
			}
			return fmt.Errorf("client certificate refused (%s): %s", reason, detail)
		}
	}

	return cfg, verifier, rs, nil
}

// ClientCertVerifier checks client certificates against the CA file in
// force: at the handshake, and again on later requests of the connection, so
// that a CA removed from the file, or a certificate that expired, stops
// working on connections already open (Prometheus keeps its connections for
// as long as it scrapes).
type ClientCertVerifier struct {
	pool    atomic.Pointer[x509.CertPool]
	allowed map[string]struct{}
	// verified holds, for the CAs in force, the leaf certificates of
	// connections that verified and when their chains expire. A CA reload
	// replaces it.
	verified atomic.Pointer[verifiedCerts]
}

type verifiedCerts struct {
	m sync.Map // *x509.Certificate (one per connection) -> time.Time
	n atomic.Int64
}

// maxVerifiedCerts bounds verifiedCerts: past it the cache starts afresh.
const maxVerifiedCerts = 10000

// check verifies a presented chain: reason is "" when it is valid, and
// notAfter is when the verified chain expires.
func (v *ClientCertVerifier) check(certs []*x509.Certificate) (reason, detail string, notAfter time.Time) {
	leaf := certs[0]
	roots := v.pool.Load()
	if roots == nil { // cannot happen: loaded before use
		return clientCertUntrusted, describeCert(leaf) + ": no client CA loaded", notAfter
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return clientCertUntrusted, describeCert(leaf) + ": " + err.Error(), notAfter
	}
	if len(v.allowed) > 0 && !certHasName(leaf, v.allowed) {
		return ClientCertNameNotAllowed, describeCert(leaf), notAfter
	}
	notAfter = leaf.NotAfter
	for _, c := range chains[0] {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	return "", "", notAfter
}

// StillValid reports whether a connection's verified certificate chain is
// still valid under the CAs in force at now. It verifies each connection's
// chain once per CA generation; otherwise it costs a map lookup.
func (v *ClientCertVerifier) StillValid(certs []*x509.Certificate, now time.Time) bool {
	vc := v.verified.Load()
	if exp, ok := vc.m.Load(certs[0]); ok {
		return now.Before(exp.(time.Time))
	}
	reason, _, notAfter := v.check(certs)
	if reason != "" {
		return false
	}
	if vc.n.Add(1) > maxVerifiedCerts {
		fresh := &verifiedCerts{}
		v.verified.CompareAndSwap(vc, fresh)
		vc = fresh
	}
	vc.m.Store(certs[0], notAfter)
	return now.Before(notAfter)
}

// certHasName reports whether c carries one of names as its subject
// CommonName or as a DNS, URI or email SAN.
func certHasName(c *x509.Certificate, names map[string]struct{}) bool {
	has := func(n string) bool { _, ok := names[n]; return ok }
	if c.Subject.CommonName != "" && has(c.Subject.CommonName) {
		return true
	}
	for _, n := range c.DNSNames {
		if has(n) {
			return true
		}
	}
	for _, u := range c.URIs {
		if has(u.String()) {
			return true
		}
	}
	for _, n := range c.EmailAddresses {
		if has(n) {
			return true
		}
	}
	return false
}

// UpstreamOptions configure TLS towards pods scraped over https, towards
// kubelets, or towards API servers; "pods" below means whichever.
type UpstreamOptions struct {
	// Flags is the prefix of the flags that set these options
	// ("target-tls", "kubelet" or "control-plane"), which name the files
	// in logs and metrics.
	Flags string
	// CAFile is a PEM bundle of the CAs pods' certificates must chain to;
	// empty means the system roots.
	CAFile string
	// InsecureSkipVerify turns off every check of the pods' certificates.
	InsecureSkipVerify bool
	// ServerName, if set, is sent as SNI and is the name pods'
	// certificates must be valid for. If empty no SNI is sent and a pod's
	// certificate must be valid for its IP address (an IP SAN).
	ServerName string
	// CertFile and KeyFile are a client certificate for pods that require
	// mutual TLS: both or neither.
	CertFile, KeyFile string
}

// Upstream makes the TLS configurations of the https HostClients.
//
// It hands out one *tls.Config per pod endpoint (ForTarget), not one for all
// of them, because only a per-endpoint config can know which address the
// certificate must be valid for. The verification cannot be left to
// crypto/tls (the CA must be reloadable, and fasthttp clones the config, and
// with it a fixed RootCAs, once per address and keeps the clone for the
// HostClient's life), so it runs in VerifyConnection; and there crypto/tls
// does not tell which address was dialled: fasthttp sets the clone's
// ServerName to the host IP, but crypto/tls never sends an IP as SNI and
// reports ConnectionState.ServerName as "" then.
type Upstream struct {
	opts  UpstreamOptions
	base  *tls.Config
	roots atomic.Pointer[x509.CertPool] // nil: the system roots
	cert  atomic.Pointer[tls.Certificate]
}

// NewUpstream checks the options and returns the files involved, which the
// caller loads before use (flags "<Flags>-ca-file" and "<Flags>-cert-file").
func NewUpstream(o UpstreamOptions) (*Upstream, []*reload.Files, error) {
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, nil, errors.New("a client certificate for pods needs both a certificate file and a key file")
	}
	if o.InsecureSkipVerify && o.CAFile != "" {
		return nil, nil, errors.New("a CA file for pods' certificates cannot be combined with skipping their verification")
	}
	u := &Upstream{opts: o}
	u.base = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// TLS 1.2 suites: Go's client defaults (ECDHE only, no 3DES, no
		// RSA key exchange), a little wider than the listener's, for pods
		// with older TLS stacks.
		NextProtos: []string{"http/1.1"},
		// ServerName, if set, is the SNI: fasthttp fills in ServerName
		// (with the host of the address) only when it is empty.
		ServerName: o.ServerName,
		// Verification is done in VerifyConnection (see ForTarget), which
		// crypto/tls calls whatever InsecureSkipVerify says.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
	}

	var rs []*reload.Files
	if o.CAFile != "" {
		rs = append(rs, reload.New(o.Flags+"-ca-file", func(contents [][]byte) error {
			p, err := parseCertPool(contents[0])
			if err != nil {
				return err
			}
			u.roots.Store(p)
			return nil
		}, o.CAFile))
	}
	if o.CertFile != "" {
		rs = append(rs, reload.New(o.Flags+"-cert-file", func(contents [][]byte) error {
			c, err := parseKeyPair(contents[0], contents[1], time.Now())
			if err != nil {
				return err
			}
			u.cert.Store(c)
			return nil
		}, o.CertFile, o.KeyFile))
		u.base.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := u.cert.Load(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil // none: let the pod decide
		}
	}
	return u, rs, nil
}

// ForTarget returns the TLS configuration for the HostClient of the pod
// endpoint addr (its HostClient.Addr: "ip:port", "[ipv6]:port"). Use it as
// HostClient.TLSConfig with IsTLS set; the config is fixed to that address,
// so do not share it between HostClients of different endpoints.
//
// fasthttp v1.74.0 does the handshake itself over whatever its Dial returns,
// unless that already has a Handshake method. Beware: with
// HostClient.WriteTimeout 0 it starts the handshake lazily inside the first
// request write, with no read deadline, so a pod that accepts the TCP
// connection but never answers the ClientHello blocks that scrape forever,
// whatever its deadline. Set WriteTimeout on https HostClients, or do the
// handshake in Dial (tls.Client(conn, cfg) with a deadline) and return a
// connection with a Handshake method.
func (u *Upstream) ForTarget(addr string) *tls.Config {
	cfg := u.base.Clone()
	if u.opts.InsecureSkipVerify {
		// Explicitly requested: no verification whatsoever, neither of the
		// chain nor of the name. Only the TLS encryption remains.
		return cfg
	}
	name := u.opts.ServerName
	if name == "" {
		name = targetHost(addr)
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return u.verify(cs, name)
	}
	return cfg
}

// verify checks a pod's certificate chain against the roots in force and
// the name (a DNS name or an IP address) it must be valid for. Errors are
// *tls.CertificateVerificationError, as crypto/tls's own.
func (u *Upstream) verify(cs tls.ConnectionState, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the pod sent no certificate")
	}
	if name == "" {
		// Never fall back to checking the chain alone.
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates,
			Err: errors.New("no name or address to verify the pod's certificate against")}
	}
	opts := x509.VerifyOptions{
		Roots:         u.roots.Load(), // nil: system roots
		DNSName:       name,
		Intermediates: x509.NewCertPool(),
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
}

// targetHost returns the host of a HostClient address, without brackets or
// IPv6 zone (IP SANs have none).
func targetHost(addr string) string {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if i := strings.LastIndexByte(host, '%'); i > 0 && net.ParseIP(host[:i]) != nil {
		host = host[:i]
	}
	return host
}

// parseKeyPair parses a PEM certificate chain and its private key, refusing
// a leaf certificate that has expired by now.
func parseKeyPair(certPEM, keyPEM []byte, now time.Time) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil { // filled in by X509KeyPair since Go 1.23 unless GODEBUG x509keypairleaf=0
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	if now.After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("certificate %s expired at %s", describeCert(c.Leaf), c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &c, nil
}

// parseCertPool parses a PEM bundle of CA certificates. Blocks other than
// CERTIFICATE are ignored; a certificate that does not parse, or a bundle
// without any certificate, is an error.
func parseCertPool(bundle []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return pool, nil
}

// describeCert returns one line identifying c for logs: subject, issuer,
// serial and SANs, quoted (the certificate may come from anyone, so its
// strings may hold newlines or other control characters) and bounded in
// length.
func describeCert(c *x509.Certificate) string {
	const maxItems = 8
	var b strings.Builder
	fmt.Fprintf(&b, "subject=%q issuer=%q serial=%s", clip(c.Subject.String()), clip(c.Issuer.String()), c.SerialNumber.Text(16))
	list := func(label string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(&b, " %s=[", label)
		for i, s := range items {
			if i == maxItems {
				fmt.Fprintf(&b, " +%d more", len(items)-maxItems)
				break
			}
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%q", clip(s))
		}
		b.WriteByte(']')
	}
	list("dns", c.DNSNames)
	uris := make([]string, len(c.URIs))
	for i, u := range c.URIs {
		uris[i] = u.String()
	}
	list("uri", uris)
	list("email", c.EmailAddresses)
	ips := make([]string, len(c.IPAddresses))
	for i, ip := range c.IPAddresses {
		ips[i] = ip.String()
	}
	list("ip", ips)
	return b.String()
}

// escapeControl replaces control characters (and line separators) in s by
// \xNN or \uNNNN escapes, so that s stays on one line.
func escapeControl(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case !isControl(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

func isControl(r rune) bool {
	return r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029'
}

// clip shortens s to at most 128 bytes (at a rune boundary).
func clip(s string) string {
	const maxLen = 128
	if len(s) <= maxLen {
		return s
	}
	i := maxLen
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
