package main

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

func TestRunExitCodes(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	f := func(args []string, env func(string) (string, bool), wantCode int, wantStderr string) {
		t.Helper()
		var stderr bytes.Buffer
		if code := run(args, env, io.Discard, &stderr); code != wantCode {
			t.Fatalf("run(%q) = %d; want %d (stderr: %s)", args, code, wantCode, stderr.String())
		}
		if !strings.Contains(stderr.String(), wantStderr) {
			t.Fatalf("run(%q) stderr %q does not mention %q", args, stderr.String(), wantStderr)
		}
	}
	f([]string{"-h"}, noEnv, 0, "SCRAPEGATE_")
	// A bad flag is one line for a person, before any logging starts.
	badFlag := func(args []string, env func(string) (string, bool), wantLine string) {
		t.Helper()
		var stderr bytes.Buffer
		if code := run(args, env, io.Discard, &stderr); code != 2 {
			t.Fatalf("run(%q) = %d; want 2 (stderr: %s)", args, code, stderr.String())
		}
		if got := stderr.String(); got != wantLine+"\n" {
			t.Fatalf("run(%q) stderr:\n%s\nwant exactly the line:\n%s", args, got, wantLine)
		}
	}
	badFlag([]string{"-dial-timeout=3"}, noEnv, `scrapegate: -dial-timeout: "3" is not a duration; write 3s`)
	badFlag([]string{"--scrape-timeout-max", "2 minutes"}, noEnv, `scrapegate: -scrape-timeout-max: "2 minutes" is not a duration; write one such as 250ms, 10s or 2m`)
	badFlag([]string{"-listen=nonsense"}, noEnv, `scrapegate: -listen: "nonsense" is not host:port with an IP address or DNS name (or nothing) and a port 0-65535; write one such as :8080 or 127.0.0.1:8080`)
	badFlag([]string{"--listen=256.0.0.1:1"}, noEnv, `scrapegate: -listen: "256.0.0.1:1" is not host:port with an IP address or DNS name (or nothing) and a port 0-65535; write one such as :8080 or 127.0.0.1:8080`)
	badFlag([]string{"-max-inflight=abc"}, noEnv, `scrapegate: -max-inflight: "abc" is not a whole number; write one such as 1000`)
	badFlag([]string{"--max-inflight=-3"}, noEnv, `scrapegate: -max-inflight: must be at least 1, got -3`)
	badFlag([]string{"-caller-rate-limit=fast"}, noEnv, `scrapegate: -caller-rate-limit: "fast" is not a number; write one such as 5000 or 0.5`)
	badFlag([]string{"-kubernetes=yes"}, noEnv, `scrapegate: -kubernetes: "yes" is not a boolean; write true or false`)
	badFlag([]string{"-allow-cidrs=x"}, noEnv, `scrapegate: -allow-cidrs: "x" is not a CIDR (no '/'); write one such as 10.0.0.0/8 or fd00::/8`)
	badFlag([]string{"-allow-cidrs=10.0.0.1/8"}, noEnv, `scrapegate: -allow-cidrs: CIDR "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`)
	badFlag([]string{"-deny-ports=ssh"}, noEnv, `scrapegate: -deny-ports: "ssh" is not a port 1-65535 or a range of them; write one such as 9100 or 8080-8090`)
	badFlag([]string{"-allow-ports=90-80"}, noEnv, `scrapegate: -allow-ports: port range "90-80" is empty; write 80-90`)
	badFlag([]string{"-kubeconfig=k"}, noEnv, `scrapegate: -kubeconfig: "k" has no effect without -kubernetes; add -kubernetes`)
	badFlag([]string{"-kubernetes-namespaces=a,b"}, noEnv, `scrapegate: -kubernetes-namespaces: "a,b" has no effect without -kubernetes; add -kubernetes`)
	badFlag([]string{"-advertise-address=gw:31000"}, noEnv, `scrapegate: -advertise-address: "gw:31000" has no effect without -kubernetes; add -kubernetes`)
	badFlag([]string{"-tls-cert-file=c.pem"}, noEnv, `scrapegate: -tls-cert-file: "c.pem" needs -tls-key-file, its private key`)
	badFlag([]string{"-target-tls-key-file=k.pem"}, noEnv, `scrapegate: -target-tls-key-file: "k.pem" needs -target-tls-cert-file, the certificate it is the key of`)
	badFlag([]string{"-kubernetes", "-kubelet-token-file=", "-target-token-namespaces=kube-system"}, noEnv,
		`scrapegate: -target-token-namespaces: "kube-system" needs -target-token-file, the token to send there`)
	badFlag([]string{"-kubernetes", "-target-token-file=/var/run/secrets/scrapegate/scraper/token"}, noEnv,
		`scrapegate: -target-token-file: the token would never be sent: list the namespaces of the targets that may get it in -target-token-namespaces`)
	badFlag([]string{"-target-token-file=t", "-target-token-namespaces=monitoring"}, noEnv,
		"scrapegate: -target-token-file: \"t\" has no effect without -kubernetes; add -kubernetes\n"+
			`scrapegate: -target-token-namespaces: "monitoring" has no effect without -kubernetes; add -kubernetes`)
	badFlag([]string{"-kubernetes", "-target-token-file=/var/run/secrets/kubernetes.io/serviceaccount/token", "-target-token-namespaces=monitoring"}, noEnv,
		`scrapegate: -target-token-file: "/var/run/secrets/kubernetes.io/serviceaccount/token" must not be the gateway's own ServiceAccount token, `+
			`which can list pods and read nodes/metrics; give the scraper ServiceAccount's token (deploy/base)`)
	badFlag([]string{"-kubernetes", "-kubelet-token-file=/etc/kubelet-token", "-kubelet-insecure-skip-verify", "-kubelet-ca-file=",
		"-target-token-file=/etc/./kubelet-token", "-target-token-namespaces=monitoring"}, noEnv,
		`scrapegate: -target-token-file: "/etc/./kubelet-token" must not be the gateway's own ServiceAccount token, `+
			`which can list pods and read nodes/metrics; give the scraper ServiceAccount's token (deploy/base)`)
	badFlag([]string{"-kubernetes", "-kubelet-token-file=", "-target-token-file=t", "-target-token-namespaces=Monitoring"}, noEnv,
		`scrapegate: -target-token-namespaces: namespace "Monitoring" is not a DNS label (RFC 1123): it has upper case letters; Kubernetes names are lower case`)
	badFlag([]string{"-kubernetes", "-kubernetes-cluster-domain=cluster.local."}, noEnv,
		`scrapegate: -kubernetes-cluster-domain: want a DNS name in lower case without a trailing dot, such as cluster.local, got "cluster.local."`)
	badFlag(nil, func(k string) (string, bool) {
		return "3", k == "SCRAPEGATE_DIAL_TIMEOUT"
	}, `scrapegate: -dial-timeout (from SCRAPEGATE_DIAL_TIMEOUT): "3" is not a duration; write 3s`)
	badFlag(nil, func(k string) (string, bool) {
		return "nonsense", k == "SCRAPEGATE_LISTEN"
	}, `scrapegate: -listen (from SCRAPEGATE_LISTEN): "nonsense" is not host:port with an IP address or DNS name (or nothing) and a port 0-65535; write one such as :8080 or 127.0.0.1:8080`)

	// A valid address that cannot be listened on fails when serving: exit 1.
	taken := testutil.Listen(t, "127.0.0.1")
	f([]string{"--listen=" + taken.Addr().String()}, noEnv, 1, "cannot listen")
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	// -version prints and exits before the environment is read.
	badEnv := func(string) (string, bool) { return "nonsense", true }
	if code := run([]string{"-version"}, badEnv, &stdout, &stderr); code != 0 {
		t.Fatalf("-version: exit %d; want 0 (stderr: %s)", code, stderr.String())
	}
	if lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n"); len(lines) != 1 ||
		!strings.HasPrefix(lines[0], "scrapegate version ") || !strings.Contains(lines[0], runtime.Version()) {
		t.Errorf("-version printed %q; want one line with the version and %s", stdout.String(), runtime.Version())
	}
	if stderr.Len() > 0 {
		t.Errorf("-version wrote to stderr: %q", stderr.String())
	}
}
