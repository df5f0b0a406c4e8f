package integration

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestIncomingCLIKilledDuringLoad: kill -9 of the CLI while requests
// stream through a steal: the agent notices the session is gone, removes
// its redirect, and the target's own app answers again within 5 s, with no
// nftables table of ours left in the pod's namespace.
func TestIncomingCLIKilledDuringLoad(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8893", "hello from original app")
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cmd, _ := f.startLocalApp(t, "8893", "hello from local app", append(engine, "--steal", "-t", "pid/1")...)
		waitFor(t, "stolen traffic to reach the local app", func() bool {
			body, _ := f.podGet(t, "http://"+podIP+":8893/")
			return body == "hello from local app"
		})

		// Load: 8 clients, each sending requests one after another on new
		// connections, recording the time of the last answer from the
		// original app.
		var stop atomic.Bool
		var lastOriginal atomic.Int64
		var local, original atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: f.svcDialer(t)}}
				for !stop.Load() {
					resp, err := client.Get("http://" + podIP + ":8893/load")
					if err != nil {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					b := make([]byte, 64)
					n, _ := resp.Body.Read(b)
					resp.Body.Close()
					switch string(b[:n]) {
					case "hello from local app":
						local.Add(1)
					case "hello from original app":
						original.Add(1)
						lastOriginal.Store(time.Now().UnixNano())
					}
				}
			}()
		}
		defer func() { stop.Store(true); wg.Wait() }()
		waitFor(t, "the load to reach the local app", func() bool { return local.Load() >= 200 })

		// unshare and sh exec'd mirrord: the pid is mirrord's.
		killed := time.Now()
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		deadline := killed.Add(5 * time.Second)
		for time.Now().Before(deadline) && lastOriginal.Load() < killed.UnixNano() {
			time.Sleep(10 * time.Millisecond)
		}
		if lastOriginal.Load() < killed.UnixNano() {
			t.Fatalf("the target's app did not answer within 5 s of kill -9 of the CLI (local answers %d)", local.Load())
		}
		t.Logf("the target's app answered %v after kill -9 of the CLI", time.Duration(lastOriginal.Load()-killed.UnixNano()).Round(time.Millisecond))
		for time.Now().Before(deadline) && len(f.nftTables(t)) > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		if tables := f.nftTables(t); len(tables) > 0 {
			t.Errorf("nftables tables 5 s after kill -9 of the CLI: %v", tables)
		}
		stop.Store(true)
		wg.Wait()
		t.Logf("requests: %d to the local app, %d to the original app", local.Load(), original.Load())
	})
}

// TestIncomingAgentKilled: kill -9 of the agent leaves its redirect in the
// pod's namespace (nothing can remove it then); the next agent for the
// target removes that stale table when it starts, and the target's app
// answers again.
func TestIncomingAgentKilled(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8894", "hello from original app")
	agent := f.startAgent("--ttl", "30s")
	f.startLocalApp(t, "8894", "hello from local app", "--steal", "-t", "pid/1")
	waitFor(t, "stolen traffic to reach the local app", func() bool {
		body, _ := f.podGet(t, "http://"+podIP+":8894/")
		return body == "hello from local app"
	})
	agent.Process.Signal(syscall.SIGKILL)
	agent.Wait()
	tables := f.nftTables(t)
	if len(tables) != 1 || !strings.HasPrefix(tables[0], "mirrord_agent_") {
		t.Fatalf("after kill -9 of the agent, tables %v; want its stale table (the premise of this test)", tables)
	}
	if body, err := f.podGet(t, "http://"+podIP+":8894/"); err == nil {
		t.Fatalf("with the stale redirect, the port answered %q; want no answer (the premise of this test)", body)
	}
	f.startAgent("--ttl", "30s")
	if tables := f.nftTables(t); len(tables) != 0 {
		t.Errorf("the next agent left the stale table: %v", tables)
	}
	if body, err := f.podGet(t, "http://"+podIP+":8894/"); body != "hello from original app" {
		t.Errorf("after the next agent started: %q, %v; want the target's app", body, err)
	}
}

// TestIncomingTwoAgents: two agents on one target (sessions with different
// agent settings get different agents). Only the first redirect for a port
// in the pod's namespace gets its connections, so the second agent refuses
// the port, and the session follows on_concurrent_steal ("abort"), instead
// of waiting for traffic that never comes; once the first session ends,
// the second agent can take the port.
func TestIncomingTwoAgents(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8896", "hello from original app")
	f.startAgent("--ttl", "30s")
	first := f.agentAddr
	f.startAgent("--ttl", "30s")
	second := f.agentAddr
	steal := func(agent, localPort, body, user string) (*exec.Cmd, string) {
		f.agentAddr = agent
		cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
			"port_mapping": [[`+localPort+`, 8896]], "http_filter": {"header_filter": "^x-user: `+user+`$", "ports": [8896]}}}}}`)
		return f.startLocalApp(t, localPort, body, "-f", cfg)
	}
	get := func(user string) string {
		req, _ := http.NewRequest("GET", "http://"+podIP+":8896/", nil)
		req.Header.Set("X-User", user)
		client := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: f.svcDialer(t)}}
		resp, err := client.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	alice, _ := steal(first, "18896", "hello alice", "alice")
	waitFor(t, "alice's steal through the first agent", func() bool { return get("alice") == "hello alice" })

	bob, bobOut := steal(second, "18897", "hello bob", "bob")
	done := make(chan error, 1)
	go func() { done <- bob.Wait() }()
	select {
	case err := <-done:
		b, _ := os.ReadFile(bobOut)
		if err == nil || !strings.Contains(string(b), "mirrord: port 8896 of the target is already taken by another mirrord session; stopping") {
			t.Errorf("the session on the second agent ended with %v, output:\n%s", err, b)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the session on the second agent still runs, stealing nothing")
	}
	if got := get("alice"); got != "hello alice" {
		t.Errorf("alice after the refused session: %q", got)
	}

	alice.Process.Signal(syscall.SIGTERM)
	alice.Wait()
	steal(second, "18898", "hello carol", "carol")
	waitFor(t, "carol's steal through the second agent", func() bool { return get("carol") == "hello carol" })
	if got := get("alice"); got != "hello from original app" {
		t.Errorf("alice after her session ended: %q", got)
	}
}
