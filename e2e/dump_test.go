//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects dump's stdout while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDump: `mirrord dump -t pod/... -p 80` starts an agent next to the
// pod, prints the requests that arrive at its port 80 while py-serv
// still answers them, and on SIGINT ends with status 0 leaving no agent
// job, no agent pod and no nftables table of ours in the pod.
func TestDump(t *testing.T) {
	c := newCluster(t)
	waitUntil(t, time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
	p := c.fixturePods(t, pyServ)[0]
	cmd := exec.Command(buildMirrord(t), "dump", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
		"-t", "pod/"+p.Metadata.Name, "-n", fixtureNamespace, "-p", "80")
	var stdout lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ended := false
	defer func() {
		if !ended {
			cmd.Process.Kill()
			<-exited
		}
	}()

	// Requests made before the subscription is in place are not
	// printed; py-serv answers every one all along.
	i := 0
	waitUntil(t, 2*time.Minute, "dump to print a request", func() bool {
		i++
		path := fmt.Sprintf("/dumped-%d", i)
		body, err := podGet(p.Status.PodIP, path, nil)
		if err != nil || !strings.Contains(body, `"service": "py-serv"`) && body != "404 page not found\n" {
			t.Fatalf("GET %s was answered %q, %v; want py-serv's answer", path, body, err)
		}
		return strings.Contains(stdout.String(), "GET "+path+" HTTP/1.1")
	})
	waitUntil(t, 10*time.Second, "dump to print the close", func() bool {
		return strings.Contains(stdout.String(), " closed\n")
	})
	out := stdout.String()
	for _, want := range []string{
		"## New TCP connection established: Connection ID ",
		fmt.Sprintf(" to %s:80\n", p.Status.PodIP),
		"\nData:\nGET /dumped-",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dump output lacks %q:\n%s", want, out)
		}
	}

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		ended = true
		if err != nil {
			t.Errorf("dump after SIGINT: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dump did not end within 30 s of SIGINT")
	}
	waitUntil(t, 30*time.Second, "agent jobs and pods to be gone", func() bool {
		pods := c.kubectl(t, "get", "pods", "-n", fixtureNamespace, "-l", "app=mirrord", "-o", "name")
		return len(c.agentJobs(t)) == 0 && strings.TrimSpace(pods) == ""
	})
	if tables := ourTables(t, p.Metadata.Name); len(tables) != 0 {
		t.Errorf("pod %s still has nftables tables %v", p.Metadata.Name, tables)
	}
}
