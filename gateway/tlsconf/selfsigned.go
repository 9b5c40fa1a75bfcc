package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"time"
)

// SelfSigned makes an ECDSA P-256 certificate valid for a year from now for
// the host name, localhost, 127.0.0.1, ::1 and listenIP (if not nil or
// unspecified), and returns it with its SHA-256 fingerprint (hex, of the DER
// certificate), which the gateway logs so that clients can pin it: a
// certificate made at start chains to nothing and changes at every restart.
func SelfSigned(hostname string, listenIP net.IP, now time.Time) (*tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("cannot generate a self-signed certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, "", fmt.Errorf("cannot generate a self-signed certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "scrapegate self-signed"},
		NotBefore:    now.Add(-time.Minute), // tolerate clients whose clocks are a little behind
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if hostname != "" && hostname != "localhost" {
		tmpl.DNSNames = append([]string{hostname}, tmpl.DNSNames...)
	}
	// Other loopback addresses are added too: 127.0.0.2 is not 127.0.0.1.
	if listenIP != nil && !listenIP.IsUnspecified() && !listenIP.Equal(net.IPv4(127, 0, 0, 1)) && !listenIP.Equal(net.IPv6loopback) {
		tmpl.IPAddresses = append(tmpl.IPAddresses, listenIP)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", fmt.Errorf("cannot create a self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", fmt.Errorf("cannot parse the self-signed certificate: %w", err)
	}
	sum := sha256.Sum256(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, hex.EncodeToString(sum[:]), nil
}
