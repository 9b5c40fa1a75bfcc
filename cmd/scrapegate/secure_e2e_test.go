package main

// End-to-end test of a locked-down gateway: the real binary serving TLS,
// requiring a bearer token or a bcrypt htpasswd login, scraping plain and
// https pods, denying a port, while a real Prometheus scrapes through it
// every way its users configure it; then the token is rotated under load.
//
// A loaded CI machine can stall every process for a second or more, and a
// stalled scrape fails on its 1s timeout whatever its credentials. So scrape
// failures are not what shows that credentials work: the jobs with wrong
// credentials scrape pods of their own ("locked" pods), and the gateway's
// access log, which is not sampled, must show no 401 or 407 for any URI of
// the good jobs' pods, during the rotation or ever.

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scrapegate/scrapegate/internal/testutil"
)

const (
	// secPodNet is where this test's pods listen: 127.42.3.1, ... (the
	// other tests of this package use 127.42.0-2.x).
	secPodNet       = "127.42.3."
	secNumHTTPPods  = 3
	secNumHTTPSPods = 2
	secDecoyIP      = secPodNet + "99"

	secUser      = "prometheus"    // htpasswd user of the basic_auth job
	secProxyUser = "proxy-scraper" // htpasswd user in the proxy_url's userinfo

	// Prometheus jobs: four good ones, then four whose targets must be down.
	jobSecPsystrikeToken = "secure-psystrike-token"  // https to the gateway, bearer token, /pods/[https/]...
	jobSecPsystrikeBasic = "secure-psystrike-basic"  // https to the gateway, basic auth, /pods/[https/]...
	jobSecProxyToken     = "secure-proxy-token"      // proxy_url: https://gateway, bearer token as Authorization
	jobSecProxyUserinfo  = "secure-proxy-userinfo"   // proxy_url: https://user:pass@gateway, sent as Proxy-Authorization
	jobSecWrongToken     = "secure-wrong-token"      // psystrike, a token the gateway does not know: 401
	jobSecWrongPassword  = "secure-proxy-wrong-pass" // proxy_url userinfo with a wrong password: 407
	jobSecUntrusted      = "secure-proxy-untrusted"  // proxy_url: https://gateway without the gateway's CA
	jobSecDeniedPort     = "secure-denied-port"      // psystrike, good token, a --deny-ports pod: 403
	secReloadSeries      = `scrapegate_file_reloads_total{flag="auth-bearer-tokens-file",result="success"}`
	secMinScrapesPerTarg = 3
)

// securePod is one pod of this test: a fakePod, plain HTTP or HTTPS on its
// own address and port, serving a marker series with its number, that
// counts the credentials it is sent.
type securePod struct {
	*fakePod
	https       bool
	credentials atomic.Int64 // requests that carried Authorization, Proxy-Authorization or Cookie
}

func (p *securePod) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, h := range []string{"Authorization", "Proxy-Authorization", "Cookie"} {
		if _, ok := r.Header[h]; ok {
			p.credentials.Add(1)
		}
	}
	p.fakePod.ServeHTTP(w, r)
}

// startSecurePod starts pod n on ip, over TLS with cert when cert is not
// nil, on a port the kernel picks other than avoidPorts.
func startSecurePod(t *testing.T, n int, ip string, cert *tls.Certificate, avoidPorts ...string) *securePod {
	t.Helper()
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp4", ip+":0")
		if err != nil {
			t.Fatalf("cannot start pod %d on %s: %v", n, ip, err)
		}
		if _, port, _ := net.SplitHostPort(l.Addr().String()); !slices.Contains(avoidPorts, port) || attempt == 10 {
			ln = l
			break
		}
		_ = l.Close()
	}
	p := &securePod{fakePod: newFakePod(n, ln.Addr().(*net.TCPAddr)), https: cert != nil}
	p.name = fmt.Sprintf("secure-pod-%d", n)
	p.metrics = fmt.Appendf(nil, "# HELP secure_pod_marker The pod's number.\n# TYPE secure_pod_marker gauge\nsecure_pod_marker{pod=%q} %d\n", p.name, n)
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ConnState: p.connState}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// secTarget is one target Prometheus must have: up, or down with an error.
type secTarget struct {
	job       string
	pod       *securePod
	scrapeURL string
	// wantErr is "" for a target that must be up, else a part of the
	// lastError it must be down with.
	wantErr string
}

func (st secTarget) key() string { return st.job + "/" + st.pod.addr }

func (st secTarget) String() string { return st.key() + " (" + st.pod.name + ")" }

func TestEndToEndPrometheusSecure(t *testing.T) {
	begin, promBin, gatewayBin := startPrometheusE2E(t)

	// PKI: one CA for the gateway's listener, one for the pods.
	gwCA, podCA := testutil.NewCA(t, "gateway"), testutil.NewCA(t, "pods")
	gwCert := gwCA.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")})

	// Secrets and the files that hold them, on both sides.
	dir := t.TempDir()
	oldToken, newToken, wrongToken := secRandom(t), secRandom(t), secRandom(t)
	password, proxyPassword, wrongPassword := secRandom(t), secRandom(t), secRandom(t)
	gwTokensFile := filepath.Join(dir, "gateway-tokens")
	gwHtpasswdFile := filepath.Join(dir, "gateway-htpasswd")
	promTokenFile := filepath.Join(dir, "prometheus-token")
	promWrongTokenFile := filepath.Join(dir, "prometheus-wrong-token")
	promPasswordFile := filepath.Join(dir, "prometheus-password")
	testutil.WriteFile(t, gwTokensFile, []byte("# scrapegate callers\n"+oldToken+"\n"))
	testutil.WriteFile(t, gwHtpasswdFile, []byte(secUser+":"+testutil.Bcrypt(t, password)+"\n"+secProxyUser+":"+testutil.Bcrypt(t, proxyPassword)+"\n"))
	testutil.WriteFile(t, promTokenFile, []byte(oldToken+"\n"))
	testutil.WriteFile(t, promWrongTokenFile, []byte(wrongToken+"\n"))
	testutil.WriteFile(t, promPasswordFile, []byte(password+"\n"))

	// Pods: plain HTTP ones, then HTTPS ones with certificates for their
	// IPs from the pod CA; two locked ones, which only jobs with wrong
	// credentials scrape; and a decoy on a port the gateway denies.
	startPod := func(n int, https bool) *securePod {
		ip := secPodNet + strconv.Itoa(n)
		if !https {
			return startSecurePod(t, n, ip, nil)
		}
		return startSecurePod(t, n, ip, &podCA.IssueServer(t, nil, []netip.Addr{netip.MustParseAddr(ip)}).TLS)
	}
	var pods, httpPods []*securePod
	for n := 1; n <= secNumHTTPPods+secNumHTTPSPods; n++ {
		p := startPod(n, n > secNumHTTPPods)
		pods = append(pods, p)
		if !p.https {
			httpPods = append(httpPods, p)
		}
	}
	lockedHTTP := startPod(len(pods)+1, false)
	lockedHTTPS := startPod(len(pods)+2, true)
	locked := []*securePod{lockedHTTP, lockedHTTPS}
	var podPorts []string
	for _, p := range slices.Concat(pods, locked) {
		podPorts = append(podPorts, p.port)
	}
	decoy := startSecurePod(t, 99, secDecoyIP, nil, podPorts...)
	if slices.Contains(podPorts, decoy.port) {
		t.Fatalf("cannot find a port for the decoy pod that no other pod uses (%s)", decoy.port)
	}

	gwClient := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: gwCA.Pool()}},
	}
	gw := startSecureGateway(t, gatewayBin, gwClient,
		"--listen=127.0.0.1:0",
		"--allow-cidrs=127.42.0.0/16",
		"--deny-ports="+decoy.port,
		"--drain-delay=0s",
		"--log-format=json",
		"--log-level=info",
		"--access-log", // every request's status, checked at the end; and more lines that must not hold a secret
		"--tls-cert-file="+gwCert.CertFile,
		"--tls-key-file="+gwCert.KeyFile,
		"--auth-bearer-tokens-file="+gwTokensFile,
		"--auth-htpasswd-file="+gwHtpasswdFile,
		"--target-tls-ca-file="+podCA.CertFile,
		"--reload-interval=200ms",
	)

	// What Prometheus must end up with.
	gwBase := "https://" + gw.addr
	psystrikeURL := func(p *securePod) string {
		if p.https {
			return gwBase + "/pods/https/" + p.ip + "/" + p.port + "/metrics"
		}
		return gwBase + "/pods/" + p.ip + "/" + p.port + "/metrics"
	}
	proxiedURL := func(p *securePod) string { return "http://" + p.addr + "/metrics" }
	var good, bad, all []secTarget
	for _, p := range pods {
		good = append(good, secTarget{jobSecPsystrikeToken, p, psystrikeURL(p), ""},
			secTarget{jobSecPsystrikeBasic, p, psystrikeURL(p), ""})
	}
	for _, p := range httpPods {
		good = append(good, secTarget{jobSecProxyToken, p, proxiedURL(p), ""},
			secTarget{jobSecProxyUserinfo, p, proxiedURL(p), ""})
	}
	bad = []secTarget{
		{jobSecWrongToken, lockedHTTP, psystrikeURL(lockedHTTP), "401"},
		{jobSecWrongToken, lockedHTTPS, psystrikeURL(lockedHTTPS), "401"},
		{jobSecWrongPassword, lockedHTTP, proxiedURL(lockedHTTP), "407"},
		// Prometheus verifies an https proxy_url with the job's
		// tls_config; without the gateway's CA the handshake fails.
		{jobSecUntrusted, lockedHTTP, proxiedURL(lockedHTTP), "x509"},
		{jobSecDeniedPort, decoy, psystrikeURL(decoy), "403"},
	}
	all = append(slices.Clone(good), bad...)
	var tokenTargets []secTarget // good targets that send the rotated token
	for _, st := range good {
		if st.job == jobSecPsystrikeToken || st.job == jobSecProxyToken {
			tokenTargets = append(tokenTargets, st)
		}
	}

	cfg := secPrometheusConfig(secPromParams{
		gwAddr:             gw.addr,
		gwCAFile:           gwCA.CertFile,
		tokenFile:          promTokenFile,
		wrongTokenFile:     promWrongTokenFile,
		passwordFile:       promPasswordFile,
		proxyPassword:      proxyPassword,
		wrongProxyPassword: wrongPassword,
		pods:               pods,
		httpPods:           httpPods,
		lockedHTTP:         lockedHTTP,
		lockedHTTPS:        lockedHTTPS,
		decoy:              decoy,
	})
	prom := startPrometheus(t, promBin, cfg)
	t.Logf("%d pods, %d locked pods and a decoy on %s*, gateway on %s (TLS), Prometheus on %s; ready after %s",
		len(pods), len(locked), secPodNet, gw.addr, prom.addr, time.Since(begin).Round(time.Millisecond))
	procs := []*process{gw.proc, prom.proc}

	// 1. Every target is there, scraping the URL it should; good ones are
	// up, bad ones down for the right reason.
	waitFor(t, e2eScrapeTimeout, "every good target up and every bad one down with the expected error", procs, func() error {
		return checkSecureTargets(prom, all)
	})
	t.Logf("%d targets up, %d down as they should be, after %s", len(good), len(bad), time.Since(begin).Round(time.Millisecond))

	// 2. A few scrapes of each: good ones succeeded that often, bad ones never.
	waitFor(t, e2eScrapeTimeout, fmt.Sprintf("%d scrapes of every target", secMinScrapesPerTarg), procs, func() error {
		at := time.Now()
		if err := checkEachTarget(prom, "count_over_time(up"+jobMatcher(all)+"[1h])", at, all, func(_ secTarget, s promSample) error {
			if s.value < secMinScrapesPerTarg {
				return fmt.Errorf("%v scrapes so far", s.value)
			}
			return nil
		}); err != nil {
			return err
		}
		return checkEachTarget(prom, "sum_over_time(up"+jobMatcher(all)+"[1h])", at, all, func(st secTarget, s promSample) error {
			switch {
			case st.wantErr == "" && s.value < secMinScrapesPerTarg:
				return fmt.Errorf("%v successful scrapes so far", s.value)
			case st.wantErr != "" && s.value != 0:
				return fmt.Errorf("%v successful scrapes, want none", s.value)
			}
			return nil
		})
	})
	t.Logf("%d scrapes of every target after %s", secMinScrapesPerTarg, time.Since(begin).Round(time.Millisecond))

	// 3. Each good target stored its own pod's marker, in every scrape and
	// every successful one; the bad jobs stored none.
	at := time.Now()
	for _, fn := range []string{"min_over_time", "max_over_time"} {
		if err := checkEachTarget(prom, fn+"(secure_pod_marker"+jobMatcher(good)+"[1h])", at, good, func(st secTarget, s promSample) error {
			if s.value != float64(st.pod.n) || s.labels["pod"] != st.pod.name {
				return fmt.Errorf("got secure_pod_marker{pod=%q} %v, want {pod=%q} %d", s.labels["pod"], s.value, st.pod.name, st.pod.n)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	if err := checkEachTarget(prom, "sum_over_time(up"+jobMatcher(good)+"[1h]) - on(job, instance) count_over_time(secure_pod_marker"+jobMatcher(good)+"[1h])",
		at, good, func(_ secTarget, s promSample) error {
			if s.value != 0 {
				return fmt.Errorf("%v successful scrapes lack the marker", s.value)
			}
			return nil
		}); err != nil {
		t.Error(err)
	}
	if samples, err := promQuery(prom, "count_over_time(secure_pod_marker"+jobMatcher(bad)+"[1h])", at); err != nil || len(samples) != 0 {
		t.Errorf("bad jobs stored markers: %v %v", samples, err)
	}

	// 4. The gateway counted what happened; neither the decoy nor the
	// locked pods were ever contacted, and no pod received credentials.
	m, err := secGatewayMetrics(gwClient, gw.addr, oldToken)
	if err != nil {
		t.Fatalf("gateway /metrics with the token: %v", err)
	}
	for series, want := range map[string]float64{
		`scrapegate_auth_failures_total{reason="bad_token"}`:     1,
		`scrapegate_auth_failures_total{reason="bad_password"}`:  1,
		`scrapegate_rejected_requests_total{reason="forbidden"}`: 1,
		`scrapegate_requests_total{route="pods",code="200"}`:     float64(secMinScrapesPerTarg * 2 * len(pods)),
		`scrapegate_requests_total{route="proxy",code="200"}`:    float64(secMinScrapesPerTarg * 2 * len(httpPods)),
		`scrapegate_requests_total{route="pods",code="401"}`:     1,
		`scrapegate_requests_total{route="proxy",code="407"}`:    1,
		`scrapegate_requests_total{route="pods",code="403"}`:     1,
	} {
		if m[series] < want {
			t.Errorf("gateway /metrics: %s = %v, want at least %v", series, m[series], want)
		}
	}
	for _, series := range []string{
		`scrapegate_upstream_errors_total{reason="tls_failed"}`,
		`scrapegate_auth_failures_total{reason="missing"}`,
		`scrapegate_auth_failures_total{reason="malformed"}`,
		`scrapegate_auth_failures_total{reason="unknown_user"}`,
	} {
		if m[series] != 0 {
			t.Errorf("gateway /metrics: %s = %v, want 0", series, m[series])
		}
	}
	if status, h, body, err := secGet(gwClient, gwBase+"/metrics", ""); err != nil || status != http.StatusUnauthorized ||
		!slices.Contains(h.Values("WWW-Authenticate"), `Bearer realm="scrapegate"`) {
		t.Errorf("gateway /metrics without credentials: %d %q %v, WWW-Authenticate %q; want 401 with a Bearer challenge",
			status, body, err, h.Values("WWW-Authenticate"))
	}
	if n, c := decoy.requests.Load(), decoy.conns.Load(); n != 0 || c != 0 {
		t.Errorf("the decoy pod on denied port %s got %d requests on %d connections, want none", decoy.port, n, c)
	}
	for _, p := range locked {
		if n, c := p.requests.Load(), p.conns.Load(); n != 0 || c != 0 {
			t.Errorf("%s, scraped only with wrong credentials, got %d requests on %d connections, want none", p.name, n, c)
		}
	}
	for _, p := range append(slices.Concat(pods, locked), decoy) {
		if n := p.credentials.Load(); n != 0 {
			t.Errorf("%s received %d requests with Authorization, Proxy-Authorization or Cookie headers", p.name, n)
		}
	}

	// 5. Token rotation as docs/security.md describes it, under load: the
	// gateway accepts old and new, Prometheus switches (it reads
	// credentials_file at every scrape), the gateway drops the old one. No
	// scrape may be refused on the way: the access log shows that at the end.
	rotation := time.Now()
	base := m[secReloadSeries]
	testutil.ReplaceFile(t, gwTokensFile, []byte("# scrapegate callers, rotating\n"+oldToken+"\n"+newToken+"\n"))
	waitFor(t, e2eStartTimeout, "the gateway to reload its token file and accept the new token", procs, func() error {
		m, err := secGatewayMetrics(gwClient, gw.addr, newToken) // refused until the reload
		if err != nil {
			return err
		}
		if m[secReloadSeries] < base+1 {
			return fmt.Errorf("%s = %v, want %v", secReloadSeries, m[secReloadSeries], base+1)
		}
		return nil
	})
	testutil.ReplaceFile(t, promTokenFile, []byte(newToken+"\n"))
	switched := time.Now()
	waitFor(t, e2eScrapeTimeout, "successful scrapes with the new token", procs, func() error {
		return checkScrapesSince(prom, tokenTargets, switched, 1)
	})
	testutil.ReplaceFile(t, gwTokensFile, []byte("# scrapegate callers\n"+newToken+"\n"))
	waitFor(t, e2eStartTimeout, "the gateway to reload its token file and refuse the old token", procs, func() error {
		m, err := secGatewayMetrics(gwClient, gw.addr, newToken)
		if err != nil {
			return err
		}
		if m[secReloadSeries] < base+2 {
			return fmt.Errorf("%s = %v, want %v", secReloadSeries, m[secReloadSeries], base+2)
		}
		if status, _, _, err := secGet(gwClient, gwBase+"/metrics", "Bearer "+oldToken); err != nil || status != http.StatusUnauthorized {
			return fmt.Errorf("/metrics with the old token: %d %v, want 401", status, err)
		}
		return nil
	})
	oldRemoved := time.Now()
	waitFor(t, e2eScrapeTimeout, "successful scrapes after the old token was removed", procs, func() error {
		return checkScrapesSince(prom, tokenTargets, oldRemoved, 2)
	})
	if m, err := secGatewayMetrics(gwClient, gw.addr, newToken); err != nil {
		t.Error(err)
	} else if f := m[`scrapegate_file_reloads_total{flag="auth-bearer-tokens-file",result="failure"}`]; f != 0 {
		t.Errorf("%v failed reloads of the token file", f)
	}
	at = time.Now()
	window := fmt.Sprintf("[%dms]", at.UnixMilli()-rotation.UnixMilli())
	failed := "unknown"
	if s, err := promQuery(prom, "sum(count_over_time(up"+jobMatcher(good)+window+") - sum_over_time(up"+jobMatcher(good)+window+"))", at); err == nil && len(s) == 1 {
		failed = strconv.FormatFloat(s[0].value, 'f', -1, 64)
	}
	t.Logf("token rotated in %s; scrapes of good targets that failed meanwhile (timeouts on a loaded machine, never credentials: see the access log check): %s",
		at.Sub(rotation).Round(time.Millisecond), failed)

	// 6. SIGTERM: the gateway drains and exits 0, and never logged a secret.
	stopStart := time.Now()
	gw.proc.signal(t, syscall.SIGTERM)
	gw.proc.wantExitZero(t, "SIGTERM")
	log := gw.proc.out.String()
	secrets := map[string]string{
		"the old token": oldToken, "the new token": newToken, "the wrong token": wrongToken,
		"the password": password, "the proxy password": proxyPassword, "the wrong password": wrongPassword,
	}
	for _, up := range [][2]string{{secUser, password}, {secProxyUser, proxyPassword}, {secProxyUser, wrongPassword}} {
		secrets["basic credentials of "+up[0]] = base64.StdEncoding.EncodeToString([]byte(up[0] + ":" + up[1]))
	}
	for what, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("the gateway's log contains %s", what)
		}
	}
	if strings.Contains(log, "no caller authentication configured") {
		t.Errorf("the gateway warned that no caller authentication is configured")
	}
	// The access log: what the gateway answered each scrape, through to
	// the scrapes refused while it drained after SIGTERM.
	allowed := map[string][]int{}
	for _, st := range good {
		allowed[requestURI(st, gwBase)] = []int{http.StatusOK, http.StatusGatewayTimeout, http.StatusServiceUnavailable}
	}
	for _, st := range bad {
		if st.wantErr != "x509" { // never reaches the gateway
			status, _ := strconv.Atoi(st.wantErr)
			allowed[requestURI(st, gwBase)] = []int{status, http.StatusServiceUnavailable}
		}
	}
	if err := checkAccessLog(log, allowed); err != nil {
		t.Error(err)
	}
	t.Logf("gateway exited %s after SIGTERM (%d log lines); whole test took %s",
		time.Since(stopStart).Round(time.Millisecond), strings.Count(log, "\n"), time.Since(begin).Round(time.Millisecond))
}

// secRandom returns 128 random bits in hex: a token or password.
func secRandom(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// startSecureGateway starts the gateway with exactly args, learns its
// address from its "serving" log line, and waits until /readyz answers 200
// over TLS through client.
func startSecureGateway(t *testing.T, bin string, client *http.Client, args ...string) *gatewayProc {
	t.Helper()
	gw := awaitServing(t, startProcess(t, "gateway", bin, args, "SCRAPEGATE_"))
	waitFor(t, e2eStartTimeout, "the gateway's /readyz to answer 200 over TLS", []*process{gw.proc}, func() error {
		status, _, body, err := secGet(client, "https://"+gw.addr+"/readyz", "")
		if err == nil && status != http.StatusOK {
			err = fmt.Errorf("/readyz: %d %s", status, body)
		}
		return err
	})
	return gw
}

// secGet gets u, with an Authorization header if authorization is not
// empty, and returns the answer whatever its status.
func secGet(client *http.Client, u, authorization string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body, err
}

// secGatewayMetrics returns the gateway's /metrics, fetched with token,
// keyed by series as written (name{labels}).
func secGatewayMetrics(client *http.Client, addr, token string) (map[string]float64, error) {
	status, _, body, err := secGet(client, "https://"+addr+"/metrics", "Bearer "+token)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("gateway /metrics: %d %s", status, strings.TrimSpace(string(body)))
	}
	m := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			return nil, fmt.Errorf("gateway /metrics: cannot parse %q", line)
		}
		m[line[:i]] = v
	}
	return m, nil
}

type secPromParams struct {
	gwAddr, gwCAFile                        string
	tokenFile, wrongTokenFile, passwordFile string
	proxyPassword, wrongProxyPassword       string
	pods, httpPods                          []*securePod
	lockedHTTP, lockedHTTPS, decoy          *securePod
}

// secPrometheusConfig returns the configuration of every job. Debian's
// Prometheus has no Kubernetes service discovery, so psystrike-style jobs
// get the labels kubernetes_sd_configs would give a pod from static_configs,
// and relabel them with the rules of deploy/prometheus/kubernetes-sd.yml.
func secPrometheusConfig(p secPromParams) string {
	var b strings.Builder
	b.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n")
	gwTLS := fmt.Sprintf("    tls_config:\n      ca_file: %q\n", p.gwCAFile)
	token := func(file string) string {
		return fmt.Sprintf("    authorization:\n      credentials_file: %q\n", file)
	}
	basic := fmt.Sprintf("    basic_auth:\n      username: %q\n      password_file: %q\n", secUser, p.passwordFile)
	proxyURL := func(userinfo string) string {
		return fmt.Sprintf("    proxy_url: %q\n", "https://"+userinfo+p.gwAddr)
	}
	secPsystrikeJob(&b, jobSecPsystrikeToken, gwTLS+token(p.tokenFile), p.gwAddr, p.pods)
	secPsystrikeJob(&b, jobSecPsystrikeBasic, gwTLS+basic, p.gwAddr, p.pods)
	secProxyJob(&b, jobSecProxyToken, proxyURL("")+gwTLS+token(p.tokenFile), p.httpPods)
	secProxyJob(&b, jobSecProxyUserinfo, proxyURL(secProxyUser+":"+p.proxyPassword+"@")+gwTLS, p.httpPods)
	secPsystrikeJob(&b, jobSecWrongToken, gwTLS+token(p.wrongTokenFile), p.gwAddr, []*securePod{p.lockedHTTP, p.lockedHTTPS})
	secProxyJob(&b, jobSecWrongPassword, proxyURL(secProxyUser+":"+p.wrongProxyPassword+"@")+gwTLS, []*securePod{p.lockedHTTP})
	secProxyJob(&b, jobSecUntrusted, proxyURL("")+token(p.tokenFile), []*securePod{p.lockedHTTP})
	secPsystrikeJob(&b, jobSecDeniedPort, gwTLS+token(p.tokenFile), p.gwAddr, []*securePod{p.decoy})
	return b.String()
}

// secPsystrikeJob writes a psystrike-style job scraping pods through the
// gateway at gwAddr over https, with the given tls_config and credentials.
// Odd-numbered pods have a prometheus.io/path annotation, even ones rely on
// the default; https pods have prometheus.io/scheme: https, and pod 1 has
// an explicit "http".
func secPsystrikeJob(b *strings.Builder, name, settings, gwAddr string, pods []*securePod) {
	fmt.Fprintf(b, "  - job_name: %s\n    scheme: https\n    follow_redirects: false\n%s    static_configs:\n", name, settings)
	for _, p := range pods {
		fmt.Fprintf(b, "      - targets: [%q]\n        labels:\n", p.addr)
		fmt.Fprintf(b, "          __meta_kubernetes_pod_ip: %q\n", p.ip)
		fmt.Fprintf(b, "          __meta_kubernetes_pod_annotation_prometheus_io_port: %q\n", p.port)
		if p.n%2 == 1 {
			fmt.Fprintf(b, "          __meta_kubernetes_pod_annotation_prometheus_io_path: \"/metrics\"\n")
		}
		switch {
		case p.https:
			fmt.Fprintf(b, "          __meta_kubernetes_pod_annotation_prometheus_io_scheme: \"https\"\n")
		case p.n == 1:
			fmt.Fprintf(b, "          __meta_kubernetes_pod_annotation_prometheus_io_scheme: \"http\"\n")
		}
	}
	fmt.Fprintf(b, "    relabel_configs:\n"+relabelAnnotatedPort+relabelPodsPath+`      - source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port]
        target_label: instance
        regex: (.+);(\d+)
        replacement: $1:$2
      - target_label: __address__
        replacement: %s
`, gwAddr)
}

// secProxyJob writes a proxy_url-style job scraping pods at their own
// addresses, with settings giving proxy_url, tls_config and credentials.
func secProxyJob(b *strings.Builder, name, settings string, pods []*securePod) {
	targets := make([]string, len(pods))
	for i, p := range pods {
		targets[i] = strconv.Quote(p.addr)
	}
	fmt.Fprintf(b, "  - job_name: %s\n%s    static_configs:\n      - targets: [%s]\n", name, settings, strings.Join(targets, ", "))
}

// jobMatcher returns a PromQL label matcher for the jobs of targets.
func jobMatcher(targets []secTarget) string {
	var jobs []string
	for _, st := range targets {
		if !slices.Contains(jobs, st.job) {
			jobs = append(jobs, st.job)
		}
	}
	return `{job=~"` + strings.Join(jobs, "|") + `"}`
}

// checkSecureTargets returns an error unless Prometheus's active targets are
// exactly targets, each scraping its URL, good ones up, bad ones down with
// their error.
func checkSecureTargets(prom *promProc, targets []secTarget) error {
	return checkActiveTargets(prom, keyedTargets(targets), func(key string, st secTarget, tg promTarget) []string {
		return checkScrape(key, st.scrapeURL, st.wantErr, tg)
	})
}

// checkScrapesSince returns an error unless every target has at least n
// successful scrapes that started after since. Prometheus stamps a scrape's
// samples with its start time, and may move that time by up to 2ms to align
// it with the interval, hence the margin.
func checkScrapesSince(prom *promProc, targets []secTarget, since time.Time, n int) error {
	const margin = 50 // ms
	at := time.Now()
	d := at.UnixMilli() - since.UnixMilli() - margin
	if d < 1 {
		return fmt.Errorf("no scrape can have started %dms after %s yet", margin, since.Format(time.RFC3339Nano))
	}
	window := fmt.Sprintf("[%dms]", d)
	return checkEachTarget(prom, "sum_over_time(up"+jobMatcher(targets)+window+")", at, targets, func(_ secTarget, s promSample) error {
		if s.value < float64(n) {
			return fmt.Errorf("%v successful scrapes so far", s.value)
		}
		return nil
	})
}

// requestURI returns the request target the gateway sees for a scrape of st:
// the path of a psystrike-style scrape URL, or a whole proxied one.
func requestURI(st secTarget, gwBase string) string {
	return strings.TrimPrefix(st.scrapeURL, gwBase)
}

// checkAccessLog checks the gateway's access log (JSON lines, --access-log):
// every request for a URI of allowed got one of its statuses, and each of
// them was requested.
func checkAccessLog(log string, allowed map[string][]int) error {
	counts := map[string]map[int]int{}
	lines := 0
	for line := range strings.Lines(log) {
		var l struct {
			Message string `json:"message"`
			URI     string `json:"uri"`
			Status  int    `json:"status"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Message != "request" {
			continue
		}
		lines++
		if _, ok := allowed[l.URI]; ok {
			if counts[l.URI] == nil {
				counts[l.URI] = map[int]int{}
			}
			counts[l.URI][l.Status]++
		}
	}
	if lines == 0 {
		return errors.New(`the gateway's log has no access log lines ({"message":"request","uri":...,"status":...}): has their format changed?`)
	}
	var problems []string
	for uri, statuses := range allowed {
		if counts[uri] == nil {
			problems = append(problems, uri+": never requested")
		}
		for status, n := range counts[uri] {
			if !slices.Contains(statuses, status) {
				problems = append(problems, fmt.Sprintf("%s: %d answered %d, want only %v; all answers: %v", uri, n, status, statuses, counts[uri]))
			}
		}
	}
	return problemsErr(fmt.Sprintf("gateway access log: %d requests", lines), problems)
}
