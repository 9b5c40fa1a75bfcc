package kube

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// logLines is a zerolog writer that hands each line to the test; zerolog
// writes one event per Write. Lines past its capacity are dropped, so a
// logger that outlives the test never blocks.
type logLines chan map[string]any

func (l logLines) Write(p []byte) (int, error) {
	var line map[string]any
	if err := json.Unmarshal(p, &line); err != nil {
		line = map[string]any{"unparsed": string(p)}
	}
	select {
	case l <- line:
	default:
	}
	return len(p), nil
}

// next returns the next line that has the given resource field.
func (l logLines) next(t *testing.T, resource string) map[string]any {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case line := <-l:
			if line["resource"] == resource {
				return line
			}
		case <-timeout:
			t.Fatalf("no log line about %s within a minute", resource)
		}
	}
}

func TestUnreachableAPIServerIsLoggedAndExplainsReadyz(t *testing.T) {
	addr := testutil.FreeAddr(t, "127.0.0.1").String()
	server := "http://" + addr
	client, err := kubernetes.NewForConfig(&rest.Config{Host: server})
	if err != nil {
		t.Fatal(err)
	}
	lines := make(logLines, 100)
	c, err := New(client, Options{}, zerolog.New(lines).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	c.failureLogInterval = time.Hour // the second failure falls within it
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go c.Run(stop)

	first := lines.next(t, "pods")
	wantError := "dial tcp " + addr + ": connect: connection refused"
	if first["level"] != "warn" || first["server"] != server || first["error"] != wantError || first["suppressed"] != 0.0 ||
		!strings.Contains(first["message"].(string), "/readyz answers 503 until the first list") {
		t.Errorf("first failure logged as %v; want a warn line naming %s, the error %q and /readyz", first, server, wantError)
	}
	// client-go retries after its backoff; within the interval the retry is
	// logged at debug level only.
	if second := lines.next(t, "pods"); second["level"] != "debug" || second["error"] != wantError {
		t.Errorf("second failure logged as %v; want a debug line", second)
	}
	want := "cannot list pods from " + server + ": " + wantError
	if err := c.SyncFailure(); err == nil || err.Error() != want {
		t.Errorf("SyncFailure() = %v; want %q", err, want)
	}
}

func TestFailedRequestsAreLoggedAtABoundedRate(t *testing.T) {
	lines := make(logLines, 100)
	c, err := New(fake.NewClientset(), Options{Namespaces: []string{"team-a"}}, zerolog.New(lines).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	var pods, nodes *resourceWatch
	for _, w := range c.watches {
		switch w.resource {
		case "pods":
			pods = w
		case "nodes":
			nodes = w
		}
	}
	t0 := time.Now()
	refused := errors.New("connection refused")
	f := func(w *resourceWatch, after time.Duration, wantLevel string, wantSuppressed float64) {
		t.Helper()
		if err := c.requestEnded(context.Background(), w, "list", refused, t0.Add(after)); err != refused {
			t.Fatalf("requestEnded returned %v; want the error unchanged", err)
		}
		line := lines.next(t, w.resource)
		if line["level"] != wantLevel || (wantLevel == "warn" && line["suppressed"] != wantSuppressed) {
			t.Errorf("failure at +%s: %v; want level %s with suppressed=%v", after, line, wantLevel, wantSuppressed)
		}
	}
	f(pods, 0, "warn", 0)
	f(pods, time.Second, "debug", 0)
	f(nodes, time.Second, "warn", 0) // each informer has its own bound
	f(pods, 29*time.Second, "debug", 0)
	f(pods, 30*time.Second, "warn", 2)
	f(pods, 31*time.Second, "debug", 0)

	want := "cannot list pods in namespace team-a from the API server: connection refused"
	if err := c.SyncFailure(); err == nil || err.Error() != want {
		t.Errorf("SyncFailure() = %v; want %q", err, want)
	}
	if err := c.requestEnded(context.Background(), pods, "list", nil, t0); err != nil {
		t.Fatal(err)
	}
	if err := c.SyncFailure(); err == nil || !strings.HasPrefix(err.Error(), "cannot list nodes") {
		t.Errorf("SyncFailure() after pods listed = %v; want the nodes' failure", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.requestEnded(ctx, pods, "list", context.Canceled, t0.Add(time.Hour))
	select {
	case line := <-lines:
		t.Errorf("a request cut off by stopping the cluster was logged: %v", line)
	default:
	}
}
