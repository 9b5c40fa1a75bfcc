package main

// The discovery API's promises to clients other than Prometheus's scrape
// loop, checked against the real API server of TestEndToEndPsystrikeExample:
// watchers share the gateway's watch, a client-go informer survives a
// gateway restart, whose resourceVersions are new, and what psystrike would
// pass to the API server never reaches it.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
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

// auditEvent is what checkHostileNeverReachesAPIServer reads of an
// audit.k8s.io/v1 Event.
type auditEvent struct {
	RequestURI string `json:"requestURI"`
	Verb       string `json:"verb"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
}

// checkHostileNeverReachesAPIServer sends the gateway, raw, what psystrike
// would pass to the API server with its token: other resources, other
// verbs, subresources, and traversal and encoding tricks toward secrets,
// configmaps, serviceaccounts/token and pods/exec. Each must be refused by
// the gateway, and the API server's audit log must hold no request by the
// gateway's ServiceAccount for anything but what discovery reads. A
// sentinel, one request with the gateway's token straight to the API
// server, shows that the log records such a request (RBAC denies it, the
// audit log keeps it) and, once it is there, that every request before it
// was written too.
func checkHostileNeverReachesAPIServer(t *testing.T, k *kubeAPI, gwAddr, namespace string) {
	t.Helper()
	hostile := []string{
		"GET /api/v1/secrets",
		"GET /api/v1/namespaces/NS/secrets",
		"GET /api/v1/namespaces/NS/secrets?watch=1",
		"GET /api/v1/namespaces/NS/configmaps",
		"GET /api/v1/serviceaccounts",
		"POST /api/v1/namespaces/NS/serviceaccounts/default/token",
		"GET /api/v1/namespaces/NS/pods/p/exec?command=sh&stdout=true",
		"POST /api/v1/namespaces/NS/pods/p/exec?command=sh&stdout=true",
		"GET /api/v1/namespaces/NS/pods/p/log",
		"GET /api/v1/namespaces/NS/pods/p",
		"DELETE /api/v1/namespaces/NS/pods/p",
		"PUT /api/v1/namespaces/NS/pods/p",
		"POST /api/v1/namespaces/NS/pods",
		"PATCH /api/v1/nodes/n",
		"GET /api/v1/nodes/n/proxy/configz",
		"GET /api/v1/namespaces/NS/services/s:80/proxy/",
		"GET /api/v1/namespaces/NS/%73ecrets",
		"GET /api/v1/namespaces/NS/pods%2F..%2F..%2Fsecrets",
		"GET /api/v1/namespaces/NS/pods/../secrets",
		"GET /api/v1/namespaces/NS/pods/%2E%2E/secrets",
		"GET /api/v1/namespaces/NS/pods/%252e%252e/secrets",
		"GET /api/v1/namespaces/NS/pods/..%2fconfigmaps",
		"GET /api/v1//secrets",
		"GET /api/v1/./secrets",
		"GET /api/v1/pods;/../secrets",
		"GET //api/v1/secrets",
		"GET /apis/rbac.authorization.k8s.io/v1/clusterroles",
		"POST /apis/authentication.k8s.io/v1/tokenreviews",
		"GET /apis/discovery.k8s.io/v1/../../api/v1/secrets",
	}
	for _, h := range hostile {
		method, target, _ := strings.Cut(strings.ReplaceAll(h, "NS", namespace), " ")
		status, err := rawGatewayRequest(gwAddr, method, target)
		if err != nil {
			t.Errorf("%s %s: %v", method, target, err)
			continue
		}
		switch status {
		case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
		default:
			t.Errorf("%s %s: the gateway answered %d, want 400, 403, 404 or 405", method, target, status)
		}
	}

	gatewayUser := "system:serviceaccount:" + kubeGatewayNamespace + ":" + kubeGatewaySA
	sentinel := "/api/v1/namespaces/" + namespace + "/secrets/scrapegate-hostile-sentinel"
	c, err := k.tlsClient()
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, k.url+sentinel, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+k.serviceAccountToken(t, kubeGatewayNamespace, kubeGatewaySA))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("the sentinel request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the sentinel request, a Secret with the gateway's token: %d, want 403 (deploy/base grants no secrets)", resp.StatusCode)
	}
	var reached []string
	waitFor(t, 30*time.Second, "the sentinel request in the API server's audit log", []*process{k.etcd, k.apiserver}, func() error {
		events, err := readAuditLog(k.auditLog)
		if err != nil {
			return err
		}
		reached = nil
		sentinelSeen := false
		for _, e := range events {
			if e.User.Username != gatewayUser || e.ObjectRef == nil {
				continue
			}
			if e.RequestURI == sentinel {
				sentinelSeen = true
				continue
			}
			switch {
			case e.ObjectRef.Subresource != "",
				!slices.Contains([]string{"pods", "nodes", "services", "endpoints", "endpointslices"}, e.ObjectRef.Resource),
				e.Verb != "list" && e.Verb != "watch":
				reached = append(reached, e.Verb+" "+e.RequestURI)
			}
		}
		if !sentinelSeen {
			return fmt.Errorf("%d events, none the sentinel's", len(events))
		}
		return nil
	})
	if len(reached) > 0 {
		t.Errorf("the gateway's ServiceAccount reached the API server for what discovery does not read:\n\t%s", strings.Join(reached, "\n\t"))
	}
}

// rawGatewayRequest sends method target to the gateway over plain HTTP
// (-tls-allow-plain), byte for byte as given, and returns the status.
func rawGatewayRequest(addr, method, target string) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", method, target, addr); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func readAuditLog(path string) ([]auditEvent, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var events []auditEvent
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e auditEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			// The last line may be half written.
			continue
		}
		events = append(events, e)
	}
	return events, nil
}
