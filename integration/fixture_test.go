package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Binaries built once for all tests.
var (
	mirrordBin  string
	goclientBin string
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("integration: skipped: these tests make network namespaces and need root")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "mirrord-itest-")
	if err != nil {
		panic(err)
	}
	if err := claimBuildDir(dir); err != nil {
		panic(err)
	}
	mirrordBin = filepath.Join(dir, "mirrord")
	goclientBin = filepath.Join(dir, "goclient")
	// The binary embeds the preload library, which make builds (the
	// preload engine cannot work without it).
	if out, err := exec.Command("make", "-s", "-C", "..", "preload-lib").CombinedOutput(); err != nil {
		fmt.Printf("integration: building the preload library: %v\n%s", err, out)
		os.Exit(1)
	}
	for _, b := range []struct{ out, pkg string }{{mirrordBin, "../cmd/mirrord"}, {goclientBin, "./testdata/goclient"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("build %s: %v\n%s", b.pkg, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Addresses of the fixture.
const (
	podIP   = "10.77.0.1" // the "pod": DNS server, target process
	svcIP   = "10.77.0.2" // a service only the pod can reach
	hostIP  = "10.79.0.1" // this machine's end of the "local" link
	localIP = "10.79.0.2" // a server only this machine can reach

	svcName     = "svc.cluster.test"
	svc6Name    = "svc6.cluster.test" // AAAA only: svcIP6 (see addIPv6)
	svcBody     = "hello from svc"
	localBody   = "hello from local"
	secret      = "s3cr3t-token"
	podDomain   = "cluster.test"
	podSearch   = "ns1.svc.cluster.test"
	podHostname = "api-7d9c-pod"
)

// fixture is a fake pod: three network namespaces made for one test.
//
//	pod (10.77.0.1) ── veth ── svc (10.77.0.2)     no route from this machine
//	this machine (10.79.0.1) ── veth ── local (10.79.0.2)
type fixture struct {
	t               *testing.T
	pod, svc, local string
	podPID          int
	agentAddr       string
	resolvConf      string // this machine's resolv.conf for the test: the local DNS server
	dir             string
	servers         map[string]*http.Server
	podFiles        string // a directory whose content only the target sees
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	lockFixture(t)
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	f := &fixture{t: t, pod: "mrdpod" + id, svc: "mrdsvc" + id, local: "mrdloc" + id, dir: t.TempDir()}
	for _, ns := range []string{f.pod, f.svc, f.local} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	// pod <-> svc
	run(t, "ip", "link", "add", "mp"+id, "type", "veth", "peer", "name", "ms"+id)
	run(t, "ip", "link", "set", "mp"+id, "netns", f.pod)
	run(t, "ip", "link", "set", "ms"+id, "netns", f.svc)
	run(t, "ip", "-n", f.pod, "addr", "add", podIP+"/24", "dev", "mp"+id)
	run(t, "ip", "-n", f.svc, "addr", "add", svcIP+"/24", "dev", "ms"+id)
	run(t, "ip", "-n", f.pod, "link", "set", "mp"+id, "up")
	run(t, "ip", "-n", f.svc, "link", "set", "ms"+id, "up")
	// this machine <-> local
	run(t, "ip", "link", "add", "mh"+id, "type", "veth", "peer", "name", "ml"+id)
	t.Cleanup(func() { exec.Command("ip", "link", "del", "mh"+id).Run() })
	run(t, "ip", "link", "set", "ml"+id, "netns", f.local)
	run(t, "ip", "addr", "add", hostIP+"/24", "dev", "mh"+id)
	run(t, "ip", "-n", f.local, "addr", "add", localIP+"/24", "dev", "ml"+id)
	run(t, "ip", "link", "set", "mh"+id, "up")
	run(t, "ip", "-n", f.local, "link", "set", "ml"+id, "up")

	// Servers, each listening inside its namespace.
	f.serveDNS(f.pod, podIP, map[string]string{svcName: svcIP, "db." + podSearch: svcIP, svc6Name: svcIP6})
	f.serveHTTP(f.svc, svcIP+":8080", svcBody)
	f.serveUDPEcho(f.svc, svcIP+":9000", "echo:")
	f.serveDNS(f.local, localIP, map[string]string{svcName: localIP, "localonly.test": localIP})
	f.serveHTTP(f.local, localIP+":8080", localBody)
	f.serveUDPEcho(f.local, localIP+":9000", "local-echo:")

	// The target process, with the pod's resolv.conf (ip netns exec
	// bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf).
	etc := filepath.Join("/etc/netns", f.pod)
	os.MkdirAll(etc, 0o755)
	t.Cleanup(func() { os.RemoveAll(etc) })
	os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte(fmt.Sprintf("nameserver %s\nsearch %s %s\noptions ndots:2\n", podIP, podSearch, podDomain)), 0o644)
	// Its own UTS namespace too, so that it has a hostname of its own.
	// And its own mount namespace, with files only it can see (a tmpfs
	// over a directory that is empty for everyone else).
	f.podFiles = filepath.Join(os.TempDir(), "mirrord-podfiles-"+id)
	os.MkdirAll(f.podFiles, 0o755)
	t.Cleanup(func() { os.RemoveAll(f.podFiles) })
	setup := `hostname "$0" && mount -t tmpfs tmpfs "$1" && printf 'pod: config\n' > "$1/config.yaml" &&
		mkdir "$1/sub" && ln -s config.yaml "$1/link" && shift && exec "$@"`
	target := exec.Command("unshare", "-u", "-m", "--", "sh", "-c", setup, podHostname, f.podFiles,
		"ip", "netns", "exec", f.pod, "env", "-i", "SECRET_TOKEN="+secret, "DB_HOST=db", "DB_PASSWORD=pw",
		"CONNECT_TIMEOUT=5", "READ_TIMEOUT=6", "PATH=/remote/bin", "/bin/sleep", "7200")
	target.Stderr = os.Stderr
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill(); target.Wait() })
	f.podPID = target.Process.Pid
	waitFor(t, "target process in its namespace", func() bool {
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", f.podPID))
		return strings.Contains(string(env), secret)
	})

	f.resolvConf = filepath.Join(f.dir, "resolv.conf")
	os.WriteFile(f.resolvConf, []byte("nameserver "+localIP+"\n"), 0o644)
	return f
}

// fixtureLock is held by the test that has a fixture on this machine.
// Fixtures use fixed addresses (this machine's end of the "local" link is
// always hostIP), so two test processes (a CI run and a developer's
// `go test -run`) must take turns rather than break each other's routes.
const fixtureLock = "/run/mirrord-integration.lock"

// lockFixture waits for the machine's fixture lock and releases it when
// the test ends (the kernel releases it too if the process dies).
func lockFixture(t *testing.T) {
	t.Helper()
	fd, err := unix.Open(fixtureLock, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("fixture lock: %v", err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		t.Fatalf("fixture lock: %v", err)
	}
	// Registered first, so it runs last: after the namespaces are gone.
	t.Cleanup(func() { unix.Close(fd) })
	killStaleProcesses(t)
	removeStaleFixtures(t)
}

// The names newFixture gives its namespaces and this machine's veth ends.
var (
	staleNetns = regexp.MustCompile(`^mrd(pod|svc|loc)[0-9a-f]{6}$`)
	staleLink  = regexp.MustCompile(`^mh[0-9a-f]{6}$`)
)

// removeStaleFixtures deletes what a killed test run left: with the lock
// held no other fixture is alive, so any fixture namespace or link is
// stale, and its routes (hostIP's) would break this one.
func removeStaleFixtures(t *testing.T) {
	t.Helper()
	out, _ := exec.Command("ip", "-o", "link", "show", "type", "veth").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if staleLink.MatchString(name) {
				t.Logf("removing a stale fixture link %s", name)
				exec.Command("ip", "link", "del", name).Run()
			}
		}
	}
	out, _ = exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && staleNetns.MatchString(f[0]) {
			t.Logf("removing a stale fixture namespace %s", f[0])
			exec.Command("ip", "netns", "del", f[0]).Run()
			os.RemoveAll("/etc/netns/" + f[0])
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inNetns runs fn on a thread inside the named namespace.
func inNetns(t *testing.T, ns string, fn func() error) {
	t.Helper()
	h, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := unix.Setns(int(h.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
}

// restartHTTP stops the HTTP server on addr and starts a new one with a
// different body, as a rescheduled service would.
func (f *fixture) restartHTTP(ns, addr, body string) {
	f.servers[addr].Close()
	f.serveHTTP(ns, addr, body)
}

func (f *fixture) serveHTTP(ns, addr, body string) {
	var ln net.Listener
	inNetns(f.t, ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(make([]byte, 8<<20))
			return
		}
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	if f.servers == nil {
		f.servers = map[string]*http.Server{}
	}
	f.servers[addr] = srv
	f.t.Cleanup(func() { srv.Close() })
}

func (f *fixture) serveUDPEcho(ns, addr, prefix string) {
	var pc net.PacketConn
	inNetns(f.t, ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(prefix), buf[:n]...), from)
		}
	}()
	f.t.Cleanup(func() { pc.Close() })
}

// serveDNS answers A queries for names with an IPv4 address and AAAA
// queries for names with an IPv6 one (and for any of them TXT "hello",
// SRV "0 5 8080 <name>" and MX "10 mail.<name>"), on UDP and TCP.
// Anything else is NXDOMAIN.
func (f *fixture) serveDNS(ns, ip string, names map[string]string) {
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		name := strings.TrimSuffix(q.Name, ".")
		a, ok := names[name]
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeA && !strings.Contains(a, ":"):
			rr, _ := dns.NewRR(fmt.Sprintf("%s 5 IN A %s", q.Name, a))
			m.Answer = append(m.Answer, rr)
		case q.Qtype == dns.TypeAAAA && strings.Contains(a, ":"):
			rr, _ := dns.NewRR(fmt.Sprintf("%s 5 IN AAAA %s", q.Name, a))
			m.Answer = append(m.Answer, rr)
		case q.Qtype == dns.TypeTXT:
			rr, _ := dns.NewRR(fmt.Sprintf("%s 5 IN TXT \"hello\"", q.Name))
			m.Answer = append(m.Answer, rr)
		case q.Qtype == dns.TypeSRV:
			rr, _ := dns.NewRR(fmt.Sprintf("%s 5 IN SRV 0 5 8080 %s", q.Name, q.Name))
			m.Answer = append(m.Answer, rr)
		case q.Qtype == dns.TypeMX:
			rr, _ := dns.NewRR(fmt.Sprintf("%s 5 IN MX 10 mail.%s", q.Name, q.Name))
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	var pc net.PacketConn
	var ln net.Listener
	inNetns(f.t, ns, func() (err error) {
		if pc, err = net.ListenPacket("udp", ip+":53"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", ip+":53")
		return err
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		go srv.ActivateAndServe()
		f.t.Cleanup(func() { srv.Shutdown() })
	}
}

// startAgent runs `mirrord agent` for the target process.
func (f *fixture) startAgent(extra ...string) *exec.Cmd {
	f.t.Helper()
	args := append([]string{"agent", "--target-pid", fmt.Sprint(f.podPID), "--listen", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(mirrordBin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	var once sync.Once
	f.t.Cleanup(func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) })
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		f.t.Fatal("agent did not start")
	}
	addr, ok := strings.CutPrefix(sc.Text(), "agent listening on ")
	if !ok {
		f.t.Fatalf("unexpected agent output %q", sc.Text())
	}
	go io.Copy(io.Discard, out)
	f.agentAddr = addr
	return cmd
}

// mirrord runs `mirrord exec --agent-addr ... ARGS` with this machine's
// resolv.conf pointing at the local namespace's DNS server (in a private
// mount namespace, so the real one is untouched), and returns its output.
// engines are the two ways mirrord reaches into a dynamically linked
// program. Every scenario that runs one (curl, Python, a shell, env) runs
// under each: the engines must behave the same.
var engines = []string{"preload", "netstack"}

// eachEngine runs fn as a subtest per engine, with the flags that force it.
func eachEngine(t *testing.T, fn func(t *testing.T, engine ...string)) {
	t.Helper()
	for _, e := range engines {
		t.Run(e, func(t *testing.T) { fn(t, "--engine", e) })
	}
}

func (f *fixture) mirrord(ctx context.Context, env []string, args ...string) (string, error) {
	f.t.Helper()
	return f.mirrordAfter(ctx, "true", env, args...)
}

// noFUSE makes /dev/fuse unusable in mirrord's mount namespace (/dev/null
// bound over it), as for a user who may not open it: neither engine gets
// a FUSE view, so remote files are copies (goshim's memfd fallback).
const noFUSE = "mount --bind /dev/null /dev/fuse"

// mirrordAfter runs mirrord after the shell command setup, in mirrord's
// own mount namespace.
func (f *fixture) mirrordAfter(ctx context.Context, setup string, env []string, args ...string) (string, error) {
	f.t.Helper()
	script := setup + ` && mount --bind "$0" /etc/resolv.conf && exec "$@"`
	full := append([]string{"-m", "--", "sh", "-c", script, f.resolvConf, mirrordBin, "exec", "--agent-addr", f.agentAddr}, args...)
	cmd := exec.CommandContext(ctx, "unshare", full...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
