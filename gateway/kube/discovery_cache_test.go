package kube

//lint:file-ignore SA1019 the discovery API serves the deprecated core/v1 Endpoints (Prometheus's role: endpoints).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// upstreamRV sets the resourceVersion the API server would have given the
// object: the fake clientset keeps whatever objects carry.
func upstreamRV(rv string) podOpt { return func(p *corev1.Pod) { p.ResourceVersion = rv } }

// itemsOf returns a list's items as namespace/name, and its version.
func itemsOf(t *testing.T, list runtime.Object) ([]string, uint64) {
	t.Helper()
	objs, err := meta.ExtractList(list)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		m, _ := meta.Accessor(o)
		names = append(names, objectKeyString(m.GetNamespace(), m.GetName()))
	}
	lm, _ := meta.ListAccessor(list)
	if lm.GetContinue() != "" {
		t.Errorf("list has a continue token %q", lm.GetContinue())
	}
	rv, err := strconv.ParseUint(lm.GetResourceVersion(), 10, 64)
	if err != nil {
		t.Fatalf("list resourceVersion %q: %v", lm.GetResourceVersion(), err)
	}
	return names, rv
}

func mustList(t *testing.T, c *Cluster, q DiscoveryQuery) ([]string, uint64) {
	t.Helper()
	list, err := c.DiscoveryList(context.Background(), q)
	if err != nil {
		t.Fatalf("list %+v: %v", q, err)
	}
	return itemsOf(t, list)
}

// statusCode is an API error's HTTP status, or 0 for nil.
func statusCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var se *apierrors.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("%v is a %T, not a *StatusError", err, err)
	}
	if se.Status().Code == 504 && !apierrors.HasStatusCause(err, metav1.CauseTypeResourceVersionTooLarge) {
		t.Errorf("%v: a 504 without the cause client-go's reflector relists on", err)
	}
	return int(se.Status().Code)
}

func (d *discoveryCache) currentRV() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rv
}

func discoveryFixture(t *testing.T, opts Options) (*Cluster, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(
		newPod("b", "db", "10.0.0.2", labelled("app", "db"), upstreamRV("11"), func(p *corev1.Pod) { p.Spec.NodeName = "node-2" }),
		newPod("a", "web", "10.0.0.1", labelled("app", "web"), upstreamRV("12")),
		newPod("a", "api", "10.0.0.3", labelled("app", "web"), upstreamRV("13"), phase(corev1.PodPending)),
		newPod("c", "other", "10.0.0.4", upstreamRV("14")),
		newNode("node-2", "192.168.0.2"),
		newNode("node-1", "192.168.0.1"),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web", ResourceVersion: "15"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "lb", ResourceVersion: "16"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.11"}},
		newSlice("a", "web-x1", "web", nil, newEndpoint("10.0.0.1")),
	)
	return startCluster(t, client, opts), client
}

func TestDiscoveryList(t *testing.T) {
	c, _ := discoveryFixture(t, Options{Namespaces: []string{"a", "b"}})
	_, current := mustList(t, c, DiscoveryQuery{Resource: "pods"})
	if current <= discoveryStartRV {
		t.Fatalf("list version %d is not after the process's start %d", current, discoveryStartRV)
	}
	f := func(q DiscoveryQuery, want string) {
		t.Helper()
		list, err := c.DiscoveryList(context.Background(), q)
		if code := statusCode(t, err); code != 0 {
			if got := fmt.Sprintf("%d", code); got != want {
				t.Errorf("list %+v: %v, want %s", q, err, want)
			}
			return
		}
		names, _ := itemsOf(t, list)
		if got := strings.Join(names, ","); got != want {
			t.Errorf("list %+v = %s, want %s", q, got, want)
		}
	}
	// Sorted by namespace and name; only the namespaces watched.
	f(DiscoveryQuery{Resource: "pods"}, "a/api,a/web,b/db")
	f(DiscoveryQuery{Resource: "pods", Namespace: "a"}, "a/api,a/web")
	f(DiscoveryQuery{Resource: "pods", LabelSelector: "app=web"}, "a/api,a/web")
	f(DiscoveryQuery{Resource: "pods", LabelSelector: "app in (db)"}, "b/db")
	f(DiscoveryQuery{Resource: "pods", FieldSelector: "spec.nodeName=node-2"}, "b/db")
	f(DiscoveryQuery{Resource: "pods", FieldSelector: "status.phase!=Pending,metadata.namespace=a"}, "a/web")
	f(DiscoveryQuery{Resource: "pods", FieldSelector: "status.podIP=10.0.0.3"}, "a/api")
	f(DiscoveryQuery{Resource: "pods", FieldSelector: "spec.hostNetwork=false,metadata.name=db"}, "b/db")
	f(DiscoveryQuery{Resource: "nodes"}, "node-1,node-2")
	f(DiscoveryQuery{Resource: "nodes", FieldSelector: "metadata.name=node-2"}, "node-2")
	f(DiscoveryQuery{Resource: "services"}, "a/lb,a/web")
	f(DiscoveryQuery{Resource: "services", FieldSelector: "spec.type=LoadBalancer"}, "a/lb")
	f(DiscoveryQuery{Resource: "services", FieldSelector: "spec.clusterIP=10.96.0.10"}, "a/web")
	f(DiscoveryQuery{Resource: "endpointslices", Namespace: "a"}, "a/web-x1")
	f(DiscoveryQuery{Resource: "endpointslices", Namespace: "b"}, "")
	// Any version up to the current one: the current state.
	f(DiscoveryQuery{Resource: "pods", ResourceVersion: "0"}, "a/api,a/web,b/db")
	f(DiscoveryQuery{Resource: "pods", ResourceVersion: "1"}, "a/api,a/web,b/db")
	f(DiscoveryQuery{Resource: "pods", ResourceVersion: fmt.Sprint(current), ResourceVersionMatch: "Exact"}, "a/api,a/web,b/db")
	f(DiscoveryQuery{Resource: "pods", ResourceVersion: fmt.Sprint(current), ResourceVersionMatch: "NotOlderThan"}, "a/api,a/web,b/db")
	// Errors as the API server's.
	f(DiscoveryQuery{Resource: "pods", ResourceVersion: fmt.Sprint(current + 1)}, "504")
	f(DiscoveryQuery{Resource: "pods", ResourceVersion: fmt.Sprint(current - 1), ResourceVersionMatch: "Exact"}, "410")
	f(DiscoveryQuery{Resource: "pods", ResourceVersion: "x"}, "400")
	f(DiscoveryQuery{Resource: "pods", ResourceVersionMatch: "Exact"}, "422")
	f(DiscoveryQuery{Resource: "pods", ResourceVersion: "0", ResourceVersionMatch: "Exact"}, "422")
	f(DiscoveryQuery{Resource: "pods", ResourceVersion: "1", ResourceVersionMatch: "Newest"}, "422")
	f(DiscoveryQuery{Resource: "pods", LabelSelector: "app in (db"}, "400")
	f(DiscoveryQuery{Resource: "pods", FieldSelector: "spec.nodeName"}, "400")
	f(DiscoveryQuery{Resource: "pods", FieldSelector: "spec.restartPolicy=Always"}, "400") // not kept by stripPod
	f(DiscoveryQuery{Resource: "nodes", FieldSelector: "spec.unschedulable=true"}, "400")
	f(DiscoveryQuery{Resource: "pods", Namespace: "c"}, "403")
	f(DiscoveryQuery{Resource: "nodes", Namespace: "a"}, "404")
	f(DiscoveryQuery{Resource: "secrets"}, "404")

	_, err := c.DiscoveryList(context.Background(), DiscoveryQuery{Resource: "pods", FieldSelector: "spec.schedulerName=x"})
	if err == nil || !strings.Contains(err.Error(), "field label not supported: spec.schedulerName") {
		t.Errorf("unsupported field label: %v", err)
	}
	_, err = c.DiscoveryList(context.Background(), DiscoveryQuery{Resource: "pods", Namespace: "c"})
	if err == nil || !strings.Contains(err.Error(), "-kubernetes-namespaces") {
		t.Errorf("namespace outside -kubernetes-namespaces: %v", err)
	}
}

func TestDiscoveryListServesStrippedObjectsWithTheirOwnVersions(t *testing.T) {
	c, _ := discoveryFixture(t, Options{})
	list, err := c.DiscoveryList(context.Background(), DiscoveryQuery{Resource: "pods"})
	if err != nil {
		t.Fatal(err)
	}
	pods := list.(*corev1.PodList)
	seen := map[string]bool{}
	listRV, _ := strconv.ParseUint(pods.ResourceVersion, 10, 64)
	for _, p := range pods.Items {
		rv, err := strconv.ParseUint(p.ResourceVersion, 10, 64)
		if err != nil || rv <= discoveryStartRV || rv > listRV || seen[p.ResourceVersion] {
			t.Errorf("pod %s/%s has resourceVersion %q, want one of the cache's own up to %d", p.Namespace, p.Name, p.ResourceVersion, listRV)
		}
		seen[p.ResourceVersion] = true
	}
	// The informer's own object keeps the upstream version.
	obj, ok, _ := c.stores("pods")[0].GetByKey("a/web")
	if !ok || obj.(*corev1.Pod).ResourceVersion != "12" {
		t.Errorf("the informer's pod was changed: %+v", obj)
	}
	nodes, err := c.DiscoveryList(context.Background(), DiscoveryQuery{Resource: "nodes"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := nodes.(*corev1.NodeList); !ok {
		t.Errorf("nodes list is a %T", nodes)
	}
	slices, err := c.DiscoveryList(context.Background(), DiscoveryQuery{Resource: "endpointslices"})
	if err != nil {
		t.Fatal(err)
	}
	if l, ok := slices.(*discoveryv1.EndpointSliceList); !ok || len(l.Items) != 1 || l.Items[0].Endpoints[0].Addresses[0] != "10.0.0.1" {
		t.Errorf("endpointslices list: %#v", slices)
	}
}

func TestDiscoveryNotSyncedIs503(t *testing.T) {
	c, err := New(fake.NewClientset(), Options{}, zerolog.Nop()) // never run
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.DiscoveryList(ctx, DiscoveryQuery{Resource: "pods"})
	if code := statusCode(t, err); code != 503 || !strings.Contains(err.Error(), "pods") {
		t.Errorf("list before sync: %v", err)
	}
	_, err = c.DiscoveryWatch(ctx, DiscoveryQuery{Resource: "endpoints"})
	if code := statusCode(t, err); code != 503 || !strings.Contains(err.Error(), "endpoints") {
		t.Errorf("watch before sync: %v", err)
	}
}

// next returns the next event of w, failing after a minute.
func next(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("the watch ended")
		}
		return ev
	case <-time.After(time.Minute):
		t.Fatal("no event within a minute")
	}
	return watch.Event{}
}

// describe is an event as "TYPE ns/name".
func describe(ev watch.Event) string {
	m, err := meta.Accessor(ev.Object)
	if err != nil {
		return string(ev.Type) + " " + fmt.Sprintf("%T", ev.Object)
	}
	return string(ev.Type) + " " + objectKeyString(m.GetNamespace(), m.GetName())
}

func rvOf(t *testing.T, obj runtime.Object) uint64 {
	t.Helper()
	m, _ := meta.Accessor(obj)
	rv, err := strconv.ParseUint(m.GetResourceVersion(), 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", m.GetResourceVersion(), err)
	}
	return rv
}

func watchOf(t *testing.T, c *Cluster, q DiscoveryQuery) watch.Interface {
	t.Helper()
	w, err := c.DiscoveryWatch(context.Background(), q)
	if err != nil {
		t.Fatalf("watch %+v: %v", q, err)
	}
	t.Cleanup(w.Stop)
	return w
}

// expect reads the next events of w and compares them with want.
func expect(t *testing.T, w watch.Interface, want ...string) []watch.Event {
	t.Helper()
	var evs []watch.Event
	for _, wantEv := range want {
		ev := next(t, w)
		if got := describe(ev); got != wantEv {
			t.Fatalf("event %d: %s, want %s", len(evs), got, wantEv)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestDiscoveryWatchFromVersion(t *testing.T) {
	c, client := discoveryFixture(t, Options{})
	ctx := context.Background()
	_, listed := mustList(t, c, DiscoveryQuery{Resource: "pods", Namespace: "a"})
	live := watchOf(t, c, DiscoveryQuery{Resource: "pods", Namespace: "a", ResourceVersion: fmt.Sprint(listed)})

	pods := client.CoreV1().Pods("a")
	if _, err := pods.Create(ctx, newPod("a", "new", "10.0.0.9", upstreamRV("20")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Pods("b").Delete(ctx, "db", metav1.DeleteOptions{}); err != nil { // another namespace
		t.Fatal(err)
	}
	if _, err := pods.Update(ctx, newPod("a", "web", "10.0.0.1", labelled("app", "web", "v", "2"), upstreamRV("21")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []string{"ADDED a/new", "MODIFIED a/web", "DELETED a/api"}
	evs := expect(t, live, want...)
	for i := 1; i < len(evs); i++ {
		if rvOf(t, evs[i].Object) <= rvOf(t, evs[i-1].Object) {
			t.Errorf("event %d's version is not after the one before", i)
		}
	}
	if evs[1].Object.(*corev1.Pod).Labels["v"] != "2" {
		t.Errorf("MODIFIED carries %v", evs[1].Object.(*corev1.Pod).Labels)
	}
	// Later, from the same version: the same events from the history.
	again := watchOf(t, c, DiscoveryQuery{Resource: "pods", Namespace: "a", ResourceVersion: fmt.Sprint(listed)})
	for i, ev := range expect(t, again, want...) {
		if rvOf(t, ev.Object) != rvOf(t, evs[i].Object) {
			t.Errorf("event %d from the history has another version", i)
		}
	}
	// From the last event's version: nothing before the next change.
	fromLast := watchOf(t, c, DiscoveryQuery{Resource: "pods", ResourceVersion: fmt.Sprint(rvOf(t, evs[2].Object))})
	if _, err := pods.Update(ctx, newPod("a", "web", "10.0.0.1", upstreamRV("22")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, fromLast, "MODIFIED a/web")

	f := func(rv string, want int) {
		t.Helper()
		_, err := c.DiscoveryWatch(ctx, DiscoveryQuery{Resource: "pods", ResourceVersion: rv})
		if got := statusCode(t, err); got != want {
			t.Errorf("watch from %q: %v, want %d", rv, err, want)
		}
	}
	f("1", 410)                                 // an earlier process's
	f(fmt.Sprint(discoveryStartRV-1), 410)      // an earlier process's
	f(fmt.Sprint(time.Now().UnixNano()*2), 504) // another replica's, started later
	f("abc", 400)
}

func TestDiscoveryWatchFromZeroStartsWithTheState(t *testing.T) {
	c, client := discoveryFixture(t, Options{})
	w := watchOf(t, c, DiscoveryQuery{Resource: "pods", ResourceVersion: "0", LabelSelector: "app=web"})
	expect(t, w, "ADDED a/api", "ADDED a/web")
	if _, err := client.CoreV1().Pods("a").Create(context.Background(), newPod("a", "aaa", "10.0.0.8", labelled("app", "web"), upstreamRV("30")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, w, "ADDED a/aaa")
}

// A relist that finds an object deleted and created again under the same
// name hands the informer one update: watchers see the deletion and the
// addition, as they would have from the API server.
func TestDiscoveryWatchRecreatedObjectIsDeletedThenAdded(t *testing.T) {
	c, client := discoveryFixture(t, Options{})
	_, listed := mustList(t, c, DiscoveryQuery{Resource: "pods"})
	w := watchOf(t, c, DiscoveryQuery{Resource: "pods", ResourceVersion: fmt.Sprint(listed)})
	recreated := newPod("a", "web", "10.0.0.7", upstreamRV("40"), func(p *corev1.Pod) { p.UID = "uid-web-2" })
	if _, err := client.CoreV1().Pods("a").Update(context.Background(), recreated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	evs := expect(t, w, "DELETED a/web", "ADDED a/web")
	if uid := evs[0].Object.(*corev1.Pod).UID; uid != "uid-web" {
		t.Errorf("DELETED carries UID %q, want the old object's", uid)
	}
	if uid := evs[1].Object.(*corev1.Pod).UID; uid != "uid-web-2" {
		t.Errorf("ADDED carries UID %q, want the new object's", uid)
	}
	if rvOf(t, evs[1].Object) <= rvOf(t, evs[0].Object) {
		t.Error("ADDED's version is not after DELETED's")
	}
}

func TestDiscoveryWatchSendInitialEvents(t *testing.T) {
	c, client := discoveryFixture(t, Options{})
	_, listed := mustList(t, c, DiscoveryQuery{Resource: "services"})
	// As a client-go 0.36 reflector asks.
	q := DiscoveryQuery{Resource: "services", SendInitialEvents: true, AllowWatchBookmarks: true, ResourceVersionMatch: "NotOlderThan"}
	w := watchOf(t, c, q)
	expect(t, w, "ADDED a/lb", "ADDED a/web")
	ev := next(t, w)
	svc, ok := ev.Object.(*corev1.Service)
	if ev.Type != watch.Bookmark || !ok || svc.Annotations[metav1.InitialEventsAnnotationKey] != "true" || rvOf(t, svc) != listed || svc.Name != "" {
		t.Fatalf("after the initial events: %s %#v, want a bookmark at %d marking their end", ev.Type, ev.Object, listed)
	}
	if err := client.CoreV1().Services("a").Delete(context.Background(), "lb", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, w, "DELETED a/lb")

	f := func(q DiscoveryQuery, want int) {
		t.Helper()
		_, err := c.DiscoveryWatch(context.Background(), q)
		if got := statusCode(t, err); got != want {
			t.Errorf("watch %+v: %v, want %d", q, err, want)
		}
	}
	f(DiscoveryQuery{Resource: "services", SendInitialEvents: true, AllowWatchBookmarks: true}, 422)
	f(DiscoveryQuery{Resource: "services", SendInitialEvents: true, AllowWatchBookmarks: true, ResourceVersionMatch: "Exact"}, 422)
	f(DiscoveryQuery{Resource: "services", SendInitialEvents: true, AllowWatchBookmarks: true, ResourceVersionMatch: "NotOlderThan", ResourceVersion: fmt.Sprint(listed + 100)}, 504)
}

func TestDiscoveryWatchSendInitialEventsWithoutBookmarks(t *testing.T) {
	// As the API server: the initial events, not marking their end, which
	// only a client taking bookmarks is sent.
	c, client := discoveryFixture(t, Options{})
	w := watchOf(t, c, DiscoveryQuery{Resource: "services", SendInitialEvents: true, ResourceVersionMatch: "NotOlderThan"})
	expect(t, w, "ADDED a/lb", "ADDED a/web")
	if err := client.CoreV1().Services("a").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, w, "DELETED a/web")
}

func TestDiscoveryWatchBookmarks(t *testing.T) {
	old := discoveryBookmarkInterval
	discoveryBookmarkInterval = time.Millisecond
	t.Cleanup(func() { discoveryBookmarkInterval = old })
	c, _ := discoveryFixture(t, Options{})
	_, listed := mustList(t, c, DiscoveryQuery{Resource: "nodes"})
	w := watchOf(t, c, DiscoveryQuery{Resource: "nodes", ResourceVersion: fmt.Sprint(listed), AllowWatchBookmarks: true})
	ev := next(t, w)
	if _, ok := ev.Object.(*corev1.Node); ev.Type != watch.Bookmark || !ok || rvOf(t, ev.Object) != listed {
		t.Errorf("got %s %#v, want a bookmark at %d", ev.Type, ev.Object, listed)
	}
}

func TestDiscoveryWatchFilterTransitions(t *testing.T) {
	c, client := discoveryFixture(t, Options{})
	ctx := context.Background()
	w := watchOf(t, c, DiscoveryQuery{Resource: "pods", LabelSelector: "app=web", FieldSelector: "metadata.namespace=a"})
	expect(t, w, "ADDED a/api", "ADDED a/web")
	pods := client.CoreV1().Pods("a")
	update := func(rv string, opts ...podOpt) {
		t.Helper()
		if _, err := pods.Update(ctx, newPod("a", "web", "10.0.0.1", append(opts, upstreamRV(rv))...), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update("40", labelled("app", "other"))
	ev := expect(t, w, "DELETED a/web")[0]
	if p := ev.Object.(*corev1.Pod); p.Labels["app"] != "web" {
		t.Errorf("DELETED carries labels %v, want the object as it last matched", p.Labels)
	}
	update("41", labelled("app", "other", "x", "y")) // still not matching: no event
	update("42", labelled("app", "web"))
	expect(t, w, "ADDED a/web")
	update("43", labelled("app", "web", "x", "z"))
	expect(t, w, "MODIFIED a/web")
}

func TestDiscoveryUnchangedUpstreamVersionIsNoEvent(t *testing.T) {
	c, client := discoveryFixture(t, Options{})
	ctx := context.Background()
	w := watchOf(t, c, DiscoveryQuery{Resource: "pods", Namespace: "a", ResourceVersion: fmt.Sprint(c.discovery["pods"].currentRV())})
	pods := client.CoreV1().Pods("a")
	// A relist's replay: the same upstream version, whatever else.
	if _, err := pods.Update(ctx, newPod("a", "web", "10.0.0.1", labelled("replayed", "yes"), upstreamRV("12")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods.Update(ctx, newPod("a", "api", "10.0.0.3", labelled("changed", "yes"), upstreamRV("50")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect(t, w, "MODIFIED a/api")
}

func TestDiscoverySlowWatcherIsClosed(t *testing.T) {
	c, _ := discoveryFixture(t, Options{})
	d := c.discovery["pods"]
	w := watchOf(t, c, DiscoveryQuery{Resource: "pods", ResourceVersion: fmt.Sprint(d.currentRV())})
	// Nobody reads w: the handlers go on regardless (were they blocked,
	// this loop would never end).
	const n = 3 * discoveryWatchBuffer
	for i := range n {
		d.changed(newPod("z", fmt.Sprintf("p%d", i), "10.1.0.1", upstreamRV("1")))
	}
	got := 0
	for range w.ResultChan() {
		got++
	}
	if got == 0 || got >= n {
		t.Errorf("the slow watcher got %d of %d events before it was closed", got, n)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.watchers) != 0 {
		t.Errorf("%d watchers remain registered", len(d.watchers))
	}
}

func TestDiscoveryHistoryIsBounded(t *testing.T) {
	d := newDiscoveryCache("pods")
	for i := range discoveryHistory + 10 {
		d.changed(newPod("z", fmt.Sprintf("p%d", i), "10.1.0.1", upstreamRV("1")))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	f := func(rv uint64, wantEvents int, wantOK bool) {
		t.Helper()
		events, ok := d.sinceLocked(rv)
		if ok != wantOK || len(events) != wantEvents {
			t.Errorf("since %d: %d events, %v; want %d, %v", rv, len(events), ok, wantEvents, wantOK)
		}
		for i := 1; i < len(events); i++ {
			if events[i].rv != events[i-1].rv+1 {
				t.Fatalf("since %d: event %d is %d after %d", rv, i, events[i].rv, events[i-1].rv)
			}
		}
	}
	f(discoveryStartRV, 0, false)
	f(discoveryStartRV+9, 0, false)
	f(discoveryStartRV+10, discoveryHistory, true)
	f(d.rv-1, 1, true)
	f(d.rv, 0, true)
	f(d.rv+1, 0, false)
}

func TestDiscoveryEndpointsAreWatchedOnlyOnceAsked(t *testing.T) {
	client := fake.NewClientset(&corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes", ResourceVersion: "5",
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-apiserver"}}},
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "10.250.0.1"}}, Ports: []corev1.EndpointPort{{Name: "https", Port: 6443}}}},
	})
	c := startCluster(t, client, Options{})
	asked := func() bool {
		for _, a := range client.Actions() {
			if a.GetResource().Resource == "endpoints" {
				return true
			}
		}
		return false
	}
	if asked() {
		t.Fatal("the Endpoints are watched before anyone asked for them")
	}
	list, err := c.DiscoveryList(context.Background(), DiscoveryQuery{Resource: "endpoints"})
	if err != nil {
		t.Fatal(err)
	}
	eps := list.(*corev1.EndpointsList)
	if len(eps.Items) != 1 || eps.Items[0].Subsets[0].Addresses[0].IP != "10.250.0.1" || eps.Items[0].ManagedFields != nil {
		t.Errorf("endpoints: %+v", eps.Items)
	}
	if !asked() {
		t.Error("the Endpoints were listed without a request to the API server")
	}
	w := watchOf(t, c, DiscoveryQuery{Resource: "endpoints", Namespace: "default"})
	expect(t, w, "ADDED default/kubernetes")
}

func TestDiscoveryNeverShowsSecrets(t *testing.T) {
	const secret = "hunter2-s3cr3t"
	pod := newPod("a", "web", "10.0.0.1", upstreamRV("7"),
		annotated(lastApplied, `{"spec":{"containers":[{"env":[{"name":"PASSWORD","value":"`+secret+`"}]}]}}`))
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PASSWORD", Value: secret}}
	pod.Spec.Containers[0].Command = []string{"app", "--password=" + secret}
	pod.Spec.Containers[0].Args = []string{secret}
	pod.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: secret}}
	client := fake.NewClientset(pod)
	c := startCluster(t, client, Options{})

	check := func(what string, obj runtime.Object) {
		t.Helper()
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("%s shows the secret: %s", what, b)
		}
		if !strings.Contains(string(b), `"web"`) {
			t.Errorf("%s lacks the pod: %s", what, b)
		}
	}
	list, err := c.DiscoveryList(context.Background(), DiscoveryQuery{Resource: "pods"})
	if err != nil {
		t.Fatal(err)
	}
	check("the list", list)
	w := watchOf(t, c, DiscoveryQuery{Resource: "pods"})
	check("the watch's initial event", expect(t, w, "ADDED a/web")[0].Object)
	pod.ResourceVersion = "8"
	pod.Labels = map[string]string{"v": "2"}
	if _, err := client.CoreV1().Pods("a").Update(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("the watch's update", expect(t, w, "MODIFIED a/web")[0].Object)
}

func TestDiscoveryWatchEndsWithItsContext(t *testing.T) {
	c, _ := discoveryFixture(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	w, err := c.DiscoveryWatch(ctx, DiscoveryQuery{Resource: "nodes"})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, w, "ADDED node-1", "ADDED node-2")
	cancel()
	for range w.ResultChan() {
	}
	testutil.WaitFor(t, "the watcher to be unregistered", func() bool {
		d := c.discovery["nodes"]
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.watchers) == 0
	})
}
