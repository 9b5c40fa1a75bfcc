package gateway

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/scrapegate/scrapegate/gateway/target"
)

// Config is everything the gateway can be told. Every field is a flag; see
// RegisterFlags for what each one means.
type Config struct {
	Listen     string
	AllowCIDRs []netip.Prefix

	// Targets: what the gateway may connect to (see target.Policy).
	DenyCIDRs         []netip.Prefix
	AllowPorts        target.PortRanges
	DenyPorts         target.PortRanges
	AllowPathPrefixes []string
	DenyPathPrefixes  []string

	// ForwardRequestHeaders are caller headers pods get besides a scrape's.
	ForwardRequestHeaders []string

	// Callers: who may use the gateway.
	AllowCallerCIDRs      []netip.Prefix
	AuthBearerTokensFile  string
	AuthHTPasswdFile      string
	MetricsRequireAuth    bool
	TLSCertFile           string
	TLSKeyFile            string
	TLSClientCAFile       string
	TLSClientAllowedNames []string
	ReloadInterval        time.Duration

	// Abuse limits.
	MaxRequestHeaderBytes int
	MaxURIBytes           int
	MaxConnsPerCaller     int
	CallerRateLimit       float64
	CallerRateBurst       int
	ClientReadTimeout     time.Duration
	ClientIdleTimeout     time.Duration
	MaxResponseBodyBytes  int64

	// HTTPS to targets.
	TargetTLSCAFile             string
	TargetTLSInsecureSkipVerify bool
	TargetTLSServerName         string
	TargetTLSCertFile           string
	TargetTLSKeyFile            string

	// Kubernetes: discovery, the live-pod policy and the kubelet proxy.
	Kubernetes                bool
	Kubeconfig                string
	KubernetesNamespaces      []string
	KubernetesPodSelector     string
	TargetPolicy              string
	AdvertiseAddress          string
	KubeletCAFile             string
	KubeletTokenFile          string
	KubeletInsecureSkipVerify bool

	MaxInflight             int
	MaxConnsPerEndpoint     int
	MaxEndpoints            int
	EndpointIdleTTL         time.Duration
	UpstreamIdleConnTimeout time.Duration
	DialTimeout             time.Duration

	ScrapeTimeoutDefault time.Duration
	ScrapeTimeoutMax     time.Duration
	ScrapeTimeoutMargin  time.Duration

	DrainDelay      time.Duration
	ShutdownTimeout time.Duration

	LogFormat string
	LogLevel  string
	AccessLog bool
	// Pprof is the -pprof admin address; empty: no profiles.
	Pprof string
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
	}
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

// EnvPrefix is prepended to a flag's name in upper snake case to form the
// environment variable that sets it: --allow-cidrs is SCRAPEGATE_ALLOW_CIDRS.
const EnvPrefix = "SCRAPEGATE_"

// ErrVersion is what ParseFlags returns when -version was asked for.
var ErrVersion = errors.New("version requested")

// ErrHelpMarkdown is what ParseFlags returns when -help-markdown was asked
// for: print WriteFlagsMarkdown's page and exit.
var ErrHelpMarkdown = errors.New("flags as Markdown requested")

// ParseFlags builds a Config from the command line and the environment. A
// flag given on the command line wins over its environment variable, which
// wins over the default. Each error is one line that names the flag (and the
// variable), the value and what is expected. It returns flag.ErrHelp when -h
// or --help was asked for, ErrVersion for -version and ErrHelpMarkdown for
// -help-markdown.
func ParseFlags(name string, args []string, lookupEnv func(string) (string, bool), output io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg.registerFlags(fs)
	version, helpMarkdown := registerCommandFlags(fs)
	// The flag package words a bad value as `invalid value "3" for flag
	// -dial-timeout: parse error`; describedValue says what is expected.
	fs.VisitAll(func(f *flag.Flag) { f.Value = &describedValue{Value: f.Value, flag: f.Name} })
	// The flag package would print its error and the whole usage text on
	// any mistake; print the usage only when asked for, and return errors.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(output, "Usage of %s:\n\nEvery flag can also be set with the environment variable %s<FLAG_IN_UPPER_SNAKE_CASE>.\n\n", name, EnvPrefix)
			usage := usageFlagSet(name)
			usage.SetOutput(output)
			usage.PrintDefaults()
			return cfg, err
		}
		fs.VisitAll(func(f *flag.Flag) {
			if v := f.Value.(*describedValue); v.failed != nil {
				err = v.failed
			}
		})
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: all settings are flags, such as -listen=:8080", fs.Arg(0))
	}
	if *helpMarkdown {
		return cfg, ErrHelpMarkdown
	}
	if *version {
		return cfg, ErrVersion
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	fromEnv := map[string]string{}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := EnvVarName(f.Name)
		v, ok := lookupEnv(env)
		if !ok || onCommandLine[f.Name] || f.Name == "version" || f.Name == "help-markdown" {
			return
		}
		fromEnv[f.Name] = env
		if err := fs.Set(f.Name, v); err != nil {
			if fe := (*flagError)(nil); errors.As(err, &fe) {
				fe.env = env
			}
			errs = append(errs, err)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	for _, fe := range cfg.validate() {
		fe.env = fromEnv[fe.flag]
		errs = append(errs, fe)
	}
	return cfg, errors.Join(errs...)
}

// registerCommandFlags registers the flags that are requests, not settings:
// they are not in Config and not read from the environment.
func registerCommandFlags(fs *flag.FlagSet) (version, helpMarkdown *bool) {
	version = fs.Bool("version", false, "Print the version, the VCS revision and the Go version scrapegate was built from, and exit. Not read from the environment.")
	helpMarkdown = fs.Bool("help-markdown", false, "Print every flag as Markdown (docs/flags.md) and exit.")
	return version, helpMarkdown
}

// usageFlagSet returns every flag with its default, as the flag package's
// own values, whose types it names: what -h and -help-markdown describe.
func usageFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	defaults := DefaultConfig()
	defaults.registerFlags(fs)
	registerCommandFlags(fs)
	return fs
}

// flagError is a bad value of one flag, worded for whoever set it.
type flagError struct {
	flag string // without the dash
	env  string // the environment variable the value came from; "": the command line
	msg  string
}

func (e *flagError) Error() string {
	if e.env != "" {
		return "-" + e.flag + " (from " + e.env + "): " + e.msg
	}
	return "-" + e.flag + ": " + e.msg
}

// describedValue is a flag's Value whose Set errors say what the flag
// expects. It keeps its last error: fs.Parse rewords errors as strings.
type describedValue struct {
	flag.Value
	flag   string
	failed *flagError
}

func (v *describedValue) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		v.failed = &flagError{flag: v.flag, msg: describeBadValue(v.Value, s, err)}
		return v.failed
	}
	return nil
}

// IsBoolFlag lets boolean flags be given without a value, as -kubernetes.
func (v *describedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// describeBadValue says why s is not a value of v and what would be. The
// flag package's own values fail with a bare "parse error"; the gateway's
// lists name the item at fault.
func describeBadValue(v flag.Value, s string, err error) string {
	getter, ok := v.(flag.Getter)
	if !ok {
		return err.Error()
	}
	switch getter.Get().(type) {
	case time.Duration:
		if _, err := strconv.ParseFloat(s, 64); err == nil {
			return fmt.Sprintf("%q is not a duration; write %ss", s, s)
		}
		return fmt.Sprintf("%q is not a duration; write one such as 250ms, 10s or 2m", s)
	case bool:
		return fmt.Sprintf("%q is not a boolean; write true or false", s)
	case int, int64:
		if _, err := strconv.ParseInt(s, 0, 64); errors.Is(err, strconv.ErrRange) {
			return fmt.Sprintf("%q is out of range", s)
		}
		return fmt.Sprintf("%q is not a whole number; write one such as 1000", s)
	case float64:
		if _, err := strconv.ParseFloat(s, 64); errors.Is(err, strconv.ErrRange) {
			return fmt.Sprintf("%q is out of range", s)
		}
		return fmt.Sprintf("%q is not a number; write one such as 5000 or 0.5", s)
	}
	return fmt.Sprintf("%q: %s", s, err)
}

// EnvVarName returns the environment variable for a flag name.
func EnvVarName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (c *Config) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "TCP address to serve scrapes, /metrics, /healthz and /readyz on: host:port with an IP address, a DNS name or no host (every address) "+
		"and a port 0-65535, e.g. :8080 or 127.0.0.1:8080.")
	fs.Var((*cidrList)(&c.AllowCIDRs), "allow-cidrs", "Comma-separated CIDRs that targets must fall into. "+
		"Special ranges are refused unless a CIDR inside one is listed explicitly (0.0.0.0/0, ::/0 or a default range does not unlock them): "+
		"loopback, link-local (169.254.0.0/16, fe80::/10), cloud metadata and platform addresses (Alibaba 100.100.100.200, Azure 168.63.129.16, "+
		"192.0.0.0/24 with Oracle's 192.0.0.192, AWS fd00:ec2::/32, GCP fd20:ce::254, Oracle fd00:c1::a9fe:a9fe, Scaleway fd00:42::42, Akamai fd00:a9fe:a9fe::1), "+
		"unspecified, broadcast, multicast, NAT64 and SIIT addresses; docs/security.md lists them with their sources. Narrow it to your pod CIDR(s).")
	fs.Var((*cidrList)(&c.DenyCIDRs), "deny-cidrs", "Comma-separated CIDRs that targets must never fall into, whatever -allow-cidrs says: e.g. the nodes' and the API server's addresses.")
	fs.Var(&c.AllowPorts, "allow-ports", "Comma-separated target ports or ranges (9100,8080-8090) that targets must use. Empty: any port.")
	fs.Var(&c.DenyPorts, "deny-ports", "Comma-separated target ports or ranges that are always refused, whatever -allow-ports says. "+
		"The default holds etcd's, the API server's and the kubelet's ports; setting it replaces the default, and \"\" allows them.")
	fs.Var((*stringList)(&c.AllowPathPrefixes), "allow-path-prefixes", "Comma-separated path prefixes (/metrics,/federate) that target paths must start with, "+
		"matched case-sensitively at a '/' boundary (/metrics admits /metrics/x, not /metricsx). With any path rule set, only plain paths pass. Empty: any path.")
	fs.Var((*stringList)(&c.DenyPathPrefixes), "deny-path-prefixes", "Comma-separated path prefixes that are always refused, whatever -allow-path-prefixes says: e.g. /debug/pprof. "+
		"Matched as plain string prefixes ignoring case and a trailing '/', so /actuator/env also refuses /actuator/env.json, /actuator/envx and /ACTUATOR/ENV.")

	fs.Var((*stringList)(&c.ForwardRequestHeaders), "forward-request-headers", "Comma-separated names of caller headers (X-Tenant) that pods also get. "+
		"Pods get only a scrape's own headers (Accept, Accept-Encoding, User-Agent, X-Prometheus-Scrape-Timeout-Seconds) and these; every other caller header is dropped. "+
		"Kubelets get only a scrape's. Hop-by-hop headers, Host, Content-Length, Via, Authorization and Cookie cannot be named.")

	fs.Var((*cidrList)(&c.AllowCallerCIDRs), "allow-caller-cidrs", "Comma-separated CIDRs that callers' source addresses must fall into; connections from elsewhere are closed at once. "+
		"Empty: any caller. Behind a NodePort with externalTrafficPolicy: Cluster callers appear as node addresses.")
	fs.StringVar(&c.AuthBearerTokensFile, "auth-bearer-tokens-file", c.AuthBearerTokensFile, "File of bearer tokens callers may present (Authorization: Bearer), one per line; '#' starts a comment. "+
		"Re-read when it changes. Prometheus: authorization: {credentials_file: ...}.")
	fs.StringVar(&c.AuthHTPasswdFile, "auth-htpasswd-file", c.AuthHTPasswdFile, "htpasswd file (bcrypt only: htpasswd -B) of users callers may authenticate as with HTTP basic auth. Re-read when it changes. "+
		"With -auth-bearer-tokens-file also set, either credential is accepted.")
	fs.BoolVar(&c.MetricsRequireAuth, "metrics-require-auth", c.MetricsRequireAuth, "Require the same authentication for /metrics as for scrapes. /healthz and /readyz are always open.")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", c.TLSCertFile, "PEM certificate (chain) to serve TLS 1.2 or later with; requires -tls-key-file. Re-read when it changes. Empty: plain HTTP.")
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", c.TLSKeyFile, "PEM private key of -tls-cert-file.")
	fs.StringVar(&c.TLSClientCAFile, "tls-client-ca-file", c.TLSClientCAFile, "PEM CA bundle: when set, every caller must present a client certificate it signed (mTLS). Requires -tls-cert-file. Re-read when it changes. "+
		"With a token or htpasswd file also set, a caller needs both the certificate and the credentials.")
	fs.Var((*stringList)(&c.TLSClientAllowedNames), "tls-client-allowed-names", "Comma-separated names a client certificate must carry one of (subject CN, DNS, URI or email SAN; exact match); requires -tls-client-ca-file. "+
		"Empty: any certificate -tls-client-ca-file signed.")
	fs.DurationVar(&c.ReloadInterval, "reload-interval", c.ReloadInterval, "How often to check the token, htpasswd, certificate and CA files for changes.")

	fs.IntVar(&c.MaxRequestHeaderBytes, "max-request-header-bytes", c.MaxRequestHeaderBytes, "Maximum size of a request's line and headers; larger requests get 431. At least 1024.")
	fs.IntVar(&c.MaxURIBytes, "max-uri-bytes", c.MaxURIBytes, "Maximum length of a request target; longer ones get 414. From 64 to -max-request-header-bytes.")
	fs.IntVar(&c.MaxConnsPerCaller, "max-conns-per-caller", c.MaxConnsPerCaller, "Maximum open connections from one caller address (IPv6: one /64); connections past it are closed at once. 0: no limit.")
	fs.Float64Var(&c.CallerRateLimit, "caller-rate-limit", c.CallerRateLimit, "Requests per second one caller address (IPv6: one /64) may send, on average; past it the gateway answers 429 with Retry-After. "+
		"/healthz and /readyz are exempt. 0: no limit. A Prometheus sends about its targets divided by its scrape interval per second (10,000 pods every 15s: 667/s); "+
		"where callers other than your Prometheus servers can connect, set it to twice that of the busiest one.")
	fs.IntVar(&c.CallerRateBurst, "caller-rate-burst", c.CallerRateBurst, "Requests one caller may send at once above -caller-rate-limit.")
	fs.DurationVar(&c.ClientReadTimeout, "client-read-timeout", c.ClientReadTimeout, "Maximum time to receive a request's headers, counted from accepting a new connection (on a TLS listener from the end of its handshake, "+
		"which gets this long too: up to twice it in all) and on a kept-alive connection from the request's first byte. Slow callers are disconnected.")
	fs.DurationVar(&c.ClientIdleTimeout, "client-idle-timeout", c.ClientIdleTimeout, "Close a caller's keep-alive connection after it has been idle this long. Keep it above the scrape interval.")
	fs.Int64Var(&c.MaxResponseBodyBytes, "max-response-body-bytes", c.MaxResponseBodyBytes, "Refuse (502) or abort a pod's response whose body exceeds this many bytes. 0: no limit.")

	fs.StringVar(&c.TargetTLSCAFile, "target-tls-ca-file", c.TargetTLSCAFile, "PEM CA bundle to verify https targets with. Empty: the system's roots. Re-read when it changes.")
	fs.BoolVar(&c.TargetTLSInsecureSkipVerify, "target-tls-insecure-skip-verify", c.TargetTLSInsecureSkipVerify, "Do not verify https targets' certificates at all. Pods' self-signed certificates need it, "+
		"but anyone who can intercept pod traffic can then read and forge scrapes. Cannot be combined with -target-tls-ca-file or -target-tls-server-name.")
	fs.StringVar(&c.TargetTLSServerName, "target-tls-server-name", c.TargetTLSServerName, "Server name (SNI) to send to https targets and to verify their certificates against. Empty: no SNI, verify the target IP.")
	fs.StringVar(&c.TargetTLSCertFile, "target-tls-cert-file", c.TargetTLSCertFile, "PEM client certificate to present to https targets that require mTLS; requires -target-tls-key-file. Re-read when it changes.")
	fs.StringVar(&c.TargetTLSKeyFile, "target-tls-key-file", c.TargetTLSKeyFile, "PEM private key of -target-tls-cert-file.")

	fs.BoolVar(&c.Kubernetes, "kubernetes", c.Kubernetes, "Watch pods and nodes through the Kubernetes API (the pod's service account, or -kubeconfig). "+
		"Serves /sd/pods and /sd/nodes (Prometheus http_sd) and /nodes/{node}/{kubelet metrics path}, and makes -target-policy default to kubernetes. "+
		"/readyz reports 503 until the first list of pods and nodes has arrived.")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig file to reach the API server with, instead of the pod's service account.")
	fs.Var((*stringList)(&c.KubernetesNamespaces), "kubernetes-namespaces", "Comma-separated namespaces to watch pods in. Empty: every namespace.")
	fs.StringVar(&c.KubernetesPodSelector, "kubernetes-pod-selector", c.KubernetesPodSelector, "Label selector (app=foo,tier!=db) that watched pods must match. Empty: every pod.")
	fs.StringVar(&c.TargetPolicy, "target-policy", c.TargetPolicy, "cidr: any target the CIDR, port and path rules allow. "+
		"kubernetes: additionally, a /pods/ or proxy target must be the IP of a pod that exists and has not terminated, and one of its container ports or its prometheus.io/port annotation. "+
		"Empty: kubernetes with -kubernetes, else cidr; kubernetes needs -kubernetes.")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", c.AdvertiseAddress, "host:port Prometheus reaches the gateway at, put in /sd/ documents as __address__ (a node's address and the NodePort, or the load balancer's). "+
		"Empty: the Host the /sd/ request was sent to.")
	fs.StringVar(&c.KubeletCAFile, "kubelet-ca-file", c.KubeletCAFile, "PEM CA bundle to verify kubelets' serving certificates with (the cluster CA). Re-read when it changes.")
	fs.StringVar(&c.KubeletTokenFile, "kubelet-token-file", c.KubeletTokenFile, "Bearer token sent to kubelets for /nodes/ scrapes, and to nothing else; re-read when it changes, as projected tokens rotate. "+
		"Empty: no /nodes/ proxy (and no kubelet CA loaded).")
	fs.BoolVar(&c.KubeletInsecureSkipVerify, "kubelet-insecure-skip-verify", c.KubeletInsecureSkipVerify, "Do not verify kubelets' certificates: needed when kubelets serve self-signed ones (no serverTLSBootstrap), "+
		"but then whoever can intercept node traffic gets the token. Cannot be combined with a -kubelet-ca-file other than the default.")

	fs.IntVar(&c.MaxInflight, "max-inflight", c.MaxInflight, "Maximum upstream scrapes in flight at once, bodies included. "+
		"Past it the gateway answers 503 with Retry-After at once instead of queueing.")
	fs.IntVar(&c.MaxConnsPerEndpoint, "max-conns-per-endpoint", c.MaxConnsPerEndpoint, "Maximum connections to one pod endpoint (ip:port). "+
		"A scrape that finds all of them busy waits for one until its deadline.")
	fs.IntVar(&c.MaxEndpoints, "max-endpoints", c.MaxEndpoints, "Maximum pod endpoints (ip:port, plain or TLS) with a connection pool, about 6 KiB each with an idle connection. "+
		"Past it an endpoint that never answered makes room, or scrapes of new endpoints get 503 until idle ones are dropped (-endpoint-idle-ttl).")
	fs.DurationVar(&c.EndpointIdleTTL, "endpoint-idle-ttl", c.EndpointIdleTTL, "Forget a pod endpoint's connection pool after it has not been scraped for this long, "+
		"so pod churn does not accumulate pools. Keep it above the longest scrape interval.")
	fs.DurationVar(&c.UpstreamIdleConnTimeout, "upstream-idle-conn-timeout", c.UpstreamIdleConnTimeout, "Close an idle connection to a pod after this long, or after -endpoint-idle-ttl if that is shorter. "+
		"Keep it above the scrape interval so each scrape reuses the previous one's connection.")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "Maximum time to establish a TCP connection to a pod (also bounded by the scrape deadline).")
	fs.DurationVar(&c.ScrapeTimeoutDefault, "scrape-timeout-default", c.ScrapeTimeoutDefault, "Scrape deadline when the request has no X-Prometheus-Scrape-Timeout-Seconds header.")
	fs.DurationVar(&c.ScrapeTimeoutMax, "scrape-timeout-max", c.ScrapeTimeoutMax, "Upper bound on any scrape deadline, whatever the header asks for.")
	fs.DurationVar(&c.ScrapeTimeoutMargin, "scrape-timeout-margin", c.ScrapeTimeoutMargin, "Subtracted from X-Prometheus-Scrape-Timeout-Seconds so the gateway answers (504) "+
		"before Prometheus gives up; never more than half the timeout.")
	fs.DurationVar(&c.DrainDelay, "drain-delay", c.DrainDelay, "On SIGTERM, how long /readyz reports 503 while still serving, so load balancers stop sending traffic before the listener closes.")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "After the drain delay, how long in-flight scrapes may take to finish before the process exits anyway.")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "Log format: json (to stderr) or console (human-readable).")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "Minimum log level: debug, info, warn or error.")
	fs.StringVar(&c.Pprof, "pprof", c.Pprof, "Admin address (e.g. 127.0.0.1:6060) to serve Go's runtime profiles on, at /debug/pprof/, for finding where CPU and memory go. "+
		"Unauthenticated and separate from -listen: keep it on loopback. Empty: off.")
	fs.BoolVar(&c.AccessLog, "access-log", c.AccessLog, "Log every request at info level: method, target, caller, status and time until the response headers.")
}

// flagGroups puts every flag, in order, into one of the tables of
// docs/flags.md (WriteFlagsMarkdown). Intros link relative to docs/.
var flagGroups = []struct {
	title, intro string
	flags        []string
}{
	{"Listener and callers", "", []string{"listen", "allow-caller-cidrs", "max-conns-per-caller", "caller-rate-limit", "caller-rate-burst",
		"max-request-header-bytes", "max-uri-bytes", "client-read-timeout", "client-idle-timeout"}},
	{"Authentication and TLS", "See [security.md](security.md).", []string{"auth-bearer-tokens-file", "auth-htpasswd-file", "metrics-require-auth",
		"tls-cert-file", "tls-key-file", "tls-client-ca-file", "tls-client-allowed-names", "reload-interval"}},
	{"Target policy flags", "See [Target policy](routes.md#target-policy).", []string{"allow-cidrs", "deny-cidrs", "allow-ports", "deny-ports",
		"allow-path-prefixes", "deny-path-prefixes", "forward-request-headers"}},
	{"HTTPS to pods", "See [HTTPS to pods](routes.md#https-to-pods).", []string{"target-tls-ca-file", "target-tls-server-name",
		"target-tls-insecure-skip-verify", "target-tls-cert-file", "target-tls-key-file"}},
	{"Kubernetes", "See [kubernetes.md](kubernetes.md). `--kubeconfig`, `--kubernetes-namespaces`, `--kubernetes-pod-selector`, " +
		"`--advertise-address` and `--target-policy=kubernetes` need `--kubernetes`; the kubelet flags take effect only with it.",
		[]string{"kubernetes", "kubeconfig", "kubernetes-namespaces", "kubernetes-pod-selector", "target-policy", "advertise-address",
			"kubelet-ca-file", "kubelet-token-file", "kubelet-insecure-skip-verify"}},
	{"Upstream connections and deadlines", "", []string{"max-inflight", "max-endpoints", "max-conns-per-endpoint", "max-response-body-bytes",
		"endpoint-idle-ttl", "upstream-idle-conn-timeout", "dial-timeout", "scrape-timeout-default", "scrape-timeout-max", "scrape-timeout-margin"}},
	{"Lifecycle and logging", "See [operations.md](operations.md).", []string{"drain-delay", "shutdown-timeout", "log-format", "log-level",
		"access-log", "pprof", "version", "help-markdown"}},
}

const flagsMarkdownIntro = `# Flags

<!-- Generated by ` + "`scrapegate -help-markdown`" + ` (make docs) from gateway/config.go: edit the flags there, not this file. -->

Every flag but ` + "`--version` and `--help-markdown`" + ` (requests, not settings) can also be set with
` + "`SCRAPEGATE_<FLAG_IN_UPPER_SNAKE_CASE>`: `--allow-cidrs` is `SCRAPEGATE_ALLOW_CIDRS`" + `. The command
line wins over the environment, which wins over the default. An invalid value or combination, from
either, stops the gateway before it logs anything, with exit code 2 and one line on stderr
per problem naming the flag (and the variable), the value and what is expected:
` + "`scrapegate: -dial-timeout: \"3\" is not a duration; write 3s`" + `. Durations use Go syntax:
` + "`250ms`, `10s`, `2m`" + `. Lists are comma-separated. Files that are *re-read when they change* are
checked every ` + "`--reload-interval`" + ` and put in force when their contents change; a file that
cannot be read or parsed then keeps the last good one in force and logs an error (at
startup it is fatal). One dash or two are the same: ` + "`-listen`, `--listen`" + `.
` + "`scrapegate -h`" + ` prints the same flags as plain text.
`

// flagReference is a flag's name in a help text, to be set in code type.
var flagReference = regexp.MustCompile(`(^|[\s(])-([a-z][a-z0-9-]*[a-z0-9])`)

// markdownEscaper keeps Markdown from reading a help text's own characters
// as formatting: __address__ is not bold, a '|' ends no table cell.
var markdownEscaper = strings.NewReplacer(`\`, `\\`, "`", "\\`", `*`, `\*`, `_`, `\_`, `|`, `\|`, `<`, `&lt;`, `>`, `&gt;`)

// WriteFlagsMarkdown writes docs/flags.md: every flag with its default and
// help text, one table per group of flagGroups.
func WriteFlagsMarkdown(w io.Writer) error {
	fs := usageFlagSet("scrapegate")
	var b strings.Builder
	b.WriteString(flagsMarkdownIntro)
	listed := map[string]bool{}
	for _, g := range flagGroups {
		fmt.Fprintf(&b, "\n## %s\n\n", g.title)
		if g.intro != "" {
			fmt.Fprintf(&b, "%s\n\n", g.intro)
		}
		b.WriteString("| Flag | Default | Meaning |\n|---|---|---|\n")
		for _, name := range g.flags {
			f := fs.Lookup(name)
			if f == nil || listed[name] {
				return fmt.Errorf("flagGroups lists %q, which is no flag or listed twice", name)
			}
			listed[name] = true
			def := "*(empty)*"
			if f.DefValue != "" {
				def = "`" + f.DefValue + "`"
			}
			help := flagReference.ReplaceAllStringFunc(markdownEscaper.Replace(f.Usage), func(m string) string {
				sub := flagReference.FindStringSubmatch(m)
				if fs.Lookup(sub[2]) == nil {
					return m
				}
				return sub[1] + "`--" + sub[2] + "`"
			})
			fmt.Fprintf(&b, "| `--%s` | %s | %s |\n", name, def, help)
		}
	}
	var unlisted []string
	fs.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] {
			unlisted = append(unlisted, f.Name)
		}
	})
	if len(unlisted) > 0 {
		return fmt.Errorf("flags in no group of flagGroups: %s", strings.Join(unlisted, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Validate checks values that each parse but make no sense, naming the flag.
func (c *Config) Validate() error {
	var errs []error
	for _, fe := range c.validate() {
		errs = append(errs, fe)
	}
	return errors.Join(errs...)
}

func (c *Config) validate() []*flagError {
	var errs []*flagError
	bad := func(flagName, format string, args ...any) {
		errs = append(errs, &flagError{flag: flagName, msg: fmt.Sprintf(format, args...)})
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
	certAndKey := func(certFlag, cert, keyFlag, key string) {
		switch {
		case cert != "" && key == "":
			bad(certFlag, "%q needs -%s, its private key", cert, keyFlag)
		case key != "" && cert == "":
			bad(keyFlag, "%q needs -%s, the certificate it is the key of", key, certFlag)
		}
	}
	certAndKey("tls-cert-file", c.TLSCertFile, "tls-key-file", c.TLSKeyFile)
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		bad("tls-client-ca-file", "client certificates need TLS on the listener: set -tls-cert-file and -tls-key-file")
	}
	if len(c.TLSClientAllowedNames) > 0 && c.TLSClientCAFile == "" {
		bad("tls-client-allowed-names", "requires -tls-client-ca-file")
	}
	certAndKey("target-tls-cert-file", c.TargetTLSCertFile, "target-tls-key-file", c.TargetTLSKeyFile)
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
	if !c.Kubernetes {
		for _, f := range []struct{ flag, value string }{
			{"kubeconfig", c.Kubeconfig},
			{"kubernetes-namespaces", strings.Join(c.KubernetesNamespaces, ",")},
			{"kubernetes-pod-selector", c.KubernetesPodSelector},
			{"advertise-address", c.AdvertiseAddress},
		} {
			if f.value != "" {
				bad(f.flag, "%q has no effect without -kubernetes; add -kubernetes", f.value)
			}
		}
	}
	if c.KubeletInsecureSkipVerify && c.KubeletCAFile != "" && c.KubeletCAFile != DefaultConfig().KubeletCAFile {
		bad("kubelet-insecure-skip-verify", "contradicts -kubelet-ca-file, which only matters when verifying")
	}
	return errs
}

// stringList is the flag.Value of a comma-separated list of strings.
type stringList []string

func (l *stringList) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

func (l *stringList) Set(s string) error {
	*l = nil
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			*l = append(*l, f)
		}
	}
	return nil
}

// cidrList is the flag.Value behind -allow-cidrs.
type cidrList []netip.Prefix

func (l *cidrList) String() string {
	if l == nil {
		return ""
	}
	ss := make([]string, len(*l))
	for i, p := range *l {
		ss[i] = p.String()
	}
	return strings.Join(ss, ",")
}

func (l *cidrList) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		*l = nil // an empty list; -allow-cidrs is checked by Validate
		return nil
	}
	ps, err := target.ParseCIDRs(s)
	if err != nil {
		return err
	}
	*l = ps
	return nil
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
