package gateway

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
)

// Config is everything the gateway can be told. Every field is a flag; see
// RegisterFlags for what each one means.
type Config struct {
	Listen     string
	AllowCIDRs []netip.Prefix

	MaxInflight             int
	MaxConnsPerEndpoint     int
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
}

// DefaultConfig returns the defaults every flag starts from.
func DefaultConfig() Config {
	allow, err := ParseCIDRs(DefaultAllowCIDRs)
	if err != nil {
		panic("BUG: cannot parse DefaultAllowCIDRs: " + err.Error())
	}
	return Config{
		Listen:                  ":8080",
		AllowCIDRs:              allow,
		MaxInflight:             1000,
		MaxConnsPerEndpoint:     4,
		EndpointIdleTTL:         10 * time.Minute,
		UpstreamIdleConnTimeout: 2 * time.Minute,
		DialTimeout:             3 * time.Second,
		ScrapeTimeoutDefault:    10 * time.Second,
		ScrapeTimeoutMax:        2 * time.Minute,
		ScrapeTimeoutMargin:     250 * time.Millisecond,
		DrainDelay:              5 * time.Second,
		ShutdownTimeout:         30 * time.Second,
		LogFormat:               "json",
		LogLevel:                "info",
	}
}

// EnvPrefix is prepended to a flag's name in upper snake case to form the
// environment variable that sets it: --allow-cidrs is SCRAPEGATE_ALLOW_CIDRS.
const EnvPrefix = "SCRAPEGATE_"

// ParseFlags builds a Config from the command line and the environment. A
// flag given on the command line wins over its environment variable, which
// wins over the default. Errors name the flag (and the variable) at fault.
// It returns flag.ErrHelp when -h or --help was asked for.
func ParseFlags(name string, args []string, lookupEnv func(string) (string, bool), output io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg.registerFlags(fs)
	// The flag package would print its error and the whole usage text on
	// any mistake; print the usage only when asked for, and return errors.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(output, "Usage of %s:\n\nEvery flag can also be set with the environment variable %s<FLAG_IN_UPPER_SNAKE_CASE>.\n\n", name, EnvPrefix)
			fs.SetOutput(output)
			fs.PrintDefaults()
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q: all settings are flags", fs.Arg(0))
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := EnvVarName(f.Name)
		v, ok := lookupEnv(env)
		if !ok || onCommandLine[f.Name] {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("invalid value %q for -%s (from %s): %w", v, f.Name, env, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// EnvVarName returns the environment variable for a flag name.
func EnvVarName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (c *Config) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Listen, "listen", c.Listen, "TCP address to serve scrapes, /metrics, /healthz and /readyz on, e.g. :8080 or 127.0.0.1:8080.")
	fs.Var((*cidrList)(&c.AllowCIDRs), "allow-cidrs", "Comma-separated CIDRs that targets must fall into. "+
		"Loopback, link-local (169.254.0.0/16: cloud metadata; fe80::/10), unspecified and multicast addresses are refused "+
		"unless a CIDR inside those ranges is listed explicitly (0.0.0.0/0 does not unlock them).")
	fs.IntVar(&c.MaxInflight, "max-inflight", c.MaxInflight, "Maximum upstream scrapes in flight at once, bodies included. "+
		"Past it the gateway answers 503 with Retry-After at once instead of queueing.")
	fs.IntVar(&c.MaxConnsPerEndpoint, "max-conns-per-endpoint", c.MaxConnsPerEndpoint, "Maximum connections to one pod endpoint (ip:port). "+
		"A scrape that finds all of them busy waits for one until its deadline.")
	fs.DurationVar(&c.EndpointIdleTTL, "endpoint-idle-ttl", c.EndpointIdleTTL, "Forget a pod endpoint's connection pool after it has not been scraped for this long, "+
		"so pod churn does not accumulate pools. Keep it above the longest scrape interval.")
	fs.DurationVar(&c.UpstreamIdleConnTimeout, "upstream-idle-conn-timeout", c.UpstreamIdleConnTimeout, "Close an idle connection to a pod after this long. "+
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
	fs.BoolVar(&c.AccessLog, "access-log", c.AccessLog, "Log every request at info level: method, target, caller, status and time until the response headers.")
}

// Validate checks values that each parse but make no sense, naming the flag.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flagName, format string, args ...any) {
		errs = append(errs, fmt.Errorf("invalid -%s: %s", flagName, fmt.Sprintf(format, args...)))
	}
	if c.Listen == "" {
		bad("listen", "must not be empty")
	}
	if len(c.AllowCIDRs) == 0 {
		bad("allow-cidrs", "at least one CIDR is required")
	}
	if c.MaxInflight < 1 {
		bad("max-inflight", "must be at least 1, got %d", c.MaxInflight)
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
	return errors.Join(errs...)
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
	ps, err := ParseCIDRs(s)
	if err != nil {
		return err
	}
	*l = ps
	return nil
}
