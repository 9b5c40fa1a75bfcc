package main

// The secured control-plane components, real ones, against the test's API
// server (kubeapi_test.go) in its network namespace (netns_test.go):
// kube-scheduler and kube-controller-manager authenticate the callers of
// their https port by TokenReview and authorize them by SubjectAccessReview
// at that API server, as in a kubeadm cluster.

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// kubeComponentArgs are each component's flags beyond those they share.
var kubeComponentArgs = map[string][]string{
	"kube-scheduler": nil,
	"kube-controller-manager": {
		// One cheap controller, with a workqueue whose metrics the
		// tests read: they want the secured port, not the work, and the
		// others would start informers and loops for nothing. (v1.36
		// refuses "-*": "\"*\" is not in the list of known controllers".)
		"--controllers=ttl-controller",
		// One client, the admin's: no per-controller ServiceAccounts,
		// which the serviceaccount-token-controller (off) would fill.
		"--use-service-account-credentials=false",
	},
}

// kubeComponent is a running control-plane component.
type kubeComponent struct {
	name string
	addr string // ip:port of its https port
	proc *process
}

// startKubeComponents starts the named components (keys of
// kubeComponentArgs) on ip, each on a port nothing listened on a moment ago
// (startKubeComponentsAt).
func startKubeComponents(t *testing.T, k *kubeAPI, ip string, names ...string) map[string]*kubeComponent {
	t.Helper()
	var placed []kubeComponentAt
	for _, name := range names {
		placed = append(placed, kubeComponentAt{name, netnsFreeAddr(t, ip)})
	}
	components := make(map[string]*kubeComponent, len(names))
	for _, c := range startKubeComponentsAt(t, k, placed...) {
		components[c.name] = c
	}
	return components
}

// kubeComponentAt is a component to start, and the ip:port of its https port.
type kubeComponentAt struct{ name, addr string }

// startKubeComponentsAt starts each component against k as its admin,
// serving https at its address, one of the test's network namespace, with
// self-signed certificates, and waits until each one's /healthz answers 200
// (a path they authorize without asking the API server:
// --authorization-always-allow-paths' default). They are stopped when the
// test ends, with their output shown if it failed.
func startKubeComponentsAt(t *testing.T, k *kubeAPI, placed ...kubeComponentAt) []*kubeComponent {
	t.Helper()
	var components []*kubeComponent
	var procs []*process
	for _, at := range placed {
		extra, ok := kubeComponentArgs[at.name]
		if !ok {
			t.Fatalf("BUG: no flags for component %q", at.name)
		}
		ip, port, _ := strings.Cut(at.addr, ":")
		c := &kubeComponent{name: at.name, addr: at.addr}
		c.proc = startProcess(t, at.name, kubeTestbin(t, at.name), slices.Concat([]string{
			"--kubeconfig=" + k.adminKubeconfig,
			"--authentication-kubeconfig=" + k.adminKubeconfig,
			"--authorization-kubeconfig=" + k.adminKubeconfig,
			"--bind-address=" + ip,
			"--secure-port=" + port,
			"--cert-dir=" + filepath.Join(t.TempDir(), at.name+"-certs"),
			"--leader-elect=false",
			"--profiling=false",
			"--v=0",
		}, extra), "KUBECONFIG=")
		components = append(components, c)
		procs = append(procs, c.proc)
	}
	client := kubeComponentClient()
	for _, c := range components {
		waitFor(t, e2eStartTimeout, c.name+" at "+c.addr+": /healthz to answer 200", procs, func() error {
			status, _, body, err := secGet(client, "https://"+c.addr+"/healthz", "")
			if err == nil && status != http.StatusOK {
				err = fmt.Errorf("/healthz: %d %s", status, body)
			}
			return err
		})
	}
	return components
}

// kubeComponentClient returns a client for the components' https ports.
// It does not verify their certificates: each one signs its own, at start,
// in its --cert-dir.
func kubeComponentClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test components
		},
	}
}
