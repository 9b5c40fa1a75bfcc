// Package baseline holds what scrapegate is compared against in Go: the
// net/http/httputil.ReverseProxy a Go user would write for the same
// /pods/{ip}/{port}/{path} contract. The Go benchmark runs it in process;
// the load harness runs it as its own process (bench/cmd/httputilproxy).
package baseline

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
)

// NewReverseProxy returns a ReverseProxy that forwards
// /pods/{ip}/{port}/{path} to http://{ip}:{port}/{path}, keeping a
// keep-alive pool per pod. It is deliberately plain: no policy, no limits,
// default timeouts. Compression is left to the pod, so gzip bodies pass
// through untouched, as in scrapegate.
func NewReverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			rest := strings.TrimPrefix(pr.In.URL.Path, "/pods/")
			ip, rest, _ := strings.Cut(rest, "/")
			port, path, _ := strings.Cut(rest, "/")
			addr := netip.MustParseAddr(ip)
			pr.SetURL(&url.URL{Scheme: "http", Host: net.JoinHostPort(addr.String(), port)})
			pr.Out.URL.Path = "/" + path
			pr.Out.URL.RawPath = ""
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
	}
}
