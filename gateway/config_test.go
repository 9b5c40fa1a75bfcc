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
