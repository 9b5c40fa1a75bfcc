package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/gateway/target"
)

// Config is everything the gateway can be told. Each field is set by the
// scrapegate flag its comment names; docs/flags.md says what each one means.
// A program that embeds the gateway starts from DefaultConfig, changes
// fields, and has New check them (Validate).
type Config struct {
	Listen     string         // -listen
	AllowCIDRs []netip.Prefix // -allow-cidrs

	// Targets: what the gateway may connect to (see target.Policy).
	DenyCIDRs         []netip.Prefix    // -deny-cidrs
	AllowPorts        target.PortRanges // -allow-ports
	DenyPorts         target.PortRanges // -deny-ports
	AllowPathPrefixes []string          // -allow-path-prefixes
	DenyPathPrefixes  []string          // -deny-path-prefixes

	// ForwardRequestHeaders are caller headers pods get besides a scrape's
	// (-forward-request-headers).
	ForwardRequestHeaders []string

	// Callers: who may use the gateway.
	AllowCallerCIDRs      []netip.Prefix // -allow-caller-cidrs
	AuthBearerTokensFile  string         // -auth-bearer-tokens-file
	AuthHTPasswdFile      string         // -auth-htpasswd-file
	MetricsRequireAuth    bool           // -metrics-require-auth
	TLSCertFile           string         // -tls-cert-file
	TLSKeyFile            string         // -tls-key-file
	TLSSelfSigned         bool           // -tls-self-signed; never for a node agent
	TLSAllowPlain         bool           // -tls-allow-plain; never for a node agent
	TLSClientCAFile       string         // -tls-client-ca-file
	TLSClientAllowedNames []string       // -tls-client-allowed-names
	ReloadInterval        time.Duration  // -reload-interval

	// Abuse limits.
	MaxRequestHeaderBytes int           // -max-request-header-bytes
	MaxURIBytes           int           // -max-uri-bytes
	MaxConnsPerCaller     int           // -max-conns-per-caller
	CallerRateLimit       float64       // -caller-rate-limit
	CallerRateBurst       int           // -caller-rate-burst
	ClientReadTimeout     time.Duration // -client-read-timeout
	ClientIdleTimeout     time.Duration // -client-idle-timeout
	MaxResponseBodyBytes  int64         // -max-response-body-bytes

	// HTTPS to targets.
	TargetTLSCAFile             string // -target-tls-ca-file
	TargetTLSInsecureSkipVerify bool   // -target-tls-insecure-skip-verify
	TargetTLSServerName         string // -target-tls-server-name
	TargetTLSCertFile           string // -target-tls-cert-file
	TargetTLSKeyFile            string // -target-tls-key-file

	// Kubernetes: discovery, the live-pod policy, the kubelet proxy and the
	// API server proxy.
	Kubernetes                bool     // -kubernetes
	Kubeconfig                string   // -kubeconfig
	KubernetesNamespaces      []string // -kubernetes-namespaces
	KubernetesPodSelector     string   // -kubernetes-pod-selector
	TargetPolicy              string   // -target-policy: "", TargetPolicyCIDR or TargetPolicyKubernetes
	AdvertiseAddress          string   // -advertise-address
	KubeletCAFile             string   // -kubelet-ca-file
	KubeletTokenFile          string   // -kubelet-token-file
	KubeletInsecureSkipVerify bool     // -kubelet-insecure-skip-verify
	ControlPlaneCAFile        string   // -control-plane-ca-file
	ControlPlaneTokenFile     string   // -control-plane-token-file
	KubernetesClusterDomain   string   // -kubernetes-cluster-domain
	TargetTokenFile           string   // -target-token-file
	TargetTokenNamespaces     []string // -target-token-namespaces

	// The control-plane components (/components/, components.go) and the
	// node agents that reach those bound to 127.0.0.1.
	KubeSchedulerSelector          string // -kube-scheduler-selector
	KubeSchedulerPort              uint16 // -kube-scheduler-port
	KubeControllerManagerSelector  string // -kube-controller-manager-selector
	KubeControllerManagerPort      uint16 // -kube-controller-manager-port
	EtcdSelector                   string // -etcd-selector
	EtcdPort                       uint16 // -etcd-port
	KubeProxySelector              string // -kube-proxy-selector
	KubeProxyPort                  uint16 // -kube-proxy-port
	ControlPlaneNodeSelector       string // -control-plane-node-selector
	ControlPlaneInsecureSkipVerify bool   // -control-plane-insecure-skip-verify
	NodeAgentPort                  uint16 // -node-agent-port; 0: components are dialled directly
	NodeAgentTokenFile             string // -node-agent-token-file
	NodeAgentCAFile                string // -node-agent-ca-file
	NodeAgentCertFile              string // -node-agent-cert-file
	NodeAgentKeyFile               string // -node-agent-key-file

	// NodeAgent, set only by `scrapegate agent`, makes the gateway a node
	// agent (agent.go): it then serves only /{component}/{path} for the
	// components on 127.0.0.1, /metrics, /healthz and /readyz.
	NodeAgent *NodeAgentConfig

	MaxInflight             int           // -max-inflight
	MaxConnsPerEndpoint     int           // -max-conns-per-endpoint
	MaxEndpoints            int           // -max-endpoints
	EndpointIdleTTL         time.Duration // -endpoint-idle-ttl
	UpstreamIdleConnTimeout time.Duration // -upstream-idle-conn-timeout
	DialTimeout             time.Duration // -dial-timeout

	ScrapeTimeoutDefault time.Duration // -scrape-timeout-default
	ScrapeTimeoutMax     time.Duration // -scrape-timeout-max
	ScrapeTimeoutMargin  time.Duration // -scrape-timeout-margin

	DrainDelay      time.Duration // -drain-delay
	ShutdownTimeout time.Duration // -shutdown-timeout

	LogFormat string // -log-format: "json" or "console"
	LogLevel  string // -log-level
	AccessLog bool   // -access-log
	Pprof     string // -pprof: the admin address; "": no profiles
}

// DefaultConfig returns the defaults every flag starts from.
func DefaultConfig() Config {
	allow, err := target.ParseCIDRs(target.DefaultAllowCIDRs)
	if err != nil {
		panic("BUG: cannot parse DefaultAllowCIDRs: " + err.Error())
	}
	var denyPorts target.PortRanges
	if err := denyPorts.Set(target.DefaultDenyPorts); err != nil {
		panic("BUG: cannot parse DefaultDenyPorts: " + err.Error())
	}
	comps := kube.DefaultComponents()
	return Config{
		Listen:                  ":8080",
		AllowCIDRs:              allow,
		DenyPorts:               denyPorts,
		MaxInflight:             1000,
		MaxConnsPerEndpoint:     4,
		MaxEndpoints:            50000,
		EndpointIdleTTL:         10 * time.Minute,
		UpstreamIdleConnTimeout: 2 * time.Minute,
		DialTimeout:             3 * time.Second,
		ScrapeTimeoutDefault:    10 * time.Second,
		ScrapeTimeoutMax:        2 * time.Minute,
		ScrapeTimeoutMargin:     250 * time.Millisecond,
		DrainDelay:              5 * time.Second,
		ShutdownTimeout:         30 * time.Second,
		MetricsRequireAuth:      true,
		ReloadInterval:          5 * time.Second,
		MaxRequestHeaderBytes:   8 << 10,
		MaxURIBytes:             2 << 10,
		MaxConnsPerCaller:       1024,
		CallerRateLimit:         0, // off: one Prometheus scraping 10,000 pods every second sends 10,000 requests/s from one address
		CallerRateBurst:         10000,
		ClientReadTimeout:       10 * time.Second,
		ClientIdleTimeout:       5 * time.Minute,
		LogFormat:               "json",
		LogLevel:                "info",
		KubeletCAFile:           serviceAccountDir + "/ca.crt",
		KubeletTokenFile:        serviceAccountDir + "/token",
		ControlPlaneCAFile:      serviceAccountDir + "/ca.crt",
		ControlPlaneTokenFile:   serviceAccountDir + "/token",
		KubernetesClusterDomain: "cluster.local",

		KubeSchedulerSelector:         comps[0].Selector,
		KubeSchedulerPort:             comps[0].Port,
		KubeControllerManagerSelector: comps[1].Selector,
		KubeControllerManagerPort:     comps[1].Port,
		EtcdSelector:                  comps[2].Selector,
		EtcdPort:                      comps[2].Port,
		KubeProxySelector:             comps[3].Selector,
		KubeProxyPort:                 comps[3].Port,
		ControlPlaneNodeSelector:      kube.DefaultControlPlaneNodeSelector,
	}
}

// components are kube.DefaultComponents with the selectors and ports of
// -kube-scheduler-selector, -kube-scheduler-port and the like: each
// component's name is the prefix of its flags.
func (c *Config) components() []kube.Component {
	comps := kube.DefaultComponents()
	for i, f := range []struct {
		selector string
		port     uint16
	}{{c.KubeSchedulerSelector, c.KubeSchedulerPort}, {c.KubeControllerManagerSelector, c.KubeControllerManagerPort},
		{c.EtcdSelector, c.EtcdPort}, {c.KubeProxySelector, c.KubeProxyPort}} {
		comps[i].Selector, comps[i].Port = f.selector, f.port
	}
	return comps
}

// targetRules are the target flags, as the target policy takes them.
func (c *Config) targetRules() target.Rules {
	return target.Rules{
		AllowCIDRs:        c.AllowCIDRs,
		DenyCIDRs:         c.DenyCIDRs,
		AllowPorts:        c.AllowPorts,
		DenyPorts:         c.DenyPorts,
		AllowPathPrefixes: c.AllowPathPrefixes,
		DenyPathPrefixes:  c.DenyPathPrefixes,
	}
}

// serviceAccountDir is where Kubernetes mounts a pod's service-account
// token and the cluster CA.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Target policies (-target-policy).
const (
	TargetPolicyCIDR       = "cidr"
	TargetPolicyKubernetes = "kubernetes"
)

// EffectiveTargetPolicy is -target-policy, or its default: kubernetes with
// -kubernetes, cidr without.
func (c *Config) EffectiveTargetPolicy() string {
	switch {
	case c.TargetPolicy != "":
		return c.TargetPolicy
	case c.Kubernetes:
		return TargetPolicyKubernetes
	}
	return TargetPolicyCIDR
}

// ConfigError is one problem of a Config, named by the flag that sets the
// field at fault, so that scrapegate can say where the value came from.
type ConfigError struct {
	Flag string // without the dash
	Msg  string
}

func (e *ConfigError) Error() string { return "-" + e.Flag + ": " + e.Msg }

// Validate checks values that each parse but make no sense, alone or
// together. It returns nil, or errors.Join of one *ConfigError per problem.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flagName, format string, args ...any) {
		errs = append(errs, &ConfigError{Flag: flagName, Msg: fmt.Sprintf(format, args...)})
	}
	if !isListenAddr(c.Listen) {
		bad("listen", "%q is not host:port with an IP address or DNS name (or nothing) and a port 0-65535; write one such as :8080 or 127.0.0.1:8080", c.Listen)
	}
	if len(c.AllowCIDRs) == 0 {
		bad("allow-cidrs", "at least one CIDR is required")
	}
	if c.MaxInflight < 1 {
		bad("max-inflight", "must be at least 1, got %d", c.MaxInflight)
	}
	if c.MaxEndpoints < 1 {
		bad("max-endpoints", "must be at least 1, got %d", c.MaxEndpoints)
	}
	if c.MaxConnsPerEndpoint < 1 {
		bad("max-conns-per-endpoint", "must be at least 1, got %d", c.MaxConnsPerEndpoint)
	}
	positive := func(flagName string, d time.Duration) {
		if d <= 0 {
			bad(flagName, "must be positive, got %s", d)
		}
	}
	positive("endpoint-idle-ttl", c.EndpointIdleTTL)
	positive("upstream-idle-conn-timeout", c.UpstreamIdleConnTimeout)
	positive("dial-timeout", c.DialTimeout)
	positive("scrape-timeout-default", c.ScrapeTimeoutDefault)
	positive("scrape-timeout-max", c.ScrapeTimeoutMax)
	if c.ScrapeTimeoutDefault > c.ScrapeTimeoutMax {
		bad("scrape-timeout-default", "%s exceeds -scrape-timeout-max %s", c.ScrapeTimeoutDefault, c.ScrapeTimeoutMax)
	}
	if c.ScrapeTimeoutMargin < 0 {
		bad("scrape-timeout-margin", "must not be negative, got %s", c.ScrapeTimeoutMargin)
	}
	if c.DrainDelay < 0 {
		bad("drain-delay", "must not be negative, got %s", c.DrainDelay)
	}
	positive("shutdown-timeout", c.ShutdownTimeout)
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("log-format", "want json or console, got %q", c.LogFormat)
	}
	if _, err := parseLogLevel(c.LogLevel); err != nil {
		bad("log-level", "%s", err)
	}
	for _, f := range []struct {
		flag     string
		prefixes []string
	}{{"allow-path-prefixes", c.AllowPathPrefixes}, {"deny-path-prefixes", c.DenyPathPrefixes}} {
		for _, p := range f.prefixes {
			if !strings.HasPrefix(p, "/") {
				bad(f.flag, "%q does not start with '/'; write /%s", p, p)
			} else if !target.IsPlainPath([]byte(p)) {
				// Only plain paths pass path rules, so a prefix that is not
				// plain would never match one.
				bad(f.flag, "%q is not a plain path: write letters, digits, '-._~' and single '/' separators, no %%-escapes, no segment ending in '.'", p)
			}
		}
	}
	for _, h := range c.ForwardRequestHeaders {
		switch {
		case !isToken(h):
			bad("forward-request-headers", "%q is not a header name", h)
		case neverForwarded(h):
			bad("forward-request-headers", "%s cannot be forwarded: it is hop-by-hop, set by the gateway, or a credential for it", h)
		}
	}
	certAndKey(bad, "tls-cert-file", c.TLSCertFile, "tls-key-file", c.TLSKeyFile)
	if c.TLSSelfSigned && (c.TLSCertFile != "" || c.TLSKeyFile != "") {
		bad("tls-self-signed", "cannot be combined with -tls-cert-file and -tls-key-file: serve either the certificate of those files or one made at start")
	}
	if c.TLSSelfSigned && c.NodeAgent != nil {
		bad("tls-self-signed", "is not for a node agent: the gateway verifies agents against -node-agent-ca-file, and a certificate made at start chains to none")
	}
	hasCert := c.TLSCertFile != "" || c.TLSSelfSigned
	if c.TLSClientCAFile != "" && !hasCert {
		orSelfSigned := ", or -tls-self-signed"
		if c.NodeAgent != nil {
			orSelfSigned = ""
		}
		bad("tls-client-ca-file", "client certificates need TLS on the listener: set -tls-cert-file and -tls-key-file%s", orSelfSigned)
	}
	if c.TLSAllowPlain {
		switch {
		case c.NodeAgent != nil:
			bad("tls-allow-plain", "is not for a node agent: plain HTTP would carry its callers' tokens in clear")
		case !hasCert:
			bad("tls-allow-plain", "serves plain HTTP beside TLS, and there is no TLS: set -tls-cert-file and -tls-key-file, or -tls-self-signed")
		case c.TLSClientCAFile != "":
			bad("tls-allow-plain", "cannot be combined with -tls-client-ca-file: mutual TLS asks every caller for a client certificate, and a plain connection cannot carry one")
		}
	}
	if len(c.TLSClientAllowedNames) > 0 && c.TLSClientCAFile == "" {
		bad("tls-client-allowed-names", "requires -tls-client-ca-file")
	}
	certAndKey(bad, "target-tls-cert-file", c.TargetTLSCertFile, "target-tls-key-file", c.TargetTLSKeyFile)
	if c.TargetTLSInsecureSkipVerify && (c.TargetTLSCAFile != "" || c.TargetTLSServerName != "") {
		bad("target-tls-insecure-skip-verify", "contradicts -target-tls-ca-file and -target-tls-server-name, which only matter when verifying")
	}
	positive("reload-interval", c.ReloadInterval)
	positive("client-read-timeout", c.ClientReadTimeout)
	positive("client-idle-timeout", c.ClientIdleTimeout)
	if c.MaxRequestHeaderBytes < 1024 {
		bad("max-request-header-bytes", "must be at least 1024, got %d", c.MaxRequestHeaderBytes)
	}
	if c.MaxURIBytes < 64 || c.MaxURIBytes > c.MaxRequestHeaderBytes {
		bad("max-uri-bytes", "must be between 64 and -max-request-header-bytes (%d), got %d", c.MaxRequestHeaderBytes, c.MaxURIBytes)
	}
	if c.MaxConnsPerCaller < 0 {
		bad("max-conns-per-caller", "must not be negative, got %d", c.MaxConnsPerCaller)
	}
	if !(c.CallerRateLimit >= 0) {
		bad("caller-rate-limit", "must not be negative, got %v", c.CallerRateLimit)
	}
	if c.CallerRateLimit > 0 && c.CallerRateBurst < 1 {
		bad("caller-rate-burst", "must be at least 1 when -caller-rate-limit is set, got %d", c.CallerRateBurst)
	}
	if c.MaxResponseBodyBytes < 0 {
		bad("max-response-body-bytes", "must not be negative, got %d", c.MaxResponseBodyBytes)
	}
	switch c.TargetPolicy {
	case "", TargetPolicyCIDR:
	case TargetPolicyKubernetes:
		if !c.Kubernetes {
			bad("target-policy", "kubernetes needs -kubernetes")
		}
	default:
		bad("target-policy", "want cidr or kubernetes, got %q", c.TargetPolicy)
	}
	if c.AdvertiseAddress != "" && !isHostPort(c.AdvertiseAddress) {
		bad("advertise-address", "want host:port with a DNS name or IP address and a port 1-65535, got %q", c.AdvertiseAddress)
	}
	if _, port, err := net.SplitHostPort(c.Pprof); c.Pprof != "" && (err != nil || port == "") {
		bad("pprof", "want host:port, e.g. 127.0.0.1:6060, got %q", c.Pprof)
	}
	if c.Kubernetes && c.KubeletTokenFile != "" && c.KubeletCAFile == "" && !c.KubeletInsecureSkipVerify {
		bad("kubelet-ca-file", "is empty: set it to the cluster CA, or set -kubelet-insecure-skip-verify, or turn /nodes/ off with -kubelet-token-file=")
	}
	if c.Kubernetes && c.ControlPlaneTokenFile != "" && c.ControlPlaneCAFile == "" {
		bad("control-plane-ca-file", "is empty: set it to the cluster CA, or turn /apiservers/ off with -control-plane-token-file=")
	}
	if !isDNSName(c.KubernetesClusterDomain) {
		bad("kubernetes-cluster-domain", "want a DNS name in lower case without a trailing dot, such as cluster.local, got %q", c.KubernetesClusterDomain)
	}
	c.validateTargetToken(bad)
	c.validateComponents(bad)
	kubeconfig := c.Kubeconfig
	if c.NodeAgent != nil {
		c.validateNodeAgent(bad)
		kubeconfig = "" // a node agent's TokenReviews use it
	}
	if !c.Kubernetes {
		for _, f := range []struct{ flag, value string }{
			{"kubeconfig", kubeconfig},
			{"kubernetes-namespaces", strings.Join(c.KubernetesNamespaces, ",")},
			{"kubernetes-pod-selector", c.KubernetesPodSelector},
			{"advertise-address", c.AdvertiseAddress},
			{"target-token-file", c.TargetTokenFile},
			{"target-token-namespaces", strings.Join(c.TargetTokenNamespaces, ",")},
			{"node-agent-port", nonZero(c.NodeAgentPort)},
			{"control-plane-insecure-skip-verify", nonZero(c.ControlPlaneInsecureSkipVerify)},
		} {
			if f.value != "" {
				bad(f.flag, "%q has no effect without -kubernetes; add -kubernetes", f.value)
			}
		}
	}
	if c.KubeletInsecureSkipVerify && c.KubeletCAFile != "" && c.KubeletCAFile != DefaultConfig().KubeletCAFile {
		bad("kubelet-insecure-skip-verify", "contradicts -kubelet-ca-file, which only matters when verifying")
	}
	return errors.Join(errs...)
}

// validateTargetToken checks -target-token-file and -target-token-namespaces:
// the token must be sendable somewhere, and must not be the gateway's own,
// which can list pods and read nodes/metrics.
func (c *Config) validateTargetToken(bad func(flagName, format string, args ...any)) {
	switch {
	case len(c.TargetTokenNamespaces) > 0 && c.TargetTokenFile == "":
		bad("target-token-namespaces", "%q needs -target-token-file, the token to send there", strings.Join(c.TargetTokenNamespaces, ","))
	case c.TargetTokenFile != "" && len(c.TargetTokenNamespaces) == 0:
		bad("target-token-file", "the token would never be sent: list the namespaces of the targets that may get it in -target-token-namespaces")
	}
	for _, ns := range c.TargetTokenNamespaces {
		if err := checkLabel("namespace", ns, false); err != nil {
			bad("target-token-namespaces", "%s", err)
		} else if len(c.KubernetesNamespaces) > 0 && !slices.Contains(c.KubernetesNamespaces, ns) {
			bad("target-token-namespaces", "%q is not watched (-kubernetes-namespaces=%s), so the token could never go there", ns, strings.Join(c.KubernetesNamespaces, ","))
		}
	}
	if c.TargetTokenFile == "" {
		return
	}
	file := filepath.Clean(c.TargetTokenFile)
	if c.KubeletTokenFile != "" && file == filepath.Clean(c.KubeletTokenFile) || file == serviceAccountDir+"/token" {
		bad("target-token-file", "%q must not be the gateway's own ServiceAccount token, which can list pods and read nodes/metrics; "+
			"give the scraper ServiceAccount's token (deploy/base)", c.TargetTokenFile)
	} else if c.ControlPlaneTokenFile != "" && file == filepath.Clean(c.ControlPlaneTokenFile) {
		bad("target-token-file", "%q must not be -control-plane-token-file, which the API servers accept; "+
			"give the scraper ServiceAccount's token (deploy/base)", c.TargetTokenFile)
	}
}

// validateComponents checks the components' selectors and ports, and the
// node agents' flags.
func (c *Config) validateComponents(bad func(flagName, format string, args ...any)) {
	for _, comp := range c.components() {
		if _, err := kube.ParseRequiredSelector(comp.Selector); err != nil {
			bad(comp.Name+"-selector", "%s", err)
		}
		if comp.Port == 0 {
			bad(comp.Name+"-port", "must be a port 1-65535, got 0")
		}
	}
	if _, err := kube.ParseRequiredSelector(c.ControlPlaneNodeSelector); err != nil {
		bad("control-plane-node-selector", "%s", err)
	}
	switch {
	case c.ControlPlaneInsecureSkipVerify && c.ControlPlaneTokenFile == "":
		bad("control-plane-insecure-skip-verify", "has no effect without -control-plane-token-file: without the token no https component is scraped")
	case c.ControlPlaneInsecureSkipVerify && c.NodeAgentPort != 0:
		bad("control-plane-insecure-skip-verify", "has no effect with -node-agent-port: the node agents, not the gateway, connect to the components")
	}
	if c.NodeAgentPort == 0 {
		for _, f := range []struct{ flag, value string }{
			{"node-agent-token-file", c.NodeAgentTokenFile},
			{"node-agent-ca-file", c.NodeAgentCAFile},
			{"node-agent-cert-file", c.NodeAgentCertFile},
			{"node-agent-key-file", c.NodeAgentKeyFile},
		} {
			if f.value != "" {
				bad(f.flag, "%q has no effect without -node-agent-port; set it to the node agents' port (10271)", f.value)
			}
		}
		return
	}
	if c.NodeAgentTokenFile == "" && c.NodeAgentCertFile == "" {
		bad("node-agent-port", "the node agents accept only authenticated callers: set -node-agent-token-file, or -node-agent-cert-file and -node-agent-key-file with -node-agent-ca-file")
	}
	certAndKey(bad, "node-agent-cert-file", c.NodeAgentCertFile, "node-agent-key-file", c.NodeAgentKeyFile)
	if c.NodeAgentCertFile != "" && c.NodeAgentCAFile == "" {
		bad("node-agent-cert-file", "a client certificate needs TLS to the node agents: set -node-agent-ca-file to the CA of their serving certificates")
	}
}

// certAndKey checks that a client or serving certificate's flags come as
// a pair.
func certAndKey(bad func(flagName, format string, args ...any), certFlag, cert, keyFlag, key string) {
	switch {
	case cert != "" && key == "":
		bad(certFlag, "%q needs -%s, its private key", cert, keyFlag)
	case key != "" && cert == "":
		bad(keyFlag, "%q needs -%s, the certificate it is the key of", key, certFlag)
	}
}

// nonZero is v as a flag value, or "" for the zero value: whether a flag
// was set to something.
func nonZero[T comparable](v T) string {
	var zero T
	if v == zero {
		return ""
	}
	return fmt.Sprint(v)
}

// isDNSName reports whether s is a DNS name of RFC 1123 labels in lower
// case, without a trailing dot: what a cluster domain is.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if checkLabel("label", label, false) != nil {
			return false
		}
	}
	return true
}

// isHostPort reports whether s is host:port with a DNS name or an IP
// address (IPv6 in brackets) and a port 1-65535: what Prometheus can put in
// __address__ and reach.
func isHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && isHost(host) && isPort(port) && port != "0"
}

// isListenAddr reports whether s is an address to listen on: host:port
// with an IP address, a DNS name or nothing (every address) and a port
// 0-65535 (0: any free one).
func isListenAddr(s string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && (host == "" || isHost(host)) && isPort(port)
}

// isPort reports whether s is a decimal port 0-65535 without leading zeros.
func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535 && strconv.Itoa(n) == s
}

// isHost reports whether s is an IP address or a DNS name. A name's last
// label is never all digits (RFC 3696 section 2), so 256.0.0.1 is neither.
func isHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	labels := strings.Split(strings.TrimSuffix(s, "."), ".")
	for _, label := range labels {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return strings.ContainsFunc(labels[len(labels)-1], func(c rune) bool { return c < '0' || c > '9' })
}
