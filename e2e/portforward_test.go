//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startPortForward runs `mirrord port-forward` and waits for its
// "forwarding" lines.
func (c *cluster) startPortForward(t *testing.T, lines int, args ...string) *exec.Cmd {
	t.Helper()
	full := append([]string{"port-forward", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage, "-n", fixtureNamespace}, args...)
	cmd := exec.Command(buildMirrord(t), full...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() })
	sc := bufio.NewScanner(out)
	for i := 0; i < lines; i++ {
		if !sc.Scan() || !strings.HasPrefix(sc.Text(), "forwarding ") {
			t.Fatalf("port-forward did not start: %q", sc.Text())
		}
	}
	go io.Copy(io.Discard, out)
	return cmd
}

// TestPortForwardClusterIP: -L reaches a ClusterIP-only service by name.
func TestPortForwardClusterIP(t *testing.T) {
	c := newCluster(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c.startPortForward(t, 1, "-t", "deploy/"+pyServ, "-L", fmt.Sprintf("%d:%s:8080", port, backend))
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"hostname": "backend-`) {
		t.Errorf("-L to backend: %s", b)
	}
}

// TestPortForwardReverseSteal: -R with steal sends requests arriving at
// the target pod's port 80 to a server on this machine.
func TestPortForwardReverseSteal(t *testing.T) {
	c := newCluster(t)
	pods := c.fixturePods(t, pyServ)
	if len(pods) == 0 {
		t.Fatal("no py-serv pods")
	}
	target := pods[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "stolen by this machine")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	cfg, _ := os.CreateTemp("", "mirrord-e2e-*.json")
	cfg.WriteString(`{"feature": {"network": {"incoming": "steal"}}}`)
	cfg.Close()
	defer os.Remove(cfg.Name())
	c.startPortForward(t, 1, "-f", cfg.Name(), "-t", "pod/"+target.Metadata.Name,
		"-R", fmt.Sprintf("80:%d", ln.Addr().(*net.TCPAddr).Port))

	ns := c.namespace(t, "e2e-pf")
	c.apply(t, fmt.Sprintf(clientPod, ns, busyboxImage))
	c.waitReady(t, ns, "client")
	url := fmt.Sprintf("http://%s:80/", target.Status.PodIP)
	waitUntil(t, 30*time.Second, "the stolen request", func() bool {
		out, _ := c.run(t.Context(), "exec", "-n", ns, "client", "--", "timeout", "5", "wget", "-qO-", url)
		return strings.Contains(out, "stolen by this machine")
	})
}
