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
// kubeComponentArgs) against k as its admin, serving https on ip, an
// address of the test's network namespace, with self-signed certificates,
// and waits until each one's /healthz answers 200 (a path they authorize
// without asking the API server: --authorization-always-allow-paths'
// default). They are stopped when the test ends, with their output shown if
// it failed.
func startKubeComponents(t *testing.T, k *kubeAPI, ip string, names ...string) map[string]*kubeComponent {
	t.Helper()
	components := make(map[string]*kubeComponent, len(names))
	var procs []*process
	for _, name := range names {
		extra, ok := kubeComponentArgs[name]
		if !ok {
			t.Fatalf("BUG: no flags for component %q", name)
		}
		addr := netnsFreeAddr(t, ip)
		_, port, _ := strings.Cut(addr, ":")
		c := &kubeComponent{name: name, addr: addr}
		c.proc = startProcess(t, name, kubeTestbin(t, name), slices.Concat([]string{
			"--kubeconfig=" + k.adminKubeconfig,
			"--authentication-kubeconfig=" + k.adminKubeconfig,
			"--authorization-kubeconfig=" + k.adminKubeconfig,
			"--bind-address=" + ip,
			"--secure-port=" + port,
			"--cert-dir=" + filepath.Join(t.TempDir(), name+"-certs"),
			"--leader-elect=false",
			"--profiling=false",
			"--v=0",
		}, extra), "KUBECONFIG=")
		components[name] = c
		procs = append(procs, c.proc)
	}
	client := kubeComponentClient()
	for _, c := range components {
		waitFor(t, e2eStartTimeout, c.name+"'s /healthz to answer 200", procs, func() error {
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
