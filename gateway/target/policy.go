package target

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
)

// DefaultAllowCIDRs are the ranges pod networks use: RFC 1918, CGNAT (used by
// several CNIs) and IPv6 unique-local addresses.
const DefaultAllowCIDRs = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"

// DefaultDenyPorts are control-plane ports no pod metrics live on: etcd's
// client and peer ports, the API server, and the kubelet's API and read-only
// ports (the read-only one serves pod specs to anyone).
const DefaultDenyPorts = "2379-2380,6443,10250,10255"

// specialRange is an address range that a broad allowed CIDR (0.0.0.0/0,
// ::/0, or a default pod range) does not unlock: loopback reaches the
// gateway's own node, link-local and the metadata addresses reach cloud
// metadata services and their credentials, and the rest are never pod
// addresses. An address in one is allowed only by an allowed CIDR that lies
// inside its most specific special range, i.e. one the operator wrote for it
// on purpose.
type specialRange struct {
	prefix netip.Prefix
	what   string // what is there, in docs/security.md's words
	source string // where that is specified: RFCs, vendors' documentation
}

// specialRanges is the one table of special ranges; docs/security.md's
// "Special address ranges" shows the same rows, which a test checks. A metadata
// entry is the one address its vendor documents (/32, /128), since the range
// around it can hold the customer's own pods: GCP assigns VPC ULA ranges
// from fd20::/20, and Oracle VCNs take any ULA prefix. AWS's is its whole
// fd00:ec2::/32, where AWS puts several instance-local services and no VPC
// ranges.
var specialRanges = []specialRange{
	// IPv4
	{netip.MustParsePrefix("0.0.0.0/8"),
		"\"This network\", including the unspecified address `0.0.0.0`",
		"RFC 6890"},
	{netip.MustParsePrefix("127.0.0.0/8"),
		"Loopback: the gateway's own pod, or its node on the host network",
		"RFC 6890"},
	{netip.MustParsePrefix("169.254.0.0/16"),
		"Link-local: the metadata services of AWS, GCP, Azure, Oracle, OpenStack and others at `169.254.169.254`, AWS ECS and EKS credentials at `169.254.170.2` and `169.254.170.23`, Scaleway's at `169.254.42.42`",
		"RFC 3927"},
	{netip.MustParsePrefix("224.0.0.0/4"),
		"Multicast",
		"RFC 5771"},
	{netip.MustParsePrefix("255.255.255.255/32"),
		"Limited broadcast",
		"RFC 919"},
	{netip.MustParsePrefix("100.100.100.200/32"),
		"Alibaba Cloud instance metadata, inside CGNAT `100.64.0.0/10`",
		"https://www.alibabacloud.com/help/en/ecs/user-guide/view-instance-metadata"},
	{netip.MustParsePrefix("168.63.129.16/32"),
		"Azure WireServer: VM agent, platform DNS, load balancer health probes",
		"https://learn.microsoft.com/en-us/azure/virtual-network/what-is-ip-address-168-63-129-16"},
	{netip.MustParsePrefix("192.0.0.0/24"),
		"IETF protocol assignments (DS-Lite, NAT64 discovery, ...); never a pod",
		"RFC 6890"},
	{netip.MustParsePrefix("192.0.0.192/32"),
		"Oracle Cloud Classic and Cloud at Customer instance metadata",
		"https://docs.oracle.com/en/cloud/cloud-at-customer/occ-get-started/retrieve-predefined-instance-metadata.html"},
	// IPv6
	{netip.MustParsePrefix("::/96"),
		"Unspecified `::`, and deprecated IPv4-compatible IPv6 next to loopback",
		"RFC 4291"},
	{netip.MustParsePrefix("::1/128"),
		"IPv6 loopback",
		"RFC 4291"},
	{netip.MustParsePrefix("fe80::/10"),
		"IPv6 link-local: OpenStack's metadata service at `fe80::a9fe:a9fe`",
		"RFC 4291"},
	{netip.MustParsePrefix("ff00::/8"),
		"IPv6 multicast",
		"RFC 4291"},
	{netip.MustParsePrefix("64:ff9b::/96"),
		"NAT64: embeds an IPv4 address a translator would reach",
		"RFC 6052"},
	{netip.MustParsePrefix("64:ff9b:1::/48"),
		"Local-use NAT64",
		"RFC 8215"},
	{netip.MustParsePrefix("::ffff:0:0:0/96"),
		"IPv4-translated addresses (SIIT)",
		"RFC 2765"},
	{netip.MustParsePrefix("fd00:ec2::/32"),
		"AWS: IPv6 instance metadata `fd00:ec2::254`, Route 53 Resolver `::253`, Time Sync `::123`, EKS Pod Identity Agent `::23`",
		"https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html, " +
			"https://docs.aws.amazon.com/vpc/latest/userguide/AmazonDNS-concepts.html, " +
			"https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/set-time.html, " +
			"https://docs.aws.amazon.com/eks/latest/userguide/pod-id-how-it-works.html"},
	{netip.MustParsePrefix("fd20:ce::254/128"),
		"GCP metadata server over IPv6",
		"https://cloud.google.com/compute/docs/metadata/querying-metadata"},
	{netip.MustParsePrefix("fd00:c1::a9fe:a9fe/128"),
		"Oracle Cloud Infrastructure instance metadata over IPv6",
		"https://docs.oracle.com/en-us/iaas/Content/Compute/Tasks/gettingmetadata.htm"},
	{netip.MustParsePrefix("fd00:42::42/128"),
		"Scaleway instance metadata over IPv6",
		"https://www.scaleway.com/en/developers/api/instance/user-data"},
	{netip.MustParsePrefix("fd00:a9fe:a9fe::1/128"),
		"Akamai (Linode) metadata service over IPv6",
		"https://techdocs.akamai.com/cloud-computing/docs/metadata-service-api"},
}

// Policy decides which targets the gateway may connect to: an IP allow-list
// over the special ranges above, port and path allow-lists, deny-lists that
// win over every allow, and the gateway's own addresses, which are never a
// target. It is immutable after construction but for the gateway's own
// addresses (AddSelf) and, before first use, the live pods (SetLivePods), and
// safe for concurrent use.
type Policy struct {
	allow, deny           []netip.Prefix
	allowPorts, denyPorts PortRanges
	allowPaths, denyPaths []string
	self                  atomic.Pointer[[]selfAddr]
	// pods, with -target-policy=kubernetes, says which endpoints belong
	// to pods that exist; nil allows any.
	pods LivePods
}

// Rules are the target flags a Policy enforces, each named after its flag.
type Rules struct {
	AllowCIDRs, DenyCIDRs               []netip.Prefix
	AllowPorts, DenyPorts               PortRanges
	AllowPathPrefixes, DenyPathPrefixes []string
}

// LivePods is the "kubernetes" target policy: whether an endpoint belongs to
// a pod that exists, which is known only once the informers have synced.
type LivePods interface {
	Synced() bool
	HasEndpoint(netip.AddrPort) bool
}

// NewPolicy returns the policy that rules describe.
func NewPolicy(rules Rules) *Policy {
	// A deny prefix's trailing '/' is dropped: servers route /debug/pprof
	// and /debug/pprof/ to one handler (Go's ServeMux by a redirect).
	denyPaths := make([]string, len(rules.DenyPathPrefixes))
	for i, d := range rules.DenyPathPrefixes {
		denyPaths[i] = strings.TrimRight(d, "/")
	}
	return &Policy{
		allow:      rules.AllowCIDRs,
		deny:       rules.DenyCIDRs,
		allowPorts: rules.AllowPorts,
		denyPorts:  rules.DenyPorts,
		allowPaths: rules.AllowPathPrefixes,
		denyPaths:  denyPaths,
	}
}

// SetLivePods makes Check allow only endpoints of pods (-target-policy=
// kubernetes). It is a setter, not a Rules field, because the policy is built
// before the cluster is watched; it must be called before the policy is used.
func (p *Policy) SetLivePods(pods LivePods) {
	p.pods = pods
}

// Verdict is the policy's answer for one target; String says why a refused
// target is refused, naming the flag that refuses it.
type Verdict uint8

// Only the verdicts the gateway acts on are exported; every other one is a
// refusal, which it reports by String.
const (
	// VerdictAllowed lets the target be scraped.
	VerdictAllowed Verdict = iota
	verdictIPNotAllowed
	verdictIPDenied
	verdictPortNotAllowed
	verdictPortDenied
	verdictPathNotAllowed
	verdictPathDenied
	verdictPathNotPlain
	verdictSelf
	verdictSpecial
	verdictNotPod
	// VerdictNotSynced refuses for now: the live pods are not known yet.
	VerdictNotSynced
)

var verdictText = [...]string{
	VerdictAllowed:        "allowed",
	verdictIPNotAllowed:   "the target IP is not allowed by -allow-cidrs",
	verdictIPDenied:       "the target IP is denied by -deny-cidrs",
	verdictPortNotAllowed: "the target port is not allowed by -allow-ports",
	verdictPortDenied:     "the target port is denied by -deny-ports",
	verdictPathNotAllowed: "the target path is not under -allow-path-prefixes",
	verdictPathDenied:     "the target path is denied by -deny-path-prefixes",
	verdictPathNotPlain:   "with path rules the target path may only have letters, digits, '-._~' and single '/' separators, and no segment ending in '.'",
	verdictSelf:           "the target is the gateway itself",
	verdictSpecial:        "the target IP is in a special address range that -allow-cidrs does not name on purpose",
	verdictNotPod:         "the target is not a container port of a live pod (-target-policy=kubernetes)",
	VerdictNotSynced:      "the Kubernetes informers have not synced yet (-target-policy=kubernetes); retry",
}

// String is the verdict in words, as the gateway's error responses carry it.
func (v Verdict) String() string { return verdictText[v] }

// Check judges a parsed target: its address, its path, and with the
// kubernetes policy whether a live pod has that address, unless it is a
// Service target (Target.Service), whose endpoint the Service vouches for.
func (p *Policy) Check(t *Target) Verdict {
	if v := p.checkAddr(t.Addr); v != VerdictAllowed {
		return v
	}
	if v := p.checkPath(t.Path); v != VerdictAllowed {
		return v
	}
	if p.pods != nil {
		switch {
		case !p.pods.Synced():
			return VerdictNotSynced
		case !t.Service && !p.pods.HasEndpoint(t.Addr):
			return verdictNotPod
		}
	}
	return VerdictAllowed
}

// CheckKubelet judges a kubelet's address, which comes from its Node
// object, which the node itself writes: the CIDR rules and the special
// ranges apply as to pods, so the token never goes where no target may. The
// port rules do not: the kubelet's port is denied to /pods/ targets.
func (p *Policy) CheckKubelet(addr netip.AddrPort) Verdict {
	return p.checkIP(addr.Addr().Unmap())
}

// CheckComponent judges the address of a control-plane component's pod or
// of its node's agent, which kube-system's pods and the Node objects name:
// as for a kubelet, the CIDR rules and the special ranges apply, so the
// control-plane and node-agent tokens never go where no target may, and
// the gateway's own address is refused. The port rules do not: -deny-ports
// holds etcd's ports, and the components' ports are fixed by flags.
func (p *Policy) CheckComponent(addr netip.AddrPort) Verdict {
	ip := addr.Addr().Unmap()
	if v := p.checkIP(ip); v != VerdictAllowed {
		return v
	}
	if p.isSelf(ip, addr.Port()) {
		return verdictSelf
	}
	return VerdictAllowed
}

// CheckAPIServer judges an endpoint of the default/kubernetes Service,
// which the API servers write (and only writers with RBAC on EndpointSlices
// in namespace default can). The port rules and the CIDR rules do not
// apply: -deny-ports holds 6443, and -allow-cidrs must not widen where the
// control-plane token goes, which is those endpoints and nothing else.
// Still refused are the gateway itself and an address in a special range,
// unless an allowed CIDR inside that range names it on purpose, as for
// pods. That breaks no cluster: the API server refuses loopback and
// link-local addresses in EndpointSlices, and the other special ranges are
// never where an API server is advertised.
func (p *Policy) CheckAPIServer(addr netip.AddrPort) Verdict {
	ip := addr.Addr().Unmap()
	if !ip.IsValid() || ip.Zone() != "" || addr.Port() == 0 {
		return verdictIPNotAllowed
	}
	if _, special := specialRangeOf(ip); special && !p.ipAllowed(ip) {
		return verdictSpecial
	}
	if p.isSelf(ip, addr.Port()) {
		return verdictSelf
	}
	return VerdictAllowed
}

// checkIP judges an address against -deny-cidrs, then -allow-cidrs over the
// special ranges.
func (p *Policy) checkIP(ip netip.Addr) Verdict {
	for _, pfx := range p.deny {
		if pfx.Contains(ip) {
			return verdictIPDenied
		}
	}
	if !p.ipAllowed(ip) {
		return verdictIPNotAllowed
	}
	return VerdictAllowed
}

// checkPath judges a target path. Path rules are only sound on a path every
// server reads the same way, so with path rules the path must be plain:
// letters, digits, "-._~" and single '/' separators, no segment ending in
// '.'. Otherwise a pod could normalise what the policy saw ("//", ";params",
// "%xx", trailing dots) into a path it would refuse. A plain path is its
// own normal form, percent-decoded and all, so the prefixes judge it as it
// is.
//
// A deny prefix matches as a plain string prefix, ignoring case: servers
// route /actuator/env.json (Spring's suffix patterns), /debug/pprofx and
// /ACTUATOR/ENV (IIS, case-insensitive Spring) to the handler a deny prefix
// names, so it refuses more than its own segments rather than less. An
// allow prefix matches case-sensitively at a '/' boundary, so it admits
// only its own segments.
func (p *Policy) checkPath(path []byte) Verdict {
	if len(p.allowPaths) == 0 && len(p.denyPaths) == 0 {
		return VerdictAllowed
	}
	if !IsPlainPath(path) {
		return verdictPathNotPlain
	}
	for _, d := range p.denyPaths {
		if hasFoldPrefix(path, d) {
			return verdictPathDenied
		}
	}
	if len(p.allowPaths) == 0 {
		return VerdictAllowed
	}
	for _, a := range p.allowPaths {
		if hasPathPrefix(path, a) {
			return VerdictAllowed
		}
	}
	return verdictPathNotAllowed
}

// IsPlainPath reports whether path has only unreserved characters (RFC 3986)
// and single '/' separators, and no segment ending in '.'.
func IsPlainPath(path []byte) bool {
	for i, c := range path {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '~':
		case c == '.':
			if i+1 == len(path) || path[i+1] == '/' {
				return false
			}
		case c == '/':
			if i > 0 && path[i-1] == '/' {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// checkAddr judges an endpoint. IPv4-mapped IPv6 (::ffff:a.b.c.d) is judged
// as the IPv4 address it maps to, since that is where a dial ends up.
func (p *Policy) checkAddr(addr netip.AddrPort) Verdict {
	ip := addr.Addr().Unmap()
	if !ip.IsValid() || ip.Zone() != "" || addr.Port() == 0 {
		return verdictIPNotAllowed
	}
	if v := p.checkIP(ip); v != VerdictAllowed {
		return v
	}
	port := addr.Port()
	if p.denyPorts.Contains(port) {
		return verdictPortDenied
	}
	if len(p.allowPorts) > 0 && !p.allowPorts.Contains(port) {
		return verdictPortNotAllowed
	}
	if p.isSelf(ip, port) {
		return verdictSelf
	}
	return VerdictAllowed
}

// isSelf reports whether ip:port is where the gateway serves.
func (p *Policy) isSelf(ip netip.Addr, port uint16) bool {
	if self := p.self.Load(); self != nil {
		for _, s := range *self {
			if s.port == port && s.ips.Contains(ip) {
				return true
			}
		}
	}
	return false
}

func (p *Policy) ipAllowed(ip netip.Addr) bool {
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

// selfAddr is where the gateway serves: a port on one address, or on a
// range of them (all of loopback).
type selfAddr struct {
	ips  netip.Prefix
	port uint16
}

// selfAddrs lists the addresses a listener serves on. On all addresses that
// is every interface address, all of loopback (any 127.x.y.z reaches it) and
// the unspecified address (which dials loopback).
func selfAddrs(a net.Addr) []selfAddr {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return nil
	}
	ap := tcp.AddrPort()
	port := ap.Port()
	ip := ap.Addr().Unmap()
	if !ip.IsUnspecified() {
		return []selfAddr{{netip.PrefixFrom(ip, ip.BitLen()), port}}
	}
	out := []selfAddr{
		{netip.MustParsePrefix("127.0.0.0/8"), port},
		{netip.MustParsePrefix("::1/128"), port},
		{netip.MustParsePrefix("0.0.0.0/32"), port},
		{netip.MustParsePrefix("::/128"), port},
	}
	ifaddrs, _ := net.InterfaceAddrs()
	for _, ia := range ifaddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				ip = ip.Unmap()
				out = append(out, selfAddr{netip.PrefixFrom(ip, ip.BitLen()), port})
			}
		}
	}
	return out
}

// AddSelf records the addresses a listener of the gateway serves on: a
// target there would be a loop through the gateway itself.
func (p *Policy) AddSelf(listener net.Addr) {
	addrs := selfAddrs(listener)
	for {
		old := p.self.Load()
		var next []selfAddr
		if old != nil {
			next = append(next, *old...)
		}
		next = append(next, addrs...)
		if p.self.CompareAndSwap(old, &next) {
			return
		}
	}
}

// hasPathPrefix reports whether path starts with prefix at a segment
// boundary: /metrics matches /metrics, /metrics/cadvisor and /metrics/, not
// /metricsfoo.
func hasPathPrefix(path []byte, prefix string) bool {
	if len(path) < len(prefix) || string(path[:len(prefix)]) != prefix {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}

// hasFoldPrefix reports whether path starts with prefix, ignoring ASCII
// case: /debug/pprof matches /debug/pprof/heap, /debug/pprofx and
// /DEBUG/PPROF.
func hasFoldPrefix(path []byte, prefix string) bool {
	return len(path) >= len(prefix) && bytes.EqualFold(path[:len(prefix)], []byte(prefix))
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// PortRanges is a set of ports, the flag.Value behind -allow-ports and
// -deny-ports: "9100,8080-8090". Each range is {first, last}, both included.
type PortRanges [][2]uint16

// Contains reports whether port is in one of the ranges.
func (r PortRanges) Contains(port uint16) bool {
	for _, pr := range r {
		if pr[0] <= port && port <= pr[1] {
			return true
		}
	}
	return false
}

// String is the ranges as Set reads them.
func (r *PortRanges) String() string {
	if r == nil {
		return ""
	}
	ss := make([]string, len(*r))
	for i, pr := range *r {
		ss[i] = strconv.Itoa(int(pr[0]))
		if pr[1] != pr[0] {
			ss[i] += "-" + strconv.Itoa(int(pr[1]))
		}
	}
	return strings.Join(ss, ",")
}

// Set parses a comma-separated list of ports and ranges, replacing r.
func (r *PortRanges) Set(s string) error {
	var out PortRanges
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := ParsePort([]byte(strings.TrimSpace(lo)))
		b := a
		if err == nil && isRange {
			b, err = ParsePort([]byte(strings.TrimSpace(hi)))
		}
		if err != nil {
			return fmt.Errorf("%q is not a port 1-65535 or a range of them; write one such as 9100 or 8080-8090", f)
		}
		if b < a {
			return fmt.Errorf("port range %q is empty; write %d-%d", f, b, a)
		}
		out = append(out, [2]uint16{a, b})
	}
	*r = out
	return nil
}

// specialRangeOf returns the most specific special range holding ip: ::1 is
// loopback, not merely inside ::/96.
func specialRangeOf(ip netip.Addr) (netip.Prefix, bool) {
	var best netip.Prefix
	for _, r := range specialRanges {
		if r.prefix.Contains(ip) && (!best.IsValid() || r.prefix.Bits() > best.Bits()) {
			best = r.prefix
		}
	}
	return best, best.IsValid()
}

// FormatCIDRs writes prefixes as ParseCIDRs reads them: comma-separated.
func FormatCIDRs(prefixes []netip.Prefix) string {
	ss := make([]string, len(prefixes))
	for i, p := range prefixes {
		ss[i] = p.String()
	}
	return strings.Join(ss, ",")
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
			why := strings.TrimPrefix(err.Error(), fmt.Sprintf("netip.ParsePrefix(%q): ", f)) // the value is named already
			return nil, fmt.Errorf("%q is not a CIDR (%s); write one such as 10.0.0.0/8 or fd00::/8", f, why)
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
