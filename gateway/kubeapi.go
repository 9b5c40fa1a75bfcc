package gateway

// The read-only Kubernetes discovery API (issue 16): what Prometheus's
// kubernetes_sd_configs with api_server pointed at the gateway ask for, and
// nothing else. /version, the legacy discovery documents, and list and
// watch of pods, nodes, services, endpoints and endpointslices, served from
// the gateway's own caches (kube.Cluster.DiscoveryList, DiscoveryWatch).
// Every other path under /api/ and /apis/ is answered here as the API
// server would answer a caller without the rights to it, and nothing is
// ever forwarded. The path is judged raw, before anything decodes it.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/munnerz/goautoneg"
	"github.com/valyala/fasthttp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metainternalversionscheme "k8s.io/apimachinery/pkg/apis/meta/internalversion/scheme"
	metainternalversionvalidation "k8s.io/apimachinery/pkg/apis/meta/internalversion/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/gateway/target"
)

// Paths of the discovery API.
const (
	kubeAPIVersionPath = "/version"
	kubeAPICorePath    = "/api"
	kubeAPIGroupsPath  = "/apis"
	nodeProxyPrefix    = "/api/v1/nodes/"
)

// Watch durations as the API server's: timeoutSeconds absent or 0 is a
// random duration in [kubeAPIMinWatch, 2*kubeAPIMinWatch) (its
// --min-request-timeout, so that watches do not all end at once), and,
// unlike the API server, a longer timeoutSeconds is capped at
// 2*kubeAPIMinWatch: a connection is not held for days.
const kubeAPIMinWatch = 1800 * time.Second

// kubeAPISyncWait is how long a list or watch waits for the caches to
// have synced before it is answered 503.
const kubeAPISyncWait = 10 * time.Second

// isKubeAPIPath tells the discovery API's paths: every one the API server
// could answer, so that none of them reaches the 404 of routeOther.
func isKubeAPIPath(path []byte) bool {
	switch string(path) {
	case kubeAPIVersionPath, kubeAPICorePath, kubeAPIGroupsPath:
		return true
	}
	return bytes.HasPrefix(path, []byte(kubeAPICorePath+"/")) || bytes.HasPrefix(path, []byte(kubeAPIGroupsPath+"/"))
}

// nodeProxyAlias splits /api/v1/nodes/{node}/proxy{path}, the API server's
// node proxy that psystrike's example scrapes, into the node and one of the
// kubelet metrics paths: ok is false for any other path, which the
// discovery API then refuses.
func nodeProxyAlias(path []byte) (node, kubeletPath []byte, ok bool) {
	rest, ok := bytes.CutPrefix(path, []byte(nodeProxyPrefix))
	if !ok {
		return nil, nil, false
	}
	node, rest, _ = bytes.Cut(rest, []byte("/"))
	kubeletPath, ok = bytes.CutPrefix(rest, []byte("proxy"))
	if !ok || !kube.IsKubeletPath(string(kubeletPath)) || len(validation.IsDNS1123Subdomain(string(node))) > 0 {
		return nil, nil, false
	}
	return node, kubeletPath, true
}

func isNodeProxyAlias(path []byte) bool {
	_, _, ok := nodeProxyAlias(path)
	return ok
}

// parseNodeProxyPath parses an alias of /nodes/{node}/{path}: the same
// kubelet target, with the same token and checks.
func (g *Gateway) parseNodeProxyPath(uri []byte) (scrapeTarget, error) {
	path, query := target.SplitQuery(uri)
	node, kubeletPath, _ := nodeProxyAlias(path) // routeOf matched it
	return g.kubeletTarget(node, kubeletPath, query)
}

// kubeAPIResource is one resource the discovery API lists and watches.
type kubeAPIResource struct {
	name, singular, kind string
	namespaced           bool
}

// kubeAPIGroupVersion is a group version the discovery API serves.
type kubeAPIGroupVersion struct {
	gv        schema.GroupVersion
	resources []kubeAPIResource
}

var (
	kubeAPICore = kubeAPIGroupVersion{gv: corev1.SchemeGroupVersion, resources: []kubeAPIResource{
		{"pods", "pod", "Pod", true},
		{"nodes", "node", "Node", false},
		{"services", "service", "Service", true},
		{"endpoints", "endpoints", "Endpoints", true},
	}}
	kubeAPIDiscovery = kubeAPIGroupVersion{gv: discoveryv1.SchemeGroupVersion, resources: []kubeAPIResource{
		{"endpointslices", "endpointslice", "EndpointSlice", true},
	}}
)

func (v *kubeAPIGroupVersion) resource(name string) *kubeAPIResource {
	for i := range v.resources {
		if v.resources[i].name == name {
			return &v.resources[i]
		}
	}
	return nil
}

// resourceList is v's discovery document: list and watch only.
func (v *kubeAPIGroupVersion) resourceList() *metav1.APIResourceList {
	l := &metav1.APIResourceList{GroupVersion: v.gv.String()}
	for _, r := range v.resources {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: r.name, SingularName: r.singular, Namespaced: r.namespaced,
			Kind: r.kind, Verbs: metav1.Verbs{"list", "watch"}})
	}
	return l
}

// discoveryGroup is the discovery.k8s.io group document.
func discoveryGroup() *metav1.APIGroup {
	v := metav1.GroupVersionForDiscovery{GroupVersion: kubeAPIDiscovery.gv.String(), Version: kubeAPIDiscovery.gv.Version}
	return &metav1.APIGroup{Name: kubeAPIDiscovery.gv.Group, Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v}
}

// kubeAPIRequest is what a discovery API path asks for: a document, or a
// list or watch of resource (in namespace, "" for all).
type kubeAPIRequest struct {
	version   bool           // /version
	doc       runtime.Object // a discovery document
	group     *kubeAPIGroupVersion
	resource  *kubeAPIResource
	namespace string
}

var (
	errKubeAPINotFound = &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotFound,
		Reason: metav1.StatusReasonNotFound, Message: "the server could not find the requested resource"}}
	errKubeAPIForbidden = &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusForbidden,
		Reason: metav1.StatusReasonForbidden, Message: "forbidden: scrapegate serves only list and watch of pods, nodes, services " +
			"and endpoints (v1) and endpointslices (discovery.k8s.io/v1), from its own caches; nothing is passed to the API server"}}
)

// parseKubeAPIPath reads a raw discovery API path. Only the exact forms
// served pass: a path with anything a served one cannot have (percent
// escapes, "..", empty segments, ';', '\\') is a 400, whatever it might
// decode to elsewhere; an unknown group or version 404; anything else
// in a served group version (other resources, single objects,
// subresources) 403.
func parseKubeAPIPath(path string, apiAddress string) (kubeAPIRequest, *apierrors.StatusError) {
	for i := 0; i < len(path); i++ {
		if c := path[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '/' || c == '.' || c == '-' || c == '_' || c == ':') {
			return kubeAPIRequest{}, apierrors.NewBadRequest(fmt.Sprintf("the path has %q, which no served path has: only lowercase letters, digits and . - _ : pass", c))
		}
	}
	segs := strings.Split(path[1:], "/")
	for _, s := range segs {
		if s == "" || s == "." || strings.Contains(s, "..") {
			return kubeAPIRequest{}, apierrors.NewBadRequest("the path has an empty, . or .. segment")
		}
	}
	var v *kubeAPIGroupVersion
	switch {
	case path == kubeAPIVersionPath:
		return kubeAPIRequest{version: true}, nil
	case path == kubeAPICorePath:
		return kubeAPIRequest{doc: &metav1.APIVersions{Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: apiAddress}}}}, nil
	case path == kubeAPIGroupsPath:
		return kubeAPIRequest{doc: &metav1.APIGroupList{Groups: []metav1.APIGroup{*discoveryGroup()}}}, nil
	case len(segs) == 2 && segs[0] == "apis" && segs[1] == kubeAPIDiscovery.gv.Group:
		return kubeAPIRequest{doc: discoveryGroup()}, nil
	case len(segs) >= 2 && segs[0] == "api" && segs[1] == "v1":
		v, segs = &kubeAPICore, segs[2:]
	case len(segs) >= 3 && segs[0] == "apis" && segs[1] == kubeAPIDiscovery.gv.Group && segs[2] == kubeAPIDiscovery.gv.Version:
		v, segs = &kubeAPIDiscovery, segs[3:]
	default:
		return kubeAPIRequest{}, errKubeAPINotFound
	}
	req := kubeAPIRequest{group: v}
	switch {
	case len(segs) == 0:
		req.doc = v.resourceList()
		return req, nil
	case len(segs) == 1:
		req.resource = v.resource(segs[0])
	case len(segs) == 3 && segs[0] == "namespaces":
		if req.resource = v.resource(segs[2]); req.resource != nil && !req.resource.namespaced {
			return kubeAPIRequest{}, errKubeAPINotFound // as the API server: nodes are not namespaced
		}
		req.namespace = segs[1]
		if errs := validation.IsDNS1123Label(req.namespace); len(errs) > 0 {
			return kubeAPIRequest{}, apierrors.NewBadRequest(fmt.Sprintf("%q is not a namespace name: %s", req.namespace, strings.Join(errs, "; ")))
		}
	}
	if req.resource == nil {
		return kubeAPIRequest{}, errKubeAPIForbidden
	}
	return req, nil
}

// kubeAPIMediaTypes are the encodings served, in the order the API server
// prefers them.
var kubeAPIMediaTypes = scheme.Codecs.SupportedMediaTypes()

// negotiateKubeAPI picks the encoding for Accept as the API server's
// negotiation does (k8s.io/apiserver/pkg/endpoints/handlers/negotiation),
// for endpoints that transform nothing: a clause asking for a
// conversion (as=Table, as=PartialObjectMetadata, the aggregated
// discovery's as=APIGroupDiscoveryList) or a server version is passed
// over, so a client falls back to its next clause. stream says the
// encoding must be one a watch can use.
func negotiateKubeAPI(accept string, stream bool) (runtime.SerializerInfo, *apierrors.StatusError) {
	if accept == "" {
		return kubeAPIMediaTypes[0], nil
	}
	for _, clause := range goautoneg.ParseAccept(accept) {
		for _, info := range kubeAPIMediaTypes {
			if !(clause.Type == info.MediaTypeType && (clause.SubType == info.MediaTypeSubType || clause.SubType == "*") ||
				clause.Type == "*" && clause.SubType == "*") {
				continue
			}
			if stream && info.StreamSerializer == nil || !acceptsParams(clause.Params, info) {
				continue
			}
			return info, nil
		}
	}
	var types []string
	for _, info := range kubeAPIMediaTypes {
		switch {
		case !stream:
			types = append(types, info.MediaType)
		case info.StreamSerializer != nil:
			types = append(types, info.MediaType+";stream=watch")
		}
	}
	return runtime.SerializerInfo{}, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotAcceptable,
		Reason: metav1.StatusReasonNotAcceptable, Message: "only the following media types are accepted: " + strings.Join(types, ", ")}}
}

// acceptsParams tells whether an Accept clause's parameters ask for
// nothing but info's plain encoding.
func acceptsParams(params map[string]string, info runtime.SerializerInfo) bool {
	for k, v := range params {
		switch k {
		case "as", "g", "v":
			return false
		case "stream":
			if v != "" && (v != "watch" || info.StreamSerializer == nil) {
				return false
			}
		case "sv":
			if v != "" {
				return false
			}
		}
	}
	return true
}

// serveKubeAPI answers the discovery API's paths.
func (g *Gateway) serveKubeAPI(ctx *fasthttp.RequestCtx) {
	if g.kube == nil {
		g.plainText(ctx, routeKubeAPI, fasthttp.StatusNotFound, "scrapegate: 404 the Kubernetes discovery API needs -kubernetes")
		return
	}
	rawPath, rawQuery := target.SplitQuery(ctx.Request.Header.RequestURI())
	accept := string(ctx.Request.Header.Peek(fasthttp.HeaderAccept))
	// Refusals are encoded as the caller asked, when that can be served.
	info, notAcceptable := negotiateKubeAPI(accept, false)
	if notAcceptable != nil {
		info = kubeAPIMediaTypes[0]
	}
	req, err := parseKubeAPIPath(string(rawPath), g.advertisedAddress(ctx))
	if err != nil {
		g.writeKubeStatus(ctx, info, err)
		return
	}
	if !ctx.IsGet() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET")
		g.writeKubeStatus(ctx, info, apierrors.NewMethodNotSupported(schema.GroupResource{}, string(ctx.Method())))
		return
	}
	if req.version {
		g.serveKubeVersion(ctx)
		return
	}
	if req.doc != nil {
		if notAcceptable != nil {
			g.writeKubeStatus(ctx, info, notAcceptable)
			return
		}
		g.writeKubeObject(ctx, info, metav1.Unversioned, fasthttp.StatusOK, req.doc)
		return
	}
	opts, q, err := kubeAPIListOptions(rawQuery, &req)
	if err != nil {
		g.writeKubeStatus(ctx, info, err)
		return
	}
	if opts.Watch {
		stream, err := negotiateKubeAPI(accept, true)
		if err != nil {
			g.writeKubeStatus(ctx, info, err)
			return
		}
		g.serveKubeWatch(ctx, stream, req.group.gv, q, watchTimeout(opts.TimeoutSeconds))
		return
	}
	if notAcceptable != nil {
		g.writeKubeStatus(ctx, info, notAcceptable)
		return
	}
	lctx, cancel := context.WithTimeout(context.Background(), kubeAPISyncWait)
	list, listErr := g.kube.cluster.DiscoveryList(lctx, q)
	cancel()
	if listErr != nil {
		g.writeKubeStatus(ctx, info, listErr)
		return
	}
	g.writeKubeObject(ctx, info, req.group.gv, fasthttp.StatusOK, list)
}

// advertisedAddress is the address callers reach the gateway at, as
// /sd/ documents advertise it: -advertise-address, else the request's Host.
func (g *Gateway) advertisedAddress(ctx *fasthttp.RequestCtx) string {
	if g.cfg.AdvertiseAddress != "" {
		return g.cfg.AdvertiseAddress
	}
	return string(ctx.Host())
}

// kubeAPIListOptions reads a list or watch query as the API server does
// (its ListResource): decoded by the meta parameter codec and validated,
// 400 or 422 when that fails. limit is ignored, as the API
// server's watch cache ignores it: every list is complete, so there is no
// continue token, and one sent is one never issued.
func kubeAPIListOptions(rawQuery []byte, req *kubeAPIRequest) (metainternalversion.ListOptions, kube.DiscoveryQuery, *apierrors.StatusError) {
	var opts metainternalversion.ListOptions
	query, err := url.ParseQuery(string(rawQuery))
	if err != nil {
		return opts, kube.DiscoveryQuery{}, apierrors.NewBadRequest(fmt.Sprintf("cannot parse the query %q: %s", truncate(rawQuery), err))
	}
	if err := metainternalversionscheme.ParameterCodec.DecodeParameters(query, metav1.SchemeGroupVersion, &opts); err != nil {
		return opts, kube.DiscoveryQuery{}, apierrors.NewBadRequest(err.Error())
	}
	// The defaults (a watch from "" or "0" sends its initial events) are
	// validated, but the cache is asked what the client asked: it sends
	// the initial events of such a watch anyway, and only an explicit
	// sendInitialEvents wants the bookmark that ends them.
	defaulted := opts
	metainternalversion.SetListOptionsDefaults(&defaulted, true)
	if errs := metainternalversionvalidation.ValidateListOptions(&defaulted, true); len(errs) > 0 {
		return opts, kube.DiscoveryQuery{}, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "ListOptions"}, "", errs)
	}
	if opts.Continue != "" {
		return opts, kube.DiscoveryQuery{}, apierrors.NewBadRequest("continue key is not valid: scrapegate never issues continue tokens, its lists are complete")
	}
	return opts, kube.DiscoveryQuery{
		Resource:             req.resource.name,
		Namespace:            req.namespace,
		LabelSelector:        query.Get("labelSelector"),
		FieldSelector:        query.Get("fieldSelector"),
		ResourceVersion:      opts.ResourceVersion,
		ResourceVersionMatch: string(opts.ResourceVersionMatch),
		SendInitialEvents:    opts.SendInitialEvents != nil && *opts.SendInitialEvents,
		AllowWatchBookmarks:  opts.AllowWatchBookmarks,
	}, nil
}

// watchTimeout is how long a watch with timeoutSeconds lasts.
func watchTimeout(timeoutSeconds *int64) time.Duration {
	if timeoutSeconds == nil || *timeoutSeconds <= 0 {
		return time.Duration(float64(kubeAPIMinWatch) * (1 + rand.Float64()))
	}
	return min(time.Duration(*timeoutSeconds)*time.Second, 2*kubeAPIMinWatch)
}

// serveKubeVersion answers /version with the API server's, as JSON: the
// API server has no other encoding for it.
func (g *Gateway) serveKubeVersion(ctx *fasthttp.RequestCtx) {
	info, err := g.kube.serverVersion.Get()
	if err != nil {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "5")
		g.writeKubeStatus(ctx, kubeAPIMediaTypes[0], apierrors.NewServiceUnavailable(err.Error()))
		return
	}
	body, err := json.Marshal(info)
	if err != nil {
		g.plainText(ctx, routeKubeAPI, fasthttp.StatusInternalServerError, "scrapegate: 500 "+err.Error())
		return
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetBody(body)
	g.metrics.countRequest(routeKubeAPI, fasthttp.StatusOK)
}

// writeKubeObject answers obj encoded by info as gv, with its apiVersion
// and kind set. obj is the caller's own (a list the cache made for this
// request, a document, a Status): the encoder writes apiVersion and kind
// on it.
func (g *Gateway) writeKubeObject(ctx *fasthttp.RequestCtx, info runtime.SerializerInfo, gv schema.GroupVersion, status int, obj runtime.Object) {
	var body bytes.Buffer
	if err := scheme.Codecs.EncoderForVersion(info.Serializer, gv).Encode(obj, &body); err != nil {
		g.plainText(ctx, routeKubeAPI, fasthttp.StatusInternalServerError, fmt.Sprintf("scrapegate: 500 cannot encode %T: %s", obj, err))
		return
	}
	ctx.Response.Header.SetContentType(info.MediaType)
	ctx.SetStatusCode(status)
	ctx.SetBody(body.Bytes())
	g.metrics.countRequest(routeKubeAPI, status)
}

// writeKubeStatus answers err as the API server does: its Status object,
// with its code.
func (g *Gateway) writeKubeStatus(ctx *fasthttp.RequestCtx, info runtime.SerializerInfo, err error) {
	status := apierrors.APIStatus(nil)
	if se, ok := err.(apierrors.APIStatus); ok {
		status = se
	} else {
		status = apierrors.NewInternalError(err)
	}
	s := status.Status()
	g.writeKubeObject(ctx, info, metav1.Unversioned, int(s.Code), &s)
}

// kubeWatches are the watches being streamed on hijacked connections,
// which the server neither tracks nor closes: Shutdown ends them.
type kubeWatches struct {
	mu      sync.Mutex
	closed  bool
	watches map[*kubeWatch]struct{}
	wg      sync.WaitGroup // one per watch in watches
}

// kubeWatch is one watch and, once handed over, its connection.
type kubeWatch struct {
	w      watch.Interface
	cancel context.CancelFunc // of the watch's context
	conn   net.Conn
	// owned is taken by whoever ends the watch first: the stream, or
	// the reclaim of a connection the server never handed over.
	owned atomic.Bool
	stop  chan struct{} // closed by closeAll
}

// add tracks kw; false once closeAll has run.
func (s *kubeWatches) add(kw *kubeWatch) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.watches == nil {
		s.watches = map[*kubeWatch]struct{}{}
	}
	s.watches[kw] = struct{}{}
	s.wg.Add(1)
	return true
}

// attach records the connection kw streams on; false once closeAll has
// run, which then did not close it.
func (s *kubeWatches) attach(kw *kubeWatch, conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	kw.conn = conn
	return !s.closed
}

// done ends kw.
func (s *kubeWatches) done(kw *kubeWatch) {
	kw.w.Stop()
	kw.cancel()
	s.mu.Lock()
	delete(s.watches, kw)
	s.mu.Unlock()
	s.wg.Done()
}

// closeAll ends every watch and refuses new ones: their streams stop and
// their connections close, which unblocks a write to a caller that does
// not read.
func (s *kubeWatches) closeAll() {
	s.mu.Lock()
	s.closed = true
	var conns []net.Conn
	for kw := range s.watches {
		close(kw.stop)
		if kw.conn != nil {
			conns = append(conns, rawConn(kw.conn))
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// rawConn is the network connection under a hijacked one, whose own Close
// does nothing: the server closes it once the hijack handler returns. Under
// TLS it is the TCP connection: tls.Conn's Close first writes close_notify,
// which waits up to 5 s on a caller that does not read, and Shutdown closes
// every watch one after another.
func rawConn(c net.Conn) net.Conn {
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		c = u.UnsafeConn()
	}
	if t, ok := c.(*tls.Conn); ok {
		return t.NetConn()
	}
	return c
}

// serveKubeWatch streams a watch, framed as the API server's
// (k8s.io/apiserver/pkg/endpoints/handlers/watch.go): each event a
// metav1.WatchEvent holding its object's own encoding, framed by the
// encoding's stream serializer, flushed as it comes. The response is
// written on the hijacked connection: the server's WriteTimeout bounds a
// whole response, and a watch lasts up to an hour. Each write has its own
// deadline instead. The watch ends at its timeout, when the cache ends it,
// when the caller closes its side, or at Shutdown.
func (g *Gateway) serveKubeWatch(ctx *fasthttp.RequestCtx, info runtime.SerializerInfo, gv schema.GroupVersion, q kube.DiscoveryQuery, timeout time.Duration) {
	// The watch's context bounds its wait for the caches to sync, then
	// lives as long as the watch.
	wctx, cancel := context.WithCancel(context.Background())
	syncWait := time.AfterFunc(kubeAPISyncWait, cancel)
	w, err := g.kube.cluster.DiscoveryWatch(wctx, q)
	if !syncWait.Stop() && err == nil {
		w.Stop()
		err = apierrors.NewServiceUnavailable("the gateway's caches did not sync in time")
	}
	if err != nil {
		cancel()
		g.writeKubeStatus(ctx, info, err)
		return
	}
	kw := &kubeWatch{w: w, cancel: cancel, stop: make(chan struct{})}
	if !g.watches.add(kw) {
		w.Stop()
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		g.writeKubeStatus(ctx, info, apierrors.NewServiceUnavailable("the gateway is shutting down; retry on another replica"))
		return
	}
	g.metrics.countRequest(routeKubeAPI, fasthttp.StatusOK)
	// The server may drop the connection without handing it over (when
	// flushing an earlier, pipelined response fails, within its
	// WriteTimeout): the watch then ends here.
	reclaim := time.AfterFunc(g.server.WriteTimeout, func() {
		if kw.owned.CompareAndSwap(false, true) {
			g.watches.done(kw)
		}
	})
	mediaType := info.MediaType
	if mediaType != runtime.ContentTypeJSON {
		mediaType += ";stream=watch" // as the API server: JSON watches say only application/json
	}
	s := &watchStream{
		info:      info,
		embedded:  scheme.Codecs.EncoderForVersion(info.Serializer, gv),
		encoder:   scheme.Codecs.EncoderForVersion(info.StreamSerializer.Serializer, gv),
		chunked:   ctx.Request.Header.IsHTTP11(),
		writeTime: g.server.WriteTimeout,
	}
	header := "HTTP/1.1 200 OK\r\nContent-Type: " + mediaType + "\r\nCache-Control: no-cache, private\r\nConnection: close\r\n"
	if s.chunked {
		header += "Transfer-Encoding: chunked\r\n"
	}
	header += "Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\n\r\n"
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		if !kw.owned.CompareAndSwap(false, true) {
			return
		}
		reclaim.Stop()
		defer g.watches.done(kw)
		if g.watches.attach(kw, c) {
			s.run(c, kw, header, timeout)
		}
	})
}

// watchStream writes one watch's events.
type watchStream struct {
	info              runtime.SerializerInfo
	embedded, encoder runtime.Encoder
	chunked           bool // HTTP/1.1; an HTTP/1.0 caller's body ends where the connection does
	writeTime         time.Duration

	event, frame bytes.Buffer
}

func (s *watchStream) run(c net.Conn, kw *kubeWatch, header string, timeout time.Duration) {
	// The caller sends nothing more on a watch: a read returning is its
	// connection closing. The reader stops before the server reuses the
	// buffer it reads through.
	gone := make(chan struct{})
	go func() {
		var b [512]byte
		for {
			if _, err := c.Read(b[:]); err != nil {
				close(gone)
				return
			}
		}
	}()
	defer func() {
		_ = c.SetReadDeadline(time.Unix(1, 0))
		<-gone
	}()
	bw := bufio.NewWriterSize(c, 16<<10)
	_ = c.SetWriteDeadline(time.Now().Add(s.writeTime))
	bw.WriteString(header)
	if bw.Flush() != nil {
		return
	}
	end := time.NewTimer(timeout)
	defer end.Stop()
	events := kw.w.ResultChan()
	for {
		select {
		case <-gone:
			return
		case <-kw.stop:
			return
		case <-end.C:
			s.finish(c, bw)
			return
		case ev, ok := <-events:
			if !ok {
				s.finish(c, bw)
				return
			}
			frame, err := s.encode(ev)
			if err == nil {
				err = s.send(c, bw, frame)
			}
			if err != nil {
				return
			}
		}
	}
}

// unshared is a shallow copy of obj, for the encoder to set its apiVersion
// and kind on: it writes them on the object it is given (restoring them
// after), and a watch's objects are the cache's, shared by every watch.
// Nothing else is written, so the copy need not be deep.
func unshared(obj runtime.Object) runtime.Object {
	v := reflect.ValueOf(obj).Elem()
	c := reflect.New(v.Type())
	c.Elem().Set(v)
	return c.Interface().(runtime.Object)
}

// encode frames ev as the API server does (its watchEncoder).
func (s *watchStream) encode(ev watch.Event) ([]byte, error) {
	s.event.Reset()
	if err := s.embedded.Encode(unshared(ev.Object), &s.event); err != nil {
		return nil, fmt.Errorf("cannot encode watch object %T: %w", ev.Object, err)
	}
	out := &metav1.WatchEvent{Type: string(ev.Type), Object: runtime.RawExtension{Raw: slices.Clone(s.event.Bytes())}}
	s.event.Reset()
	if err := s.encoder.Encode(out, &s.event); err != nil {
		return nil, fmt.Errorf("cannot encode watch event: %w", err)
	}
	s.frame.Reset()
	if _, err := s.info.StreamSerializer.Framer.NewFrameWriter(&s.frame).Write(s.event.Bytes()); err != nil {
		return nil, err
	}
	return s.frame.Bytes(), nil
}

// send writes one frame, as one chunk when chunked, and flushes it,
// within one write deadline.
func (s *watchStream) send(c net.Conn, bw *bufio.Writer, frame []byte) error {
	_ = c.SetWriteDeadline(time.Now().Add(s.writeTime))
	if s.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(frame)), 16) + "\r\n")
		bw.Write(frame)
		bw.WriteString("\r\n")
	} else {
		bw.Write(frame)
	}
	return bw.Flush()
}

// finish ends a chunked body cleanly: the caller sees the watch end, not
// break.
func (s *watchStream) finish(c net.Conn, bw *bufio.Writer) {
	if s.chunked {
		_ = c.SetWriteDeadline(time.Now().Add(s.writeTime))
		bw.WriteString("0\r\n\r\n")
		_ = bw.Flush()
	}
}
