package gateway

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/scrapegate/scrapegate/gateway/kube"
	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/gateway/target"
)

// scrapeToken is -target-token-file in force: the bearer token some https
// targets get, those behind kube-rbac-proxy that check the caller's token
// by TokenReview and SubjectAccessReview. It goes only where all of
// forTarget's rules hold. It must be a token that can do nothing but get
// /metrics: never the gateway's own, which can list pods and read
// nodes/metrics (Config.Validate refuses its path, load its contents).
type scrapeToken struct {
	namespaces []string // -target-token-namespaces
	// auth is the Authorization header value, "Bearer <token>"; set once
	// the file has been loaded.
	auth atomic.Pointer[[]byte]
}

// newScrapeToken returns the scrape token of cfg, and the file to load it
// from; nil without -target-token-file. k's kubelet and control-plane
// credentials, where set, are loaded before it: a token equal to theirs is
// refused.
func newScrapeToken(cfg *Config, k *kubernetesState) (*scrapeToken, *reload.Files) {
	if cfg.TargetTokenFile == "" {
		return nil, nil
	}
	st := &scrapeToken{namespaces: cfg.TargetTokenNamespaces}
	return st, reload.New("target-token-file", func(contents [][]byte) error {
		auth, err := kube.BearerAuthorization(contents[0])
		if err != nil {
			return err
		}
		if k.kubelets != nil && bytes.Equal(auth, k.kubelets.Authorization()) {
			return fmt.Errorf("it holds the token of -kubelet-token-file, the gateway's own, which can list pods and read nodes/metrics; " +
				"-target-token-file must hold the scraper ServiceAccount's token (deploy/base)")
		}
		if k.apiServers != nil && bytes.Equal(auth, k.apiServers.Authorization()) {
			return fmt.Errorf("it holds the token of -control-plane-token-file, which the API servers accept; " +
				"-target-token-file must hold the scraper ServiceAccount's token (deploy/base)")
		}
		// Config.Validate refuses the path; the same file reached another
		// way (the kubelet's ..data/token symlink) is caught here.
		if own, err := os.ReadFile(ownServiceAccountToken); err == nil && bytes.Equal(bytes.TrimSpace(own), auth[len("Bearer "):]) {
			return fmt.Errorf("it holds the gateway's own ServiceAccount token (%s), which can list pods; "+
				"-target-token-file must hold the scraper ServiceAccount's token (deploy/base)", ownServiceAccountToken)
		}
		st.auth.Store(&auth)
		return nil
	}, cfg.TargetTokenFile)
}

// ownServiceAccountToken is the gateway pod's own token, which
// -target-token-file must never hold; a variable for tests.
var ownServiceAccountToken = serviceAccountDir + "/token"

// forTarget is the Authorization header value for an https target in
// namespace, or nil: the token goes only to a listed namespace, and only to
// a target that opted in (kube.AnnotationScrapeToken).
func (st *scrapeToken) forTarget(namespace string, optedIn bool) []byte {
	if !optedIn || !slices.Contains(st.namespaces, namespace) {
		return nil
	}
	if auth := st.auth.Load(); auth != nil {
		return *auth
	}
	return nil
}

// authorization is the Authorization header the gateway adds to a scrape
// of t, or nil: a kubelet's token, the control-plane token to an API
// server or an https component, the node-agent token to a node agent, or
// the scrape token where it may go, never over http and never to a
// kubelet, an API server, a component or a node agent. Only https targets
// cost a look-up.
func (g *Gateway) authorization(t *scrapeTarget) []byte {
	switch {
	case g.agent != nil:
		return g.agent.authorization(t)
	case t.Kind == target.KindKubelet:
		return g.kube.kubelets.Authorization()
	case t.Kind == target.KindAPIServer, t.Kind == target.KindComponent && t.TLS:
		return g.kube.apiServers.Authorization()
	case t.Kind == target.KindNodeAgent:
		return g.kube.nodeAgent.authorization()
	case t.Kind != target.KindPod || g.scrapeToken == nil || !t.TLS:
		return nil
	case t.Service:
		// The pod's namespace, not the Service's: a slice may name a pod
		// of any namespace. No pod behind the endpoint: no token.
		namespace, _, _ := strings.Cut(t.endpoint.Pod, "/")
		return g.scrapeToken.forTarget(namespace, t.endpoint.ScrapeToken)
	}
	namespace, optedIn, ok := g.kube.cluster.PodScrapeToken(t.Addr)
	if !ok {
		return nil
	}
	return g.scrapeToken.forTarget(namespace, optedIn)
}
