package kube

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// ComponentsNamespace is where kubeadm runs the control plane's static
// pods and kube-proxy's DaemonSet.
const ComponentsNamespace = metav1.NamespaceSystem

// Component is a control-plane component the gateway scrapes
// (/components/) and a node agent forwards to.
type Component struct {
	Name     string   // kube-scheduler, kube-controller-manager, etcd or kube-proxy
	Selector string   // label selector of its pods in ComponentsNamespace
	Port     uint16   // where it serves its metrics, on its pod's address
	TLS      bool     // https, with the control-plane token; else http with no token
	Paths    []string // its metrics paths, the only ones scraped
}

// DefaultComponents are the components as kubeadm runs them: labels of its
// static pod manifests and of kube-proxy's DaemonSet, and the default
// metrics ports (etcd's is kubeadm's --listen-metrics-urls).
func DefaultComponents() []Component {
	return []Component{
		{Name: "kube-scheduler", Selector: "component=kube-scheduler,tier=control-plane", Port: 10259, TLS: true, Paths: []string{"/metrics", "/metrics/slis"}},
		{Name: "kube-controller-manager", Selector: "component=kube-controller-manager,tier=control-plane", Port: 10257, TLS: true, Paths: []string{"/metrics", "/metrics/slis"}},
		{Name: "etcd", Selector: "component=etcd,tier=control-plane", Port: 2381, Paths: []string{"/metrics"}},
		{Name: "kube-proxy", Selector: "k8s-app=kube-proxy", Port: 10249, Paths: []string{"/metrics"}},
	}
}
