package tlsconf

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"slices"
	"testing"
	"time"
)

func TestSelfSigned(t *testing.T) {
	f := func(hostname string, listenIP net.IP, wantDNS []string, wantIPs []string) {
		t.Helper()
		now := time.Now()
		c, fp, err := SelfSigned(hostname, listenIP, now)
		if err != nil {
			t.Fatalf("SelfSigned: %v", err)
		}
		sum := sha256.Sum256(c.Certificate[0])
		if got := hex.EncodeToString(sum[:]); got != fp {
			t.Fatalf("fingerprint %s, want %s", fp, got)
		}
		if !slices.Equal(c.Leaf.DNSNames, wantDNS) {
			t.Fatalf("DNS SANs %v, want %v", c.Leaf.DNSNames, wantDNS)
		}
		var ips []string
		for _, ip := range c.Leaf.IPAddresses {
			ips = append(ips, ip.String())
		}
		if !slices.Equal(ips, wantIPs) {
			t.Fatalf("IP SANs %v, want %v", ips, wantIPs)
		}
		if c.Leaf.NotAfter.Before(now.AddDate(0, 11, 0)) {
			t.Fatalf("valid until %s only", c.Leaf.NotAfter)
		}
	}
	f("node-1", nil, []string{"node-1", "localhost"}, []string{"127.0.0.1", "::1"})
	f("node-1", net.ParseIP("10.0.0.5"), []string{"node-1", "localhost"}, []string{"127.0.0.1", "::1", "10.0.0.5"})
	f("", net.IPv4zero, []string{"localhost"}, []string{"127.0.0.1", "::1"})
	f("localhost", net.ParseIP("::1"), []string{"localhost"}, []string{"127.0.0.1", "::1"})
	f("node-1", net.ParseIP("127.0.0.2"), []string{"node-1", "localhost"}, []string{"127.0.0.1", "::1", "127.0.0.2"})
}
