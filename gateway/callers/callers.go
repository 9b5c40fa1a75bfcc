// Package callers owns the limits the gateway puts on each caller, counted
// by caller address (Key: an IPv4 address or an IPv6 /64): the listener that
// closes connections from callers outside -allow-caller-cidrs and past
// -max-conns-per-caller, and the per-caller token buckets (RateLimiter) of
// -caller-rate-limit and of failed logins.
package callers

import "net/netip"

// Key is the unit the per-caller limits count by: an IPv4 address, or
// an IPv6 /64, since one host commonly owns a whole /64 and could otherwise
// use a fresh address for every connection.
func Key(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.WithZone("").Prefix(64)
		return p.Addr()
	}
	return ip
}
