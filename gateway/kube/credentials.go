package kube

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"sync/atomic"

	"github.com/scrapegate/scrapegate/gateway/reload"
	"github.com/scrapegate/scrapegate/gateway/tlsconf"
)

// Credentials are what the gateway presents to one kind of cluster
// component, and to nothing else: kubelets (/nodes/) or the API server
// (/apiservers/). They are the bearer token of -{flags}-token-file and the
// TLS configuration that verifies the component's serving certificate with
// -{flags}-ca-file (none with insecureSkipVerify). The files are reloaded
// when they change.
type Credentials struct {
	tls *tlsconf.Upstream
	// auth is the Authorization header value, "Bearer <token>"; set once
	// the token file has been loaded.
	auth atomic.Pointer[[]byte]
}

// NewCredentials returns the credentials of flags ("kubelet" or
// "control-plane", the prefix of the flags that set them) and the files to
// load them from. serverName, if set, is the name the certificate must be
// valid for, else its IP address; caFile is not read when
// insecureSkipVerify is set.
func NewCredentials(flags, tokenFile, caFile, serverName string, insecureSkipVerify bool) (*Credentials, []*reload.Files, error) {
	opts := tlsconf.UpstreamOptions{Flags: flags, InsecureSkipVerify: insecureSkipVerify, ServerName: serverName}
	if !insecureSkipVerify {
		opts.CAFile = caFile
	}
	k := &Credentials{}
	var rs []*reload.Files
	var err error
	if k.tls, rs, err = tlsconf.NewUpstream(opts); err != nil {
		return nil, nil, err
	}
	rs = append(rs, reload.New(flags+"-token-file", func(contents [][]byte) error {
		auth, err := BearerAuthorization(contents[0])
		if err == nil {
			k.auth.Store(&auth)
		}
		return err
	}, tokenFile))
	return k, rs, nil
}

// BearerAuthorization is the Authorization header value, "Bearer <token>",
// of a token file's contents: one token, with surrounding white space (a
// trailing newline) trimmed.
func BearerAuthorization(contents []byte) ([]byte, error) {
	token := bytes.TrimSpace(contents)
	if len(token) == 0 || bytes.ContainsAny(token, "\r\n\x00") {
		return nil, fmt.Errorf("want one token, got %d bytes of something else", len(contents))
	}
	return append([]byte("Bearer "), token...), nil
}

// Authorization is the Authorization header value, or nil until the token
// file has been loaded.
func (k *Credentials) Authorization() []byte {
	if auth := k.auth.Load(); auth != nil {
		return *auth
	}
	return nil
}

// TLSConfig is the TLS configuration for the component at addr (ip:port).
func (k *Credentials) TLSConfig(addr string) *tls.Config { return k.tls.ForTarget(addr) }
