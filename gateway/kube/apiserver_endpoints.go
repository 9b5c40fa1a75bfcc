package kube

import (
	"context"
	"net/netip"
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// The default/kubernetes Service's EndpointSlices list the API servers:
// each API server's endpoint reconciler writes its own advertised address
// and secure port there.
const (
	apiServerNamespace = metav1.NamespaceDefault
	apiServerService   = "kubernetes"
	apiServerSelector  = discoveryv1.LabelServiceName + "=" + apiServerService
)

// watchAPIServers watches the EndpointSlices of default/kubernetes with an
// informer of their own, so the API servers are known whatever
// -kubernetes-namespaces says. It does not count in Synced: a gateway
// whose RBAC does not reach namespace default still serves everything but
// /apiservers/, which waits for APIServersSynced.
func (c *Cluster) watchAPIServers(client kubernetes.Interface) error {
	apiSlices := client.DiscoveryV1().EndpointSlices(apiServerNamespace)
	c.apiServersWatch = &resourceWatch{resource: "endpointslices", namespace: apiServerNamespace, selector: apiServerSelector}
	_, err := c.newInformer(client, c.apiServersWatch,
		&discoveryv1.EndpointSlice{}, stripEndpointSlice,
		cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { c.apiServerSliceChanged(obj) },
			UpdateFunc: func(_, obj any) { c.apiServerSliceChanged(obj) },
			DeleteFunc: c.apiServerSliceDeleted,
		},
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = apiServerSelector
			return apiSlices.List(ctx, o)
		},
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = apiServerSelector
			return apiSlices.Watch(ctx, o)
		})
	return err
}

// APIServersSynced reports whether the EndpointSlices of default/kubernetes
// have been listed; always false unless Options.APIServers is set.
func (c *Cluster) APIServersSynced() bool {
	return c.apiServersWatch != nil && c.apiServersWatch.synced()
}

// APIServersFailure is the last failed request of the API servers'
// informer while it has not synced, else nil: what to say when
// /apiservers/ cannot be served yet.
func (c *Cluster) APIServersFailure() error {
	if w := c.apiServersWatch; w != nil && !w.synced() {
		if f := w.failure.Load(); f != nil {
			return f
		}
	}
	return nil
}

// IsAPIServer reports whether addr is an endpoint (an address and a TCP
// port) of one of the default/kubernetes Service's EndpointSlices; always
// false unless Options.APIServers is set.
func (c *Cluster) IsAPIServer(addr netip.AddrPort) bool {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, endpoints := range c.apiServers {
		if slices.Contains(endpoints, addr) {
			return true
		}
	}
	return false
}

func (c *Cluster) apiServerSliceChanged(obj any) {
	es, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	key := objectKey{es.Namespace, es.Name}
	// The selector already asked for these; checked again, since only
	// this Service's slices may name where the token goes.
	if es.Namespace != apiServerNamespace || es.Labels[discoveryv1.LabelServiceName] != apiServerService {
		c.mu.Lock()
		delete(c.apiServers, key)
		c.mu.Unlock()
		c.controlPlaneVersion.Add(1)
		return
	}
	// Read as Service targets read slices (sliceOf): TCP ports, IP
	// addresses without a zone, none of an FQDN slice.
	parsed := sliceOf(es)
	var endpoints []netip.AddrPort
	for _, p := range parsed.ports {
		for _, ep := range parsed.endpoints {
			for _, ip := range ep.addrs {
				endpoints = append(endpoints, netip.AddrPortFrom(ip, p.port))
			}
		}
	}
	c.mu.Lock()
	c.apiServers[key] = endpoints
	c.mu.Unlock()
	c.controlPlaneVersion.Add(1)
}

func (c *Cluster) apiServerSliceDeleted(obj any) {
	key, ok := deletedKey(obj)
	if !ok {
		return
	}
	c.mu.Lock()
	delete(c.apiServers, key)
	c.mu.Unlock()
	c.controlPlaneVersion.Add(1)
}
