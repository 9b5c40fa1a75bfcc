package kube

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestIsAPIServer: every address of a default/kubernetes slice on each of
// its TCP ports is an API server, and nothing else is; the watched
// namespaces do not matter, and the slices count once.
func TestIsAPIServer(t *testing.T) {
	udp := corev1.ProtocolUDP
	dnsPort := int32(53)
	ipv6 := newSlice("default", "kubernetes-v6", "kubernetes", []discoveryv1.EndpointPort{slicePortOf("https", 6443)}, newEndpoint("fd00::10"))
	ipv6.AddressType = discoveryv1.AddressTypeIPv6
	fqdn := newSlice("default", "kubernetes-fqdn", "kubernetes", []discoveryv1.EndpointPort{slicePortOf("https", 443)}, newEndpoint("api.example.com"))
	fqdn.AddressType = discoveryv1.AddressTypeFQDN
	client := fake.NewClientset(
		newSlice("default", "kubernetes", "kubernetes",
			[]discoveryv1.EndpointPort{slicePortOf("https", 6443), {Port: &dnsPort, Protocol: &udp}},
			newEndpoint("10.250.0.1"), newEndpoint("10.250.0.2")),
		ipv6, fqdn,
		newSlice("default", "web", "web", []discoveryv1.EndpointPort{slicePortOf("https", 6443)}, newEndpoint("10.244.0.5")),
		newSlice("apps", "kubernetes", "kubernetes", []discoveryv1.EndpointPort{slicePortOf("https", 6443)}, newEndpoint("10.244.0.6")),
	)
	f := func(c *Cluster, addr string, want bool) {
		t.Helper()
		if got := c.IsAPIServer(netip.MustParseAddrPort(addr)); got != want {
			t.Errorf("IsAPIServer(%s) = %v, want %v", addr, got, want)
		}
	}
	c := startCluster(t, client, Options{Namespaces: []string{"apps"}, APIServers: true})
	f(c, "10.250.0.1:6443", true)
	f(c, "10.250.0.2:6443", true)
	f(c, "[::ffff:10.250.0.1]:6443", true)
	f(c, "[fd00::10]:6443", true)
	f(c, "10.250.0.1:53", false) // a UDP port
	f(c, "10.250.0.1:443", false)
	f(c, "10.244.0.5:6443", false) // another Service's
	f(c, "10.244.0.6:6443", false) // another namespace's
	if n := c.Count("endpointslices"); n != 1 {
		t.Errorf("Count(endpointslices) = %d, want 1: apps/kubernetes only", n)
	}

	all := startCluster(t, client, Options{APIServers: true})
	if n := all.Count("endpointslices"); n != 5 {
		t.Errorf("watching every namespace, Count(endpointslices) = %d, want 5", n)
	}
	f(all, "10.250.0.1:6443", true)

	off := startCluster(t, client, Options{})
	f(off, "10.250.0.1:6443", false)
}
