package main

// The discovery API's promises to clients other than Prometheus's scrape
// loop, checked against the real API server of TestEndToEndPsystrikeExample:
// watchers share the gateway's watch, and a client-go informer survives a
// gateway restart, whose resourceVersions are new.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// gatewayKubeClient is a clientset on the gateway's discovery API as
// Prometheus's is: contentType (protobuf, as Prometheus asks, or JSON), and
// the example's insecure_skip_verify.
func gatewayKubeClient(t *testing.T, addr, contentType string) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(&rest.Config{
		Host:            "https://" + addr,
		ContentConfig:   rest.ContentConfig{ContentType: contentType},
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             -1,
	})
	if err != nil {
		t.Fatalf("cannot make a client of the gateway's discovery API: %v", err)
	}
	return c
}

// apiServerWatches is how many watches of resource the API server serves
// (apiserver_longrunning_requests, every scope summed).
func apiServerWatches(k *kubeAPI, resource string) (int, error) {
	c, err := k.tlsClient()
	if err != nil {
		return 0, err
	}
	status, body, err := k.get(c, "/metrics")
	if err != nil || status != 200 {
		return 0, fmt.Errorf("cannot get the API server's /metrics: %d %v", status, err)
	}
	n, found := 0, false
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "apiserver_longrunning_requests{") || !strings.Contains(line, `verb="WATCH"`) ||
			!strings.Contains(line, `resource="`+resource+`"`) || !strings.Contains(line, `subresource=""`) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("cannot parse %q: %w", line, err)
		}
		n += int(v)
		found = true
	}
	if !found {
		return 0, fmt.Errorf("the API server's /metrics has no apiserver_longrunning_requests of WATCH %s", resource)
	}
	return n, nil
}

// checkWatchersShareOneWatch opens ten pod watches on the gateway, cluster-wide
// and in namespace, and checks the API server serves no more pod watches
// than before; one watch on the API server itself shows the count moves.
func checkWatchersShareOneWatch(t *testing.T, k *kubeAPI, gwAddr, namespace string, procs []*process) {
	t.Helper()
	before, err := apiServerWatches(k, "pods")
	if err != nil {
		t.Fatal(err)
	}
	want := func(n int) func() error {
		return func() error {
			got, err := apiServerWatches(k, "pods")
			if err == nil && got != n {
				err = fmt.Errorf("the API server serves %d pod watches, want %d (%d before the watchers)", got, n, before)
			}
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	direct, err := k.client.CoreV1().Pods(namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("cannot watch pods on the API server: %v", err)
	}
	waitFor(t, 30*time.Second, "one direct watch to count on the API server", procs, want(before+1))
	direct.Stop()
	waitFor(t, 30*time.Second, "the direct watch to end on the API server", procs, want(before))

	for i, contentType := range []string{"application/vnd.kubernetes.protobuf", "application/json"} {
		c := gatewayKubeClient(t, gwAddr, contentType)
		for j := range 5 {
			ns := ""
			if j%2 == 1 {
				ns = namespace
			}
			w, err := c.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatalf("watcher %d (%s, namespace %q): cannot watch pods through the gateway: %v", i*5+j, contentType, ns, err)
			}
			defer w.Stop()
			// A watch without a resourceVersion starts with the state: its
			// first event proves it is open.
			select {
			case ev, ok := <-w.ResultChan():
				if !ok || ev.Type != watch.Added {
					t.Fatalf("watcher %d (%s, namespace %q): first event %v (open %v), want ADDED", i*5+j, contentType, ns, ev.Type, ok)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("watcher %d (%s, namespace %q): no event in 30s", i*5+j, contentType, ns)
			}
		}
	}
	waitFor(t, 30*time.Second, "ten watchers on the gateway to cost the API server no pod watch", procs, want(before))
}

// survivingInformer is a client-go pod informer on the gateway, the library
// Prometheus's discovery uses, that records the watch errors it gets.
type survivingInformer struct {
	informer cache.SharedIndexInformer
	expired  atomic.Int32
	stop     chan struct{}
}

func startSurvivingInformer(t *testing.T, gwAddr, namespace string, procs []*process) *survivingInformer {
	t.Helper()
	c := gatewayKubeClient(t, gwAddr, "application/vnd.kubernetes.protobuf")
	s := &survivingInformer{
		informer: cache.NewSharedIndexInformer(cache.NewListWatchFromClient(c.CoreV1().RESTClient(), "pods", namespace, fields.Everything()), &corev1.Pod{}, 0, cache.Indexers{}),
		stop:     make(chan struct{}),
	}
	if err := s.informer.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			s.expired.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(s.stop) })
	go s.informer.Run(s.stop)
	waitFor(t, 30*time.Second, "the informer on the gateway to sync", procs, func() error {
		if !s.informer.HasSynced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	return s
}

// has says whether the informer's cache holds namespace/name.
func (s *survivingInformer) has(namespace, name string) bool {
	_, ok, _ := s.informer.GetStore().GetByKey(namespace + "/" + name)
	return ok
}

func createBarePod(t *testing.T, k *kubeAPI, namespace, name string) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/c"}}}}
	if _, err := k.client.CoreV1().Pods(namespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("cannot create pod %s/%s: %v", namespace, name, err)
	}
}

// checkOldVersionGone watches from a resourceVersion the previous gateway
// process issued, in protobuf and JSON: the gateway answers 410 Gone, as the
// API server does for a version its watch cache no longer has.
func checkOldVersionGone(t *testing.T, gwAddr, namespace, rv string) {
	t.Helper()
	for _, contentType := range []string{"application/vnd.kubernetes.protobuf", "application/json"} {
		w, err := gatewayKubeClient(t, gwAddr, contentType).CoreV1().Pods(namespace).Watch(context.Background(), metav1.ListOptions{ResourceVersion: rv})
		if err == nil {
			ev := <-w.ResultChan()
			w.Stop()
			status, ok := ev.Object.(*metav1.Status)
			if ev.Type != watch.Error || !ok || status.Code != 410 {
				t.Errorf("watch (%s) from resourceVersion %s of the previous gateway: first event %s %v, want 410 Gone", contentType, rv, ev.Type, ev.Object)
			}
			continue
		}
		if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
			t.Errorf("watch (%s) from resourceVersion %s of the previous gateway: %v, want 410 Gone", contentType, rv, err)
		}
	}
}
