package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing the test after 30 seconds: for
// conditions that have no signal of their own, such as an informer's
// events or another goroutine's connection state.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
