package kube

import (
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/discovery"
)

// ServerVersion is the API server's /version, asked for once: the
// discovery API (gateway/kubeapi.go) serves it as its own, and it changes
// only with an upgrade of the control plane, which restarts nothing here;
// what a client does with it (feature checks) tolerates that.
type ServerVersion struct {
	client discovery.ServerVersionInterface

	mu   sync.Mutex
	info *version.Info // nil until fetched
}

// NewServerVersion returns a ServerVersion asking client, which it does
// on the first Get.
func NewServerVersion(client discovery.ServerVersionInterface) *ServerVersion {
	return &ServerVersion{client: client}
}

// Get returns the API server's version, fetching it on the first call.
// A failed fetch is not remembered: the next call tries again.
func (v *ServerVersion) Get() (*version.Info, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.info == nil {
		info, err := v.client.ServerVersion()
		if err != nil {
			return nil, fmt.Errorf("cannot get the Kubernetes API server's version: %w", err)
		}
		v.info = info
	}
	return v.info, nil
}
