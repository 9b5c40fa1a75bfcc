package main

// A network namespace of the test's own, for end-to-end tests that need
// cluster-like addresses: the API server refuses loopback addresses in
// EndpointSlices, and never publishes default/kubernetes for an API server
// on 127.0.0.1. The test re-executes its own binary inside new user and
// network namespaces (what `unshare -rn` does), where 10.244.0.0/16 (pods)
// and 10.250.0.0/16 (nodes, the API server) are on lo: every address of
// both is local, the gateway runs with its default -allow-cidrs, and no
// packet can leave, since lo is the namespace's only interface that is up.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// netnsChildEnv marks the re-executed test binary: its value is the name of
// the test it runs inside the namespace. (Not SCRAPEGATE_: that is the
// gateway's own prefix.)
const netnsChildEnv = "E2E_SCRAPEGATE_NETNS_TEST"

// netnsPodCIDR and netnsNodeCIDR are on lo inside the namespace.
var (
	netnsPodCIDR  = netip.MustParsePrefix("10.244.0.0/16")
	netnsNodeCIDR = netip.MustParsePrefix("10.250.0.0/16")
)

// netnsTestFlags are the test binary's flags the child does not get as the
// parent had them: it runs one test, once, verbose (its output is shown as
// the parent's log), within the parent's deadline, and writes none of the
// parent's files.
var netnsTestFlags = []string{"run", "skip", "count", "v", "timeout", "list", "bench", "fuzz",
	"testlogfile", "coverprofile", "cpuprofile", "memprofile", "blockprofile", "mutexprofile", "trace", "outputdir"}

// inNetworkNamespace runs the calling test again, inside new user and
// network namespaces, and returns false: the parent's test is then over, and
// has failed if the child failed, with the child's output in its log. In
// the child it brings the namespace up, checks it, and returns true: the
// test goes on there. env is added to the child's environment, for what the
// parent prepared (binaries built where the network is).
func inNetworkNamespace(t *testing.T, env ...string) bool {
	t.Helper()
	if os.Getenv(netnsChildEnv) == t.Name() {
		setUpNetworkNamespace(t)
		return true
	}
	runInNetworkNamespace(t, env)
	return false
}

// inNetns reports whether this process is a test re-executed in its
// network namespace.
func inNetns() bool { return os.Getenv(netnsChildEnv) != "" }

func runInNetworkNamespace(t *testing.T, env []string) {
	t.Helper()
	args := []string{"-test.run=^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count=1", "-test.v=true"}
	if deadline, ok := t.Deadline(); ok {
		// Time for the parent to report, so the child's own timeout
		// (with its goroutine dump) fires first.
		args = append(args, "-test.timeout="+(time.Until(deadline)-10*time.Second).Round(time.Second).String())
	}
	args = append(args, childTestFlags(os.Args[1:])...)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), netnsChildEnv+"="+t.Name()), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// A PID namespace too: the child is its init, so when it dies,
		// killed or timed out before its cleanups ran, the kernel kills
		// every process it started (etcd, kube-apiserver, Prometheus).
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID,
		// Ourselves as root of the user namespace, which owns the
		// network namespace: root there may configure it, and nothing
		// else on the machine.
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		GidMappingsEnableSetgroups: false,
		// The child dies with the test, and with it everything it started.
		Pdeathsig: syscall.SIGKILL,
	}
	out, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	// Pdeathsig follows the thread that started the child: keep it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		w.Close()
		t.Fatalf("cannot run %s in new user and network namespaces (CLONE_NEWUSER|CLONE_NEWNET): %v; "+
			"this test needs them: run it as root, or where unprivileged user namespaces are allowed "+
			"(sysctl kernel.unprivileged_userns_clone=1, and on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0), "+
			"or skip the end-to-end tests with -short", t.Name(), err)
	}
	var passed, skipped bool
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			passed = passed || strings.HasPrefix(line, "--- PASS: "+t.Name()+" ")
			skipped = skipped || strings.HasPrefix(line, "--- SKIP: "+t.Name()+" ")
			t.Log("netns| " + line)
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	err := cmd.Wait()
	w.Close()
	<-lines
	switch {
	case err != nil:
		t.Fatalf("%s failed inside its network namespace (%v); its output is above", t.Name(), err)
	case skipped:
		t.Skip("skipped inside its network namespace; the reason is above")
	case !passed:
		t.Fatalf("%s exited 0 inside its network namespace, but did not report --- PASS: did it run at all?", t.Name())
	}
}

// childTestFlags returns the parent's -test.* flags and arguments but those
// of netnsTestFlags, in both the -flag=value and the -flag value forms.
func childTestFlags(parent []string) []string {
	var kept []string
	for i := 0; i < len(parent); i++ {
		arg := parent[i]
		name, _, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		name = strings.TrimPrefix(name, "test.")
		isFlag := strings.HasPrefix(arg, "-")
		if !isFlag || !slices.Contains(netnsTestFlags, name) {
			kept = append(kept, arg)
			continue
		}
		if !hasValue && name != "v" && i+1 < len(parent) && !strings.HasPrefix(parent[i+1], "-") {
			i++ // the value of "-test.run X"
		}
	}
	return kept
}

// setUpNetworkNamespace brings lo up with the pod and node ranges on it,
// then checks that every address of both is local and that no other
// interface is up, nor any route out.
func setUpNetworkNamespace(t *testing.T) {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		for _, p := range []string{"/usr/sbin/ip", "/sbin/ip"} {
			if _, serr := os.Stat(p); serr == nil {
				ip, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Fatalf("this test configures its network namespace with ip, from iproute2 (`make test-deps` installs it): %v", err)
	}
	run := func(args ...string) {
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("link", "set", "lo", "up")
	for _, p := range []netip.Prefix{netnsPodCIDR, netnsNodeCIDR} {
		run("addr", "add", p.String(), "dev", "lo")
	}
	if err := checkNetworkNamespace(); err != nil {
		t.Fatalf("the test's network namespace: %v", err)
	}
}

// checkNetworkNamespace returns an error unless addresses across both
// ranges accept connections here, lo is the only interface that is up, and
// there is no route to any address outside them. Finding out sends
// nothing: connecting a UDP socket only looks up the route.
func checkNetworkNamespace() error {
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp != 0 && iface.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("interface %s is up: packets could leave the namespace", iface.Name)
		}
	}
	for _, addr := range []string{"10.244.0.1", "10.244.1.5", "10.244.254.254", "10.250.0.1", "10.250.1.1", "10.250.254.254", "127.0.0.1"} {
		ln, err := net.Listen("tcp4", addr+":0")
		if err != nil {
			return fmt.Errorf("%s is not local: %v", addr, err)
		}
		c, err := net.Dial("tcp4", ln.Addr().String())
		ln.Close()
		if err != nil {
			return fmt.Errorf("cannot connect to %s: %v", ln.Addr(), err)
		}
		c.Close()
	}
	for _, outside := range []string{"10.245.0.1:9", "192.0.2.1:9", "[2001:db8::1]:9"} {
		c, err := net.Dial("udp", outside)
		if err == nil {
			c.Close()
			return fmt.Errorf("%s has a route out of the namespace", outside)
		}
		if !errors.Is(err, syscall.ENETUNREACH) {
			return fmt.Errorf("connecting to %s: %v, want %v", outside, err, syscall.ENETUNREACH)
		}
	}
	return nil
}

// netnsFreeAddr returns ip:port with a port that nothing listened on a
// moment ago, at an address of the test's network namespace.
func netnsFreeAddr(t *testing.T, ip string) string {
	t.Helper()
	if !inNetns() {
		t.Fatalf("BUG: %s is an address of the test's network namespace, and this is not in it", ip)
	}
	ln, err := net.Listen("tcp4", ip+":0")
	if err != nil {
		t.Fatalf("cannot listen on %s: %v", ip, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// netnsListen listens on ip:port in the test's network namespace until
// the test ends; port "0" lets the kernel pick.
func netnsListen(t *testing.T, ip, port string) net.Listener {
	t.Helper()
	if !inNetns() {
		t.Fatalf("BUG: %s is an address of the test's network namespace, and this is not in it", ip)
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort(ip, port))
	if err != nil {
		t.Fatalf("cannot listen on %s:%s: %v", ip, port, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestNetworkNamespace checks the harness itself: inside, the ranges are
// local and nothing leaves (setUpNetworkNamespace); outside, the test's
// process is where it was.
func TestNetworkNamespace(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary in new namespaces; skipped with -short, as the end-to-end tests are")
	}
	if !inNetworkNamespace(t) {
		return
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, iface := range ifaces {
		names = append(names, iface.Name)
	}
	t.Logf("inside the namespace as uid %d: interfaces %v", os.Getuid(), names)
	if os.Getuid() != 0 {
		t.Errorf("uid %d inside the user namespace, want 0", os.Getuid())
	}
}
