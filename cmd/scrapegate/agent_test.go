package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestParseAgentFlagsDefaults: the node agent listens on 10271, takes the
// gateway's ServiceAccount's tokens for its own audience, and finds the
// components at kubeadm's ports without verifying their certificates.
func TestParseAgentFlagsDefaults(t *testing.T) {
	cfg, err := agentCommand.parse(nil, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.NodeAgent
	switch {
	case a == nil:
		t.Fatal("no NodeAgent: the Gateway would not be a node agent")
	case cfg.Listen != ":10271":
		t.Errorf("-listen = %q; want :10271", cfg.Listen)
	case !slices.Equal(a.AllowedServiceAccounts, []string{"scrapegate/scrapegate"}):
		t.Errorf("-allowed-serviceaccounts = %q", a.AllowedServiceAccounts)
	case !slices.Equal(a.TokenAudiences, []string{"scrapegate-node-agent"}):
		t.Errorf("-token-audiences = %q", a.TokenAudiences)
	case a.TokenReviewCacheTTL != time.Minute:
		t.Errorf("-token-review-cache-ttl = %s", a.TokenReviewCacheTTL)
	case cfg.KubeSchedulerPort != 10259 || cfg.KubeControllerManagerPort != 10257 || cfg.EtcdPort != 2381 || cfg.KubeProxyPort != 10249:
		t.Errorf("ports %d %d %d %d; want kubeadm's 10259 10257 2381 10249", cfg.KubeSchedulerPort, cfg.KubeControllerManagerPort, cfg.EtcdPort, cfg.KubeProxyPort)
	case cfg.ControlPlaneCAFile != "":
		t.Errorf("-control-plane-ca-file = %q; want empty: kubeadm's components sign their own certificates", cfg.ControlPlaneCAFile)
	case cfg.ControlPlaneTokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token":
		t.Errorf("-control-plane-token-file = %q; want the agent pod's own token", cfg.ControlPlaneTokenFile)
	case cfg.Kubernetes:
		t.Error("-kubernetes is on: an agent runs no informers")
	}
}

// TestParseAgentFlagsEnvironment: the agent reads SCRAPEGATE_AGENT_*, not
// the gateway's variables, and its command line wins.
func TestParseAgentFlagsEnvironment(t *testing.T) {
	env := envOf(
		"SCRAPEGATE_AGENT_ETCD_PORT", "12381",
		"SCRAPEGATE_AGENT_ALLOWED_SERVICEACCOUNTS", "monitoring/scrapegate,scrapegate/scrapegate",
		"SCRAPEGATE_AGENT_LISTEN", ":1",
		"SCRAPEGATE_KUBE_PROXY_PORT", "1",
		"SCRAPEGATE_TOKEN_REVIEW_CACHE_TTL", "nonsense",
	)
	cfg, err := agentCommand.parse([]string{"-listen=10.250.0.1:10271"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "10.250.0.1:10271" || cfg.EtcdPort != 12381 || cfg.KubeProxyPort != 10249 ||
		!slices.Equal(cfg.NodeAgent.AllowedServiceAccounts, []string{"monitoring/scrapegate", "scrapegate/scrapegate"}) {
		t.Fatalf("listen %q, etcd %d, kube-proxy %d, accounts %q", cfg.Listen, cfg.EtcdPort, cfg.KubeProxyPort, cfg.NodeAgent.AllowedServiceAccounts)
	}
}

func TestParseAgentFlagsErrorsNameTheFlag(t *testing.T) {
	f := func(args []string, env func(string) (string, bool), wantInError ...string) {
		t.Helper()
		_, err := agentCommand.parse(args, env, io.Discard)
		if err == nil {
			t.Fatalf("parse(%q): no error", args)
		}
		for _, want := range wantInError {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("parse(%q) error %q does not mention %q", args, err, want)
			}
		}
	}
	f([]string{"-etcd-port=0"}, envOf(), "-etcd-port: must be a port 1-65535, got 0")
	f([]string{"-kube-scheduler-port=65536"}, envOf(), "-kube-scheduler-port")
	f(nil, envOf("SCRAPEGATE_AGENT_KUBE_PROXY_PORT", "x"), "-kube-proxy-port (from SCRAPEGATE_AGENT_KUBE_PROXY_PORT)")
	f([]string{"-listen=:10249"}, envOf(), "-kube-proxy-port", "is the port of -listen")
	f([]string{"-allowed-serviceaccounts=scrapegate"}, envOf(), "-allowed-serviceaccounts", "namespace/name")
	f([]string{"-allowed-serviceaccounts="}, envOf(), "-allowed-serviceaccounts", "admit nobody")
	f([]string{"-token-audiences="}, envOf(), "-token-audiences", "replay")
	f([]string{"-token-review-cache-ttl=0s"}, envOf(), "-token-review-cache-ttl")
	f([]string{"-tls-client-ca-file=ca.pem"}, envOf(), "-tls-client-ca-file", "set -tls-cert-file and -tls-key-file")
	if _, err := agentCommand.parse([]string{"-tls-client-ca-file=ca.pem"}, envOf(), io.Discard); err == nil || strings.Contains(err.Error(), "self-signed") {
		t.Fatalf("an agent's error %v suggests -tls-self-signed, which it does not have", err)
	}
	f([]string{"-scrape-timeout-default=5m", "-scrape-timeout-max=1m"}, envOf(), "-scrape-timeout-default")
	// The gateway's flags are not an agent's.
	for _, gatewayFlag := range []string{"-kubernetes", "-allow-cidrs=0.0.0.0/0", "-auth-bearer-tokens-file=t", "-node-agent-port=10271", "-pprof=127.0.0.1:6060",
		"-tls-self-signed", "-tls-allow-plain"} {
		f([]string{gatewayFlag}, envOf(), "flag provided but not defined")
	}
	f([]string{"stray"}, envOf(), `unexpected argument "stray"`, "-listen=:10271")
}

// TestRunAgent: `scrapegate agent` exits as `scrapegate` does, its
// errors prefixed with its name, and -help-markdown prints docs/flags.md.
func TestRunAgent(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"agent", "-etcd-port=x"}, envOf(), &stdout, &stderr); code != 2 ||
		stderr.String() != "scrapegate agent: -etcd-port: \"x\" is not a port; write a number 0-65535 without leading zeros\n" {
		t.Errorf("a bad flag: exit %d, stderr %q; want 2 and one line naming it", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"agent", "-h"}, envOf(), &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), "SCRAPEGATE_AGENT_") {
		t.Errorf("-h: exit %d, stderr %q; want 0 and the agent's usage", code, stderr.String())
	}
	stderr.Reset()
	want, err := os.ReadFile("../../docs/flags.md")
	if err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"agent", "-help-markdown"}, envOf(), &stdout, &stderr); code != 0 || !bytes.Equal(stdout.Bytes(), want) {
		t.Errorf("agent -help-markdown: exit %d, stderr %q; want 0 and docs/flags.md", code, stderr.String())
	}
}

// TestParseAgentCallerFlags: the agent takes the caller limits the gateway
// has, and the overlay's -listen=[$(HOST_IP)]:10271 for an IPv4 and an
// IPv6 host IP alike.
func TestParseAgentCallerFlags(t *testing.T) {
	cfg, err := agentCommand.parse([]string{"-allow-caller-cidrs=10.244.0.0/16,fd00::/64", "-caller-rate-limit=5", "-caller-rate-burst=20",
		"-max-conns-per-caller=8"}, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cfg.AllowCallerCIDRs); got != "[10.244.0.0/16 fd00::/64]" || cfg.CallerRateLimit != 5 || cfg.CallerRateBurst != 20 || cfg.MaxConnsPerCaller != 8 {
		t.Errorf("allow-caller-cidrs %s, rate %v burst %d, conns %d", got, cfg.CallerRateLimit, cfg.CallerRateBurst, cfg.MaxConnsPerCaller)
	}
	for _, listen := range []string{"[10.250.0.1]:10271", "[fd00:10:250::1]:10271"} {
		if cfg, err := agentCommand.parse(nil, envOf("SCRAPEGATE_AGENT_LISTEN", listen), io.Discard); err != nil || cfg.Listen != listen {
			t.Errorf("-listen=%s: %q, %v", listen, cfg.Listen, err)
		}
	}
}
