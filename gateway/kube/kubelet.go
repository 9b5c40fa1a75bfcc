package kube

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/gateway/tlsconf"
)

// KubeletCredentials are what the gateway presents to kubelets, and to
// nothing else: the bearer token of -kubelet-token-file, and the TLS
// configuration that verifies their serving certificates with
// -kubelet-ca-file (none with -kubelet-insecure-skip-verify). The files are
// reloaded when they change.
type KubeletCredentials struct {
	tls *tlsconf.Upstream
	// auth is the Authorization header value, "Bearer <token>"; set once
	// the token file has been loaded.
	auth atomic.Pointer[[]byte]
}

// NewKubeletCredentials returns the credentials for kubelets and the files
// to load them from; caFile is not read when insecureSkipVerify is set.
func NewKubeletCredentials(tokenFile, caFile string, insecureSkipVerify bool) (*KubeletCredentials, []*reload.Files, error) {
	opts := tlsconf.UpstreamOptions{Flags: "kubelet", InsecureSkipVerify: insecureSkipVerify}
	if !insecureSkipVerify {
		opts.CAFile = caFile
	}
	k := &KubeletCredentials{}
	var rs []*reload.Files
	var err error
	if k.tls, rs, err = tlsconf.NewUpstream(opts); err != nil {
		return nil, nil, err
	}
	rs = append(rs, reload.New("kubelet-token-file", func(contents [][]byte) error {
		token := bytes.TrimSpace(contents[0])
		if len(token) == 0 || bytes.ContainsAny(token, "\r\n\x00") {
			return fmt.Errorf("want one token, got %d bytes of something else", len(contents[0]))
		}
		auth := append([]byte("Bearer "), token...)
		k.auth.Store(&auth)
		return nil
	}, tokenFile))
	return k, rs, nil
}

// Authorization is the Authorization header value for a kubelet, or nil
// until the token file has been loaded.
func (k *KubeletCredentials) Authorization() []byte {
	if auth := k.auth.Load(); auth != nil {
		return *auth
	}
	return nil
}

// TLSConfig is the TLS configuration for the kubelet at addr (ip:port).
func (k *KubeletCredentials) TLSConfig(addr string) *tls.Config { return k.tls.ForTarget(addr) }
