package gateway

import (
	"time"

	"github.com/scrapegate/scrapegate/gateway/target"
)

// NodeAgentConfig is what `scrapegate agent` adds to a Config.
// TODO(issue 15): helper "agent".
type NodeAgentConfig struct {
	AllowedServiceAccounts []string      // -allowed-serviceaccounts: namespace/name
	TokenAudiences         []string      // -token-audiences
	TokenReviewCacheTTL    time.Duration // -token-review-cache-ttl
}

// parseAgentPath parses the node agent's /{component}/{path}.
// TODO(issue 15): helper "agent".
func (g *Gateway) parseAgentPath(uri []byte) (scrapeTarget, error) {
	return scrapeTarget{}, target.Invalid("the node agent is not built yet")
}
