//go:build e2e

package e2e

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExecLoopback: against deploy/py-serv, a program's server answers on
// this machine's loopback from the moment it says it listens, and the
// program reaches a service on this machine's loopback, while it has the
// pod's env, DNS and network, under both engines: a static Go server
// (the sandbox) and a Python server under each engine.
func TestExecLoopback(t *testing.T) {
	c := newCluster(t)
	goServer := filepath.Join(t.TempDir(), "loopserver")
	build := exec.Command("go", "build", "-o", goServer, "../integration/testdata/loopserver")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building loopserver: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from this machine")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	local := "http://" + ln.Addr().String() + "/"

	for _, tc := range []struct {
		name, engine string
		command      []string
	}{
		{"netstack/go", "netstack", []string{goServer, "127.0.0.1:0"}},
		{"netstack/python", "netstack", []string{"python3", "../integration/testdata/loopserver.py", "127.0.0.1"}},
		{"preload/python", "preload", []string{"python3", "../integration/testdata/loopserver.py", "127.0.0.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := c.startLocal(t, tc.engine, "deploy/"+pyServ, "{}", tc.command...)
			addr := waitListening(t, out)
			base := "http://" + addr
			// No retry: the server must answer as soon as it said so.
			if got := getBody(t, base+"/"); got != "hello from loopserver" {
				t.Errorf("GET %s/: %q", base, got)
			}
			for _, q := range []struct{ path, want string }{
				{"/env?k=APP_GREETING", "hello from py-serv"},
				{"/get?url=" + url.QueryEscape(local), "hello from this machine"},
				{"/get?url=" + url.QueryEscape("http://backend:8080/health"), "ok"},
			} {
				if got := getBody(t, base+q.path); !strings.Contains(got, q.want) {
					t.Errorf("GET %s: %q, want %q", q.path, got, q.want)
				}
			}
		})
	}
	waitUntil(t, time.Minute, "agent jobs to be removed", func() bool { return len(c.agentJobs(t)) == 0 })
}

// waitListening waits for the "listening HOST:PORT" line of the program.
func waitListening(t *testing.T, file string) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(readFile(file)))
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				return strings.TrimSpace(addr)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the program never said it listens:\n%s", readFile(file))
	return ""
}
