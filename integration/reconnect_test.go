package integration

import (
	"bufio"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// relay stands between the CLI and the agent, as a port-forward does: it
// can be cut (every connection closed and new ones refused, like an API
// server restarting) and brought back on the same address.
type relay struct {
	t    *testing.T
	addr string
	to   string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	// halfOpen: the agent's end of a cut connection stays open (see
	// cutCLISide).
	halfOpen bool
}

func newRelay(t *testing.T, to string) *relay {
	r := &relay{t: t, to: to}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	r.serve(ln)
	t.Cleanup(r.down)
	return r
}

func (r *relay) serve(ln net.Listener) {
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", r.to)
			if err != nil {
				c.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, c, up)
			r.mu.Unlock()
			closeUp := func() {
				r.mu.Lock()
				keep := r.halfOpen
				r.mu.Unlock()
				if !keep {
					up.Close()
				}
			}
			go func() { io.Copy(up, c); closeUp() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

// down closes the listener and every connection.
func (r *relay) down() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

// cutCLISide closes the CLI's end of every connection and leaves the
// agent's end open and silent, as a port-forward cut between the CLI and
// the API server may leave it; new connections are relayed at once.
func (r *relay) cutCLISide() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.halfOpen = true
	for i, c := range r.conns {
		if i%2 == 0 { // conns holds pairs: the CLI's end, then the agent's
			c.Close()
		}
	}
}

// up listens again on the same address.
func (r *relay) up() {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve(ln)
}

// TestReconnect: the connection between the CLI and the agent drops and
// stays down for longer than the agent's TTL. The program keeps running; a
// connection stolen before the drop is closed, an outgoing one reset; the stolen port goes back
// to the target's app while the session is away; once the way to the agent
// is back, the session reconnects within 5 s, the port is stolen again and
// new outgoing connections (with DNS) go through the agent. The progress
// output says what happened.
func TestReconnect(t *testing.T) {
	f := newFixture(t)
	const port = "8895"
	f.serveHTTP(f.pod, podIP+":"+port, "hello from original app")
	eachEngine(t, func(t *testing.T, engine ...string) {
		r := f.relayedAgent(t)
		// Next to the local app, a process that holds an outgoing
		// connection open across the drop.
		cmd, outFile := f.startLocal(t, append(engine, "--steal", "-t", "pid/1"), "sh", "-c",
			"python3 testdata/holdconn.py "+svcIP+" 8080 & exec python3 testdata/reconnectapp.py "+port+" 'hello from local app'")
		get := func(path string) string {
			body, _ := f.podGet(t, "http://"+podIP+":"+port+path)
			return body
		}
		waitFor(t, "stolen traffic to reach the local app", func() bool { return get("/x") == "hello from local app" })
		if got := get("/out"); got != svcBody {
			t.Fatalf("outgoing before the drop: %q, want %q", got, svcBody)
		}
		said := func() string { b, _ := os.ReadFile(outFile); return string(b) }
		waitFor(t, "the outgoing connection to be held", func() bool { return strings.Contains(said(), "held\n") })
		// A stolen keep-alive connection, open across the drop.
		open, br := f.openStolen(t, port)

		r.down()
		cut := time.Now()
		waitFor(t, "the target's app to answer while the session is away", func() bool {
			return get("/x") == "hello from original app"
		})
		t.Logf("the target's app answered %v after the drop", time.Since(cut).Round(time.Millisecond))
		waitFor(t, "the outgoing connection open across the drop to be reset", func() bool { return strings.Contains(said(), "ended: ") })
		if !strings.Contains(said(), "ended: reset\n") {
			t.Errorf("the outgoing connection open across the drop did not end with a reset:\n%s", said())
		}
		open.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(br); err != nil && !isReset(err) {
			t.Errorf("the connection stolen before the drop: %v; want it closed or reset", err)
		}
		// Longer than the agent's TTL: it must wait for a client that
		// dropped without saying goodbye.
		time.Sleep(3*time.Second - time.Since(cut))
		if cmd.ProcessState != nil || cmd.Process.Signal(syscall.Signal(0)) != nil {
			b, _ := os.ReadFile(outFile)
			t.Fatalf("mirrord exited while the connection was down:\n%s", b)
		}

		r.up()
		back := time.Now()
		waitFor(t, "the port to be stolen again", func() bool { return get("/x") == "hello from local app" })
		took := time.Since(back)
		t.Logf("stolen again %v after the way to the agent was back", took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("reconnected after %v; want within 5 s", took)
		}
		if got := get("/out"); got != svcBody {
			t.Errorf("outgoing after the reconnection: %q, want %q", got, svcBody)
		}
		b, _ := os.ReadFile(outFile)
		for _, want := range []string{"lost the connection to the agent; reconnecting", "reconnected to the agent after"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("output lacks %q:\n%s", want, b)
			}
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		waitFor(t, "the nftables table to be removed", func() bool { return len(f.nftTables(t)) == 0 })
	})
}

// TestReconnectHalfOpen: the session's connection is cut on the CLI's
// side only; the agent's end stays open, silent (as a port-forward whose
// connection to the API server was cut can leave it), and the CLI
// reconnects at once. The agent takes the new connection for the session's
// and closes the old one: the stolen port is the session's again at once
// (not refused as taken by the old connection), and a connection stolen
// before the cut is closed.
func TestReconnectHalfOpen(t *testing.T) {
	f := newFixture(t)
	const port = "8896"
	f.serveHTTP(f.pod, podIP+":"+port, "hello from original app")
	eachEngine(t, func(t *testing.T, engine ...string) {
		r := f.relayedAgent(t)
		cmd, outFile := f.startLocal(t, append(engine, "--steal", "-t", "pid/1"),
			"python3", "testdata/reconnectapp.py", port, "hello from local app")
		defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
		get := func(path string) string {
			body, _ := f.podGet(t, "http://"+podIP+":"+port+path)
			return body
		}
		waitFor(t, "stolen traffic to reach the local app", func() bool { return get("/x") == "hello from local app" })
		open, br := f.openStolen(t, port)

		r.cutCLISide()
		cut := time.Now()
		// Sooner than the agent's keepalive could find the old
		// connection dead.
		open.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadAll(br); err != nil && !isReset(err) {
			t.Errorf("the connection stolen before the cut: %v; want it closed or reset within 2 s", err)
		}
		deadline := time.Now().Add(2 * time.Second)
		var last string
		for last = get("/x"); last != "hello from local app"; last = get("/x") {
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(outFile)
				t.Fatalf("the port is not stolen again 2 s after the cut (last answer %q):\n%s", last, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("stolen again %v after the cut", time.Since(cut).Round(time.Millisecond))
		if got := get("/out"); got != svcBody {
			t.Errorf("outgoing after the reconnection: %q, want %q", got, svcBody)
		}
	})
}

// relayedAgent starts an agent with a TTL of 1 s (one per engine: a
// shared one would end between the two), once no subscription is left from
// before, and makes the fixture's sessions reach it through a relay, which
// the test cuts. The agent is killed when t ends.
func (f *fixture) relayedAgent(t *testing.T) *relay {
	t.Helper()
	waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
	agent := f.startAgent("--ttl", "1s")
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	r := newRelay(t, f.agentAddr)
	f.agentAddr = r.addr
	return r
}

// openStolen opens a keep-alive connection from the svc namespace to the
// pod's port, whose first request the session's local app answers; the
// reader holds what follows the answer's status line. Closed when the test
// ends.
func (f *fixture) openStolen(t *testing.T, port string) (net.Conn, *bufio.Reader) {
	t.Helper()
	var open net.Conn
	inNetns(t, f.svc, func() (err error) {
		open, err = net.DialTimeout("tcp", podIP+":"+port, 3*time.Second)
		return err
	})
	t.Cleanup(func() { open.Close() })
	br := bufio.NewReader(open)
	io.WriteString(open, "GET /open HTTP/1.1\r\nHost: x\r\n\r\n")
	open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("stolen keep-alive connection: %q, %v", line, err)
	}
	return open, br
}

// TestReconnectGivesUp: when the agent is gone for good, the session
// gives up after agent.reconnect_timeout: the program is stopped and
// mirrord exits non-zero with one clear message.
func TestReconnectGivesUp(t *testing.T) {
	f := newFixture(t)
	eachEngine(t, func(t *testing.T, engine ...string) {
		agent := f.startAgent("--ttl", "1s")
		cfg := writeConfig(t, `{"agent": {"reconnect_timeout": 2}}`)
		cmd, outFile := f.startLocal(t, append(engine, "-t", "pid/1", "-f", cfg), "sh", "-c", "echo started; exec sleep 600")
		waitFor(t, "the program to start", func() bool {
			b, _ := os.ReadFile(outFile)
			return strings.Contains(string(b), "started")
		})
		agent.Process.Signal(syscall.SIGKILL)
		agent.Wait()
		killed := time.Now()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			t.Logf("mirrord exited %v after the agent was killed: %v", time.Since(killed).Round(time.Millisecond), err)
			if err == nil {
				t.Error("mirrord exited with status 0")
			}
		case <-time.After(15 * time.Second):
			t.Fatal("mirrord still running 15 s after its agent was killed (reconnect timeout 2 s)")
		}
		b, _ := os.ReadFile(outFile)
		for _, want := range []string{"could not reconnect to the agent", "the program was stopped"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("output lacks %q:\n%s", want, b)
			}
		}
	})
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// TestReconnectAfterPause: mirrord is stopped for 30 s (a laptop that
// sleeps; SIGSTOP here). The agent notices the silent client, gives the
// port back to the target's app, and waits; after SIGCONT the session
// reconnects within 5 s and steals the port again. (The engine plays no
// part: the preload's is enough.)
func TestReconnectAfterPause(t *testing.T) {
	f := newFixture(t)
	const port = "8896"
	f.serveHTTP(f.pod, podIP+":"+port, "hello from original app")
	f.startAgent("--ttl", "1s")
	cmd, outFile := f.startLocal(t, []string{"--engine", "preload", "--steal", "-t", "pid/1"},
		"python3", "testdata/reconnectapp.py", port, "hello from local app")
	get := func() string {
		body, _ := f.podGet(t, "http://"+podIP+":"+port+"/x")
		return body
	}
	waitFor(t, "stolen traffic to reach the local app", func() bool { return get() == "hello from local app" })
	// unshare and sh exec'd mirrord: the pid is mirrord's.
	cmd.Process.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	waitFor(t, "the target's app to answer while mirrord is stopped", func() bool {
		return get() == "hello from original app"
	})
	t.Logf("the target's app answered %v after mirrord was stopped", time.Since(stopped).Round(time.Millisecond))
	time.Sleep(30*time.Second - time.Since(stopped))
	cmd.Process.Signal(syscall.SIGCONT)
	resumed := time.Now()
	waitFor(t, "the port to be stolen again", func() bool { return get() == "hello from local app" })
	took := time.Since(resumed)
	t.Logf("stolen again %v after SIGCONT", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("reconnected %v after SIGCONT; want within 5 s", took)
	}
	if b, _ := os.ReadFile(outFile); !strings.Contains(string(b), "reconnected to the agent after") {
		t.Errorf("output lacks the reconnection:\n%s", b)
	}
}
