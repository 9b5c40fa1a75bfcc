// Package target owns what a scrape may reach: parsing every target form
// (/pods/[{scheme}/]{ip}/{port}/{path} and absolute-form proxy URIs such as
// http://{ip}:{port}/{path}; for a proxy URI naming a host, SplitAbsoluteURI
// hands the name to the gateway, which resolves Service names itself) into a
// Target with a canonical IP, and the Policy
// that judges it: -allow-cidrs and -deny-cidrs over the table of special
// address ranges, -allow-ports and -deny-ports, -allow-path-prefixes and
// -deny-path-prefixes, the gateway's own addresses, and optionally the live
// pods of a cluster.
package target

import (
	"bytes"
	"errors"
	"net/netip"
	"unsafe"
)

// Target is one scrape target, parsed once from the request line and never
// re-parsed. Path and Query alias the request's own bytes: they are valid only
// while the request is being handled.
type Target struct {
	// Addr is the pod endpoint. Its IP never carries a zone.
	Addr netip.AddrPort
	// Path is the raw path sent to the pod, always starting with '/'. It is
	// never unescaped or normalised: "%2F" stays "%2F", ".." stays "..".
	Path []byte
	// Query is the raw query string without the leading '?', possibly empty.
	Query []byte
	// TLS is set for an https target.
	TLS bool
	// Kind is what the target is, which decides the credentials it gets
	// and how the policy judges it. Only the gateway's parsers of
	// /nodes/, /apiservers/ and /components/ set a kind other than
	// KindPod, each for a target its cluster's objects vouch for.
	Kind Kind
	// Service is set for the endpoint a Service target resolved to: the
	// gateway set it from the cluster's EndpointSlices, which already
	// decided whether a pod must be behind it, so the policy does not ask
	// the live pods again (Policy.Check).
	Service bool
}

// Kind is what a target is: a pod endpoint or one of the cluster's own
// components, each of which gets credentials no other target gets.
type Kind uint8

const (
	// KindPod is a pod endpoint: /pods/, absolute-form proxy URIs,
	// /services/ and /endpoints/.
	KindPod Kind = iota
	// KindKubelet is a node's kubelet (/nodes/): a node the informer
	// knows, a kubelet metrics path; the kubelet token.
	KindKubelet
	// KindAPIServer is an API server (/apiservers/): an endpoint of the
	// default/kubernetes Service, an API server metrics path; the
	// control-plane token.
	KindAPIServer
	// KindComponent is a control-plane component (/components/): the
	// pod of a kube-scheduler, kube-controller-manager, etcd or kube-proxy
	// on a watched node, at that component's port; the control-plane
	// token to the https ones only.
	KindComponent
	// KindNodeAgent is a component reached through its node's agent
	// (/components/ with -node-agent-port): the agent on the component's
	// node; the node-agent token.
	KindNodeAgent
)

// PodsPrefix is the psystrike contract: /pods/{ip}/{port}/{path...}. An
// optional scheme segment chooses https: /pods/https/{ip}/{port}/{path...};
// /pods/http/... is the same as the bare form. No IP literal is "http" or
// "https", so the forms cannot be confused.
const PodsPrefix = "/pods/"

// errBadTarget wraps every parse failure, so callers can tell a malformed
// target (400) from everything else without string matching.
var errBadTarget = errors.New("malformed target")

// Invalid returns a malformed-target error saying msg, for a target form
// parsed outside this package (/nodes/).
func Invalid(msg string) error {
	return &targetError{msg: msg}
}

type targetError struct{ msg string }

func (e *targetError) Error() string { return e.msg }
func (e *targetError) Unwrap() error { return errBadTarget }

// ErrHostNotIP is the error of a target whose host is not a canonical IP
// literal; the gateway then judges an absolute-form target's host as a
// Service name, if it is one.
var ErrHostNotIP = Invalid("target host is not an IP literal")

// Errors are preallocated: a hostile caller must not make the gateway allocate
// an error per request.
var (
	errNoPodsPrefix    = Invalid("path does not start with " + PodsPrefix)
	errNoPort          = Invalid("want /pods/{ip}/{port}/{path}")
	errBadIP           = ErrHostNotIP
	errZone            = Invalid("IPv6 zone identifiers are not allowed")
	errBadPort         = Invalid("port must be a decimal number 1-65535 without leading zeros")
	errFragment        = Invalid("request target must not contain '#'")
	errNotAbsolute     = Invalid("request target is not an absolute http:// URI")
	errUserinfo        = Invalid("userinfo (user@host) is not allowed in the target")
	errMissingBrackets = Invalid("an IPv6 host with a port must be in brackets: [addr]:port")
	errPathByte        = Invalid("the path contains a space, control, backslash or non-ASCII byte")
	errPathEscape      = Invalid("the path contains an encoded '/', '\\', '.', '%' or control byte")
	errDotSegment      = Invalid("the path contains a '.' or '..' segment")
	errBadEscape       = Invalid("malformed percent-encoding")
	errQueryByte       = Invalid("the query contains a space, control or non-ASCII byte, raw or encoded")
)

// ParsePodPath parses the raw request URI of a /pods/[{scheme}/]{ip}/{port}/{path}
// request. The IP may be bracketed ([fd00::1]) or bare (fd00::1): a bare IPv6
// address contains no '/', so the first '/' still ends it. An absent path
// means "/".
func ParsePodPath(uri []byte) (Target, error) {
	var t Target
	if !bytes.HasPrefix(uri, []byte(PodsPrefix)) {
		return t, errNoPodsPrefix
	}
	if bytes.IndexByte(uri, '#') >= 0 {
		return t, errFragment
	}
	rest, query := SplitQuery(uri[len(PodsPrefix):])
	useTLS := false
	if r, ok := bytes.CutPrefix(rest, []byte("https/")); ok {
		rest, useTLS = r, true
	} else if r, ok := bytes.CutPrefix(rest, []byte("http/")); ok {
		rest = r
	}
	ipPart, rest, ok := bytes.Cut(rest, []byte("/"))
	if !ok {
		return t, errNoPort
	}
	portPart, path := rest, []byte(nil)
	if i := bytes.IndexByte(rest, '/'); i >= 0 {
		portPart, path = rest[:i], rest[i:]
	}
	addr, err := ParseIPPort(ipPart, portPart)
	if err != nil {
		return t, err
	}
	return newTarget(addr, path, query, useTLS)
}

// ParseIPPort parses the {ip} and {port} segments of a path such as
// /pods/{ip}/{port}/: a canonical IP literal, bare or in brackets, and a
// port as ParsePort reads it. An IPv4-mapped IPv6 address becomes the IPv4
// address it maps to: that is where the connection goes, and
// ::ffff:10.1.2.3 and 10.1.2.3 are one endpoint with one pool.
func ParseIPPort(ipPart, portPart []byte) (netip.AddrPort, error) {
	if len(ipPart) > 2 && ipPart[0] == '[' && ipPart[len(ipPart)-1] == ']' {
		ipPart = ipPart[1 : len(ipPart)-1]
	}
	ip, err := parseIP(ipPart)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := ParsePort(portPart)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ip.Unmap(), port), nil
}

// AbsoluteURI is an absolute-form request target taken apart, its host not
// yet judged: an IP literal for ParseAbsoluteURI, or a name the gateway may
// resolve itself (a Service's). Host and Path alias the request's bytes.
type AbsoluteURI struct {
	// TLS is set for https.
	TLS bool
	// Host is the host as the URI spells it, an IPv6 literal in its
	// brackets: a name in brackets is no name.
	Host []byte
	// Port is the URI's port, or the scheme's default (80, 443).
	Port uint16
	// Path is the raw path, checked as every target's is; "/" if the URI
	// has none.
	Path []byte
	// Query is the raw query without the '?', checked as every target's is.
	Query []byte
}

// SplitAbsoluteURI takes apart an absolute-form request target, what an HTTP
// client configured with a proxy sends: http://{host}:{port}/{path}, or
// https://... for a target the gateway reaches over TLS. It checks
// everything but what the host names.
func SplitAbsoluteURI(uri []byte) (AbsoluteURI, error) {
	var u AbsoluteURI
	scheme, rest, ok := bytes.Cut(uri, []byte("://"))
	if !ok {
		return u, errNotAbsolute
	}
	switch {
	case bytes.EqualFold(scheme, []byte("http")):
	case bytes.EqualFold(scheme, []byte("https")):
		u.TLS = true
	default:
		return u, errNotAbsolute
	}
	if bytes.IndexByte(rest, '#') >= 0 {
		return u, errFragment
	}
	authority, pathAndQuery := rest, []byte(nil)
	if i := bytes.IndexAny(rest, "/?"); i >= 0 {
		authority, pathAndQuery = rest[:i], rest[i:]
	}
	if bytes.IndexByte(authority, '@') >= 0 {
		return u, errUserinfo
	}
	host, portPart := authority, []byte(nil)
	if len(host) > 0 && host[0] == '[' {
		end := bytes.IndexByte(host, ']')
		if end < 0 {
			return u, errBadIP
		}
		host, portPart = host[:end+1], host[end+1:]
		if len(portPart) > 0 {
			if portPart[0] != ':' {
				return u, errBadIP
			}
			portPart = portPart[1:]
			if len(portPart) == 0 {
				return u, errBadPort
			}
		} else {
			portPart = nil
		}
	} else if c := bytes.IndexByte(host, ':'); c >= 0 {
		if bytes.IndexByte(host[c+1:], ':') >= 0 {
			return u, errMissingBrackets
		}
		host, portPart = host[:c], host[c+1:]
		if len(portPart) == 0 {
			return u, errBadPort
		}
	}
	u.Host, u.Port = host, 80
	if u.TLS {
		u.Port = 443
	}
	var err error
	if portPart != nil {
		if u.Port, err = ParsePort(portPart); err != nil {
			return u, err
		}
	}
	u.Path, u.Query = SplitQuery(pathAndQuery)
	u.Path, err = CheckPathAndQuery(u.Path, u.Query)
	return u, err
}

// ParseAbsoluteURI parses an absolute-form request target whose host is an
// IP literal (SplitAbsoluteURI). The port defaults to the scheme's. Any
// other host is ErrHostNotIP.
func ParseAbsoluteURI(uri []byte) (Target, error) {
	u, err := SplitAbsoluteURI(uri)
	if err != nil {
		return Target{}, err
	}
	host := u.Host
	if len(host) > 0 && host[0] == '[' {
		host = host[1 : len(host)-1] // SplitAbsoluteURI found the ']' at the end
	}
	ip, err := parseIP(host)
	if err != nil {
		return Target{}, err
	}
	return Target{Addr: netip.AddrPortFrom(ip.Unmap(), u.Port), Path: u.Path, Query: u.Query, TLS: u.TLS}, nil
}

// rootPath is shared by every target without a path; nothing writes to it.
var rootPath = []byte("/")

// newTarget checks the path and query and builds a Target.
func newTarget(addr netip.AddrPort, path, query []byte, useTLS bool) (Target, error) {
	path, err := CheckPathAndQuery(path, query)
	if err != nil {
		return Target{}, err
	}
	return Target{Addr: addr, Path: path, Query: query, TLS: useTLS}, nil
}

// CheckPathAndQuery checks a target's raw path and query as every target
// form's are checked (checkPath, CheckQuery) and returns the path to send:
// "/" for an empty one.
func CheckPathAndQuery(path, query []byte) ([]byte, error) {
	if len(path) == 0 {
		path = rootPath
	}
	if err := checkPath(path); err != nil {
		return nil, err
	}
	if err := CheckQuery(query); err != nil {
		return nil, err
	}
	return path, nil
}

// checkPath refuses paths that a pod's server could read differently from
// the gateway's policy: dot segments and encoded separators (path traversal
// past -allow-path-prefixes), encoded '%' (double decoding), and control
// bytes, raw or encoded (header injection into naive servers). Prometheus
// never sends any of them.
func checkPath(path []byte) error {
	segStart := 0
	for i := 0; i <= len(path); i++ {
		if i == len(path) || path[i] == '/' {
			if seg := path[segStart:i]; string(seg) == "." || string(seg) == ".." {
				return errDotSegment
			}
			segStart = i + 1
			continue
		}
		switch c := path[i]; {
		case c <= ' ' || c >= 0x7f || c == '\\':
			return errPathByte
		case c == '#':
			return errFragment
		case c == '%':
			if i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2]) {
				return errBadEscape
			}
			if v := unhex(path[i+1])<<4 | unhex(path[i+2]); v < ' ' || v >= 0x7f || v == '/' || v == '\\' || v == '.' || v == '%' {
				return errPathEscape
			}
			i += 2
		}
	}
	return nil
}

// CheckQuery refuses control bytes in the query, raw or encoded.
func CheckQuery(query []byte) error {
	for i := 0; i < len(query); i++ {
		switch c := query[i]; {
		case c <= ' ' || c >= 0x7f:
			return errQueryByte
		case c == '#':
			return errFragment
		case c == '%':
			if i+2 >= len(query) || !isHex(query[i+1]) || !isHex(query[i+2]) {
				return errBadEscape
			}
			if v := unhex(query[i+1])<<4 | unhex(query[i+2]); v < ' ' && v != '\t' || v == 0x7f {
				return errQueryByte
			}
			i += 2
		}
	}
	return nil
}

// SplitQuery splits "path?query" at the first '?'.
func SplitQuery(b []byte) (path, query []byte) {
	if q := bytes.IndexByte(b, '?'); q >= 0 {
		return b[:q], b[q+1:]
	}
	return b, nil
}

// IsAbsoluteForm reports whether a request target is in absolute form
// (scheme "://"), as opposed to origin form ("/path"). Anything that does not
// start with '/' is treated as absolute form so that the strict parser, not the
// router, decides what it is.
func IsAbsoluteForm(uri []byte) bool {
	return len(uri) > 0 && uri[0] != '/'
}

// parseIP accepts only canonical IP literals: dotted-quad IPv4 with exactly
// four decimal parts and no leading zeros, or RFC 4291 IPv6. Every other
// spelling that resolvers accept for the same address (127.1, 0x7f.0.0.1,
// 2130706433, 0177.0.0.1) is refused, so the policy sees exactly the address
// that will be dialled.
func parseIP(b []byte) (netip.Addr, error) {
	if len(b) == 0 || len(b) > len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") {
		return netip.Addr{}, errBadIP
	}
	if bytes.IndexByte(b, '%') >= 0 {
		return netip.Addr{}, errZone
	}
	// No zone (checked above), so the parsed Addr keeps no reference to the
	// string and converting without a copy is safe.
	ip, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil {
		return netip.Addr{}, errBadIP
	}
	return ip, nil
}

// ParsePort parses a port: a decimal number 1-65535 without leading zeros
// or sign.
func ParsePort(b []byte) (uint16, error) {
	if len(b) == 0 || len(b) > 5 || b[0] == '0' {
		return 0, errBadPort
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errBadPort
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, errBadPort
	}
	return uint16(n), nil
}
