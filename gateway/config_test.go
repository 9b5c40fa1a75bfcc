package gateway

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func envOf(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := ParseFlags("scrapegate", nil, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":8080" {
		t.Fatalf("default -listen = %q; want :8080", cfg.Listen)
	}
	if got := (*cidrList)(&cfg.AllowCIDRs).String(); got != DefaultAllowCIDRs {
		t.Fatalf("default -allow-cidrs = %q; want %q", got, DefaultAllowCIDRs)
	}
}

func TestParseFlagsEnvironment(t *testing.T) {
	env := envOf(
		"SCRAPEGATE_LISTEN", "127.0.0.1:9999",
		"SCRAPEGATE_ALLOW_CIDRS", "10.0.0.0/8,fd00::/8",
		"SCRAPEGATE_SCRAPE_TIMEOUT_MAX", "45s",
		"SCRAPEGATE_ACCESS_LOG", "true",
	)
	cfg, err := ParseFlags("scrapegate", []string{"--listen=:7000"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":7000" {
		t.Fatalf("-listen = %q; the command line must win over the environment", cfg.Listen)
	}
	if got := (*cidrList)(&cfg.AllowCIDRs).String(); got != "10.0.0.0/8,fd00::/8" {
		t.Fatalf("-allow-cidrs from the environment = %q", got)
	}
	if cfg.ScrapeTimeoutMax != 45*time.Second || !cfg.AccessLog {
		t.Fatalf("environment ignored: %+v", cfg)
	}
	if EnvVarName("max-conns-per-endpoint") != "SCRAPEGATE_MAX_CONNS_PER_ENDPOINT" {
		t.Fatalf("EnvVarName = %q", EnvVarName("max-conns-per-endpoint"))
	}
}

func TestParseFlagsErrorsNameTheFlag(t *testing.T) {
	f := func(args []string, env func(string) (string, bool), wantInError ...string) {
		t.Helper()
		_, err := ParseFlags("scrapegate", args, env, io.Discard)
		if err == nil {
			t.Fatalf("ParseFlags(%q): no error", args)
		}
		for _, want := range wantInError {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("ParseFlags(%q) error %q does not mention %q", args, err, want)
			}
		}
	}
	f([]string{"--allow-cidrs=10.0.0.1/8"}, envOf(), "allow-cidrs", "10.0.0.0/8")
	f([]string{"--allow-cidrs=everything"}, envOf(), "allow-cidrs")
	f([]string{"--max-inflight=0"}, envOf(), "-max-inflight")
	f([]string{"--dial-timeout=-1s"}, envOf(), "-dial-timeout")
	f([]string{"--scrape-timeout-default=5m", "--scrape-timeout-max=1m"}, envOf(), "-scrape-timeout-default")
	f([]string{"--log-format=xml"}, envOf(), "-log-format")
	f([]string{"--log-level=loud"}, envOf(), "-log-level")
	f([]string{"--no-such-flag"}, envOf(), "no-such-flag")
	f([]string{"stray"}, envOf(), "stray")
	f(nil, envOf("SCRAPEGATE_ALLOW_CIDRS", "bogus"), "-allow-cidrs", "SCRAPEGATE_ALLOW_CIDRS")
	f(nil, envOf("SCRAPEGATE_MAX_INFLIGHT", "many"), "-max-inflight", "SCRAPEGATE_MAX_INFLIGHT")
	_, err := ParseFlags("scrapegate", []string{"-h"}, envOf(), io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v; want flag.ErrHelp", err)
	}
}
