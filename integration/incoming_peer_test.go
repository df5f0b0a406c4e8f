package integration

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// IPv6 addresses of the fixture's pod and svc namespaces (added by
// addIPv6): a client of the target over IPv6.
const (
	podIP6 = "fd00:77::1"
	svcIP6 = "fd00:77::2"
)

// addIPv6 gives the pod and the svc namespaces IPv6 addresses on their
// link, and the svc namespace the same servers on its IPv6 address as on
// its IPv4 one (HTTP on 8080, UDP echo on 9000), answering svcBody6 and
// "echo6:".
func (f *fixture) addIPv6(t *testing.T) {
	t.Helper()
	id := strings.TrimPrefix(f.pod, "mrdpod")
	run(t, "ip", "-n", f.pod, "addr", "add", podIP6+"/64", "dev", "mp"+id, "nodad")
	run(t, "ip", "-n", f.svc, "addr", "add", svcIP6+"/64", "dev", "ms"+id, "nodad")
	f.serveHTTP(f.svc, net.JoinHostPort(svcIP6, "8080"), svcBody6)
	f.serveUDPEcho(f.svc, net.JoinHostPort(svcIP6, "9000"), "echo6:")
}

const svcBody6 = "hello from svc over IPv6"

// podRequest sends an HTTP/1.0 request to dst from the svc namespace, as
// a client in the cluster would, and returns the client's address (its
// IP in the pod's network and its source port) and the answer's body.
func (f *fixture) podRequest(t *testing.T, dst string) (netip.AddrPort, string) {
	t.Helper()
	var c net.Conn
	inNetns(t, f.svc, func() (err error) {
		c, err = net.DialTimeout("tcp", dst, 3*time.Second)
		return err
	})
	defer c.Close()
	src := c.LocalAddr().(*net.TCPAddr).AddrPort()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "GET /peer HTTP/1.0\r\nHost: api\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("request to %s: %v", dst, err)
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), body
}

var (
	peerserverOnce sync.Once
	peerserverBin  string
	peerserverErr  error
)

// buildPeerServer builds integration/testdata/peerserver (a static Go
// server, which the netstack engine runs) on first use.
func buildPeerServer(t *testing.T) string {
	t.Helper()
	peerserverOnce.Do(func() {
		peerserverBin = filepath.Join(filepath.Dir(mirrordBin), "peerserver")
		cmd := exec.Command("go", "build", "-o", peerserverBin, "./testdata/peerserver")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			peerserverErr = fmt.Errorf("build peerserver: %v\n%s", err, out)
		}
	})
	if peerserverErr != nil {
		t.Fatal(peerserverErr)
	}
	return peerserverBin
}

// TestIncomingClientAddress: a stolen or mirrored connection shows the
// local app the target's client (its IP in the pod's network and its
// source port) as accept's address and getpeername, not mirrord's end on
// loopback, under both engines: a Python server with blocking accepts on
// an IPv4 and a dual-stack IPv6 socket (an IPv4 client of the latter is
// ::ffff:a.b.c.d, as the kernel shows it), and a static Go server
// (net.Conn.RemoteAddr; under the preload engine it is started by a
// preloaded shell, so it runs through `mirrord layer-exec`). A signal
// handler still interrupts a blocking accept.
func TestIncomingClientAddress(t *testing.T) {
	f := newFixture(t)
	f.addIPv6(t)
	for _, port := range []string{"8892", "8893", "8894"} {
		f.serveHTTP(f.pod, ":"+port, "hello from original app")
	}
	f.startAgent("--ttl", "30s")
	goServer := buildPeerServer(t)
	v4 := func(port string) string { return net.JoinHostPort(podIP, port) }
	v6 := func(port string) string { return net.JoinHostPort(podIP6, port) }
	eachEngine(t, func(t *testing.T, engine ...string) {
		for _, mode := range []string{"steal", "mirror"} {
			t.Run(mode, func(t *testing.T) {
				waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
				flags := engine
				wantBody := "hello from original app"
				if mode == "steal" {
					flags, wantBody = append(flags, "--steal"), "local"
				}
				cmd, outFile := f.startLocal(t, flags, "sh", "-c",
					`python3 testdata/peerserver.py 8892 8893 & exec "$0" 8894`, goServer)
				waitFor(t, "the subscriptions", func() bool { return f.nftRules(t) == 3 })
				output := func() string { b, _ := os.ReadFile(outFile); return string(b) }
				for _, tc := range []struct {
					dst    string
					server string
					show   func(c netip.AddrPort) string // accept's address and getpeername
				}{
					{v4("8892"), "py4", func(c netip.AddrPort) string { return c.String() + " " + c.String() }},
					{v4("8893"), "py6", func(c netip.AddrPort) string { m := mapped(c); return m + " " + m }},
					{v6("8893"), "py6", func(c netip.AddrPort) string { return c.String() + " " + c.String() }},
					// Go's RemoteAddr shows a v4-mapped address as IPv4.
					{v4("8894"), "go", func(c netip.AddrPort) string { return c.String() + " " + mapped(c) }},
					{v6("8894"), "go", func(c netip.AddrPort) string { return c.String() + " " + c.String() }},
				} {
					client, body := f.podRequest(t, tc.dst)
					if body != wantBody {
						t.Errorf("request to %s: answer %q, want %q", tc.dst, body, wantBody)
					}
					want := "PEER " + tc.server + " " + tc.show(client) + "\n"
					ok := false
					deadline := time.Now().Add(5 * time.Second)
					for !ok && time.Now().Before(deadline) {
						ok = strings.Contains(output(), want)
						time.Sleep(20 * time.Millisecond)
					}
					if !ok {
						t.Errorf("client %v to %s: the local app did not print %q:\n%s", client, tc.dst, want, output())
					}
				}
				// A signal handler's exception ends the Python server's
				// blocking accept, as without mirrord.
				var pid int
				for line := range strings.Lines(output()) {
					if p, ok := strings.CutPrefix(strings.TrimSpace(line), "pid "); ok {
						pid, _ = strconv.Atoi(p)
					}
				}
				if pid == 0 {
					t.Fatalf("the Python server printed no pid:\n%s", output())
				}
				syscall.Kill(pid, syscall.SIGUSR1)
				waitFor(t, "the Python server to be interrupted", func() bool { return strings.Contains(output(), "interrupted\n") })
				cmd.Process.Signal(syscall.SIGTERM)
				cmd.Wait()
			})
		}
	})
}

// mapped is an IPv4 client as an IPv6 socket shows it.
func mapped(c netip.AddrPort) string {
	return netip.AddrPortFrom(netip.AddrFrom16(c.Addr().As16()), c.Port()).String()
}
