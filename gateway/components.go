package gateway

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/gateway/target"
	"github.com/scrapegate/scrapegate/gateway/tlsconf"
)

// componentsPrefix is the route to the control-plane components:
// /components/{component}/{node}/{path}.
const componentsPrefix = "/components/"

// componentRoute is what /components/ knows of one component: made once,
// so that a refused scrape allocates no error and an agent's path no
// buffer.
type componentRoute struct {
	kube.Component
	errPath error // its path is none of Paths
	// errNoToken: it is https and the control-plane token is not loaded,
	// for want of -control-plane-token-file or not yet.
	errNoToken error
	// agentPaths are /{component}{path} for each of Paths: what its node
	// agent serves it at.
	agentPaths [][]byte
}

// nodeAgent is how the gateway reaches the node agents (-node-agent-port):
// the token of -node-agent-token-file, sent to them and to nothing else,
// and TLS when -node-agent-ca-file is set.
type nodeAgent struct {
	tls *tlsconf.Upstream // nil: plain http
	// auth is the Authorization header value, "Bearer <token>"; nil
	// without -node-agent-token-file, or until it has been loaded.
	auth atomic.Pointer[[]byte]
}

// setUpComponents prepares /components/ for the components of cfg:
// directly, with TLS for the https ones that verifies their certificates
// with -control-plane-ca-file for their IP (or not at all with
// -control-plane-insecure-skip-verify), or through the node agents. It
// returns the files to load with the others.
func (k *kubernetesState) setUpComponents(cfg *Config) ([]*reload.Files, error) {
	names := make([]string, 0, 4)
	for _, comp := range cfg.components() {
		r := componentRoute{Component: comp,
			errPath:    target.Invalid("the " + comp.Name + " path must be one of " + strings.Join(comp.Paths, ", ")),
			errNoToken: target.Invalid(componentsPrefix + comp.Name + " is off: -control-plane-token-file is empty"),
		}
		if cfg.ControlPlaneTokenFile != "" {
			r.errNoToken = target.Invalid(componentsPrefix + comp.Name + " is off until -control-plane-token-file " + cfg.ControlPlaneTokenFile + " has been loaded")
		}
		for _, p := range comp.Paths {
			r.agentPaths = append(r.agentPaths, []byte("/"+comp.Name+p))
		}
		k.components = append(k.components, r)
		names = append(names, comp.Name)
	}
	k.errUnknownComponent = target.Invalid("the component must be one of " + strings.Join(names, ", "))
	var files, rs []*reload.Files
	var err error
	if cfg.NodeAgentPort == 0 {
		if cfg.ControlPlaneTokenFile == "" {
			return nil, nil // only the http components, which need no TLS
		}
		opts := tlsconf.UpstreamOptions{Flags: "control-plane", InsecureSkipVerify: cfg.ControlPlaneInsecureSkipVerify}
		if !opts.InsecureSkipVerify {
			opts.CAFile = cfg.ControlPlaneCAFile
		}
		k.componentsTLS, rs, err = tlsconf.NewUpstream(opts)
		return rs, err
	}
	k.nodeAgent = &nodeAgent{}
	if cfg.NodeAgentCAFile != "" {
		if k.nodeAgent.tls, rs, err = tlsconf.NewUpstream(tlsconf.UpstreamOptions{Flags: "node-agent",
			CAFile: cfg.NodeAgentCAFile, CertFile: cfg.NodeAgentCertFile, KeyFile: cfg.NodeAgentKeyFile}); err != nil {
			return nil, err
		}
		files = append(files, rs...)
	}
	if cfg.NodeAgentTokenFile != "" {
		files = append(files, reload.New("node-agent-token-file", func(contents [][]byte) error {
			auth, err := kube.BearerAuthorization(contents[0])
			if err == nil {
				k.nodeAgent.auth.Store(&auth)
			}
			return err
		}, cfg.NodeAgentTokenFile))
	}
	return files, nil
}

// authorization is the node-agent token's Authorization header, or nil.
func (a *nodeAgent) authorization() []byte {
	if auth := a.auth.Load(); auth != nil {
		return *auth
	}
	return nil
}

// parseComponentPath parses /components/{component}/{node}/{path}: the
// component one of the configured ones, the node one on which a pod of it
// runs (kube.Cluster.ComponentEndpoint), the path one of its metrics
// paths. The target is that pod at the component's port, https with the
// control-plane token or http with none; with -node-agent-port, the node
// agent on that node, with the node-agent token, at /{component}{path}.
func (g *Gateway) parseComponentPath(uri []byte) (scrapeTarget, error) {
	if g.kube == nil {
		return scrapeTarget{}, errComponentsNeedKubernetes
	}
	rest, query := target.SplitQuery(uri[len(componentsPrefix):])
	segs, path, ok := cutSegments(rest, 2)
	if !ok || path == nil || len(segs[1]) == 0 {
		return scrapeTarget{}, errNoComponentPath
	}
	i := slices.IndexFunc(g.kube.components, func(r componentRoute) bool { return r.Name == string(segs[0]) })
	if i < 0 {
		return scrapeTarget{}, g.kube.errUnknownComponent
	}
	comp := &g.kube.components[i]
	j := slices.Index(comp.Paths, string(path))
	if j < 0 {
		return scrapeTarget{}, comp.errPath
	}
	if err := target.CheckQuery(query); err != nil {
		return scrapeTarget{}, err
	}
	agent := g.kube.nodeAgent
	if agent == nil && comp.TLS && !g.kube.hasControlPlaneToken() {
		return scrapeTarget{}, comp.errNoToken
	}
	cluster := g.kube.cluster
	if !cluster.Synced() {
		return scrapeTarget{}, errNotSynced
	}
	if !cluster.ComponentsSynced() {
		if err := cluster.ComponentsFailure(); err != nil {
			return scrapeTarget{}, fmt.Errorf("%w: %w", errComponentsNotSynced, err)
		}
		return scrapeTarget{}, errComponentsNotSynced
	}
	ep, err := cluster.ComponentEndpoint(comp.Name, segs[1])
	if err != nil {
		return scrapeTarget{}, err
	}
	t := scrapeTarget{component: ep.Component, node: ep.Node}
	if agent != nil {
		t.Target = target.Target{Addr: g.componentAddr(&ep), Path: comp.agentPaths[j], Query: query,
			TLS: agent.tls != nil, Kind: target.KindNodeAgent}
	} else {
		t.Target = target.Target{Addr: g.componentAddr(&ep), Path: path, Query: query, TLS: comp.TLS, Kind: target.KindComponent}
	}
	return t, nil
}

// componentAddr is where a scrape of ep goes: the component on its node,
// or with -node-agent-port that node's agent.
func (g *Gateway) componentAddr(ep *kube.ComponentEndpoint) netip.AddrPort {
	if g.kube.nodeAgent != nil {
		return netip.AddrPortFrom(ep.NodeAddr, g.cfg.NodeAgentPort)
	}
	return ep.Addr
}

// componentListed reports whether /sd/control-plane lists ep: whether
// /components/ would scrape it. Not an https component dialled directly
// without the control-plane token, nor one at an address the target
// policy refuses, which could never be up. Neither changes while the
// gateway runs: its token files are loaded before it serves, and a token
// once loaded is replaced only by another.
func (g *Gateway) componentListed(ep kube.ComponentEndpoint) bool {
	if g.kube.nodeAgent == nil && ep.Component.TLS && !g.kube.hasControlPlaneToken() {
		return false
	}
	return g.policy.CheckComponent(g.componentAddr(&ep)) == target.VerdictAllowed
}

// hasControlPlaneToken reports whether the control-plane token is loaded.
func (k *kubernetesState) hasControlPlaneToken() bool {
	return k.apiServers != nil && k.apiServers.Authorization() != nil
}

// componentRefused is the detail of a refused connection to a component or
// its node agent: what is most likely wrong, and the fix.
func (g *Gateway) componentRefused(t *scrapeTarget) string {
	if t.Kind == target.KindNodeAgent {
		return fmt.Sprintf("no node agent listens on node %s at %s (-node-agent-port): run `scrapegate agent` on every node "+
			"(deploy/overlays/node-agent), or unset -node-agent-port to dial the components directly", t.node, t.Addr)
	}
	return fmt.Sprintf("%s on node %s refused %s: it may listen on 127.0.0.1 only (kubeadm's default bind address); "+
		"bind it to the node's address, or run the node agent and set -node-agent-port", t.component.Name, t.node, t.Addr)
}

var (
	errComponentsNeedKubernetes = target.Invalid("/components/ needs -kubernetes")
	errNoComponentPath          = target.Invalid("want /components/{component}/{node}/{path}")
	// errComponentsNotSynced refuses for now (503 not_synced): the
	// gateway's other routes need no access to kube-system.
	errComponentsNotSynced = fmt.Errorf("%w: the pods of %s have not been listed yet", errNotSynced, kube.ComponentsNamespace)
)
