package kube

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// resourceWatch is one informer and how its requests to the API server
// fare. client-go retries failed requests forever and, in watch-list mode
// (on by default since client-go 1.35), reports a refused connection only
// at klog verbosity 2, so the informer's own requests are where a failure
// can be seen and logged.
type resourceWatch struct {
	resource  string // "pods", "nodes", "services", "endpointslices" or "endpoints"
	namespace string // "" is every namespace
	selector  string // a label selector, for the API servers' slices only
	informer  cache.SharedIndexInformer
	// synced is the event handler's HasSynced: true once the cluster's
	// index has seen every object of the first list, not only the
	// informer's store.
	synced cache.InformerSynced

	// failure is the last request's error; nil once a request succeeded.
	failure atomic.Pointer[apiError]

	mu         sync.Mutex
	warnedAt   time.Time // when a failure was last logged at warn level
	suppressed int       // failures logged at debug level only since then
}

// apiError is a failed request to the API server.
type apiError struct {
	what  string // "cannot list pods from https://10.0.0.1:443"
	cause error  // the error without the request's URL, which what names
	err   error  // as the client returned it
}

func (e *apiError) Error() string { return e.what + ": " + e.cause.Error() }

// newInformer returns an informer of w's resource, registered with the
// cluster, whose every request to the API server goes through
// requestEnded.
func (c *Cluster) newInformer(client kubernetes.Interface, w *resourceWatch, example runtime.Object, transform cache.TransformFunc,
	handler cache.ResourceEventHandler, list cache.ListWithContextFunc, watchFunc cache.WatchFuncWithContext) (cache.SharedIndexInformer, error) {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			obj, err := list(ctx, o)
			return obj, c.requestEnded(ctx, w, "list", err, time.Now())
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			verb := "watch"
			if o.SendInitialEvents != nil && *o.SendInitialEvents {
				verb = "list" // watch-list mode: the list, streamed
			}
			wi, err := watchFunc(ctx, o)
			return wi, c.requestEnded(ctx, w, verb, err, time.Now())
		},
	}
	// No resync: every change arrives as a watch event; a periodic resync
	// would only rebuild the documents for nothing.
	w.informer = cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, client), example, cache.SharedIndexInformerOptions{})
	if err := w.informer.SetTransform(transform); err != nil {
		return nil, err
	}
	err := w.informer.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		if f := w.failure.Load(); f != nil && errors.Is(err, f.err) {
			return // a failed request, logged by requestEnded
		}
		cache.DefaultWatchErrorHandler(ctx, r, err) // a watch stream that broke: client-go's judgement and klog line
	})
	if err != nil {
		return nil, err
	}
	reg, err := w.informer.AddEventHandler(handler)
	if err != nil {
		return nil, err
	}
	w.synced = reg.HasSynced
	c.watches = append(c.watches, w)
	return w.informer, nil
}

// requestEnded records how a request of w's informer ended and logs a
// failure: at warn level at most once per failureLogInterval for each
// informer, with the count of failures since the last such line, and at
// debug level otherwise. It returns err unchanged: client-go decides on
// retries by it.
func (c *Cluster) requestEnded(ctx context.Context, w *resourceWatch, verb string, err error, now time.Time) error {
	if err == nil {
		w.failure.Store(nil)
		return nil
	}
	if ctx.Err() != nil {
		return err // the cluster is stopping
	}
	what := "cannot " + verb + " " + w.resource
	if w.namespace != "" {
		what += " in namespace " + w.namespace
	}
	if w.selector != "" {
		what += " labelled " + w.selector
	}
	cause := err
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		cause = ue.Err // "Get \"https://...\": " repeats the server, and the query is noise
	}
	w.failure.Store(&apiError{what: what + " from " + c.server, cause: cause, err: err})

	w.mu.Lock()
	warn := w.warnedAt.IsZero() || now.Sub(w.warnedAt) >= c.failureLogInterval
	suppressed := w.suppressed
	if warn {
		w.warnedAt, w.suppressed = now, 0
	} else {
		w.suppressed++
	}
	w.mu.Unlock()

	e := c.log.Debug()
	if warn {
		e = c.log.Warn().Int("suppressed", suppressed)
	}
	e = e.Str("server", c.server).Str("resource", w.resource)
	if w.namespace != "" {
		e = e.Str("namespace", w.namespace)
	}
	switch {
	case c.ownWatch(w) && !w.synced():
		// Not one /readyz waits for (apiserver_endpoints.go, components.go).
		e.Err(cause).Msg(what + " from the Kubernetes API server: the routes that need it answer 503 until it succeeds")
	case c.Synced():
		e.Err(cause).Msg(what + " from the Kubernetes API server: serving from the last state seen until it succeeds")
	default:
		e.Err(cause).Msg(what + " from the Kubernetes API server: /readyz answers 503 until the first list of pods, nodes, Services and EndpointSlices succeeds")
	}
	return err
}

// SyncFailure returns why the informers have not synced, when a request
// of one still waiting for its first list failed last; else nil.
func (c *Cluster) SyncFailure() error {
	for _, w := range c.watches {
		if f := w.failure.Load(); f != nil && !w.synced() && !c.ownWatch(w) {
			return f
		}
	}
	return nil
}

// serverOf returns the API server's URL that client talks to.
func serverOf(client kubernetes.Interface) string {
	rc, ok := client.CoreV1().RESTClient().(*rest.RESTClient)
	if !ok || rc == nil {
		return "the API server" // fake clients in tests have no REST client
	}
	u := rc.Get().URL()
	return u.Scheme + "://" + u.Host
}
