package testutil

// Test PKI: CAs, intermediates and leaf certificates made on the fly
// (ECDSA P-256), with their PEM files in the test's temporary directory.
//
//	ca := testutil.NewCA(t, "pods")                    // root; ca.CertFile is its PEM
//	srv := ca.IssueServer(t, []string{"pod.example"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
//	client := ca.IssueClient(t, "prometheus", "spiffe://cluster.local/ns/monitoring/sa/prometheus")
//	inter := ca.NewIntermediate(t, "issuing")          // leaves it issues carry it in their chain
//	expired := ca.Issue(t, testutil.LeafSpec{CN: "old", DNSNames: []string{"localhost"}, NotAfter: time.Now().Add(-time.Hour)})
//
// Everything is cleaned up with t.TempDir.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CA is a certificate authority for tests: a root, or an intermediate made
// by NewIntermediate.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// chain holds the intermediates between this CA and its root, this CA
	// first if it is itself an intermediate; empty for a root. Leaves it
	// issues present it after themselves.
	chain []*x509.Certificate
	// CertFile is a PEM file holding only this CA's certificate: for a
	// root, a CA bundle to trust.
	CertFile string
}

// newSerial returns a random positive 127-bit serial number.
func newSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, new(big.Int).Lsh(big.NewInt(1), 126))
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NewCA returns a new self-signed root CA named name (its subject
// CommonName), valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := caTemplate(t, name)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return newCAFromDER(t, der, key, nil)
}

// NewIntermediate returns a CA named name issued by ca. Leaves it issues
// carry it (and ca's own intermediates) in their chain; trust ca's root.
func (ca *CA) NewIntermediate(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, caTemplate(t, name), ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return newCAFromDER(t, der, key, ca.chain)
}

func caTemplate(t testing.TB, name string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"scrapegate tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func newCAFromDER(t testing.TB, der []byte, key *ecdsa.PrivateKey, parentChain []*x509.Certificate) *CA {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{cert: cert, key: key}
	if len(parentChain) > 0 || cert.Issuer.String() != cert.Subject.String() {
		ca.chain = append([]*x509.Certificate{cert}, parentChain...)
	}
	ca.CertFile = filepath.Join(t.TempDir(), "ca.pem")
	WriteFile(t, ca.CertFile, ca.certPEM())
	return ca
}

// certPEM returns the CA's certificate in PEM.
func (ca *CA) certPEM() []byte { return certsPEM(ca.cert) }

// Pool returns a CertPool trusting only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// LeafSpec describes a leaf certificate for CA.Issue. Zero fields get
// defaults: valid from an hour ago for a day, ExtKeyUsage server and client
// auth.
type LeafSpec struct {
	CN       string
	DNSNames []string
	IPs      []netip.Addr
	URIs     []string // e.g. spiffe://cluster.local/ns/monitoring/sa/prometheus
	Emails   []string
	// ExtKeyUsage defaults to ServerAuth and ClientAuth; set
	// []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} for a server-only
	// certificate.
	ExtKeyUsage []x509.ExtKeyUsage
	NotBefore   time.Time
	NotAfter    time.Time // in the past for an expired certificate
}

// Leaf is an issued leaf certificate with its key.
type Leaf struct {
	Cert *x509.Certificate
	// TLS is the certificate, its issuing chain and key, for
	// tls.Config.Certificates or GetClientCertificate.
	TLS tls.Certificate
	// CertFile is a PEM file with the certificate followed by its issuing
	// chain (not the root); KeyFile a PEM file with its PKCS#8 key.
	CertFile, KeyFile string
	// CertPEM and KeyPEM are the contents of CertFile and KeyFile.
	CertPEM, KeyPEM []byte
}

// Issue issues a leaf certificate as described by spec and writes its
// files.
func (ca *CA) Issue(t testing.TB, spec LeafSpec) *Leaf {
	t.Helper()
	if spec.NotBefore.IsZero() {
		spec.NotBefore = time.Now().Add(-time.Hour)
	}
	if spec.NotAfter.IsZero() {
		spec.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if spec.ExtKeyUsage == nil {
		spec.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber:   newSerial(t),
		Subject:        pkix.Name{CommonName: spec.CN},
		NotBefore:      spec.NotBefore,
		NotAfter:       spec.NotAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    spec.ExtKeyUsage,
		DNSNames:       spec.DNSNames,
		EmailAddresses: spec.Emails,
	}
	for _, ip := range spec.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	for _, s := range spec.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("URI SAN %q: %s", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	l := &Leaf{
		Cert:    cert,
		CertPEM: certsPEM(append([]*x509.Certificate{cert}, ca.chain...)...),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	l.TLS = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
	for _, c := range ca.chain {
		l.TLS.Certificate = append(l.TLS.Certificate, c.Raw)
	}
	dir := t.TempDir()
	l.CertFile = filepath.Join(dir, "cert.pem")
	l.KeyFile = filepath.Join(dir, "key.pem")
	WriteFile(t, l.CertFile, l.CertPEM)
	WriteFile(t, l.KeyFile, l.KeyPEM)
	return l
}

// IssueServer issues a server certificate (ExtKeyUsage ServerAuth only) for
// the given DNS names and IP addresses, CN the first DNS name if any.
func (ca *CA) IssueServer(t testing.TB, dnsNames []string, ips []netip.Addr) *Leaf {
	t.Helper()
	spec := LeafSpec{DNSNames: dnsNames, IPs: ips, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if len(dnsNames) > 0 {
		spec.CN = dnsNames[0]
	}
	return ca.Issue(t, spec)
}

// IssueClient issues a client certificate (ExtKeyUsage ClientAuth only)
// with subject CommonName cn and SANs sans, each classified by its form:
// containing "://" a URI, containing "@" an email address, an IP address,
// otherwise a DNS name.
func (ca *CA) IssueClient(t testing.TB, cn string, sans ...string) *Leaf {
	t.Helper()
	spec := LeafSpec{CN: cn, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, s := range sans {
		switch {
		case strings.Contains(s, "://"):
			spec.URIs = append(spec.URIs, s)
		case strings.Contains(s, "@"):
			spec.Emails = append(spec.Emails, s)
		default:
			if ip, err := netip.ParseAddr(s); err == nil {
				spec.IPs = append(spec.IPs, ip)
			} else {
				spec.DNSNames = append(spec.DNSNames, s)
			}
		}
	}
	return ca.Issue(t, spec)
}

// certsPEM encodes certificates as consecutive PEM blocks.
func certsPEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// WriteCABundle writes the certificates of cas into one PEM file in a new
// temporary directory and returns its path.
func WriteCABundle(t testing.TB, cas ...*CA) string {
	t.Helper()
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.certPEM()...)
	}
	p := filepath.Join(t.TempDir(), "bundle.pem")
	WriteFile(t, p, b)
	return p
}
