package gateway

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/scrapegate/scrapegate/gateway/target"
)

// apiServersPrefix is psystrike's route to the API servers:
// /apiservers/{ip}/{port}/{path}.
const apiServersPrefix = "/apiservers/"

// apiServerPaths are the API server's metrics endpoints the gateway
// proxies; every other path (the whole Kubernetes API) is refused.
var apiServerPaths = []string{"/metrics", "/metrics/slis"}

// parseAPIServerPath parses /apiservers/{ip}/{port}/{path}: {ip}:{port}
// must be an endpoint of the default/kubernetes Service, and the path one
// of the API server's metrics endpoints. The target is that API server,
// over https verified as kubernetes.default.svc, with the control-plane
// token.
func (g *Gateway) parseAPIServerPath(uri []byte) (scrapeTarget, error) {
	if g.kube == nil {
		return scrapeTarget{}, errAPIServersNeedKubernetes
	}
	if g.kube.apiServers == nil || g.kube.apiServers.Authorization() == nil {
		return scrapeTarget{}, errNoControlPlaneToken
	}
	rest, query := target.SplitQuery(uri[len(apiServersPrefix):])
	segs, path, ok := cutSegments(rest, 2)
	if !ok || path == nil {
		return scrapeTarget{}, errNoAPIServerPath
	}
	addr, err := target.ParseIPPort(segs[0], segs[1])
	if err != nil {
		return scrapeTarget{}, err
	}
	if !slices.Contains(apiServerPaths, string(path)) {
		return scrapeTarget{}, errAPIServerPath
	}
	if err := target.CheckQuery(query); err != nil {
		return scrapeTarget{}, err
	}
	if !g.kube.cluster.Synced() {
		return scrapeTarget{}, errNotSynced
	}
	if !g.kube.cluster.APIServersSynced() {
		if err := g.kube.cluster.APIServersFailure(); err != nil {
			return scrapeTarget{}, fmt.Errorf("%w: %w", errAPIServersNotSynced, err)
		}
		return scrapeTarget{}, errAPIServersNotSynced
	}
	if !g.kube.cluster.IsAPIServer(addr) {
		return scrapeTarget{}, fmt.Errorf("%s %w", addr, errNotAPIServer)
	}
	return scrapeTarget{Target: target.Target{Addr: addr, Path: path, Query: query, TLS: true, Kind: target.KindAPIServer}}, nil
}

var (
	errAPIServersNeedKubernetes = target.Invalid("/apiservers/ needs -kubernetes")
	errNoControlPlaneToken      = target.Invalid("/apiservers/ is off: -control-plane-token-file is empty")
	errNoAPIServerPath          = target.Invalid("want /apiservers/{ip}/{port}/{path}")
	errAPIServerPath            = target.Invalid("the API server path must be one of " + strings.Join(apiServerPaths, ", "))
	// errAPIServersNotSynced refuses for now (503 not_synced): the
	// gateway's other routes need no access to namespace default.
	errAPIServersNotSynced = fmt.Errorf("%w: the EndpointSlices of default/kubernetes have not been listed yet", errNotSynced)
	// errNotAPIServer refuses an address the control-plane token must not
	// reach (403 forbidden).
	errNotAPIServer = errors.New("is not an endpoint of the default/kubernetes Service")
)
