package main

// A real Kubernetes control plane for end-to-end tests: etcd and
// kube-apiserver on loopback, with token authentication, RBAC and service
// account tokens, but no controllers, scheduler or kubelets. Tests create
// Nodes and Pods and set their status themselves.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

// kubeAPIStartTimeout bounds kube-apiserver becoming ready: on a loaded
// 2-core machine it takes a while to install its APIs and bootstrap RBAC.
const kubeAPIStartTimeout = 120 * time.Second

// kubeAPI is a running etcd and kube-apiserver.
type kubeAPI struct {
	url string // https://127.0.0.1:port, or the address startKubeAPIAt was given
	// caFile is the PEM bundle to trust for url: the API server's
	// self-signed certificate (in --cert-dir) with its CA.
	caFile string
	// adminToken authenticates as a member of system:masters;
	// adminTokenFile holds it, for clients that read it from a file.
	adminToken, adminTokenFile string
	// adminKubeconfig is a kubeconfig file for kubectl, as the admin.
	adminKubeconfig string
	// saKey signs ServiceAccount tokens (--service-account-signing-key-file).
	saKey  *rsa.PrivateKey
	client kubernetes.Interface // as the admin
	// auditLog is the API server's audit log: one JSON audit.k8s.io/v1
	// Event per request, at its end (level Metadata).
	auditLog        string
	etcd, apiserver *process
	dir             string
}

// kubeTestbin returns the path of a binary the end-to-end tests need and
// Debian does not ship, from .ci/testbin (which `make test` has built and
// cached; otherwise it builds it first, which takes minutes).
func kubeTestbin(t *testing.T, name string) string {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "..", ".ci", "testbin"))
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(script, name)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s (run `make test-deps` to build the test binaries, or skip this test with -short): %v\n%s",
			script, name, err, stderr.Bytes())
	}
	bin := strings.TrimSpace(stdout.String())
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s %s printed %q, which is not a file: %v", script, name, bin, err)
	}
	return bin
}

// startKubeAPI starts etcd and kube-apiserver on loopback, waits until the
// API server is ready, and stops both when the test ends (showing their
// output if it failed). default/kubernetes has no endpoints: the API server
// cannot publish a loopback address.
func startKubeAPI(t *testing.T) *kubeAPI {
	t.Helper()
	return startKubeAPIAt(t, "")
}

// startKubeAPIAt is startKubeAPI with the API server bound to and advertised
// at ip, an address of the test's network namespace (netns_test.go), with
// the default endpoint reconciler: it publishes ip as the endpoint of the
// Service default/kubernetes, and startKubeAPIAt waits for the
// EndpointSlice. With ip "", loopback as startKubeAPI. etcdArgs are added
// to etcd's flags (e.g. --listen-metrics-urls).
func startKubeAPIAt(t *testing.T, ip string, etcdArgs ...string) *kubeAPI {
	t.Helper()
	etcdBin := kubeTestbin(t, "etcd")
	apiserverBin := kubeTestbin(t, "kube-apiserver")
	k := &kubeAPI{dir: t.TempDir()}

	// etcd, a single member on loopback, without fsync: its data dies with the test.
	clientURL := "http://" + testutil.FreeAddr(t, "127.0.0.1").String()
	peerURL := "http://" + testutil.FreeAddr(t, "127.0.0.1").String()
	k.etcd = startProcess(t, "etcd", etcdBin, append([]string{
		"--name=test",
		"--data-dir=" + filepath.Join(k.dir, "etcd"),
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=test=" + peerURL,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}, etcdArgs...), "ETCD_")
	waitFor(t, e2eStartTimeout, "etcd's /health to answer 200", []*process{k.etcd}, func() error {
		_, err := httpGet(clientURL + "/health")
		return err
	})

	// Credentials: the service account signing key, and a static admin token.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k.saKey = saKey
	saKeyFile := filepath.Join(k.dir, "sa.key")
	testutil.WriteFile(t, saKeyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}))
	k.adminToken = secRandom(t)
	k.adminTokenFile = filepath.Join(k.dir, "admin-token")
	testutil.WriteFile(t, k.adminTokenFile, []byte(k.adminToken+"\n"))
	tokenAuthFile := filepath.Join(k.dir, "token-auth.csv")
	testutil.WriteFile(t, tokenAuthFile, []byte(k.adminToken+`,test-admin,test-admin,"system:masters"`+"\n"))

	// The "kubernetes" Service's endpoint: none on loopback, which
	// Endpoints and EndpointSlices refuse.
	listenArgs := []string{"--bind-address=127.0.0.1", "--endpoint-reconciler-type=none"}
	var addr string
	if ip == "" {
		addr = testutil.FreeAddr(t, "127.0.0.1").String()
	} else {
		addr = netnsFreeAddr(t, ip)
		listenArgs = []string{"--bind-address=" + ip, "--advertise-address=" + ip}
	}
	_, port, _ := strings.Cut(addr, ":")
	k.url = "https://" + addr
	k.auditLog = filepath.Join(k.dir, "audit.log")
	auditPolicyFile := filepath.Join(k.dir, "audit-policy.yaml")
	testutil.WriteFile(t, auditPolicyFile, []byte("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"))
	certDir := filepath.Join(k.dir, "apiserver-certs")
	k.caFile = filepath.Join(certDir, "apiserver.crt") // the self-signed certificate, then its CA
	k.apiserver = startProcess(t, "kube-apiserver", apiserverBin, slices.Concat(listenArgs, []string{
		"--secure-port=" + port,
		"--cert-dir=" + certDir,
		"--etcd-servers=" + clientURL,
		"--token-auth-file=" + tokenAuthFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKeyFile,
		"--service-account-signing-key-file=" + saKeyFile,
		"--service-cluster-ip-range=10.96.0.0/12",
		"--authorization-mode=RBAC",
		"--audit-policy-file=" + auditPolicyFile,
		"--audit-log-path=" + k.auditLog,
		// No controller manager creates the "default" ServiceAccount of
		// each namespace, which this plugin requires of every pod.
		"--disable-admission-plugins=ServiceAccount",
		// Less work at startup and no throttling of the test's bursts.
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=0",
	}), "KUBECONFIG=")

	// Ready: the certificate is written and /readyz says 200 (which
	// includes the RBAC bootstrap policy being in place).
	var ready *http.Client
	waitFor(t, kubeAPIStartTimeout, "kube-apiserver's /readyz to answer 200", []*process{k.etcd, k.apiserver}, func() error {
		if ready == nil {
			c, err := k.tlsClient()
			if err != nil {
				return err
			}
			ready = c
		}
		status, body, err := k.get(ready, "/readyz")
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("/readyz: %d %s", status, body)
		}
		return err
	})

	cfg := k.restConfig(k.adminToken)
	if k.client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	k.adminKubeconfig = k.writeKubeconfig(t, "admin", k.adminToken)
	if ip != "" {
		waitFor(t, kubeAPIStartTimeout, "the API server to publish its address "+addr+" in the EndpointSlice of default/kubernetes",
			[]*process{k.etcd, k.apiserver}, func() error { return k.checkOwnEndpointSlice(ip, port) })
	}
	return k
}

// checkOwnEndpointSlice returns an error unless the EndpointSlice
// default/kubernetes, which the API server's endpoint reconciler writes, has
// ip as its one ready endpoint, on port "https" port.
func (k *kubeAPI) checkOwnEndpointSlice(ip, port string) error {
	slice, err := k.client.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).Get(context.Background(), "kubernetes", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if len(slice.Endpoints) != 1 || !slices.Equal(slice.Endpoints[0].Addresses, []string{ip}) ||
		(slice.Endpoints[0].Conditions.Ready != nil && !*slice.Endpoints[0].Conditions.Ready) {
		return fmt.Errorf("EndpointSlice default/kubernetes has endpoints %+v, want one ready at %s", slice.Endpoints, ip)
	}
	if len(slice.Ports) != 1 || slice.Ports[0].Port == nil || strconv.Itoa(int(*slice.Ports[0].Port)) != port ||
		slice.Ports[0].Name == nil || *slice.Ports[0].Name != "https" {
		return fmt.Errorf("EndpointSlice default/kubernetes has ports %+v, want https %s", slice.Ports, port)
	}
	return nil
}

// tlsClient returns a client that trusts only the API server's certificate.
func (k *kubeAPI) tlsClient() (*http.Client, error) {
	pemBytes, err := os.ReadFile(k.caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s: no certificates", k.caFile)
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool}},
	}, nil
}

// get gets path from the API server as the admin, whatever the status.
func (k *kubeAPI) get(c *http.Client, path string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, k.url+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+k.adminToken)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return resp.StatusCode, strings.TrimSpace(b.String()), err
}

// restConfig returns a client-go configuration authenticating with token,
// without client-side rate limiting, for a test's bursts of requests.
func (k *kubeAPI) restConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            k.url,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: k.caFile},
		QPS:             -1,
		Timeout:         30 * time.Second,
	}
}

// writeKubeconfig writes a kubeconfig file that authenticates to the API
// server with token, and returns its path.
func (k *kubeAPI) writeKubeconfig(t *testing.T, user, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), user+".kubeconfig")
	testutil.WriteFile(t, path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster:
      server: %q
      certificate-authority: %q
users:
  - name: %q
    user:
      token: %q
contexts:
  - name: test
    context:
      cluster: test
      user: %q
current-context: test
`, k.url, k.caFile, user, token, user)))
	return path
}

// serviceAccountToken mints a token for the ServiceAccount namespace/name
// through the TokenRequest API, valid for an hour, for the API server's
// audience.
func (k *kubeAPI) serviceAccountToken(t *testing.T, namespace, name string) string {
	t.Helper()
	return k.serviceAccountTokenFor(t, namespace, name)
}

// serviceAccountTokenFor is serviceAccountToken for the given audiences
// instead of the API server's, as a projected token with audience: has.
func (k *kubeAPI) serviceAccountTokenFor(t *testing.T, namespace, name string, audiences ...string) string {
	t.Helper()
	expiry := int64(3600)
	tr, err := k.client.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry, Audiences: audiences}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("cannot mint a token for ServiceAccount %s/%s: %v", namespace, name, err)
	}
	if tr.Status.Token == "" {
		t.Fatalf("TokenRequest for ServiceAccount %s/%s returned no token", namespace, name)
	}
	return tr.Status.Token
}

// serviceAccountKubeconfig writes a kubeconfig file for the ServiceAccount
// namespace/name, with a token minted for it, as its pods would have.
func (k *kubeAPI) serviceAccountKubeconfig(t *testing.T, namespace, name string) string {
	t.Helper()
	return k.writeKubeconfig(t, "system:serviceaccount:"+namespace+":"+name, k.serviceAccountToken(t, namespace, name))
}

// kubectl runs kubectl as the admin and returns its standard output, failing
// the test with everything it printed if it fails.
func (k *kubeAPI) kubectl(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := k.tryKubectl(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tryKubectl runs kubectl as the admin, returning its standard output, or an
// error with everything it printed.
func (k *kubeAPI) tryKubectl(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, append([]string{"--kubeconfig=" + k.adminKubeconfig}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+k.dir) // its cache, in the test's directory
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = errors.New("exit code " + strconv.Itoa(ee.ExitCode()))
		}
		return stdout.String(), fmt.Errorf("kubectl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String(), nil
}

// signServiceAccountToken signs, with the API server's own key, the token
// the TokenRequest API would mint for the ServiceAccount namespace/name
// (uid) and audience, but expiring at exp, which may be past: TokenRequest
// refuses lifetimes under ten minutes, so an expired token is made here.
// The claims and key ID are those of k8s.io/kubernetes/pkg/serviceaccount.
func (k *kubeAPI) signServiceAccountToken(t *testing.T, namespace, name, uid, audience string, exp time.Time) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&k.saKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyID := sha256.Sum256(der)
	header, _ := json.Marshal(map[string]string{"alg": "RS256", "kid": base64.RawURLEncoding.EncodeToString(keyID[:])})
	iat := exp.Add(-time.Hour)
	claims, _ := json.Marshal(map[string]any{
		"iss": "https://kubernetes.default.svc.cluster.local",
		"sub": "system:serviceaccount:" + namespace + ":" + name,
		"aud": []string{audience},
		"exp": exp.Unix(), "iat": iat.Unix(), "nbf": iat.Unix(),
		"jti": secRandom(t),
		"kubernetes.io": map[string]any{
			"namespace":      namespace,
			"serviceaccount": map[string]string{"name": name, "uid": uid},
		},
	})
	signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
	digest := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.saKey, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}
