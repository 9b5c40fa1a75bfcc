package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/valyala/fasthttp"
	"k8s.io/client-go/kubernetes"

	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/gateway/target"
	"github.com/scrapegate/scrapegate/gateway/tlsconf"
)

// kubernetesState is what -kubernetes adds to a Gateway.
type kubernetesState struct {
	cluster *kube.Cluster
	// kubelets are the credentials for /nodes/; nil without
	// -kubelet-token-file, which turns /nodes/ off.
	kubelets *kube.Credentials
	// apiServers are the credentials for /apiservers/; nil without
	// -control-plane-token-file, which turns /apiservers/ off. Their token
	// is also the https components'.
	apiServers *kube.Credentials
	// components are the /components/ routes (components.go);
	// componentsTLS verifies the https components' certificates, nil
	// without the control-plane token or with -node-agent-port; nodeAgent
	// is set by -node-agent-port.
	components          []componentRoute
	errUnknownComponent error
	componentsTLS       *tlsconf.Upstream
	nodeAgent           *nodeAgent
	// serverVersion is the API server's, which the discovery API's
	// /version serves (kubeapi.go).
	serverVersion *kube.ServerVersion
}

// setUpKubernetes watches the cluster through client and prepares the
// kubelet and API server proxies; it returns the files to load with the
// others.
func (g *Gateway) setUpKubernetes(client kubernetes.Interface) ([]*reload.Files, error) {
	cfg := &g.cfg
	cluster, err := kube.New(client, kube.Options{Namespaces: cfg.KubernetesNamespaces, PodSelector: cfg.KubernetesPodSelector,
		APIServers: cfg.ControlPlaneTokenFile != "", Components: cfg.components(),
		ControlPlaneNodeSelector: cfg.ControlPlaneNodeSelector, ComponentListed: g.componentListed}, g.log)
	if err != nil {
		return nil, err
	}
	k := &kubernetesState{cluster: cluster, serverVersion: kube.NewServerVersion(client.Discovery())}
	g.kube = k
	if cfg.EffectiveTargetPolicy() == TargetPolicyKubernetes {
		g.policy.SetLivePods(cluster)
	}
	g.metrics.set.NewGauge(`scrapegate_kubernetes_synced`, func() float64 {
		if cluster.Synced() {
			return 1
		}
		return 0
	})
	for _, resource := range kube.Resources {
		g.metrics.set.NewGauge(`scrapegate_kubernetes_objects{resource="`+resource+`"}`, func() float64 { return float64(cluster.Count(resource)) })
	}

	// Both pairs checked before either is loaded: outside a pod, one error
	// names every flag to set.
	var missing []error
	if cfg.KubeletTokenFile != "" {
		missing = append(missing, serviceAccountFilesExist("kubelet", "the kubelet proxy", cfg.KubeletTokenFile, cfg.KubeletCAFile))
	}
	if cfg.ControlPlaneTokenFile != "" {
		missing = append(missing, serviceAccountFilesExist("control-plane", "the API server proxy", cfg.ControlPlaneTokenFile, cfg.ControlPlaneCAFile))
	}
	if err := errors.Join(missing...); err != nil {
		return nil, err
	}
	var files []*reload.Files
	if cfg.KubeletTokenFile != "" {
		rs := []*reload.Files(nil)
		if k.kubelets, rs, err = kube.NewCredentials("kubelet", cfg.KubeletTokenFile, cfg.KubeletCAFile, "", cfg.KubeletInsecureSkipVerify); err != nil {
			return nil, err
		}
		files = append(files, rs...)
	}
	if cfg.ControlPlaneTokenFile != "" {
		rs := []*reload.Files(nil)
		if k.apiServers, rs, err = kube.NewCredentials("control-plane", cfg.ControlPlaneTokenFile, cfg.ControlPlaneCAFile, apiServerName, false); err != nil {
			return nil, err
		}
		files = append(files, rs...)
	}
	rs, err := k.setUpComponents(cfg)
	return append(files, rs...), err
}

// apiServerName is the name every API server's serving certificate is
// valid for: the default/kubernetes Service's in-cluster name.
const apiServerName = "kubernetes.default.svc"

// serviceAccountFilesExist tells what to set when the -{flags}-token-file
// or -{flags}-ca-file defaults, the pod's ServiceAccount files, are missing:
// outside a pod, what serves is turned off or given other files.
func serviceAccountFilesExist(flags, what, tokenFile, caFile string) error {
	for flag, path := range map[string]string{flags + "-token-file": tokenFile, flags + "-ca-file": caFile} {
		if _, err := os.Stat(path); err != nil && strings.HasPrefix(path, serviceAccountDir) {
			return fmt.Errorf("cannot read -%s (%w): outside a pod, set -%s-token-file and -%s-ca-file, "+
				"or turn %s off with -%s-token-file=", flag, err, flags, flags, what, flags)
		}
	}
	return nil
}

// Paths the Kubernetes routes serve under.
const (
	sdPrefix    = "/sd/"
	nodesPrefix = "/nodes/"
)

// serveSD serves the http_sd documents /sd/pods, /sd/nodes, /sd/endpoints
// and /sd/control-plane. Until the
// informers have synced the answer is 503, not an empty list: Prometheus
// keeps its last targets when a refresh fails, but would drop them all on
// an empty list.
func (g *Gateway) serveSD(ctx *fasthttp.RequestCtx) {
	if g.kube == nil {
		g.plainText(ctx, routeSD, fasthttp.StatusNotFound, "scrapegate: 404 service discovery needs -kubernetes")
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, HEAD")
		g.plainText(ctx, routeSD, fasthttp.StatusMethodNotAllowed, "scrapegate: 405 method not allowed: only GET and HEAD")
		return
	}
	path, query := target.SplitQuery(ctx.Request.Header.RequestURI())
	var sd func(string, kube.Gateway) (*kube.Document, error)
	switch string(path) {
	case "/sd/pods":
		sd = g.kube.cluster.PodsSD
	case "/sd/nodes":
		sd = g.kube.cluster.NodesSD
	case "/sd/endpoints":
		sd = g.kube.cluster.EndpointsSD
	case "/sd/control-plane":
		sd = g.kube.cluster.ControlPlaneSD
	default:
		g.plainText(ctx, routeSD, fasthttp.StatusNotFound, "scrapegate: 404 not found: use /sd/pods, /sd/nodes, /sd/endpoints or /sd/control-plane")
		return
	}
	if notSynced := g.sdNotSynced(string(path)); notSynced != "" {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "5")
		g.plainText(ctx, routeSD, fasthttp.StatusServiceUnavailable, "scrapegate: 503 "+notSynced)
		return
	}
	gw := kube.Gateway{Address: g.cfg.AdvertiseAddress, Scheme: "http"}
	if g.serverTLS != nil {
		gw.Scheme = "https"
	}
	if gw.Address == "" {
		gw.Address = string(ctx.Host())
		if gw.Address == "" {
			g.plainText(ctx, routeSD, fasthttp.StatusBadRequest, "scrapegate: 400 the request has no Host to advertise; set -advertise-address")
			return
		}
	}
	doc, err := sd(string(query), gw)
	if err != nil {
		g.plainText(ctx, routeSD, fasthttp.StatusBadRequest, "scrapegate: 400 "+err.Error())
		return
	}
	h := &ctx.Response.Header
	h.Set(fasthttp.HeaderETag, doc.ETag)
	h.Set(fasthttp.HeaderVary, "Accept-Encoding")
	h.Set(fasthttp.HeaderCacheControl, "no-cache")
	if etagMatches(ctx.Request.Header.Peek(fasthttp.HeaderIfNoneMatch), doc.ETag) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		g.metrics.countRequest(routeSD, fasthttp.StatusNotModified)
		return
	}
	h.SetContentType("application/json")
	if ctx.Request.Header.HasAcceptEncoding("gzip") {
		h.SetContentEncoding("gzip")
		ctx.SetBody(doc.Gzipped)
	} else {
		body, err := doc.JSON()
		if err != nil {
			g.plainText(ctx, routeSD, fasthttp.StatusInternalServerError, "scrapegate: 500 "+err.Error())
			return
		}
		ctx.SetBody(body)
	}
	g.metrics.countRequest(routeSD, fasthttp.StatusOK)
}

// sdNotSynced says what the document at path still waits for, or "" when
// it can be built: every document the informers, /sd/control-plane also
// the components' pods and, when watched, the API servers' slices.
func (g *Gateway) sdNotSynced(path string) string {
	cluster := g.kube.cluster
	switch {
	case !cluster.Synced():
		return "the Kubernetes informers have not synced yet"
	case path != "/sd/control-plane":
		return ""
	case !cluster.ComponentsSynced():
		return withCause(errComponentsNotSynced.Error(), cluster.ComponentsFailure())
	case g.kube.apiServers != nil && !cluster.APIServersSynced():
		return withCause(errAPIServersNotSynced.Error(), cluster.APIServersFailure())
	}
	return ""
}

// withCause is what, followed by ": " and err when there is one.
func withCause(what string, err error) string {
	if err != nil {
		return what + ": " + err.Error()
	}
	return what
}

// etagMatches implements If-None-Match (RFC 9110 section 13.1.2): a list of
// entity tags, compared weakly, or "*".
func etagMatches(ifNoneMatch []byte, etag string) bool {
	etag = strings.TrimPrefix(etag, "W/")
	for _, tag := range strings.Split(string(ifNoneMatch), ",") {
		tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
		if tag == etag || tag == "*" {
			return true
		}
	}
	return false
}

// parseNodePath parses /nodes/{node}/{path}: the node must be one the
// informer knows and the path one of the kubelet's metrics endpoints. The
// target is that node's kubelet, over https, with the gateway's token.
func (g *Gateway) parseNodePath(uri []byte) (scrapeTarget, error) {
	rest, query := target.SplitQuery(uri)
	rest = rest[len(nodesPrefix):]
	slash := bytes.IndexByte(rest, '/')
	if slash <= 0 {
		return scrapeTarget{}, errNoNodePath
	}
	return g.kubeletTarget(rest[:slash], rest[slash:], query)
}

// kubeletTarget is node's kubelet at path, one of its metrics endpoints,
// with the gateway's token: the target of /nodes/ and its alias
// /api/v1/nodes/{node}/proxy/.
func (g *Gateway) kubeletTarget(node, path, query []byte) (scrapeTarget, error) {
	if g.kube == nil {
		return scrapeTarget{}, errNoKubernetes
	}
	if g.kube.kubelets == nil || g.kube.kubelets.Authorization() == nil {
		return scrapeTarget{}, errNoKubeletToken
	}
	if !kube.IsKubeletPath(string(path)) {
		return scrapeTarget{}, errKubeletPath
	}
	if err := target.CheckQuery(query); err != nil {
		return scrapeTarget{}, err
	}
	addr, ok := g.kube.cluster.Kubelet(string(node))
	if !ok {
		return scrapeTarget{}, target.Invalid(fmt.Sprintf("no node %q with an InternalIP is known", truncate(node)))
	}
	return scrapeTarget{Target: target.Target{Addr: addr, Path: path, Query: query, TLS: true, Kind: target.KindKubelet}}, nil
}

var (
	errNoKubernetes   = target.Invalid("/nodes/ needs -kubernetes")
	errNoKubeletToken = target.Invalid("/nodes/ is off: -kubelet-token-file is empty")
	errNoNodePath     = target.Invalid("want /nodes/{node}/{path}")
	errKubeletPath    = target.Invalid("the kubelet path must be one of " + strings.Join(kube.KubeletPaths, ", "))
)
