package kube

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Label name prefixes of role: endpointslice, as kubernetes_sd_configs
// gives them.
const (
	metaSlice   = "__meta_kubernetes_endpointslice_"
	metaService = "__meta_kubernetes_service_"
)

// endpointGroups lists the targets of the Services q selects, slice by
// slice, in the order Prometheus's buildEndpointSlice (discovery/kubernetes/
// endpointslice.go) lists them within a slice: endpoint, then port, then
// address.
func (c *Cluster) endpointGroups(q sdQuery, gw Gateway) []targetGroup {
	services := make(map[objectKey]*corev1.Service)
	for _, s := range c.stores("services") {
		for _, obj := range s.List() {
			svc, ok := obj.(*corev1.Service)
			if !ok || len(q.namespaces) > 0 && !slices.Contains(q.namespaces, svc.Namespace) ||
				!q.all && svc.Annotations[annotationScrape] != "true" || !q.selector.Matches(labels.Set(svc.Labels)) {
				continue
			}
			services[objectKey{svc.Namespace, svc.Name}] = svc
		}
	}
	type serviceSlice struct {
		svc   *corev1.Service
		slice *discoveryv1.EndpointSlice
	}
	var list []serviceSlice
	for _, s := range c.stores("endpointslices") {
		for _, obj := range s.List() {
			es, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok || es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
				continue // FQDN slices: nothing the gateway dials
			}
			name, ok := es.Labels[discoveryv1.LabelServiceName]
			svc := services[objectKey{es.Namespace, name}]
			if !ok || svc == nil || nonPrimaryIPFamilySlice(svc, es) {
				continue // no Service: /endpoints/ would refuse its targets
			}
			list = append(list, serviceSlice{svc, es})
		}
	}
	slices.SortFunc(list, func(a, b serviceSlice) int {
		return cmpOr(cmpOr(strings.Compare(a.slice.Namespace, b.slice.Namespace), strings.Compare(a.svc.Name, b.svc.Name)),
			strings.Compare(a.slice.Name, b.slice.Name))
	})
	podStores := c.stores("pods")
	pod := func(ref *corev1.ObjectReference) *corev1.Pod {
		if ref == nil || ref.Kind != "Pod" {
			return nil
		}
		for _, s := range podStores {
			if obj, ok, _ := s.GetByKey(ref.Namespace + "/" + ref.Name); ok {
				p, _ := obj.(*corev1.Pod)
				return p
			}
		}
		return nil
	}
	var groups []targetGroup
	for _, ss := range list {
		groups = appendEndpointGroups(groups, ss.slice, ss.svc, pod, gw)
	}
	return groups
}

// nonPrimaryIPFamilySlice reports whether es is the secondary slice of a
// dual-stack Service, whose targets Prometheus skips as duplicates of the
// primary slice's (its function of the same name).
func nonPrimaryIPFamilySlice(svc *corev1.Service, es *discoveryv1.EndpointSlice) bool {
	policy := svc.Spec.IPFamilyPolicy
	if policy == nil || *policy != corev1.IPFamilyPolicyPreferDualStack && *policy != corev1.IPFamilyPolicyRequireDualStack ||
		len(svc.Spec.IPFamilies) == 0 {
		return false
	}
	return string(es.AddressType) != string(svc.Spec.IPFamilies[0])
}

// appendEndpointGroups appends one target group per endpoint address and
// port of es, labelled as buildEndpointSlice labels its targets: the
// slice's labels (addObjectMetaLabels), its Service's (serviceLabels), the
// endpoint's and port's, and, for a pod the informer holds, podLabels and
// the labels of the container that declares the port. Each target is
// scraped through /endpoints/ at the slice port, or at the Service's
// prometheus.io/port as the classic kubernetes-service-endpoints job
// rewrites __address__; a slice port left out (every port) without that
// annotation has no port to scrape and is skipped.
func appendEndpointGroups(groups []targetGroup, es *discoveryv1.EndpointSlice, svc *corev1.Service, podOf func(*corev1.ObjectReference) *corev1.Pod, gw Gateway) []targetGroup {
	common := map[string]string{
		metaNamespace:              es.Namespace,
		metaSlice + "address_type": string(es.AddressType),
		metaSlice + "name":         es.Name,
		metaService + "name":       svc.Name,
	}
	addMapLabels(common, metaSlice+"label", es.Labels)
	addMapLabels(common, metaSlice+"annotation", es.Annotations)
	addMapLabels(common, metaService+"label", svc.Labels)
	addMapLabels(common, metaService+"annotation", svc.Annotations)
	path, params := metricsPath(svc.Annotations[annotationPath])
	for k, v := range params {
		common["__param_"+k] = v
	}
	annotated, hasAnnotation := annotatedPort(svc.Annotations)
	prefix := "/endpoints/" + es.Namespace + "/" + svc.Name + "/"
	for _, ep := range es.Endpoints {
		pod := podOf(ep.TargetRef)
		var podCommon map[string]string
		if pod != nil {
			podCommon = podLabels(pod)
			// The slice's namespace, as Prometheus's group label: its pod
			// labels have none.
			podCommon[metaNamespace] = es.Namespace
		}
		for _, port := range es.Ports {
			scrapePort := annotated
			if !hasAnnotation {
				if port.Port == nil || *port.Port <= 0 || *port.Port > 65535 {
					continue
				}
				scrapePort = uint16(*port.Port)
			}
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil || ip.Zone() != "" {
					continue
				}
				ip = ip.Unmap()
				l := make(map[string]string, len(common)+len(podCommon)+20)
				for k, v := range common {
					l[k] = v
				}
				addEndpointLabels(l, ep, port)
				if pod != nil {
					for k, v := range podCommon {
						l[k] = v
					}
					addContainerLabels(l, pod, port)
				}
				l["__scheme__"] = gw.Scheme
				l["__metrics_path__"] = prefix + ip.String() + "/" + strconv.Itoa(int(scrapePort)) + path
				l["instance"] = netip.AddrPortFrom(ip, scrapePort).String()
				groups = append(groups, targetGroup{Targets: []string{gw.Address}, Labels: l})
			}
		}
	}
	return groups
}

// addEndpointLabels adds the labels buildEndpointSlice gives one endpoint
// and port: each only when the field is set.
func addEndpointLabels(l map[string]string, ep discoveryv1.Endpoint, port discoveryv1.EndpointPort) {
	if port.Name != nil {
		l[metaSlice+"port_name"] = *port.Name
	}
	if port.Protocol != nil {
		l[metaSlice+"port_protocol"] = string(*port.Protocol)
	}
	if port.Port != nil {
		l[metaSlice+"port"] = strconv.Itoa(int(*port.Port))
	}
	if port.AppProtocol != nil {
		l[metaSlice+"port_app_protocol"] = *port.AppProtocol
	}
	if ep.Conditions.Ready != nil {
		l[metaSlice+"endpoint_conditions_ready"] = strconv.FormatBool(*ep.Conditions.Ready)
	}
	if ep.Conditions.Serving != nil {
		l[metaSlice+"endpoint_conditions_serving"] = strconv.FormatBool(*ep.Conditions.Serving)
	}
	if ep.Conditions.Terminating != nil {
		l[metaSlice+"endpoint_conditions_terminating"] = strconv.FormatBool(*ep.Conditions.Terminating)
	}
	if ep.Hostname != nil {
		l[metaSlice+"endpoint_hostname"] = *ep.Hostname
	}
	if ep.TargetRef != nil {
		l[metaSlice+"address_target_kind"] = ep.TargetRef.Kind
		l[metaSlice+"address_target_name"] = ep.TargetRef.Name
	}
	if ep.NodeName != nil {
		l[metaSlice+"endpoint_node_name"] = *ep.NodeName
	}
	if ep.Zone != nil {
		l[metaSlice+"endpoint_zone"] = *ep.Zone
	}
	for k, v := range ep.DeprecatedTopology {
		name := sanitizeLabelName(k)
		l[metaSlice+"endpoint_topology_"+name] = v
		l[metaSlice+"endpoint_topology_present_"+name] = "true"
	}
}

// addContainerLabels adds the labels of the container declaring port's
// number, as buildEndpointSlice does: of containers then init containers,
// the last that declares it.
func addContainerLabels(l map[string]string, pod *corev1.Pod, port discoveryv1.EndpointPort) {
	if port.Port == nil {
		return
	}
	containers := slices.Concat(pod.Spec.Containers, pod.Spec.InitContainers)
	for i, ctr := range containers {
		for _, cport := range ctr.Ports {
			if cport.ContainerPort == *port.Port {
				l[metaPod+"container_name"] = ctr.Name
				l[metaPod+"container_image"] = ctr.Image
				l[metaPod+"container_port_name"] = cport.Name
				l[metaPod+"container_port_number"] = strconv.Itoa(int(cport.ContainerPort))
				l[metaPod+"container_port_protocol"] = string(cport.Protocol)
				l[metaPod+"container_init"] = strconv.FormatBool(i >= len(pod.Spec.Containers))
				break
			}
		}
	}
}
