package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/scrapegate/scrapegate/gateway"
	"github.com/scrapegate/scrapegate/gateway/target"
)

func envOf(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseFlagsDefaults(t *testing.T) {
	cfg, err := gatewayCommand.parse(nil, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":8080" {
		t.Fatalf("default -listen = %q; want :8080", cfg.Listen)
	}
	if got := (*cidrList)(&cfg.AllowCIDRs).String(); got != target.DefaultAllowCIDRs {
		t.Fatalf("default -allow-cidrs = %q; want %q", got, target.DefaultAllowCIDRs)
	}
}

func TestParseFlagsEnvironment(t *testing.T) {
	env := envOf(
		"SCRAPEGATE_LISTEN", "127.0.0.1:9999",
		"SCRAPEGATE_ALLOW_CIDRS", "10.0.0.0/8,fd00::/8",
		"SCRAPEGATE_SCRAPE_TIMEOUT_MAX", "45s",
		"SCRAPEGATE_ACCESS_LOG", "true",
	)
	cfg, err := gatewayCommand.parse([]string{"--listen=:7000"}, env, io.Discard)
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
	if gatewayCommand.envVarName("max-conns-per-endpoint") != "SCRAPEGATE_MAX_CONNS_PER_ENDPOINT" {
		t.Fatalf("envVarName = %q", gatewayCommand.envVarName("max-conns-per-endpoint"))
	}
}

func TestParseFlagsErrorsNameTheFlag(t *testing.T) {
	f := func(args []string, env func(string) (string, bool), wantInError ...string) {
		t.Helper()
		_, err := gatewayCommand.parse(args, env, io.Discard)
		if err == nil {
			t.Fatalf("parse(%q): no error", args)
		}
		for _, want := range wantInError {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("parse(%q) error %q does not mention %q", args, err, want)
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
	f([]string{"--deny-cidrs=10.0.0.1/8"}, envOf(), "deny-cidrs")
	f([]string{"--allow-ports=80-70"}, envOf(), "allow-ports")
	f([]string{"--deny-ports=ssh"}, envOf(), "deny-ports")
	f([]string{"--allow-path-prefixes=metrics"}, envOf(), "-allow-path-prefixes")
	f([]string{"--tls-cert-file=c.pem"}, envOf(), "-tls-cert-file", "-tls-key-file")
	f([]string{"--tls-client-ca-file=ca.pem"}, envOf(), "-tls-client-ca-file")
	f([]string{"--tls-client-allowed-names=prometheus"}, envOf(), "-tls-client-allowed-names")
	f([]string{"--target-tls-key-file=k.pem"}, envOf(), "-target-tls-cert-file")
	f([]string{"--target-tls-insecure-skip-verify", "--target-tls-ca-file=ca.pem"}, envOf(), "-target-tls-insecure-skip-verify")
	f([]string{"--max-uri-bytes=100000"}, envOf(), "-max-uri-bytes")
	f([]string{"--max-request-header-bytes=10"}, envOf(), "-max-request-header-bytes")
	f([]string{"--caller-rate-limit=-1"}, envOf(), "-caller-rate-limit")
	f([]string{"--caller-rate-limit=100", "--caller-rate-burst=0"}, envOf(), "-caller-rate-burst")
	f([]string{"--client-read-timeout=0s"}, envOf(), "-client-read-timeout")
	f([]string{"--max-response-body-bytes=-1"}, envOf(), "-max-response-body-bytes")
	f([]string{"--target-policy=kubernetes"}, envOf(), "-target-policy", "-kubernetes")
	f([]string{"--target-policy=pods"}, envOf(), "-target-policy")
	f([]string{"--kubeconfig=k"}, envOf(), "-kubernetes")
	for _, addr := range []string{":31000", "gw:http", "gw:99999", "gw:031000", "gw:0", "gw/x:1", "gw:1/x", "gw", "-gw:1", "[fe80::1:1", "256.0.0.1:31000"} {
		f([]string{"--kubernetes", "--advertise-address=" + addr}, envOf(), "-advertise-address")
	}
	f([]string{"--pprof=6060"}, envOf(), "-pprof")
	f([]string{"--pprof=localhost:"}, envOf(), "-pprof")
	f([]string{}, envOf("SCRAPEGATE_PPROF", "127.0.0.1"), "-pprof")
	f([]string{"--kubernetes", "--kubelet-ca-file="}, envOf(), "-kubelet-ca-file", "-kubelet-insecure-skip-verify")
	f([]string{"--kubernetes", "--kubelet-insecure-skip-verify", "--kubelet-ca-file=ca.pem"}, envOf(), "-kubelet-insecure-skip-verify")
	f([]string{"--kubernetes", "--control-plane-ca-file="}, envOf(), "-control-plane-ca-file", "-control-plane-token-file=")
	f([]string{"--kubernetes", "--control-plane-token-file=/etc/cp/token", "--target-token-file=/etc/cp/./token", "--target-token-namespaces=a"}, envOf(),
		"-target-token-file", "must not be -control-plane-token-file")
	for _, domain := range []string{"", "Cluster.Local", "cluster..local", "-cluster.local", "cluster_local", "cluster.local."} {
		f([]string{"--kubernetes", "--kubernetes-cluster-domain=" + domain}, envOf(), "-kubernetes-cluster-domain")
	}
	f([]string{"--kubernetes", "--target-token-file=t"}, envOf(), "-target-token-file", "-target-token-namespaces")
	f([]string{"--kubernetes", "--target-token-namespaces=a"}, envOf(), "-target-token-namespaces", "-target-token-file")
	f([]string{"--target-token-file=t", "--target-token-namespaces=a"}, envOf(), "-target-token-file", "-kubernetes")
	f([]string{"--kubernetes", "--target-token-file=/var/run/secrets/kubernetes.io/serviceaccount/token", "--target-token-namespaces=a"}, envOf(),
		"-target-token-file", "gateway's own ServiceAccount token")
	f([]string{"--kubernetes", "--kubernetes-namespaces=apps", "--target-token-file=t", "--target-token-namespaces=monitoring"}, envOf(),
		"-target-token-namespaces", `"monitoring" is not watched`)
	f([]string{"--kubernetes", "--kube-scheduler-selector=component in (x"}, envOf(), "-kube-scheduler-selector", "cannot parse")
	f([]string{"--kubernetes", "--etcd-selector="}, envOf(), "-etcd-selector", `"" requires no label`)
	f([]string{"--kubernetes", "--etcd-selector=!foo"}, envOf(), "-etcd-selector", `"!foo" requires no label, so it matches whatever lacks some: give at least one key=value, key in (...) or key`)
	f([]string{"--kubernetes", "--kube-proxy-selector=component!=x"}, envOf(), "-kube-proxy-selector", `"component!=x" requires no label`)
	f([]string{"--kubernetes", "--control-plane-node-selector=!node-role.kubernetes.io/control-plane"}, envOf(), "-control-plane-node-selector", "requires no label")
	f([]string{"--kubernetes", "--control-plane-node-selector=a in (b"}, envOf(), "-control-plane-node-selector", "cannot parse")
	f([]string{"--kubernetes", "--kube-proxy-port=0"}, envOf(), "-kube-proxy-port", "1-65535")
	f([]string{"--kubernetes", "--kube-controller-manager-port=65536"}, envOf(), "-kube-controller-manager-port", "not a port")
	f([]string{"--kubernetes", "--etcd-port=02381"}, envOf(), "-etcd-port", "leading zeros")
	f(nil, envOf("SCRAPEGATE_KUBE_SCHEDULER_PORT", "https"), "-kube-scheduler-port", "SCRAPEGATE_KUBE_SCHEDULER_PORT")
	f([]string{"--kubernetes", "--control-plane-token-file=", "--control-plane-ca-file=", "--control-plane-insecure-skip-verify"}, envOf(),
		"-control-plane-insecure-skip-verify", "without -control-plane-token-file")
	f([]string{"--control-plane-insecure-skip-verify"}, envOf(), "-control-plane-insecure-skip-verify", "-kubernetes")
	f([]string{"--kubernetes", "--node-agent-port=10271"}, envOf(), "-node-agent-port", "-node-agent-token-file")
	f([]string{"--node-agent-port=10271", "--node-agent-token-file=t"}, envOf(), "-node-agent-port", "-kubernetes")
	f([]string{"--kubernetes", "--node-agent-token-file=t"}, envOf(), "-node-agent-token-file", "without -node-agent-port")
	f([]string{"--kubernetes", "--node-agent-port=10271", "--node-agent-cert-file=c.pem", "--node-agent-key-file=k.pem"}, envOf(),
		"-node-agent-cert-file", "-node-agent-ca-file")
	f([]string{"--kubernetes", "--node-agent-port=10271", "--node-agent-token-file=t", "--node-agent-key-file=k.pem", "--node-agent-ca-file=ca.pem"}, envOf(),
		"-node-agent-key-file", "-node-agent-cert-file")
	f([]string{"--kubernetes", "--node-agent-port=10271", "--node-agent-token-file=t", "--control-plane-insecure-skip-verify"}, envOf(),
		"-control-plane-insecure-skip-verify", "-node-agent-port")
	f([]string{"--no-such-flag"}, envOf(), "no-such-flag")
	f([]string{"stray"}, envOf(), "stray")
	f(nil, envOf("SCRAPEGATE_ALLOW_CIDRS", "bogus"), "-allow-cidrs", "SCRAPEGATE_ALLOW_CIDRS")
	f(nil, envOf("SCRAPEGATE_MAX_INFLIGHT", "many"), "-max-inflight", "SCRAPEGATE_MAX_INFLIGHT")
	_, err := gatewayCommand.parse([]string{"-h"}, envOf(), io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v; want flag.ErrHelp", err)
	}
}

func TestParseFlagsKubernetes(t *testing.T) {
	f := func(args []string, wantPolicy string) {
		t.Helper()
		cfg, err := gatewayCommand.parse(args, envOf(), io.Discard)
		if err != nil {
			t.Fatalf("parse(%q): %v", args, err)
		}
		if got := cfg.EffectiveTargetPolicy(); got != wantPolicy {
			t.Errorf("parse(%q): target policy %q, want %q", args, got, wantPolicy)
		}
	}
	f(nil, gateway.TargetPolicyCIDR)
	f([]string{"--kubernetes"}, gateway.TargetPolicyKubernetes)
	f([]string{"--kubernetes", "--target-policy=cidr"}, gateway.TargetPolicyCIDR)
	f([]string{"--kubernetes", "--advertise-address=scrapegate.example.com:31000"}, gateway.TargetPolicyKubernetes)
	f([]string{"--kubernetes", "--advertise-address=[fd00::1]:31000", "--kubelet-insecure-skip-verify"}, gateway.TargetPolicyKubernetes)
	f([]string{"--kubernetes", "--advertise-address=10.0.0.1:31000", "--kubelet-token-file=", "--kubelet-ca-file="}, gateway.TargetPolicyKubernetes)
	f([]string{"--kubernetes", "--control-plane-token-file=", "--control-plane-ca-file="}, gateway.TargetPolicyKubernetes)
	f([]string{"--kubernetes", "--kubernetes-cluster-domain=k8s.example.org", "--target-token-file=/var/run/secrets/scrapegate/scraper/token",
		"--target-token-namespaces=kube-system,monitoring"}, gateway.TargetPolicyKubernetes)
}

// TestParseFlagsControlPlane: the components' flags default to kubeadm's
// labels and ports and set what they name.
func TestParseFlagsControlPlane(t *testing.T) {
	cfg, err := gatewayCommand.parse([]string{"--kubernetes"}, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KubeSchedulerSelector != "component=kube-scheduler,tier=control-plane" || cfg.KubeSchedulerPort != 10259 ||
		cfg.KubeControllerManagerSelector != "component=kube-controller-manager,tier=control-plane" || cfg.KubeControllerManagerPort != 10257 ||
		cfg.EtcdSelector != "component=etcd,tier=control-plane" || cfg.EtcdPort != 2381 ||
		cfg.KubeProxySelector != "k8s-app=kube-proxy" || cfg.KubeProxyPort != 10249 ||
		cfg.ControlPlaneInsecureSkipVerify || cfg.NodeAgentPort != 0 || cfg.ControlPlaneNodeSelector != "node-role.kubernetes.io/control-plane" {
		t.Errorf("control-plane defaults: %+v", cfg)
	}
	cfg, err = gatewayCommand.parse([]string{"--kubernetes", "--etcd-selector=app=etcd", "--etcd-port=2379", "--kube-proxy-port=10256",
		"--control-plane-insecure-skip-verify", "--kube-scheduler-selector=component in (kube-scheduler, scheduler)",
		"--control-plane-node-selector=node-role.kubernetes.io/master,!x"}, envOf(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EtcdSelector != "app=etcd" || cfg.EtcdPort != 2379 || cfg.KubeProxyPort != 10256 || !cfg.ControlPlaneInsecureSkipVerify ||
		cfg.KubeSchedulerSelector != "component in (kube-scheduler, scheduler)" || cfg.ControlPlaneNodeSelector != "node-role.kubernetes.io/master,!x" {
		t.Errorf("control-plane flags: %+v", cfg)
	}
	cfg, err = gatewayCommand.parse([]string{"--kubernetes", "--node-agent-port=10271"},
		envOf("SCRAPEGATE_NODE_AGENT_TOKEN_FILE", "/var/run/secrets/scrapegate/node-agent/token"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeAgentPort != 10271 || cfg.NodeAgentTokenFile != "/var/run/secrets/scrapegate/node-agent/token" {
		t.Errorf("node-agent flags: %+v", cfg)
	}
	if _, err := gatewayCommand.parse([]string{"--kubernetes", "--node-agent-port=10271", "--node-agent-ca-file=ca.pem",
		"--node-agent-cert-file=c.pem", "--node-agent-key-file=k.pem"}, envOf(), io.Discard); err != nil {
		t.Errorf("a client certificate alone for the node agents: %v", err)
	}
}

func TestParseFlagsSecurity(t *testing.T) {
	env := envOf(
		"SCRAPEGATE_DENY_CIDRS", "10.9.0.0/16",
		"SCRAPEGATE_DENY_PORTS", "10250,2379-2380",
		"SCRAPEGATE_ALLOW_PATH_PREFIXES", "/metrics, /federate",
		"SCRAPEGATE_ALLOW_CALLER_CIDRS", "",
	)
	cfg, err := gatewayCommand.parse([]string{"--allow-ports=9100"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := (*cidrList)(&cfg.DenyCIDRs).String(); got != "10.9.0.0/16" {
		t.Fatalf("-deny-cidrs = %q", got)
	}
	if got := cfg.DenyPorts.String(); got != "10250,2379-2380" {
		t.Fatalf("-deny-ports = %q", got)
	}
	if got := cfg.AllowPorts.String(); got != "9100" {
		t.Fatalf("-allow-ports = %q", got)
	}
	if got := strings.Join(cfg.AllowPathPrefixes, "|"); got != "/metrics|/federate" {
		t.Fatalf("-allow-path-prefixes = %q", got)
	}
	if len(cfg.AllowCallerCIDRs) != 0 {
		t.Fatalf("an empty -allow-caller-cidrs must mean any caller, got %v", cfg.AllowCallerCIDRs)
	}
	// An empty value lifts the default deny-list.
	cfg, err = gatewayCommand.parse([]string{"--deny-ports="}, envOf(), io.Discard)
	if err != nil || len(cfg.DenyPorts) != 0 {
		t.Fatalf("--deny-ports= : %v %v; want no denied ports", cfg.DenyPorts.String(), err)
	}
}

// TestParseFlagsListenerTLS: the combinations of the listener's certificate
// flags that make sense parse, and each that does not names the flags
// involved.
func TestParseFlagsListenerTLS(t *testing.T) {
	f := func(args []string, env func(string) (string, bool), wantInError ...string) {
		t.Helper()
		cfg, err := gatewayCommand.parse(args, env, io.Discard)
		if len(wantInError) == 0 {
			if err != nil {
				t.Fatalf("parse(%q): %v", args, err)
			}
			if !cfg.TLSSelfSigned && !cfg.TLSAllowPlain && cfg.TLSCertFile == "" {
				t.Fatalf("parse(%q) set no TLS: %+v", args, cfg)
			}
			return
		}
		if err == nil {
			t.Fatalf("parse(%q): no error", args)
		}
		for _, want := range wantInError {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("parse(%q) error %q does not mention %q", args, err, want)
			}
		}
	}
	f([]string{"--tls-self-signed"}, envOf())
	f([]string{"--tls-self-signed", "--tls-allow-plain"}, envOf())
	f([]string{"--tls-cert-file=c.pem", "--tls-key-file=k.pem", "--tls-allow-plain"}, envOf())
	f([]string{"--tls-self-signed", "--tls-client-ca-file=ca.pem"}, envOf())
	f(nil, envOf("SCRAPEGATE_TLS_SELF_SIGNED", "true", "SCRAPEGATE_TLS_ALLOW_PLAIN", "true"))

	f([]string{"--tls-self-signed", "--tls-cert-file=c.pem", "--tls-key-file=k.pem"}, envOf(),
		"-tls-self-signed: cannot be combined with -tls-cert-file and -tls-key-file")
	f([]string{"--tls-self-signed", "--tls-key-file=k.pem"}, envOf(), "-tls-self-signed: cannot be combined with -tls-cert-file and -tls-key-file")
	f([]string{"--tls-allow-plain"}, envOf(), "-tls-allow-plain:", "there is no TLS", "-tls-cert-file", "-tls-self-signed")
	f(nil, envOf("SCRAPEGATE_TLS_ALLOW_PLAIN", "true"), "-tls-allow-plain (from SCRAPEGATE_TLS_ALLOW_PLAIN)", "-tls-self-signed")
	f([]string{"--tls-allow-plain", "--tls-self-signed", "--tls-client-ca-file=ca.pem"}, envOf(), "-tls-allow-plain: cannot be combined with -tls-client-ca-file")
	f([]string{"--tls-allow-plain", "--tls-cert-file=c.pem", "--tls-key-file=k.pem", "--tls-client-ca-file=ca.pem"}, envOf(),
		"-tls-allow-plain: cannot be combined with -tls-client-ca-file")
	f([]string{"--tls-client-ca-file=ca.pem"}, envOf(), "-tls-client-ca-file", "-tls-cert-file and -tls-key-file, or -tls-self-signed")
}

func TestParseFlagsForwardRequestHeaders(t *testing.T) {
	f := func(value, wantErr string) {
		t.Helper()
		cfg, err := gatewayCommand.parse([]string{"-forward-request-headers=" + value}, envOf(), io.Discard)
		if wantErr == "" {
			if err != nil {
				t.Fatalf("-forward-request-headers=%s: %s", value, err)
			}
			if got := strings.Join(cfg.ForwardRequestHeaders, ","); got != value {
				t.Fatalf("-forward-request-headers=%s parsed as %q", value, got)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("-forward-request-headers=%s: error %v; want one mentioning %q", value, err, wantErr)
		}
	}
	f("X-Tenant", "")
	f("X-Tenant,X-Scope-OrgID", "")
	f("X Tenant", `"X Tenant" is not a header name`)
	f("X-Tenant:", "is not a header name")
	f("Authorization", "Authorization cannot be forwarded")
	f("cookie", "cookie cannot be forwarded")
	f("Proxy-Authorization", "cannot be forwarded")
	f("Connection", "cannot be forwarded")
	f("Transfer-Encoding", "cannot be forwarded")
	f("Host", "cannot be forwarded")
	f("Content-Length", "cannot be forwarded")
	f("Via", "cannot be forwarded")
}

func TestParseFlagsPathPrefixesArePlain(t *testing.T) {
	badPrefix := func(arg string) {
		t.Helper()
		if _, err := gatewayCommand.parse([]string{arg}, envOf(), io.Discard); err == nil || !strings.Contains(err.Error(), "not a plain path") {
			t.Fatalf("parse(%s) = %v; want an error saying the prefix is not a plain path", arg, err)
		}
	}
	badPrefix("-deny-path-prefixes=/actuator/%65nv")
	badPrefix("-deny-path-prefixes=/actuator;x")
	badPrefix("-deny-path-prefixes=/debug//pprof")
	badPrefix("-deny-path-prefixes=/debug./pprof")
	badPrefix("-allow-path-prefixes=/metrics,/federate%2F")
}
