package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/scrapegate/scrapegate/gateway"
	"github.com/scrapegate/scrapegate/gateway/target"
)

// command is what tells `scrapegate` and `scrapegate agent` apart on the
// command line: each has its own flags, defaults and environment.
type command struct {
	name string // as -h shows it, and the prefix of its errors
	// envPrefix is prepended to a flag's name in upper snake case to form
	// the environment variable that sets it: --allow-cidrs is
	// SCRAPEGATE_ALLOW_CIDRS.
	envPrefix string
	defaults  func() gateway.Config
	// register defines every flag that is a setting on fs, each writing
	// into its field of c and defaulting to the value that field holds.
	register func(fs *flag.FlagSet, c *gateway.Config)
	// groups put every flag, in order, into one of the tables of
	// docs/flags.md (writeFlagsMarkdown).
	groups []flagGroup
}

// gatewayCommand is `scrapegate`, the gateway.
var gatewayCommand = &command{name: "scrapegate", envPrefix: "SCRAPEGATE_", defaults: gateway.DefaultConfig, register: registerFlags, groups: flagGroups}

// errVersion is what parse returns when -version was asked for.
var errVersion = errors.New("version requested")

// errHelpMarkdown is what parse returns when -help-markdown was asked
// for: print writeFlagsMarkdown's page and exit.
var errHelpMarkdown = errors.New("flags as Markdown requested")

// parse builds a gateway.Config from the command line and the environment. A
// flag given on the command line wins over its environment variable, which
// wins over the default. Each error is one line that names the flag (and the
// variable), the value and what is expected. It returns flag.ErrHelp when -h
// or --help was asked for, errVersion for -version and errHelpMarkdown for
// -help-markdown.
func (c *command) parse(args []string, lookupEnv func(string) (string, bool), output io.Writer) (gateway.Config, error) {
	cfg := c.defaults()
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.register(fs, &cfg)
	version, helpMarkdown := registerCommandFlags(fs)
	// The flag package words a bad value as `invalid value "3" for flag
	// -dial-timeout: parse error`; describedValue says what is expected.
	fs.VisitAll(func(f *flag.Flag) { f.Value = &describedValue{Value: f.Value, flag: f.Name} })
	// The flag package would print its error and the whole usage text on
	// any mistake; print the usage only when asked for, and return errors.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(output, "Usage of %s:\n\nEvery flag can also be set with the environment variable %s<FLAG_IN_UPPER_SNAKE_CASE>.\n\n", c.name, c.envPrefix)
			usage := c.usageFlagSet()
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
		return cfg, fmt.Errorf("unexpected argument %q: all settings are flags, such as -listen=%s", fs.Arg(0), c.defaults().Listen)
	}
	if *helpMarkdown {
		return cfg, errHelpMarkdown
	}
	if *version {
		return cfg, errVersion
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	fromEnv := map[string]string{}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := c.envVarName(f.Name)
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
	// Validate joins one *gateway.ConfigError per problem; each is
	// reworded to name the variable its flag came from, if it did.
	if err := cfg.Validate(); err != nil {
		for _, problem := range err.(interface{ Unwrap() []error }).Unwrap() {
			if ce := (*gateway.ConfigError)(nil); errors.As(problem, &ce) {
				problem = &flagError{ConfigError: *ce, env: fromEnv[ce.Flag]}
			}
			errs = append(errs, problem)
		}
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
func (c *command) usageFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	defaults := c.defaults()
	c.register(fs, &defaults)
	registerCommandFlags(fs)
	return fs
}

// flagError is a bad value of one flag, worded for whoever set it.
type flagError struct {
	gateway.ConfigError
	env string // the environment variable the value came from; "": the command line
}

func (e *flagError) Error() string {
	if e.env != "" {
		return "-" + e.Flag + " (from " + e.env + "): " + e.Msg
	}
	return e.ConfigError.Error()
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
		v.failed = &flagError{ConfigError: gateway.ConfigError{Flag: v.flag, Msg: describeBadValue(v.Value, s, err)}}
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

// envVarName returns the environment variable for a flag name.
func (c *command) envVarName(flagName string) string {
	return c.envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// registerFlags is the gateway's command.register.
func registerFlags(fs *flag.FlagSet, c *gateway.Config) {
	registerListenFlag(fs, c, "")
	fs.Var((*cidrList)(&c.AllowCIDRs), "allow-cidrs", "Comma-separated CIDRs that targets must fall into. "+
		"Special ranges are refused unless a CIDR inside one is listed explicitly (0.0.0.0/0, ::/0 or a default range does not unlock them): "+
		"loopback, link-local (169.254.0.0/16, fe80::/10), cloud metadata and platform addresses (Alibaba 100.100.100.200, Azure 168.63.129.16, "+
		"192.0.0.0/24 with Oracle's 192.0.0.192, AWS fd00:ec2::/32, GCP fd20:ce::254, Oracle fd00:c1::a9fe:a9fe, Scaleway fd00:42::42, Akamai fd00:a9fe:a9fe::1), "+
		"unspecified, broadcast, multicast, NAT64 and SIIT addresses; docs/security.md lists them with their sources. Narrow it to your pod CIDR(s).")
	fs.Var((*cidrList)(&c.DenyCIDRs), "deny-cidrs", "Comma-separated CIDRs that targets must never fall into, whatever -allow-cidrs says: e.g. the nodes' and the API server's addresses. "+
		"/apiservers/ is not judged by it: its targets are the default/kubernetes endpoints and nothing else.")
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

	registerCallerLimitFlags(fs, c, "gateway", "Behind a NodePort with externalTrafficPolicy: Cluster callers appear as node addresses.",
		"A Prometheus sends about its targets divided by its scrape interval per second (10,000 pods every 15s: 667/s); "+
			"where callers other than your Prometheus servers can connect, set it to twice that of the busiest one.")
	fs.StringVar(&c.AuthBearerTokensFile, "auth-bearer-tokens-file", c.AuthBearerTokensFile, "File of bearer tokens callers may present (Authorization: Bearer), one per line; lines starting with '#' are comments. "+
		"Re-read when it changes. Prometheus: authorization: {credentials_file: ...}.")
	fs.StringVar(&c.AuthHTPasswdFile, "auth-htpasswd-file", c.AuthHTPasswdFile, "htpasswd file (bcrypt only: htpasswd -B) of users callers may authenticate as with HTTP basic auth. Re-read when it changes. "+
		"With -auth-bearer-tokens-file also set, either credential is accepted.")
	registerListenerSecurityFlags(fs, c, "when set, callers must present a client certificate it signed (mTLS). "+
		"A certificate it did not sign fails the TLS handshake; a request without one gets 401, except to /healthz and /readyz, and to /metrics if -metrics-require-auth is false.",
		"With a token or htpasswd file also set, a caller needs both the certificate and the credentials.", true)
	fs.BoolVar(&c.TLSAllowPlain, "tls-allow-plain", c.TLSAllowPlain, "Serve plain HTTP beside TLS on -listen, as psystrike does: a connection whose first byte starts a TLS handshake is served as TLS, "+
		"any other as plain HTTP, so http:// and https:// reach the same address. Caller authentication applies to both, "+
		"but a caller that connects in plain sends its credentials and gets its scrapes in clear. "+
		"A connection has -client-read-timeout to send its first byte, is closed silently if it sends none, and then gets as long again as without this flag. "+
		"Needs -tls-cert-file or -tls-self-signed; cannot be combined with -tls-client-ca-file: mutual TLS asks every caller for a client certificate, and a plain connection cannot carry one. "+
		"Off: a plain HTTP request to a TLS listener fails its handshake.")

	fs.IntVar(&c.MaxRequestHeaderBytes, "max-request-header-bytes", c.MaxRequestHeaderBytes, "Maximum size of a request's line and headers; larger requests get 431. At least 1024.")
	fs.IntVar(&c.MaxURIBytes, "max-uri-bytes", c.MaxURIBytes, "Maximum length of a request target; longer ones get 414. From 64 to -max-request-header-bytes.")
	fs.DurationVar(&c.ClientReadTimeout, "client-read-timeout", c.ClientReadTimeout, "Maximum time to receive a request (its line, headers and any body), counted on a new connection from accepting it "+
		"(on a TLS listener from the end of its handshake, which gets this long too: up to twice it in all) and on a kept-alive connection from the request's first byte. "+
		"A caller too slow gets 408 and the connection is closed; a connection that has sent no byte of a request by then (over TLS also one whose handshake has not completed) is closed without an answer.")
	fs.DurationVar(&c.ClientIdleTimeout, "client-idle-timeout", c.ClientIdleTimeout, "Close a caller's keep-alive connection after it has been idle this long. Keep it above the scrape interval.")
	fs.Int64Var(&c.MaxResponseBodyBytes, "max-response-body-bytes", c.MaxResponseBodyBytes, "Refuse (502) or abort a pod's response whose body exceeds this many bytes. 0: no limit.")

	fs.StringVar(&c.TargetTLSCAFile, "target-tls-ca-file", c.TargetTLSCAFile, "PEM CA bundle to verify https targets with. Empty: the system's roots. Re-read when it changes.")
	fs.BoolVar(&c.TargetTLSInsecureSkipVerify, "target-tls-insecure-skip-verify", c.TargetTLSInsecureSkipVerify, "Do not verify https targets' certificates at all. Pods' self-signed certificates need it, "+
		"but anyone who can intercept pod traffic can then read and forge scrapes. Cannot be combined with -target-tls-ca-file or -target-tls-server-name.")
	fs.StringVar(&c.TargetTLSServerName, "target-tls-server-name", c.TargetTLSServerName, "Server name (SNI) to send to https targets and to verify their certificates against. Empty: no SNI, verify the target IP.")
	fs.StringVar(&c.TargetTLSCertFile, "target-tls-cert-file", c.TargetTLSCertFile, "PEM client certificate to present to https targets that require mTLS; requires -target-tls-key-file. Re-read when it changes.")
	fs.StringVar(&c.TargetTLSKeyFile, "target-tls-key-file", c.TargetTLSKeyFile, "PEM private key of -target-tls-cert-file.")

	fs.BoolVar(&c.Kubernetes, "kubernetes", c.Kubernetes, "Watch pods, nodes, Services and EndpointSlices through the Kubernetes API (the pod's service account, or -kubeconfig), "+
		"and the pods of kube-system for the control-plane components. "+
		"Serves /sd/pods, /sd/nodes, /sd/endpoints and /sd/control-plane (Prometheus http_sd), /nodes/{node}/{kubelet metrics path}, /apiservers/{ip}/{port}/{path}, "+
		"/components/{component}/{node}/{path}, /services/ and /endpoints/, "+
		"and makes -target-policy default to kubernetes. "+
		"/readyz reports 503 until the first list of pods, nodes, Services and EndpointSlices in the watched namespaces has arrived; "+
		"it does not wait for the pods of kube-system or the default/kubernetes EndpointSlices, "+
		"without which only /components/, /apiservers/ and /sd/control-plane answer 503.")
	registerKubeconfigFlag(fs, c)
	fs.Var((*stringList)(&c.KubernetesNamespaces), "kubernetes-namespaces", "Comma-separated namespaces to watch pods, Services and EndpointSlices in. Empty: every namespace.")
	fs.StringVar(&c.KubernetesPodSelector, "kubernetes-pod-selector", c.KubernetesPodSelector, "Label selector (app=foo,tier!=db) that watched pods must match. Empty: every pod.")
	fs.StringVar(&c.TargetPolicy, "target-policy", c.TargetPolicy, "cidr: any target the CIDR, port and path rules allow. "+
		"kubernetes: additionally, a /pods/ or proxy target must be the IP of a pod that exists and has not terminated, and one of its container ports or its prometheus.io/port annotation, "+
		"and a Service target's endpoint whose targetRef is a pod must be that live pod's. Empty: kubernetes with -kubernetes, else cidr; kubernetes needs -kubernetes.")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", c.AdvertiseAddress, "host:port Prometheus reaches the gateway at, put in /sd/ documents as __address__ (a node's address and the NodePort, or the load balancer's). "+
		"Empty: the Host the /sd/ request was sent to.")
	fs.StringVar(&c.KubeletCAFile, "kubelet-ca-file", c.KubeletCAFile, "PEM CA bundle to verify kubelets' serving certificates with (the cluster CA). Re-read when it changes.")
	fs.StringVar(&c.KubeletTokenFile, "kubelet-token-file", c.KubeletTokenFile, "Bearer token sent to kubelets for /nodes/ scrapes, and to nothing else; re-read when it changes, as projected tokens rotate. "+
		"Empty: no /nodes/ proxy (and no kubelet CA loaded).")
	fs.BoolVar(&c.KubeletInsecureSkipVerify, "kubelet-insecure-skip-verify", c.KubeletInsecureSkipVerify, "Do not verify kubelets' certificates: needed when kubelets serve self-signed ones (no serverTLSBootstrap), "+
		"but then whoever can intercept node traffic gets the token. Cannot be combined with a -kubelet-ca-file other than the default.")
	fs.StringVar(&c.ControlPlaneCAFile, "control-plane-ca-file", c.ControlPlaneCAFile, "PEM CA bundle to verify the API servers' serving certificates with for /apiservers/, "+
		"as valid for kubernetes.default.svc, and the https components' (/components/) as valid for their IP. Re-read when it changes.")
	fs.StringVar(&c.ControlPlaneTokenFile, "control-plane-token-file", c.ControlPlaneTokenFile, "Bearer token sent for /apiservers/ scrapes to the endpoints of the default/kubernetes Service "+
		"and for /components/ scrapes to the https components (kube-scheduler, kube-controller-manager) at the InternalIP of nodes matching -control-plane-node-selector, and to nothing else; "+
		"it needs RBAC get on the non-resource URLs /metrics and /metrics/slis (deploy/base grants the gateway's ServiceAccount that). "+
		"Re-read when it changes. Empty: no /apiservers/ proxy and no https components (and no control-plane CA loaded).")
	fs.StringVar(&c.KubernetesClusterDomain, "kubernetes-cluster-domain", c.KubernetesClusterDomain, "The cluster's DNS domain: absolute-form (proxy_url) targets "+
		"{service}.{namespace}.svc:{port} and {service}.{namespace}.svc.{domain}:{port} are Services, resolved to a ready endpoint from the EndpointSlices, never by DNS; "+
		"any other name is refused.")
	fs.StringVar(&c.TargetTokenFile, "target-token-file", c.TargetTokenFile, "Bearer token sent to https targets behind kube-rbac-proxy (node-exporter, kube-state-metrics in kube-prometheus), "+
		"only to those in -target-token-namespaces whose pod or Service is annotated scrapegate.io/scrape-token: \"true\", never over http and never to kubelets; "+
		"re-read when it changes. It must be a token that can only get /metrics (deploy/base's scrapegate-scraper), never the gateway's own. Empty: no token is sent.")
	fs.Var((*stringList)(&c.TargetTokenNamespaces), "target-token-namespaces", "Comma-separated namespaces whose opted-in https targets get -target-token-file. "+
		"Empty: the token is sent nowhere.")

	registerComponentFlags(fs, c)

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
	registerDeadlineFlags(fs, c)
	registerLifecycleFlags(fs, c)
	fs.StringVar(&c.Pprof, "pprof", c.Pprof, "Admin address (e.g. 127.0.0.1:6060) to serve Go's runtime profiles on, at /debug/pprof/, for finding where CPU and memory go. "+
		"Unauthenticated and separate from -listen: keep it on loopback. Empty: off.")
}

// The flags the gateway and the node agent share, registered by both.

// registerListenFlag registers -listen; where, if not empty, says which
// address the command should listen on.
func registerListenFlag(fs *flag.FlagSet, c *gateway.Config, where string) {
	help := "TCP address to serve scrapes, /metrics, /healthz and /readyz on: host:port with an IP address, a DNS name or no host (every address) " +
		"and a port 0-65535, e.g. :8080 or 127.0.0.1:8080."
	if where != "" {
		help += " " + where
	}
	fs.StringVar(&c.Listen, "listen", c.Listen, help)
}

// registerCallerLimitFlags registers the limits on who may connect and
// how often; who is the command's server ("gateway"), cidrAdvice and
// rateAdvice what to know about its callers' addresses and rate.
func registerCallerLimitFlags(fs *flag.FlagSet, c *gateway.Config, who, cidrAdvice, rateAdvice string) {
	fs.Var((*cidrList)(&c.AllowCallerCIDRs), "allow-caller-cidrs", "Comma-separated CIDRs that callers' source addresses must fall into; connections from elsewhere are closed at once. "+
		"Empty: any caller. "+cidrAdvice)
	fs.IntVar(&c.MaxConnsPerCaller, "max-conns-per-caller", c.MaxConnsPerCaller, "Maximum open connections from one caller address (IPv6: one /64); connections past it are closed at once. 0: no limit.")
	fs.Float64Var(&c.CallerRateLimit, "caller-rate-limit", c.CallerRateLimit, "Requests per second one caller address (IPv6: one /64) may send, on average; past it the "+who+" answers 429 with Retry-After. "+
		"/healthz and /readyz are exempt. 0: no limit. "+rateAdvice)
	fs.IntVar(&c.CallerRateBurst, "caller-rate-burst", c.CallerRateBurst, "Requests one caller may send at once above -caller-rate-limit.")
}

// registerListenerSecurityFlags registers the listener's TLS, client
// certificates and the files' reloading; clientCerts says who must
// present a client certificate, withCredentials what one is worth beside a
// caller's credentials, and selfSigned whether -tls-self-signed is offered
// (not to a node agent: the gateway verifies agents against a CA).
func registerListenerSecurityFlags(fs *flag.FlagSet, c *gateway.Config, clientCerts, withCredentials string, selfSigned bool) {
	noCert, needsCert := "Empty: plain HTTP.", "Requires -tls-cert-file."
	if selfSigned {
		noCert, needsCert = "Empty: plain HTTP, unless -tls-self-signed.", "Requires -tls-cert-file or -tls-self-signed."
	}
	fs.BoolVar(&c.MetricsRequireAuth, "metrics-require-auth", c.MetricsRequireAuth, "Require the same authentication for /metrics as for scrapes. /healthz and /readyz are always open.")
	fs.StringVar(&c.TLSCertFile, "tls-cert-file", c.TLSCertFile, "PEM certificate (chain) to serve TLS 1.2 or later with; requires -tls-key-file. Re-read when it changes. "+noCert)
	fs.StringVar(&c.TLSKeyFile, "tls-key-file", c.TLSKeyFile, "PEM private key of -tls-cert-file.")
	if selfSigned {
		fs.BoolVar(&c.TLSSelfSigned, "tls-self-signed", c.TLSSelfSigned, "Serve TLS with a certificate made at start, no files needed: ECDSA P-256, self-signed, valid for a year "+
			"for the host name, localhost, 127.0.0.1, ::1 and the -listen IP. Its SHA-256 fingerprint is logged at start (sha256_fingerprint) so that clients can pin it. "+
			"A real certificate (-tls-cert-file) is better: clients cannot verify this one without insecure_skip_verify or pinning, "+
			"it changes at every restart (so do pins), and it cannot be revoked. Cannot be combined with -tls-cert-file and -tls-key-file.")
	}
	fs.StringVar(&c.TLSClientCAFile, "tls-client-ca-file", c.TLSClientCAFile, "PEM CA bundle: "+clientCerts+" "+
		needsCert+" Re-read when it changes. "+withCredentials)
	fs.Var((*stringList)(&c.TLSClientAllowedNames), "tls-client-allowed-names", "Comma-separated names a client certificate must carry one of (subject CN, DNS, URI or email SAN; exact match); requires -tls-client-ca-file. "+
		"Empty: any certificate -tls-client-ca-file signed.")
	fs.DurationVar(&c.ReloadInterval, "reload-interval", c.ReloadInterval, "How often to check the token, htpasswd, certificate and CA files for changes.")
}

func registerKubeconfigFlag(fs *flag.FlagSet, c *gateway.Config) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", c.Kubeconfig, "kubeconfig file to reach the API server with, instead of the pod's service account.")
}

// registerComponentPortFlags registers the ports of the control-plane
// components (kube.DefaultComponents), which serve at where: on their
// pods' address for the gateway, on 127.0.0.1 for a node agent.
func registerComponentPortFlags(fs *flag.FlagSet, c *gateway.Config, where string) {
	for _, f := range []struct {
		name, how string
		port      *uint16
	}{
		{"kube-scheduler", "over https (its --secure-port)", &c.KubeSchedulerPort},
		{"kube-controller-manager", "over https (its --secure-port)", &c.KubeControllerManagerPort},
		{"etcd", "over http (the port of its --listen-metrics-urls)", &c.EtcdPort},
		{"kube-proxy", "over http (the port of its --metrics-bind-address)", &c.KubeProxyPort},
	} {
		fs.Var((*portFlag)(f.port), f.name+"-port", "Port "+f.name+" serves its metrics on, "+f.how+", "+where+". 1-65535.")
	}
}

func registerDeadlineFlags(fs *flag.FlagSet, c *gateway.Config) {
	fs.DurationVar(&c.DialTimeout, "dial-timeout", c.DialTimeout, "Maximum time to connect to a target (a pod, a kubelet, a component): the TCP connection and, for https, the TLS handshake (also bounded by the scrape deadline).")
	fs.DurationVar(&c.ScrapeTimeoutDefault, "scrape-timeout-default", c.ScrapeTimeoutDefault, "Scrape deadline when the request has no X-Prometheus-Scrape-Timeout-Seconds header, or one that is not a positive number of seconds.")
	fs.DurationVar(&c.ScrapeTimeoutMax, "scrape-timeout-max", c.ScrapeTimeoutMax, "Upper bound on any scrape deadline, whatever the header asks for.")
	fs.DurationVar(&c.ScrapeTimeoutMargin, "scrape-timeout-margin", c.ScrapeTimeoutMargin, "Subtracted from X-Prometheus-Scrape-Timeout-Seconds so the gateway answers (504) "+
		"before Prometheus gives up; never more than half the timeout.")
}

func registerLifecycleFlags(fs *flag.FlagSet, c *gateway.Config) {
	fs.DurationVar(&c.DrainDelay, "drain-delay", c.DrainDelay, "On SIGTERM, how long /readyz reports 503 while still serving, so load balancers stop sending traffic before the listener closes.")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "After the drain delay, how long in-flight scrapes may take to finish before the process exits anyway.")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "Log format: json (to stderr) or console (human-readable).")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "Minimum log level: debug, info, warn or error.")
	fs.BoolVar(&c.AccessLog, "access-log", c.AccessLog, "Log every request at info level: method, target, caller, status and time until the response headers; "+
		"not those answered 400, 408 or 431 because they could not be read.")
}

// registerComponentFlags defines the flags of the control-plane
// components (/components/) and of the node agents that reach them.
func registerComponentFlags(fs *flag.FlagSet, c *gateway.Config) {
	for _, f := range []struct {
		name, labels string
		selector     *string
	}{
		{"kube-scheduler", "kubeadm's static pod labels", &c.KubeSchedulerSelector},
		{"kube-controller-manager", "kubeadm's static pod labels", &c.KubeControllerManagerSelector},
		{"etcd", "kubeadm's static pod labels", &c.EtcdSelector},
		{"kube-proxy", "the labels of kubeadm's kube-proxy DaemonSet", &c.KubeProxySelector},
	} {
		fs.StringVar(f.selector, f.name+"-selector", *f.selector, "Label selector of the "+f.name+" pods in kube-system, by default "+f.labels+
			": /components/"+f.name+"/{node}/ scrapes the Running hostNetwork one bound to that node. "+
			"It must require a label (key=value, key in (...) or key), not only negate some.")
	}
	registerComponentPortFlags(fs, c, "at its node's InternalIP")
	fs.StringVar(&c.ControlPlaneNodeSelector, "control-plane-node-selector", c.ControlPlaneNodeSelector,
		"Label selector of the control-plane nodes, over the Node objects' labels: kube-scheduler, kube-controller-manager and etcd "+
			"are found only on those (kube-proxy on every node), so only their InternalIP receives the control-plane token. "+
			"Every kubelet may create pods in kube-system bound to its own node, with any labels, "+
			"but the NodeRestriction admission plugin forbids it to set node-role.kubernetes.io/* labels on its node: keep the selector on such a label. "+
			"It must require a label (key=value, key in (...) or key), not only negate some.")
	fs.BoolVar(&c.ControlPlaneInsecureSkipVerify, "control-plane-insecure-skip-verify", c.ControlPlaneInsecureSkipVerify,
		"Do not verify the certificates of the https components (kube-scheduler, kube-controller-manager); never the API servers'. "+
			"kubeadm's scheduler and controller-manager sign their own serving certificates at start, which the cluster CA cannot verify. "+
			"But then whoever can intercept traffic to those ports on the node receives the control-plane token, which the API servers accept. "+
			"Prefer the node agent (-node-agent-port), or certificates the cluster CA signs.")
	fs.Var((*portFlag)(&c.NodeAgentPort), "node-agent-port", "Port of the node agents (scrapegate agent on every node, deploy/overlays/node-agent; they listen on 10271 by default): "+
		"/components/ scrapes then go to /{component}{path} on the agent at the node's InternalIP, which reaches the component on 127.0.0.1, "+
		"with -node-agent-token-file's token and never the control-plane token. 0: dial the components directly.")
	fs.StringVar(&c.NodeAgentTokenFile, "node-agent-token-file", c.NodeAgentTokenFile, "Bearer token sent to the node agents and to nothing else, "+
		"which they verify by TokenReview: a projected ServiceAccount token with audience scrapegate-node-agent "+
		"(the node-agent overlay mounts one at /var/run/secrets/scrapegate/node-agent/token). Re-read when it changes. Requires -node-agent-port.")
	fs.StringVar(&c.NodeAgentCAFile, "node-agent-ca-file", c.NodeAgentCAFile, "PEM CA bundle to verify the node agents' serving certificates with, as valid for the node's IP: "+
		"with it the gateway talks https to the agents; without it plain http, "+
		"and the node-agent token (-node-agent-token-file) crosses the node network in clear text to every agent. "+
		"Re-read when it changes. Requires -node-agent-port.")
	fs.StringVar(&c.NodeAgentCertFile, "node-agent-cert-file", c.NodeAgentCertFile, "PEM client certificate to present to the node agents (mTLS); "+
		"requires -node-agent-key-file and -node-agent-ca-file. Re-read when it changes.")
	fs.StringVar(&c.NodeAgentKeyFile, "node-agent-key-file", c.NodeAgentKeyFile, "PEM private key of -node-agent-cert-file.")
}

// flagGroup is one table of docs/flags.md. Intros link relative to docs/.
type flagGroup struct {
	title, intro string
	flags        []string
}

// flagGroups are the gateway's command.groups.
var flagGroups = []flagGroup{
	{"Listener and callers", "", []string{"listen", "allow-caller-cidrs", "max-conns-per-caller", "caller-rate-limit", "caller-rate-burst",
		"max-request-header-bytes", "max-uri-bytes", "client-read-timeout", "client-idle-timeout"}},
	{"Authentication and TLS", "See [security.md](security.md).", []string{"auth-bearer-tokens-file", "auth-htpasswd-file", "metrics-require-auth",
		"tls-cert-file", "tls-key-file", "tls-self-signed", "tls-allow-plain", "tls-client-ca-file", "tls-client-allowed-names", "reload-interval"}},
	{"Target policy flags", "See [Target policy](routes.md#target-policy).", []string{"allow-cidrs", "deny-cidrs", "allow-ports", "deny-ports",
		"allow-path-prefixes", "deny-path-prefixes", "forward-request-headers"}},
	{"HTTPS to pods", "See [HTTPS to pods](routes.md#https-to-pods).", []string{"target-tls-ca-file", "target-tls-server-name",
		"target-tls-insecure-skip-verify", "target-tls-cert-file", "target-tls-key-file"}},
	{"Kubernetes", "See [kubernetes.md](kubernetes.md). `--kubeconfig`, `--kubernetes-namespaces`, `--kubernetes-pod-selector`, " +
		"`--advertise-address`, `--target-token-file`, `--target-token-namespaces` and `--target-policy=kubernetes` need `--kubernetes`; " +
		"the kubelet flags, the control-plane flags and `--kubernetes-cluster-domain` take effect only with it.",
		[]string{"kubernetes", "kubeconfig", "kubernetes-namespaces", "kubernetes-pod-selector", "target-policy", "advertise-address",
			"kubelet-ca-file", "kubelet-token-file", "kubelet-insecure-skip-verify", "control-plane-ca-file", "control-plane-token-file", "kubernetes-cluster-domain",
			"target-token-file", "target-token-namespaces"}},
	{"Control plane", "See [Control plane](kubernetes.md#control-plane-components-and-sdcontrol-plane). These take effect only with `--kubernetes`; " +
		"`--node-agent-port` and `--control-plane-insecure-skip-verify` need it.",
		[]string{"kube-scheduler-selector", "kube-scheduler-port", "kube-controller-manager-selector", "kube-controller-manager-port",
			"etcd-selector", "etcd-port", "kube-proxy-selector", "kube-proxy-port", "control-plane-node-selector", "control-plane-insecure-skip-verify",
			"node-agent-port", "node-agent-token-file", "node-agent-ca-file", "node-agent-cert-file", "node-agent-key-file"}},
	{"Upstream connections and deadlines", "", []string{"max-inflight", "max-endpoints", "max-conns-per-endpoint", "max-response-body-bytes",
		"endpoint-idle-ttl", "upstream-idle-conn-timeout", "dial-timeout", "scrape-timeout-default", "scrape-timeout-max", "scrape-timeout-margin"}},
	{"Lifecycle and logging", "See [operations.md](operations.md).", []string{"drain-delay", "shutdown-timeout", "log-format", "log-level",
		"access-log", "pprof", "version", "help-markdown"}},
}

const flagsMarkdownIntro = `# Flags

<!-- Generated by ` + "`scrapegate -help-markdown`" + ` (make docs) from cmd/scrapegate/flags.go: edit the flags there, not this file. -->

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

// writeFlagsMarkdown writes docs/flags.md: every flag of the gateway and
// of the node agent with its default and help text, one table per group.
func writeFlagsMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString(flagsMarkdownIntro)
	if err := gatewayCommand.writeFlagTables(&b, "##"); err != nil {
		return err
	}
	b.WriteString(agentFlagsMarkdownIntro)
	if err := agentCommand.writeFlagTables(&b, "###"); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeFlagTables writes one table per group of c.groups, each under a
// heading of level heading.
func (c *command) writeFlagTables(b *strings.Builder, heading string) error {
	fs := c.usageFlagSet()
	listed := map[string]bool{}
	for _, g := range c.groups {
		fmt.Fprintf(b, "\n%s %s\n\n", heading, g.title)
		if g.intro != "" {
			fmt.Fprintf(b, "%s\n\n", g.intro)
		}
		b.WriteString("| Flag | Default | Meaning |\n|---|---|---|\n")
		for _, name := range g.flags {
			f := fs.Lookup(name)
			if f == nil || listed[name] {
				return fmt.Errorf("the flag groups of %s list %q, which is no flag or listed twice", c.name, name)
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
			fmt.Fprintf(b, "| `--%s` | %s | %s |\n", name, def, help)
		}
	}
	var unlisted []string
	fs.VisitAll(func(f *flag.Flag) {
		if !listed[f.Name] {
			unlisted = append(unlisted, f.Name)
		}
	})
	if len(unlisted) > 0 {
		return fmt.Errorf("flags of %s in no group: %s", c.name, strings.Join(unlisted, ", "))
	}
	return nil
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

// portFlag is the flag.Value of a TCP port, 0-65535.
type portFlag uint16

func (p *portFlag) String() string {
	if p == nil {
		return "0"
	}
	return strconv.Itoa(int(*p))
}

func (p *portFlag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || strconv.FormatUint(n, 10) != s {
		return fmt.Errorf("%q is not a port; write a number 0-65535 without leading zeros", s)
	}
	*p = portFlag(n)
	return nil
}

// cidrList is the flag.Value behind -allow-cidrs.
type cidrList []netip.Prefix

func (l *cidrList) String() string {
	if l == nil {
		return ""
	}
	return target.FormatCIDRs(*l)
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
