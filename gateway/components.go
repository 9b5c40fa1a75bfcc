package gateway

import "github.com/scrapegate/scrapegate/gateway/target"

// componentsPrefix is the route to the control-plane components:
// /components/{component}/{node}/{path}.
const componentsPrefix = "/components/"

// parseComponentPath parses /components/{component}/{node}/{path}.
// TODO(issue 15): helper "components".
func (g *Gateway) parseComponentPath(uri []byte) (scrapeTarget, error) {
	return scrapeTarget{}, target.Invalid("/components/ is not built yet")
}
