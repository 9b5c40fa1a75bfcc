package kube

//lint:file-ignore SA1019 Prometheus's role: endpoints reads the deprecated core/v1 Endpoints, which the discovery API therefore serves.

// The read-only Kubernetes discovery API's cache (issue 16): lists and
// watches of pods, nodes, Services, Endpoints and EndpointSlices served from
// the gateway's own informers, with the API server's semantics, so that N
// Prometheus servers cost the API server one watch per resource, not N.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metainternalversionvalidation "k8s.io/apimachinery/pkg/apis/meta/internalversion/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// DiscoveryResources are the resources DiscoveryList and DiscoveryWatch serve.
var DiscoveryResources = []string{"pods", "nodes", "services", "endpoints", "endpointslices"}

// DiscoveryQuery is one list or watch of a DiscoveryResource.
type DiscoveryQuery struct {
	Resource, Namespace                    string // Namespace "" = all
	LabelSelector, FieldSelector           string
	ResourceVersion, ResourceVersionMatch  string
	SendInitialEvents, AllowWatchBookmarks bool
}

// discoveryStartRV is where every resource's sequence of resourceVersions
// starts: the process's start in unix nanoseconds, so that the versions a
// client holds from an earlier process are older than any this one
// serves, and are answered 410 Gone, which makes the client relist.
var discoveryStartRV = uint64(time.Now().UnixNano())

// discoveryBookmarkInterval is how often a watch that allows bookmarks
// gets one, as the API server sends them about every minute: a client that
// re-watches then resumes from a recent version instead of relisting.
var discoveryBookmarkInterval = time.Minute

// discoveryHistory is how many of a resource's latest events are kept, so
// that a client whose watch broke re-watches from its last version rather
// than relisting. The events share their objects with the current state,
// so this costs a few pointers each; at 4096 it covers minutes of a large
// cluster's churn, as the API server's watch cache keeps 75 seconds at
// least.
const discoveryHistory = 4096

// discoveryWatchBuffer is how many events a watcher may fall behind by
// before it is closed: handlers must never wait for a client. The client
// re-watches from the last version it received.
const discoveryWatchBuffer = 1024

// discoveryEvent is one change of a resource, as the cache served it:
// obj carries the event's version; prev is the object it replaced (nil for
// an addition), which decides when a filtered watcher sees an update as an
// addition or a deletion. A deletion's obj is prev with the new version.
type discoveryEvent struct {
	typ  watch.EventType
	obj  runtime.Object
	prev runtime.Object
	rv   uint64
}

// discoveryEntry is an object as served, and the upstream resourceVersion
// it was made from, by which relists' replays are told from changes.
type discoveryEntry struct {
	obj        runtime.Object
	upstreamRV string
	uid        types.UID // a new one under the same key is a re-creation
}

// discoveryCache is the state and recent history of one resource, fed by
// the handlers of the informers the cluster view already runs.
//
// Its resourceVersions are its own, not the API server's: each resource is
// watched by one informer per namespace, which deliver in no common order
// with respect to the upstream versions; a deletion missed during a relist
// (cache.DeletedFinalStateUnknown) has no version at all; and handlers never
// see the version of the list an informer synced at. A sequence of our own,
// one number per change a handler sees, orders every event the same for
// every client and makes "everything after N" exact.
type discoveryCache struct {
	resource string
	// synced are the handlers' HasSynced of the informers feeding it.
	synced []cache.InformerSynced

	mu       sync.Mutex
	rv       uint64 // the latest event's version
	objects  map[string]discoveryEntry
	history  []discoveryEvent // a ring of discoveryHistory events
	next     int              // where the next event goes in history
	oldest   uint64           // every event after this version is in history
	watchers map[*discoveryWatcher]struct{}
}

func newDiscoveryCache(resource string) *discoveryCache {
	return &discoveryCache{
		resource: resource,
		rv:       discoveryStartRV,
		oldest:   discoveryStartRV,
		objects:  make(map[string]discoveryEntry),
		history:  make([]discoveryEvent, 0, discoveryHistory),
		watchers: make(map[*discoveryWatcher]struct{}),
	}
}

// changed records an addition or update an informer handler saw. Updates
// that keep the upstream version (a relist's replay) are no change. An
// update to an object of another UID is a deletion and a re-creation that a
// relist folded into one: watchers see both, as the API server's would, so
// that a client keyed by UID forgets the old object.
func (d *discoveryCache) changed(obj any) {
	o, ok := obj.(runtime.Object)
	if !ok {
		return
	}
	m, err := meta.Accessor(o)
	if err != nil {
		return
	}
	key := objectKeyString(m.GetNamespace(), m.GetName())
	d.mu.Lock()
	defer d.mu.Unlock()
	old, had := d.objects[key]
	if had && old.upstreamRV == m.GetResourceVersion() {
		return
	}
	if had && old.uid != m.GetUID() {
		d.rv++
		d.addLocked(discoveryEvent{typ: watch.Deleted, obj: withResourceVersion(old.obj, d.rv), prev: old.obj, rv: d.rv})
		had = false
	}
	d.rv++
	served := withResourceVersion(o, d.rv)
	d.objects[key] = discoveryEntry{obj: served, upstreamRV: m.GetResourceVersion(), uid: m.GetUID()}
	ev := discoveryEvent{typ: watch.Added, obj: served, rv: d.rv}
	if had {
		ev.typ, ev.prev = watch.Modified, old.obj
	}
	d.addLocked(ev)
}

// deleted records a deletion an informer handler saw, with the last object
// served as the deleted one.
func (d *discoveryCache) deleted(obj any) {
	var key string
	switch o := obj.(type) {
	case cache.DeletedFinalStateUnknown:
		key = o.Key
	default:
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		key = objectKeyString(m.GetNamespace(), m.GetName())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old, had := d.objects[key]
	if !had {
		return
	}
	delete(d.objects, key)
	d.rv++
	d.addLocked(discoveryEvent{typ: watch.Deleted, obj: withResourceVersion(old.obj, d.rv), prev: old.obj, rv: d.rv})
}

// addLocked appends ev to the history and hands it to every watcher; a
// watcher too far behind to take it is closed.
func (d *discoveryCache) addLocked(ev discoveryEvent) {
	if len(d.history) < discoveryHistory {
		d.history = append(d.history, ev)
	} else {
		d.oldest = d.history[d.next].rv
		d.history[d.next] = ev
	}
	d.next = (d.next + 1) % discoveryHistory
	for w := range d.watchers {
		select {
		case w.in <- ev:
		default:
			delete(d.watchers, w)
			close(w.in)
		}
	}
}

// sinceLocked returns the events after version rv, oldest first, and
// whether the history holds all of them.
func (d *discoveryCache) sinceLocked(rv uint64) ([]discoveryEvent, bool) {
	if rv < d.oldest || rv > d.rv {
		return nil, false
	}
	n := int(d.rv - rv) // the events after rv are the last n
	out := make([]discoveryEvent, 0, n)
	for i := len(d.history) - n; i < len(d.history); i++ {
		out = append(out, d.history[(d.next+i)%len(d.history)])
	}
	return out, true
}

// snapshotLocked returns the objects that pass f, sorted by key.
func (d *discoveryCache) snapshotLocked(f *discoveryFilter) []runtime.Object {
	keys := make([]string, 0, len(d.objects))
	for k, e := range d.objects {
		if f.matches(e.obj) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([]runtime.Object, len(keys))
	for i, k := range keys {
		out[i] = d.objects[k].obj
	}
	return out
}

func objectKeyString(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// withResourceVersion returns a shallow copy of obj with resourceVersion
// rv: the informers' objects are shared and never changed.
func withResourceVersion(obj runtime.Object, rv uint64) runtime.Object {
	v := strconv.FormatUint(rv, 10)
	switch o := obj.(type) {
	case *corev1.Pod:
		cp := *o
		cp.ResourceVersion = v
		return &cp
	case *corev1.Node:
		cp := *o
		cp.ResourceVersion = v
		return &cp
	case *corev1.Service:
		cp := *o
		cp.ResourceVersion = v
		return &cp
	case *corev1.Endpoints:
		cp := *o
		cp.ResourceVersion = v
		return &cp
	case *discoveryv1.EndpointSlice:
		cp := *o
		cp.ResourceVersion = v
		return &cp
	}
	panic(fmt.Sprintf("discovery cache: unexpected %T", obj))
}

// watchEndpoints adds the informer of the Endpoints in namespace, which
// startEndpoints starts.
func (c *Cluster) watchEndpoints(client kubernetes.Interface, namespace string) error {
	d := c.discovery["endpoints"]
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    d.changed,
		UpdateFunc: func(_, obj any) { d.changed(obj) },
		DeleteFunc: d.deleted,
	}
	eps := client.CoreV1().Endpoints(namespace)
	w := &resourceWatch{resource: "endpoints", namespace: namespace}
	c.endpointsWatches = append(c.endpointsWatches, w)
	_, err := c.newInformer(client, w, &corev1.Endpoints{}, stripEndpoints, handler,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return eps.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return eps.Watch(ctx, o) })
	return err
}

// stripEndpoints keeps core/v1 Endpoints as they are, but for their managed
// fields and last-applied configuration, as EndpointSlices: Prometheus's
// role: endpoints reads all of the rest.
func stripEndpoints(obj any) (any, error) {
	eps, ok := obj.(*corev1.Endpoints)
	if !ok {
		return obj, nil
	}
	eps.ManagedFields = nil
	eps.Annotations = withoutLastApplied(eps.Annotations)
	return eps, nil
}

// discoveryKind is what differs between the resources served.
type discoveryKind struct {
	group      string
	namespaced bool
	// fields are the field labels a field selector may use, with their
	// values: only those of fields the stripped objects keep.
	fields map[string]func(runtime.Object) string
	// empty is an object of the kind with only a resourceVersion, a
	// bookmark's.
	empty func(rv string) runtime.Object
	list  func(items []runtime.Object, rv string) runtime.Object
}

func objectName(o runtime.Object) string {
	m, _ := meta.Accessor(o)
	return m.GetName()
}

func objectNamespace(o runtime.Object) string {
	m, _ := meta.Accessor(o)
	return m.GetNamespace()
}

var discoveryKinds = map[string]*discoveryKind{
	"pods": {
		namespaced: true,
		fields: map[string]func(runtime.Object) string{
			"metadata.name":      objectName,
			"metadata.namespace": objectNamespace,
			"spec.nodeName":      func(o runtime.Object) string { return o.(*corev1.Pod).Spec.NodeName },
			"spec.hostNetwork":   func(o runtime.Object) string { return strconv.FormatBool(o.(*corev1.Pod).Spec.HostNetwork) },
			"status.phase":       func(o runtime.Object) string { return string(o.(*corev1.Pod).Status.Phase) },
			"status.podIP": func(o runtime.Object) string {
				// As the API server: the first of podIPs.
				if p := o.(*corev1.Pod); len(p.Status.PodIPs) > 0 {
					return p.Status.PodIPs[0].IP
				}
				return ""
			},
		},
		empty: func(rv string) runtime.Object {
			return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}}
		},
		list: func(items []runtime.Object, rv string) runtime.Object {
			l := &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]corev1.Pod, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*corev1.Pod)
			}
			return l
		},
	},
	"nodes": {
		fields: map[string]func(runtime.Object) string{"metadata.name": objectName},
		empty: func(rv string) runtime.Object {
			return &corev1.Node{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}}
		},
		list: func(items []runtime.Object, rv string) runtime.Object {
			l := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]corev1.Node, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*corev1.Node)
			}
			return l
		},
	},
	"services": {
		namespaced: true,
		fields: map[string]func(runtime.Object) string{
			"metadata.name":      objectName,
			"metadata.namespace": objectNamespace,
			"spec.clusterIP":     func(o runtime.Object) string { return o.(*corev1.Service).Spec.ClusterIP },
			"spec.type":          func(o runtime.Object) string { return string(o.(*corev1.Service).Spec.Type) },
		},
		empty: func(rv string) runtime.Object {
			return &corev1.Service{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}}
		},
		list: func(items []runtime.Object, rv string) runtime.Object {
			l := &corev1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]corev1.Service, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*corev1.Service)
			}
			return l
		},
	},
	"endpoints": {
		namespaced: true,
		fields:     map[string]func(runtime.Object) string{"metadata.name": objectName, "metadata.namespace": objectNamespace},
		empty: func(rv string) runtime.Object {
			return &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}}
		},
		list: func(items []runtime.Object, rv string) runtime.Object {
			l := &corev1.EndpointsList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]corev1.Endpoints, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*corev1.Endpoints)
			}
			return l
		},
	},
	"endpointslices": {
		group:      discoveryv1.GroupName,
		namespaced: true,
		fields:     map[string]func(runtime.Object) string{"metadata.name": objectName, "metadata.namespace": objectNamespace},
		empty: func(rv string) runtime.Object {
			return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}}
		},
		list: func(items []runtime.Object, rv string) runtime.Object {
			l := &discoveryv1.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: rv}, Items: make([]discoveryv1.EndpointSlice, len(items))}
			for i, o := range items {
				l.Items[i] = *o.(*discoveryv1.EndpointSlice)
			}
			return l
		},
	},
}

// discoveryFilter is a query's namespace and selectors.
type discoveryFilter struct {
	kind      *discoveryKind
	namespace string
	labels    labels.Selector
	fields    fields.Selector
}

func (f *discoveryFilter) matches(obj runtime.Object) bool {
	m, err := meta.Accessor(obj)
	if err != nil {
		return false
	}
	if f.namespace != "" && m.GetNamespace() != f.namespace {
		return false
	}
	if !f.labels.Matches(labels.Set(m.GetLabels())) {
		return false
	}
	if f.fields.Empty() {
		return true
	}
	set := make(fields.Set, len(f.kind.fields))
	for name, value := range f.kind.fields {
		set[name] = value(obj)
	}
	return f.fields.Matches(set)
}

// discoveryQuery is a DiscoveryQuery checked: its resource's cache and
// kind, and its filter.
type discoveryQuery struct {
	cache  *discoveryCache
	kind   *discoveryKind
	filter *discoveryFilter
}

// checkDiscoveryQuery checks what q asks, as the API server would refuse it.
func (c *Cluster) checkDiscoveryQuery(q DiscoveryQuery) (*discoveryQuery, error) {
	kind, ok := discoveryKinds[q.Resource]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: q.Resource}, "")
	}
	gr := schema.GroupResource{Group: kind.group, Resource: q.Resource}
	if q.Namespace != "" {
		if !kind.namespaced {
			return nil, apierrors.NewNotFound(gr, "")
		}
		if len(c.namespaces) > 0 && !slices.Contains(c.namespaces, q.Namespace) {
			return nil, apierrors.NewForbidden(gr, "", fmt.Errorf("the gateway serves only the namespaces of -kubernetes-namespaces (%s), not %q", strings.Join(c.namespaces, ","), q.Namespace))
		}
	}
	ls, err := labels.Parse(q.LabelSelector)
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("unable to parse requirement: %v", err))
	}
	fs, err := fields.ParseSelector(q.FieldSelector)
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid field selector: %v", err))
	}
	for _, r := range fs.Requirements() {
		if _, ok := kind.fields[r.Field]; !ok {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", r.Field))
		}
	}
	return &discoveryQuery{
		cache:  c.discovery[q.Resource],
		kind:   kind,
		filter: &discoveryFilter{kind: kind, namespace: q.Namespace, labels: ls, fields: fs},
	}, nil
}

// parseDiscoveryRV parses a resourceVersion; 0 stands for "" and "0", any.
func parseDiscoveryRV(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	rv, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("invalid resource version %q: %v", s, err))
	}
	return rv, nil
}

// validateListOptions refuses the combinations of resourceVersion,
// resourceVersionMatch and sendInitialEvents the API server refuses, with
// its own validation and its 422 Invalid. A false SendInitialEvents stands
// for both "false" and absent: with a resourceVersionMatch, which needs it,
// it is taken as given.
func validateListOptions(q DiscoveryQuery, isWatch bool) error {
	opts := &metainternalversion.ListOptions{
		Watch:                isWatch,
		ResourceVersion:      q.ResourceVersion,
		ResourceVersionMatch: metav1.ResourceVersionMatch(q.ResourceVersionMatch),
	}
	if isWatch && (q.SendInitialEvents || q.ResourceVersionMatch != "") {
		opts.SendInitialEvents = &q.SendInitialEvents
	}
	if errs := metainternalversionvalidation.ValidateListOptions(opts, true); len(errs) > 0 {
		return apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "ListOptions"}, "", errs)
	}
	return nil
}

func tooOld(rv uint64) error {
	return apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d", rv))
}

// tooLarge is the API server's answer to a version it has not reached
// (k8s.io/apiserver's storage.NewTooLargeResourceVersionError): 504, with
// the cause client-go's reflector relists on. The API server first waits
// up to 3 s for its cache to catch up; the gateway answers at once, as its
// versions are its own: one it has not reached is another process's (a
// replica behind the same Service), and waiting would not bring it.
func tooLarge(rv, current uint64) error {
	err := apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", rv, current), 1)
	err.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: metav1.CauseTypeResourceVersionTooLarge, Message: "Too large resource version"}}
	return err
}

// waitSynced waits until the informers feeding d have listed their
// objects, or answers 503 once ctx is done.
func (c *Cluster) waitSynced(ctx context.Context, d *discoveryCache) error {
	if d.resource == "endpoints" {
		c.startEndpoints()
	}
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return len(d.synced) > 0 && !slices.ContainsFunc(d.synced, func(s cache.InformerSynced) bool { return !s() }), nil
	})
	if err != nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("the gateway has not yet listed the %s from the Kubernetes API server", d.resource))
	}
	return nil
}

// startDiscovery is what a list and a watch check first, in the API
// server's order: the query, its resourceVersion, the list options; then
// it waits for the resource's informers to sync.
func (c *Cluster) startDiscovery(ctx context.Context, q DiscoveryQuery, isWatch bool) (*discoveryQuery, uint64, error) {
	dq, err := c.checkDiscoveryQuery(q)
	if err != nil {
		return nil, 0, err
	}
	rv, err := parseDiscoveryRV(q.ResourceVersion)
	if err != nil {
		return nil, 0, err
	}
	if err := validateListOptions(q, isWatch); err != nil {
		return nil, 0, err
	}
	if err := c.waitSynced(ctx, dq.cache); err != nil {
		return nil, 0, err
	}
	return dq, rv, nil
}

// DiscoveryList lists q.Resource as the API server would from its watch
// cache: at the latest version, whatever older version q asks for, sorted
// by namespace and name, in one piece.
func (c *Cluster) DiscoveryList(ctx context.Context, q DiscoveryQuery) (runtime.Object, error) {
	dq, rv, err := c.startDiscovery(ctx, q, false)
	if err != nil {
		return nil, err
	}
	d := dq.cache
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case rv > d.rv:
		return nil, tooLarge(rv, d.rv)
	case q.ResourceVersionMatch == string(metav1.ResourceVersionMatchExact) && rv != d.rv:
		return nil, tooOld(rv)
	}
	return dq.kind.list(d.snapshotLocked(dq.filter), strconv.FormatUint(d.rv, 10)), nil
}

// DiscoveryWatch watches q.Resource as the API server would: from
// version "" or "0" the current objects first as additions (then, with
// SendInitialEvents, a bookmark marking their end), from any other version
// the events after it. It ends when ctx is done, Stop is called, or the
// client falls too far behind.
func (c *Cluster) DiscoveryWatch(ctx context.Context, q DiscoveryQuery) (watch.Interface, error) {
	dq, rv, err := c.startDiscovery(ctx, q, true)
	if err != nil {
		return nil, err
	}
	d := dq.cache
	w := &discoveryWatcher{
		cache:     d,
		query:     dq,
		in:        make(chan discoveryEvent, discoveryWatchBuffer),
		out:       make(chan watch.Event),
		stop:      make(chan struct{}),
		bookmarks: q.AllowWatchBookmarks,
	}
	d.mu.Lock()
	if rv > d.rv {
		defer d.mu.Unlock()
		return nil, tooLarge(rv, d.rv)
	}
	switch {
	case q.SendInitialEvents || rv == 0:
		for _, o := range d.snapshotLocked(dq.filter) {
			w.backlog = append(w.backlog, discoveryEvent{typ: watch.Added, obj: o})
		}
		// As the API server: the end is marked only for a client that
		// takes bookmarks.
		w.initialEventsEnd = q.SendInitialEvents && q.AllowWatchBookmarks
	default:
		events, ok := d.sinceLocked(rv)
		if !ok {
			d.mu.Unlock()
			return nil, tooOld(rv)
		}
		w.backlog = events
	}
	w.rv = d.rv
	d.watchers[w] = struct{}{}
	d.mu.Unlock()
	go w.run(ctx)
	return w, nil
}

// discoveryWatcher is one DiscoveryWatch.
type discoveryWatcher struct {
	cache *discoveryCache
	query *discoveryQuery
	// backlog are the events it starts with; in those after, closed by the
	// cache when it falls behind.
	backlog          []discoveryEvent
	initialEventsEnd bool
	in               chan discoveryEvent
	out              chan watch.Event
	stop             chan struct{}
	stopOnce         sync.Once
	bookmarks        bool
	// rv is the version of the last event sent or filtered out: every
	// event up to it has been judged, so a bookmark may carry it.
	rv uint64
}

func (w *discoveryWatcher) ResultChan() <-chan watch.Event { return w.out }

func (w *discoveryWatcher) Stop() { w.stopOnce.Do(func() { close(w.stop) }) }

func (w *discoveryWatcher) run(ctx context.Context) {
	defer close(w.out)
	defer func() {
		w.cache.mu.Lock()
		delete(w.cache.watchers, w)
		w.cache.mu.Unlock()
	}()
	for _, ev := range w.backlog {
		if !w.send(ctx, ev) {
			return
		}
	}
	w.backlog = nil
	if w.initialEventsEnd {
		b := w.query.kind.empty(strconv.FormatUint(w.rv, 10))
		m, _ := meta.Accessor(b)
		m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
		if !w.emit(ctx, watch.Event{Type: watch.Bookmark, Object: b}) {
			return
		}
	}
	var tick <-chan time.Time
	if w.bookmarks {
		t := time.NewTicker(discoveryBookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case ev, ok := <-w.in:
			if !ok {
				return // fell behind: the client re-watches from w.rv
			}
			if !w.send(ctx, ev) {
				return
			}
		case <-tick:
			if !w.emit(ctx, watch.Event{Type: watch.Bookmark, Object: w.query.kind.empty(strconv.FormatUint(w.rv, 10))}) {
				return
			}
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

// send sends ev as this watcher's filter sees it: an update that makes an
// object match is an addition, one that makes it stop matching a deletion
// (of the object as it was, at the event's version), as the API server's
// watch cache does.
func (w *discoveryWatcher) send(ctx context.Context, ev discoveryEvent) bool {
	if ev.rv > w.rv {
		w.rv = ev.rv
	}
	f := w.query.filter
	cur := ev.typ != watch.Deleted && f.matches(ev.obj)
	was := ev.prev != nil && f.matches(ev.prev)
	switch {
	case cur && !was:
		return w.emit(ctx, watch.Event{Type: watch.Added, Object: ev.obj})
	case cur && was:
		return w.emit(ctx, watch.Event{Type: watch.Modified, Object: ev.obj})
	case was:
		obj := ev.obj
		if ev.typ != watch.Deleted {
			obj = withResourceVersion(ev.prev, ev.rv)
		}
		return w.emit(ctx, watch.Event{Type: watch.Deleted, Object: obj})
	}
	return true
}

func (w *discoveryWatcher) emit(ctx context.Context, ev watch.Event) bool {
	select {
	case w.out <- ev:
		return true
	case <-w.stop:
		return false
	case <-ctx.Done():
		return false
	}
}
