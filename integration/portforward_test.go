package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestPortForwardLocal: -L forwards (TCP by name and short name, UDP) to
// services only the pod can reach.
func TestPortForwardLocal(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	p1, p2, pu := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "udp")
	cmd := exec.Command(mirrordBin, "port-forward", "--agent-addr", f.agentAddr,
		"-L", fmt.Sprintf("%d:%s:8080", p1, svcName),
		"-L", fmt.Sprintf("%d:db:8080", p2),
		"-L", fmt.Sprintf("udp/%d:%s:9000", pu, svcName))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	for i := 0; i < 3; i++ {
		if !sc.Scan() {
			t.Fatal("port-forward did not report its forwards")
		}
		if !strings.HasPrefix(sc.Text(), "forwarding ") {
			t.Fatalf("unexpected line %q", sc.Text())
		}
	}
	go io.Copy(io.Discard, out)

	for _, port := range []int{p1, p2} {
		body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil || body != svcBody {
			t.Errorf("-L port %d: %q, %v", port, body, err)
		}
	}
	u, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", pu))
	if err != nil {
		t.Fatal(err)
	}
	u.SetDeadline(time.Now().Add(5 * time.Second))
	u.Write([]byte("ping"))
	buf := make([]byte, 64)
	n, err := u.Read(buf)
	if err != nil || string(buf[:n]) != "echo:ping" {
		t.Errorf("udp forward: %q, %v", buf[:n], err)
	}

	// The service restarts (new server, same address): new connections
	// still work.
	f.restartHTTP(f.svc, svcIP+":8080", "restarted svc")
	body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", p1))
	if err != nil || body != "restarted svc" {
		t.Errorf("after restart: %q, %v", body, err)
	}

	// Ctrl-C ends it cleanly.
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("port-forward after SIGINT: %v", err)
	}
}

func TestPortForwardErrors(t *testing.T) {
	for _, args := range [][]string{
		{"port-forward", "--agent-addr", "127.0.0.1:1", "-L", "8080"},
		{"port-forward", "--agent-addr", "127.0.0.1:1"},
	} {
		out, err := exec.Command(mirrordBin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "-L") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}

// TestPortForwardReverse: -R delivers connections arriving at the
// target's port to a local server.
func TestPortForwardReverse(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from this machine")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	cfg := writeConfig(t, `{"feature": {"network": {"incoming": "steal"}}}`)
	cmd := exec.Command(mirrordBin, "port-forward", "--agent-addr", f.agentAddr, "-f", cfg,
		"-R", fmt.Sprintf("8891:%d", ln.Addr().(*net.TCPAddr).Port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	if !sc.Scan() || !strings.Contains(sc.Text(), "-> 127.0.0.1:") {
		t.Fatalf("no forwarding line: %q", sc.Text())
	}
	go io.Copy(io.Discard, out)
	body, err := f.podGet(t, "http://"+podIP+":8891/")
	if err != nil || body != "hello from this machine" {
		t.Errorf("-R: %q, %v", body, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	waitFor(t, "the redirect to be removed", func() bool { return len(f.nftTables(t)) == 0 })
}
