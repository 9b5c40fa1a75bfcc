package gateway

import (
	"fmt"
	"net/netip"
	"strings"
)

// DefaultAllowCIDRs are the ranges pod networks use: RFC 1918, CGNAT (used by
// several CNIs) and IPv6 unique-local addresses.
const DefaultAllowCIDRs = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"

// specialRanges are refused even when a broad allowed CIDR (0.0.0.0/0, ::/0)
// covers them: loopback reaches the gateway's own node, link-local reaches the
// cloud metadata service (169.254.169.254), and the rest are never pod
// addresses. Such an address is allowed only by an allowed CIDR that lies
// inside its special range, i.e. one the operator wrote for it on purpose.
var specialRanges = mustParsePrefixes(
	"0.0.0.0/8",          // "this network", includes the unspecified address
	"127.0.0.0/8",        // loopback
	"169.254.0.0/16",     // link-local, cloud metadata
	"224.0.0.0/4",        // multicast
	"255.255.255.255/32", // limited broadcast
	"::/96",              // unspecified, loopback-adjacent and IPv4-compatible IPv6
	"::1/128",            // loopback
	"fe80::/10",          // link-local
	"ff00::/8",           // multicast
	"64:ff9b::/96",       // NAT64: embeds an IPv4 address a translator would reach
)

// Policy decides which targets the gateway may connect to. It is immutable
// after construction and safe for concurrent use.
type Policy struct {
	allow []netip.Prefix
}

// NewPolicy returns a policy allowing the given CIDRs.
func NewPolicy(allow []netip.Prefix) *Policy {
	return &Policy{allow: allow}
}

// Allowed reports whether the gateway may open a connection to addr.
// IPv4-mapped IPv6 (::ffff:a.b.c.d) is judged as the IPv4 address it maps to,
// since that is where a dial ends up.
func (p *Policy) Allowed(addr netip.AddrPort) bool {
	ip := addr.Addr().Unmap()
	if !ip.IsValid() || ip.Zone() != "" || addr.Port() == 0 {
		return false
	}
	special, isSpecial := specialRangeOf(ip)
	for _, pfx := range p.allow {
		if !pfx.Contains(ip) {
			continue
		}
		if !isSpecial || pfx.Bits() >= special.Bits() {
			return true
		}
	}
	return false
}

func specialRangeOf(ip netip.Addr) (netip.Prefix, bool) {
	for _, r := range specialRanges {
		if r.Contains(ip) {
			return r, true
		}
	}
	return netip.Prefix{}, false
}

// ParseCIDRs parses a comma-separated list of CIDRs. Host bits must be zero,
// so a typo such as 10.0.0.1/8 is reported rather than silently widened.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("cannot parse CIDR %q: %w", f, err)
		}
		if p.Addr().Zone() != "" {
			return nil, fmt.Errorf("CIDR %q must not have a zone", f)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("CIDR %q has host bits set; did you mean %s?", f, p.Masked())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("CIDR %q is IPv4-mapped IPv6; write it as an IPv4 CIDR", f)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CIDRs given")
	}
	return out, nil
}

func mustParsePrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
