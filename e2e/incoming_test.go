//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// TestIncoming runs the incoming-traffic scenarios under each engine
// against one py-serv pod, with requests sent to the pod's IP from this
// machine (the node): they enter the pod's network namespace as a client's
// in the cluster would, through the agent's nftables redirect. The local
// app is integration/testdata/pyserver.py, on a local port mapped to the
// pod's port 80.
func TestIncoming(t *testing.T) {
	c := newCluster(t)
	waitUntil(t, time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
	p := c.fixturePods(t, pyServ)[0]
	target, podIP := "pod/"+p.Metadata.Name, p.Status.PodIP
	// py-serv answers "/" with JSON about itself, and other paths it has
	// no handler for with its mux's 404.
	isPyServ := func(body string) bool {
		return strings.Contains(body, `"service": "py-serv"`) || body == "404 page not found\n"
	}

	for _, engine := range []string{"preload", "netstack"} {
		t.Run(engine+"/mirror", func(t *testing.T) {
			out := c.startLocalApp(t, engine, target, 18181, "local answer (dropped)",
				`{"feature": {"network": {"incoming": {"mode": "mirror", "port_mapping": [[18181, 80]]}}}}`)
			// Until the subscription is in place, requests are not
			// copied; every one is answered by py-serv all along.
			waitUntil(t, 2*time.Minute, "the local app to see a mirrored request", func() bool {
				body, err := podGet(podIP, "/mirrored", nil)
				if err != nil || !isPyServ(body) {
					t.Fatalf("a mirrored request was answered %q, %v; want py-serv's answer", body, err)
				}
				return strings.Contains(readFile(out), "GOT /mirrored")
			})
		})

		t.Run(engine+"/filtered steal", func(t *testing.T) {
			c.startLocalApp(t, engine, target, 18182, "local "+engine,
				`{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[18182, 80]],
				"http_filter": {"any_of": [{"header": "^x-e2e: `+engine+`$"}, {"path": "^/api/(?!health)"}]}}}}}`)
			header := map[string]string{"X-E2E": engine}
			waitUntil(t, 2*time.Minute, "the filtered steal", func() bool {
				body, _ := podGet(podIP, "/", header)
				return body == "local "+engine
			})
			for _, tt := range []struct {
				path   string
				header map[string]string
				local  bool
			}{
				{"/", header, true},
				{"/", map[string]string{"X-E2E": "other"}, false},
				{"/api/users", nil, true},
				{"/api/health", nil, false}, // negative look-ahead
				{"/", nil, false},
			} {
				body, err := podGet(podIP, tt.path, tt.header)
				if tt.local && body != "local "+engine || !tt.local && !isPyServ(body) {
					t.Errorf("GET %s %v: %q, %v; want the local app: %v", tt.path, tt.header, body, err, tt.local)
				}
			}
		})

		t.Run(engine+"/h2c filtered steal", func(t *testing.T) {
			c.startLocal(t, engine, target, `{"feature": {"network": {"incoming": {"mode": "steal",
				"port_mapping": [[18186, 80]], "http_filter": {"header_filter": "^x-e2e: `+engine+`$"}}}, "fs": "local"}}`,
				"node", "../integration/testdata/h2server.js", "18186", "local h2 "+engine)
			var protos http.Protocols
			protos.SetUnencryptedHTTP2(true)
			var conns atomic.Int32
			tr := &http.Transport{Protocols: &protos, MaxConnsPerHost: 1, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conns.Add(1)
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
			defer tr.CloseIdleConnections()
			client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
			get := func(user string) (string, string, error) {
				req, _ := http.NewRequest("GET", "http://"+podIP+"/", nil)
				if user != "" {
					req.Header.Set("X-E2E", user)
				}
				resp, err := client.Do(req)
				if err != nil {
					return "", "", err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				return string(b), resp.Proto, err
			}
			waitUntil(t, 2*time.Minute, "the h2c steal", func() bool {
				body, _, _ := get(engine)
				return body == "local h2 "+engine
			})
			tr.CloseIdleConnections()
			conns.Store(0)
			for range 3 { // streams of one connection, routed one by one
				if body, proto, err := get(engine); body != "local h2 "+engine || proto != "HTTP/2.0" {
					t.Errorf("matching stream: %q over %s, %v; want the local app over HTTP/2", body, proto, err)
				}
				if body, proto, err := get(""); !isPyServ(body) || proto != "HTTP/2.0" {
					t.Errorf("other stream: %q over %s, %v; want py-serv over HTTP/2", body, proto, err)
				}
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("the client made %d connections, want 1", n)
			}
		})

		t.Run(engine+"/websocket filtered steal", func(t *testing.T) {
			c.startLocal(t, engine, target, `{"feature": {"network": {"incoming": {"mode": "steal",
				"port_mapping": [[18187, 80]], "http_filter": {"header_filter": "^x-e2e: `+engine+`$"}}}}}`,
				"python3", "../integration/testdata/wsecho.py", "18187", "local-ws:")
			header := map[string]string{"X-E2E": engine}
			waitUntil(t, 2*time.Minute, "the filtered steal", func() bool {
				body, _ := podGet(podIP, "/", header)
				return body == "local-ws:"
			})
			cfg, err := websocket.NewConfig("ws://"+podIP+"/ws", "http://"+podIP+"/")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Header.Set("X-E2E", engine)
			ws, err := websocket.DialConfig(cfg)
			if err != nil {
				t.Fatalf("websocket through the steal: %v", err)
			}
			defer ws.Close()
			for _, m := range []string{"one", "two", strings.Repeat("x", 70000)} {
				if err := websocket.Message.Send(ws, m); err != nil {
					t.Fatal(err)
				}
				var answer string
				if err := websocket.Message.Receive(ws, &answer); err != nil {
					t.Fatal(err)
				}
				if answer != "local-ws:"+m {
					t.Errorf("echo of a %d-byte message: %d bytes %.20q", len(m), len(answer), answer)
				}
			}
			if body, err := podGet(podIP, "/", nil); !isPyServ(body) {
				t.Errorf("a request without the header: %q, %v; want py-serv", body, err)
			}
		})

		// Two sessions on the target share its agent, which routes
		// each request to the session whose filter matches.
		t.Run(engine+"/two filtered sessions", func(t *testing.T) {
			for i, user := range []string{"alice", "bob"} {
				port := 18183 + i
				c.startLocalApp(t, engine, target, port, "local "+user,
					fmt.Sprintf(`{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[%d, 80]],
					"http_filter": {"header_filter": "^x-user: %s$"}}}}}`, port, user))
			}
			for _, user := range []string{"alice", "bob"} {
				waitUntil(t, 2*time.Minute, user+"'s steal", func() bool {
					body, _ := podGet(podIP, "/", map[string]string{"X-User": user})
					return body == "local "+user
				})
			}
			for range 3 {
				for _, user := range []string{"alice", "bob", "carol"} {
					body, err := podGet(podIP, "/", map[string]string{"X-User": user})
					if user == "carol" && !isPyServ(body) || user != "carol" && body != "local "+user {
						t.Errorf("X-User %s: %q, %v", user, body, err)
					}
				}
			}
		})

		t.Run(engine+"/unfiltered steal keeps the probes", func(t *testing.T) {
			out := c.startLocalApp(t, engine, target, 18185, "local "+engine,
				`{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[18185, 80]]}}}}`)
			waitUntil(t, 2*time.Minute, "the steal", func() bool {
				body, _ := podGet(podIP, "/", nil)
				return body == "local "+engine
			})
			// The pod's readiness probe (every 2 s) goes on reaching
			// py-serv, and none reaches the local app.
			before := c.healthChecks(t, p.Metadata.Name)
			time.Sleep(7 * time.Second)
			if body, err := podGet(podIP, "/health", nil); body != "local "+engine {
				t.Errorf("GET /health from a client during the steal: %q, %v; want the local app", body, err)
			}
			if n := c.healthChecks(t, p.Metadata.Name) - before; n < 2 {
				t.Errorf("py-serv saw %d readiness probes in 7 s of the steal; want them to pass through (period 2 s)", n)
			}
			if strings.Contains(readFile(out), "UA kube-probe/") {
				t.Errorf("a kubelet probe reached the local app:\n%s", readFile(out))
			}
			ready := false
			for _, q := range c.fixturePods(t, pyServ) {
				ready = ready || q.Metadata.Name == p.Metadata.Name
			}
			if !ready {
				t.Errorf("pod %s is not ready during the steal", p.Metadata.Name)
			}
		})
	}
	waitUntil(t, time.Minute, "agent jobs to be removed", func() bool { return len(c.agentJobs(t)) == 0 })
}

// startLocalApp runs the local app on port under `mirrord exec` with the
// config cfg, until the test ends; it returns the file its output goes to.
func (c *cluster) startLocalApp(t *testing.T, engine, target string, port int, body, cfg string) string {
	t.Helper()
	return c.startLocal(t, engine, target, cfg, "python3", "../integration/testdata/pyserver.py", fmt.Sprint(port), body)
}

// startLocal runs command under `mirrord exec` with the config cfg, until
// the test ends; it returns the file its output goes to.
func (c *cluster) startLocal(t *testing.T, engine, target, cfg string, command ...string) string {
	t.Helper()
	return c.startLocalIn(t, fixtureNamespace, engine, target, cfg, command...)
}

// startLocalIn is startLocal with a target in namespace ns.
func (c *cluster) startLocalIn(t *testing.T, ns, engine, target, cfg string, command ...string) string {
	t.Helper()
	dir := t.TempDir()
	cfgFile, outFile := filepath.Join(dir, "mirrord.json"), filepath.Join(dir, "app.out")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(buildMirrord(t), "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
		"--engine", engine, "-t", target, "-n", ns, "-f", cfgFile, "--")
	cmd.Args = append(cmd.Args, command...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		out.Close()
		if t.Failed() {
			t.Logf("local app output:\n%s", readFile(outFile))
		}
	})
	return outFile
}

// healthChecks counts the GET /health requests in py-serv's log of pod.
func (c *cluster) healthChecks(t *testing.T, pod string) int {
	return strings.Count(c.kubectl(t, "logs", "-n", fixtureNamespace, pod, "-c", pyServ), "GET /health ")
}

// podGet sends a GET to the pod's port 80 with headers, on a connection
// of its own, and returns the body.
func podGet(podIP, path string, headers map[string]string) (string, error) {
	req, err := http.NewRequest("GET", "http://"+podIP+path, nil)
	if err != nil {
		return "", err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	client := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func readFile(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}
