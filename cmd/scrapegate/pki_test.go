package main

// A minimal test PKI for the end-to-end tests: a root CA and server
// certificates for IP addresses, ECDSA P-256, made on the fly. (The gateway
// package has a fuller one in gateway/pki_test.go, which a test of this
// package cannot import.)

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
	"os"
	"path/filepath"
	"testing"
	"time"
)

// e2eCA is a self-signed root CA, valid from an hour ago for a day.
type e2eCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// certFile is a PEM file of the CA's certificate: a bundle to trust.
	certFile string
}

// e2eServerCert is a server certificate with its key, in memory and in
// PEM files.
type e2eServerCert struct {
	tls               tls.Certificate
	certFile, keyFile string
}

func newE2ECA(t *testing.T, name string) *e2eCA {
	t.Helper()
	key := e2eKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          e2eSerial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"scrapegate end-to-end tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &e2eCA{cert: cert, key: key, certFile: filepath.Join(t.TempDir(), name+"-ca.pem")}
	writeE2EFile(t, ca.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

// pool returns a CertPool trusting only this CA.
func (ca *e2eCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issueServer issues a server certificate whose only names are the IP
// addresses ips (IP SANs), as pods' and the gateway's certificates are
// verified against the address dialled.
func (ca *e2eCA) issueServer(t *testing.T, ips ...string) *e2eServerCert {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: e2eSerial(t),
		Subject:      pkix.Name{CommonName: ips[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			t.Fatalf("issueServer: %q is not an IP address", s)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	key := e2eKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	c := &e2eServerCert{}
	if c.tls, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c.certFile, c.keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeE2EFile(t, c.certFile, certPEM)
	writeE2EFile(t, c.keyFile, keyPEM)
	return c
}

func e2eKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// e2eSerial returns a random positive 127-bit serial number.
func e2eSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, new(big.Int).Lsh(big.NewInt(1), 126))
}

// writeE2EFile writes a file that only its owner may read, as secrets are.
func writeE2EFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// replaceE2EFile replaces path's contents atomically (a new file renamed
// over it), so that a reader polling it never sees it half written, as
// with a Kubernetes Secret volume, whose files change by a symlink swap.
func replaceE2EFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	writeE2EFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
