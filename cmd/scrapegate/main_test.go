package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunExitCodes(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	f := func(args []string, env func(string) (string, bool), wantCode int, wantStderr string) {
		t.Helper()
		var stderr bytes.Buffer
		if code := run(args, env, &stderr); code != wantCode {
			t.Fatalf("run(%q) = %d; want %d (stderr: %s)", args, code, wantCode, stderr.String())
		}
		if !strings.Contains(stderr.String(), wantStderr) {
			t.Fatalf("run(%q) stderr %q does not mention %q", args, stderr.String(), wantStderr)
		}
	}
	f([]string{"--allow-cidrs=not-a-cidr"}, noEnv, 2, "allow-cidrs")
	f([]string{"--max-inflight=-3"}, noEnv, 2, "-max-inflight")
	f(nil, func(k string) (string, bool) {
		return "nope", k == "SCRAPEGATE_LISTEN_TYPO" || k == "SCRAPEGATE_DIAL_TIMEOUT"
	}, 2, "SCRAPEGATE_DIAL_TIMEOUT")
	f([]string{"-h"}, noEnv, 0, "SCRAPEGATE_")
	f([]string{"--listen=256.0.0.1:1"}, noEnv, 1, "cannot listen")
}
