// stub: replaced by discovery_cache.go on merge

package kube

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
)

// DiscoveryResources are the resources DiscoveryList and DiscoveryWatch serve.
var DiscoveryResources = []string{"pods", "nodes", "services", "endpoints", "endpointslices"}

// DiscoveryQuery is one list or watch of a DiscoveryResource.
type DiscoveryQuery struct {
	Resource, Namespace                    string // Namespace "" = all
	LabelSelector, FieldSelector           string
	ResourceVersion, ResourceVersionMatch  string
	SendInitialEvents, AllowWatchBookmarks bool
}

// DiscoveryList is the stub's empty typed list of q.Resource.
func (c *Cluster) DiscoveryList(_ context.Context, q DiscoveryQuery) (runtime.Object, error) {
	switch q.Resource {
	case "pods":
		return &corev1.PodList{}, nil
	case "nodes":
		return &corev1.NodeList{}, nil
	case "services":
		return &corev1.ServiceList{}, nil
	case "endpoints":
		return &corev1.EndpointsList{}, nil
	case "endpointslices":
		return &discoveryv1.EndpointSliceList{}, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: q.Resource}, "")
}

// DiscoveryWatch is the stub's watch: it sends nothing and its channel is already closed.
func (c *Cluster) DiscoveryWatch(ctx context.Context, q DiscoveryQuery) (watch.Interface, error) {
	if _, err := c.DiscoveryList(ctx, q); err != nil {
		return nil, err
	}
	return watch.NewEmptyWatch(), nil
}
