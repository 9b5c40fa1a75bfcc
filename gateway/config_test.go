package gateway

import (
	"errors"
	"strings"
	"testing"
)

func TestDefaultConfigIsSafe(t *testing.T) {
	d := DefaultConfig()
	if !d.MetricsRequireAuth || d.MaxConnsPerCaller == 0 || d.TargetTLSInsecureSkipVerify {
		t.Fatalf("unsafe defaults: %+v", d)
	}
	for _, port := range []uint16{2379, 2380, 6443, 10250, 10255} {
		if !d.DenyPorts.Contains(port) {
			t.Fatalf("default -deny-ports %s lacks control-plane port %d", d.DenyPorts.String(), port)
		}
	}
}

// TestValidateNamesTheFlag checks that each problem is a *ConfigError naming
// the flag, which scrapegate rewords to name the variable a value came from.
func TestValidateNamesTheFlag(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
	cfg.MaxInflight = 0
	cfg.LogFormat = "xml"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	var flags []string
	for _, problem := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *ConfigError
		if !errors.As(problem, &ce) {
			t.Fatalf("problem %q is a %T, not a *ConfigError", problem, problem)
		}
		flags = append(flags, ce.Flag)
	}
	if got := strings.Join(flags, " "); got != "max-inflight log-format" {
		t.Fatalf("problems name %q; want max-inflight log-format", got)
	}
	if want := "-max-inflight: must be at least 1, got 0\n-log-format: want json or console, got \"xml\""; err.Error() != want {
		t.Fatalf("Validate() = %q; want %q", err, want)
	}
}

func TestListenAddress(t *testing.T) {
	f := func(listen string, wantOK bool) {
		t.Helper()
		cfg := DefaultConfig()
		cfg.Listen = listen
		err := cfg.Validate()
		if ok := err == nil; ok != wantOK {
			t.Errorf("--listen=%s: error %v; want ok=%v", listen, err, wantOK)
		}
		if err != nil && !strings.HasPrefix(err.Error(), `-listen: "`+listen+`" is not host:port`) {
			t.Errorf("--listen=%s: error %q does not say what is wrong with -listen", listen, err)
		}
	}
	f(":8080", true)
	f(":0", true)
	f("127.0.0.1:8080", true)
	f("[::1]:9090", true)
	f("[fe80::1%eth0]:9090", true)
	f("localhost:8080", true)
	f("gw-1.example.com.:80", true)
	f("nonsense", false)
	f("", false)
	f("256.0.0.1:1", false) // not an IPv4 address, and no DNS name is all digits
	f("10.0.0:80", false)
	f(":http", false)
	f(":65536", false)
	f(":08080", false)
	f("localhost:", false)
	f("under_score:80", false)
}

// TestValidateListenerTLS: a node agent, whose Config a program embedding
// the gateway may build too, gets neither -tls-self-signed nor
// -tls-allow-plain; the gateway gets each only with what it needs.
func TestValidateListenerTLS(t *testing.T) {
	f := func(agent bool, set func(*Config), wantErr string) {
		t.Helper()
		cfg := DefaultConfig()
		if agent {
			cfg = DefaultNodeAgentConfig()
		}
		set(&cfg)
		err := cfg.Validate()
		if wantErr == "" {
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("Validate: %v; want an error with %q", err, wantErr)
		}
	}
	f(false, func(c *Config) { c.TLSSelfSigned, c.TLSAllowPlain = true, true }, "")
	f(false, func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSAllowPlain = "c.pem", "k.pem", true }, "")
	f(false, func(c *Config) { c.TLSSelfSigned, c.TLSClientCAFile = true, "ca.pem" }, "")
	f(false, func(c *Config) { c.TLSSelfSigned, c.TLSCertFile, c.TLSKeyFile = true, "c.pem", "k.pem" },
		"-tls-self-signed: cannot be combined with -tls-cert-file and -tls-key-file")
	f(false, func(c *Config) { c.TLSAllowPlain = true }, "-tls-allow-plain: serves plain HTTP beside TLS, and there is no TLS")
	f(false, func(c *Config) { c.TLSSelfSigned, c.TLSAllowPlain, c.TLSClientCAFile = true, true, "ca.pem" },
		"-tls-allow-plain: cannot be combined with -tls-client-ca-file")
	f(true, func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "c.pem", "k.pem" }, "")
	f(true, func(c *Config) { c.TLSSelfSigned = true }, "-tls-self-signed: is not for a node agent")
	f(true, func(c *Config) { c.TLSCertFile, c.TLSKeyFile, c.TLSAllowPlain = "c.pem", "k.pem", true },
		"-tls-allow-plain: is not for a node agent: plain HTTP would carry its callers' tokens in clear")
}
