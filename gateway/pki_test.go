package gateway

// Test PKI: CAs, intermediates and leaf certificates made on the fly
// (ECDSA P-256), with their PEM files in the test's temporary directory.
//
//	ca := newTestCA(t, "pods")                        // root; ca.certFile is its PEM
//	certFile, keyFile := ca.issueServer(t, []string{"pod.example"}, []netip.Addr{netip.MustParseAddr("127.0.0.1")})
//	client := ca.issueClient(t, "prometheus", "spiffe://cluster.local/ns/monitoring/sa/prometheus")
//	inter := ca.newIntermediate(t, "issuing")          // leaves it issues carry it in their chain
//	expired := ca.issue(t, leafSpec{CN: "old", DNSNames: []string{"localhost"}, NotAfter: time.Now().Add(-time.Hour)})
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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority for tests: a root, or an intermediate
// made by newIntermediate.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// chain holds the intermediates between this CA and its root, this CA
	// first if it is itself an intermediate; empty for a root. Leaves it
	// issues present it after themselves.
	chain []*x509.Certificate
	// certFile is a PEM file holding only this CA's certificate: for a root,
	// a CA bundle to trust.
	certFile string
	dir      string
}

// newTestSerial returns a random positive 127-bit serial number.
func newTestSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, new(big.Int).Lsh(big.NewInt(1), 126))
}

func newTestKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newTestCA returns a new self-signed root CA named name (its subject
// CommonName), valid from an hour ago for a day.
func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newTestKey(t)
	tmpl := caTemplate(t, name)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return newTestCAFromDER(t, der, key, nil)
}

// newIntermediate returns a CA named name issued by ca. Leaves it issues
// carry it (and ca's own intermediates) in their chain; trust ca's root.
func (ca *testCA) newIntermediate(t testing.TB, name string) *testCA {
	t.Helper()
	key := newTestKey(t)
	der, err := x509.CreateCertificate(rand.Reader, caTemplate(t, name), ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return newTestCAFromDER(t, der, key, ca.chain)
}

func caTemplate(t testing.TB, name string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          newTestSerial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"scrapegate tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func newTestCAFromDER(t testing.TB, der []byte, key *ecdsa.PrivateKey, parentChain []*x509.Certificate) *testCA {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, dir: t.TempDir()}
	if len(parentChain) > 0 || cert.Issuer.String() != cert.Subject.String() {
		ca.chain = append([]*x509.Certificate{cert}, parentChain...)
	}
	ca.certFile = filepath.Join(ca.dir, "ca.pem")
	writeTestFile(t, ca.certFile, ca.certPEM())
	return ca
}

// certPEM returns the CA's certificate in PEM.
func (ca *testCA) certPEM() []byte { return certsPEM(ca.cert) }

// pool returns a CertPool trusting only this CA.
func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leafSpec describes a leaf certificate for testCA.issue. Zero fields get
// defaults: valid from an hour ago for a day, ExtKeyUsage server and client
// auth.
type leafSpec struct {
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

// testLeaf is an issued leaf certificate with its key.
type testLeaf struct {
	cert *x509.Certificate
	// tls is the certificate, its issuing chain and key, for
	// tls.Config.Certificates or GetClientCertificate.
	tls tls.Certificate
	// certFile is a PEM file with the certificate followed by its issuing
	// chain (not the root); keyFile a PEM file with its PKCS#8 key.
	certFile, keyFile string
	certPEM, keyPEM   []byte
}

// issue issues a leaf certificate as described by spec and writes its
// files.
func (ca *testCA) issue(t testing.TB, spec leafSpec) *testLeaf {
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
		SerialNumber:   newTestSerial(t),
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
	key := newTestKey(t)
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
	l := &testLeaf{
		cert:    cert,
		certPEM: certsPEM(append([]*x509.Certificate{cert}, ca.chain...)...),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	l.tls = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
	for _, c := range ca.chain {
		l.tls.Certificate = append(l.tls.Certificate, c.Raw)
	}
	dir := t.TempDir()
	l.certFile = filepath.Join(dir, "cert.pem")
	l.keyFile = filepath.Join(dir, "key.pem")
	writeTestFile(t, l.certFile, l.certPEM)
	writeTestFile(t, l.keyFile, l.keyPEM)
	return l
}

// issueServer issues a server certificate (ExtKeyUsage ServerAuth only) for
// the given DNS names and IP addresses, CN the first DNS name if any, and
// returns its PEM files.
func (ca *testCA) issueServer(t testing.TB, dnsNames []string, ips []netip.Addr) (certFile, keyFile string) {
	t.Helper()
	l := ca.issueServerLeaf(t, dnsNames, ips)
	return l.certFile, l.keyFile
}

// issueServerLeaf is issueServer returning the whole testLeaf.
func (ca *testCA) issueServerLeaf(t testing.TB, dnsNames []string, ips []netip.Addr) *testLeaf {
	t.Helper()
	spec := leafSpec{DNSNames: dnsNames, IPs: ips, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if len(dnsNames) > 0 {
		spec.CN = dnsNames[0]
	}
	return ca.issue(t, spec)
}

// issueClient issues a client certificate (ExtKeyUsage ClientAuth only)
// with subject CommonName cn and SANs sans, each classified by its form:
// containing "://" a URI, containing "@" an email address, an IP address,
// otherwise a DNS name.
func (ca *testCA) issueClient(t testing.TB, cn string, sans ...string) tls.Certificate {
	t.Helper()
	return ca.issueClientLeaf(t, cn, sans...).tls
}

// issueClientLeaf is issueClient returning the whole testLeaf (with files).
func (ca *testCA) issueClientLeaf(t testing.TB, cn string, sans ...string) *testLeaf {
	t.Helper()
	spec := leafSpec{CN: cn, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
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
	return ca.issue(t, spec)
}

// certsPEM encodes certificates as consecutive PEM blocks.
func certsPEM(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// writeCABundle writes the certificates of cas into one PEM file in a new
// temporary directory and returns its path.
func writeCABundle(t testing.TB, cas ...*testCA) string {
	t.Helper()
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.certPEM()...)
	}
	p := filepath.Join(t.TempDir(), "bundle.pem")
	writeTestFile(t, p, b)
	return p
}

// writeTestFile writes (or overwrites) a file, as when a secret rotates.
func writeTestFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyTestFile overwrites dst with the contents of src.
func copyTestFile(t testing.TB, dst, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, dst, b)
}
