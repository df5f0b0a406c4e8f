package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// podGet sends a GET to the pod from the svc namespace: traffic that
// arrives at the pod from outside, as a client in the cluster would send it.
func (f *fixture) podGet(t *testing.T, url string) (string, error) {
	t.Helper()
	h, err := os.Open("/var/run/netns/" + f.svc)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	client := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       f.svcDialer(t),
	}}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// withNft runs fn with an nftables connection in the pod's network
// namespace (it dials netlink there per operation, through the netns fd,
// which stays open until fn returns).
func (f *fixture) withNft(t *testing.T, fn func(c *nftables.Conn)) {
	t.Helper()
	h, err := os.Open("/var/run/netns/" + f.pod)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	fn(c)
}

// nftTables lists the nftables tables in the pod's namespace.
func (f *fixture) nftTables(t *testing.T) []string {
	var names []string
	f.withNft(t, func(c *nftables.Conn) {
		tables, err := c.ListTables()
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			names = append(names, tb.Name)
		}
	})
	return names
}

// nftRules counts the redirect rules in our tables. A subscription is in
// place once its redirect rule is: the table appears a moment earlier, and
// a connection made in between is not redirected (conntrack keeps it so).
func (f *fixture) nftRules(t *testing.T) int {
	n := 0
	f.withNft(t, func(c *nftables.Conn) {
		chains, err := c.ListChains()
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chains {
			if !strings.HasPrefix(ch.Table.Name, "mirrord_agent_") {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rules {
				if slices.ContainsFunc(r.Exprs, func(e expr.Any) bool { _, ok := e.(*expr.Redir); return ok }) {
					n++
				}
			}
		}
	})
	return n
}

// startLocalApp runs the python app under mirrord exec with extra flags.
func (f *fixture) startLocalApp(t *testing.T, port, body string, flags ...string) (*exec.Cmd, string) {
	t.Helper()
	return f.startLocal(t, flags, "python3", "testdata/pyserver.py", port, body)
}

// startLocal runs command under mirrord exec with flags, its output going
// to the file whose path it returns; it is stopped when the test ends.
func (f *fixture) startLocal(t *testing.T, flags []string, command ...string) (*exec.Cmd, string) {
	t.Helper()
	outFile := filepath.Join(t.TempDir(), "app.out")
	out, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	args := append([]string{"-m", "--", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`,
		f.resolvConf, mirrordBin, "exec", "--agent-addr", f.agentAddr}, flags...)
	args = append(append(args, "--"), command...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	return cmd, outFile
}

func TestIncomingSteal(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cmd, _ := f.startLocalApp(t, "8888", "hello from local app", append(engine, "--steal", "-t", "pid/1")...)
		var body string
		waitFor(t, "stolen traffic to reach the local app", func() bool {
			body, _ = f.podGet(t, "http://"+podIP+":8888/x")
			return body == "hello from local app"
		})
		if tables := f.nftTables(t); len(tables) != 1 || !strings.HasPrefix(tables[0], "mirrord_agent_") {
			t.Errorf("nftables tables while stealing: %v", tables)
		}
		// When the session ends, the redirect goes away.
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		waitFor(t, "the nftables table to be removed", func() bool { return len(f.nftTables(t)) == 0 })
	})
}

func TestIncomingMirror(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8889", "hello from original app")
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		_, outFile := f.startLocalApp(t, "8889", "local answer (dropped)", engine...)
		waitFor(t, "the mirror subscription", func() bool { return f.nftRules(t) == 1 })
		for i := 0; i < 3; i++ {
			body, err := f.podGet(t, "http://"+podIP+":8889/mirrored-path")
			if err != nil || body != "hello from original app" {
				t.Fatalf("mirrored request: %q, %v; the original app must still answer", body, err)
			}
		}
		waitFor(t, "the local app to see a copy", func() bool {
			b, _ := os.ReadFile(outFile)
			return strings.Count(string(b), "GOT /mirrored-path") == 3
		})
	})
}

// TestIncomingMirrorOutlivesSession: a mirrored connection that is open
// when the session ends goes on reaching the target's app, request after
// request (the agent keeps relaying it and its redirect stays in force for
// it alone), and once the client closes it nothing of the agent's is left
// in the pod's namespace.
func TestIncomingMirrorOutlivesSession(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8896", "hello from original app")
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cmd, outFile := f.startLocalApp(t, "8896", "local answer (dropped)", engine...)
		waitFor(t, "the mirror subscription", func() bool { return f.nftRules(t) == 1 })
		conn, get := f.rawPodConn(t, podIP+":8896")
		if got, err := get("/before"); err != nil || got != "hello from original app" {
			t.Fatalf("mirrored request: %q, %v", got, err)
		}
		waitFor(t, "the local app to see the copy", func() bool {
			b, _ := os.ReadFile(outFile)
			return strings.Contains(string(b), "GOT /before")
		})
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		waitFor(t, "the redirect to be removed", func() bool { return f.nftRules(t) == 0 })
		for i := range 3 {
			if got, err := get(fmt.Sprintf("/after-%d", i)); err != nil || got != "hello from original app" {
				t.Fatalf("request %d on the connection after the session ended: %q, %v; want the original app's answer", i, got, err)
			}
		}
		conn.Close()
		waitFor(t, "the agent's table to be removed", func() bool { return len(f.nftTables(t)) == 0 })
	})
}

// TestIncomingAgentExitClosesMirrored: an agent that exits closes the
// mirrored connections it still relays where their peers see it (a FIN
// while the redirect's translation lasts), instead of leaving them to a
// reset on their next request, and leaves no table behind.
func TestIncomingAgentExitClosesMirrored(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8897", "hello from original app")
	agent := f.startAgent("--ttl", "30s")
	f.startLocalApp(t, "8897", "local answer (dropped)")
	waitFor(t, "the mirror subscription", func() bool { return f.nftRules(t) == 1 })
	conn, get := f.rawPodConn(t, podIP+":8897")
	if got, err := get("/before"); err != nil || got != "hello from original app" {
		t.Fatalf("mirrored request: %q, %v", got, err)
	}
	agent.Process.Signal(syscall.SIGTERM)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read on the mirrored connection after the agent's exit: %d bytes, %v; want EOF", n, err)
	}
	waitFor(t, "the agent's table to be removed", func() bool { return len(f.nftTables(t)) == 0 })
}

// rawPodConn opens a TCP connection to addr from the svc namespace and
// returns it with a function that sends one HTTP/1.1 GET on it and reads
// the answer's body: requests on one known connection, which an
// http.Client's pool does not promise.
func (f *fixture) rawPodConn(t *testing.T, addr string) (net.Conn, func(path string) (string, error)) {
	t.Helper()
	var conn net.Conn
	inNetns(t, f.svc, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	t.Cleanup(func() { conn.Close() })
	br := bufio.NewReader(conn)
	return conn, func(path string) (string, error) { return rawGet(conn, br, path) }
}

// TestIncomingFilteredMirror: mirror mode with an http_filter copies only
// the matching requests to the local app, on kept-alive connections that
// carry both kinds, while the target's app answers every request; a
// POST body comes through whole.
func TestIncomingFilteredMirror(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8894", "hello from original app")
	f.startAgent("--ttl", "30s")
	cfg := writeConfig(t, `{"feature": {"network": {"incoming": {"mode": "mirror",
		"http_filter": {"header_filter": "^x-user: me$", "ports": [8894]}}}}}`)
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		_, outFile := f.startLocalApp(t, "8894", "local answer (dropped)", append(engine, "-f", cfg)...)
		waitFor(t, "the mirror subscription", func() bool { return f.nftRules(t) == 1 })
		client := f.podClient(t)
		for i := range 6 {
			method, path, body := "GET", fmt.Sprintf("/other-%d", i), ""
			if i%2 == 0 {
				method, path, body = "POST", fmt.Sprintf("/mine-%d", i), strings.Repeat("b", 100_000)
			}
			req, _ := http.NewRequest(method, "http://"+podIP+":8894"+path, strings.NewReader(body))
			if i%2 == 0 {
				req.Header.Set("X-User", "me")
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(got) != "hello from original app" {
				t.Fatalf("request %d: %q; the original app must answer every request", i, got)
			}
		}
		waitFor(t, "the local app to see the matching requests", func() bool {
			b, _ := os.ReadFile(outFile)
			return strings.Count(string(b), "GOT /mine-") == 3
		})
		time.Sleep(300 * time.Millisecond)
		b, _ := os.ReadFile(outFile)
		if strings.Contains(string(b), "/other-") {
			t.Errorf("a request the filter does not match was mirrored:\n%s", b)
		}
		mustContain(t, string(b), "GOT /mine-0 body 100000", "GOT /mine-4 body 100000")
	})
}

// svcDialer dials from the svc namespace (the "other pod" of the
// fixture), for HTTP clients that talk to the target.
func (f *fixture) svcDialer(t *testing.T) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var derr error
		inNetns(t, f.svc, func() error {
			c, derr = (&net.Dialer{}).DialContext(ctx, network, addr)
			return nil
		})
		return c, derr
	}
}

// podClient is a keep-alive client from the svc namespace; its idle
// connections are closed when the test ends (a redirected connection
// keeps the agent's table, so it would outlive the session otherwise).
func (f *fixture) podClient(t *testing.T) *http.Client {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost: 1,
		DialContext:     f.svcDialer(t),
	}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestIncomingFilteredSteal(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8890", "hello from original app")
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
			"http_filter": {"any_of": [{"header": "^x-user: alice$"}, {"path": "^/api/(?!health)"}], "ports": [8890]}}}}}`)
		_, outFile := f.startLocalApp(t, "8890", "hello from local app", append(engine, "-f", cfg)...)
		waitFor(t, "the filtered steal", func() bool { return f.nftRules(t) == 1 })

		client := f.podClient(t)
		get := func(path, user string) string {
			req, _ := http.NewRequest("GET", "http://"+podIP+":8890"+path, nil)
			if user != "" {
				req.Header.Set("X-User", user)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET %s (%s): %v", path, user, err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return string(b)
		}
		tests := []struct {
			path, user, want string
		}{
			{"/anything", "alice", "hello from local app"},
			{"/anything", "ALICE", "hello from local app"}, // header filters are case-insensitive
			{"/anything", "bob", "hello from original app"},
			{"/api/users", "", "hello from local app"},
			{"/api/health", "", "hello from original app"}, // negative lookahead
			{"/", "", "hello from original app"},
			{"/health", "alice", "hello from local app"},
		}
		for round := 0; round < 2; round++ { // the same kept-alive connection, twice over
			for _, tt := range tests {
				if got := get(tt.path, tt.user); got != tt.want {
					t.Errorf("GET %s as %q = %q, want %q", tt.path, tt.user, got, tt.want)
				}
			}
		}
		b, _ := os.ReadFile(outFile)
		if n := strings.Count(string(b), "GOT "); n != 8 {
			t.Errorf("the local app saw %d requests, want 8:\n%s", n, b)
		}
	})
}

// TestIncomingTwoFilteredSessions runs two mirrord sessions against one
// agent, stealing the same port with different header filters: each local
// app receives only the requests that match its filter, on the same
// kept-alive connection, and the rest reach the target's own app. When one
// session ends, its requests go back to the original app while the other
// session keeps its own.
func TestIncomingTwoFilteredSessions(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8891", "hello from original app")
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		// Both local apps run on this machine (under the preload they share
		// its network namespace): different local ports, one remote port.
		session := func(user, localPort, body string) (*exec.Cmd, string) {
			cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
				"port_mapping": [[`+localPort+`, 8891]],
				"http_filter": {"header_filter": "^x-user: `+user+`$", "ports": [8891]}}}}}`)
			return f.startLocalApp(t, localPort, body, append(engine, "-f", cfg)...)
		}
		alice, aliceOut := session("alice", "18891", "hello from alice")
		_, bobOut := session("bob", "18892", "hello from bob")

		client := f.podClient(t)
		get := func(path, user string) (string, error) {
			req, _ := http.NewRequest("GET", "http://"+podIP+":8891"+path, nil)
			if user != "" {
				req.Header.Set("X-User", user)
			}
			resp, err := client.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return string(b), err
		}
		for _, who := range []string{"alice", "bob"} {
			waitFor(t, who+"'s session to steal", func() bool {
				body, _ := get("/ready-"+who, who)
				return body == "hello from "+who
			})
		}

		tests := []struct{ path, user, want string }{
			{"/a1", "alice", "hello from alice"},
			{"/b1", "bob", "hello from bob"},
			{"/c1", "carol", "hello from original app"},
			{"/a2", "Alice", "hello from alice"},
			{"/n1", "", "hello from original app"},
			{"/b2", "BOB", "hello from bob"},
			{"/x1", "alice, bob", "hello from original app"}, // neither filter matches the joined value
		}
		// All on one kept-alive connection, although the local apps
		// (HTTP/1.0) close theirs after each answer.
		client.CloseIdleConnections()
		var dials atomic.Int32
		dial := client.Transport.(*http.Transport).DialContext
		client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dial(ctx, network, addr)
		}
		for round := 0; round < 2; round++ {
			for _, tt := range tests {
				if got, err := get(tt.path, tt.user); err != nil || got != tt.want {
					t.Errorf("GET %s as %q = %q, %v; want %q", tt.path, tt.user, got, err, tt.want)
				}
			}
		}
		if n := dials.Load(); n != 1 {
			t.Errorf("the client made %d connections, want 1", n)
		}
		seen := func(out string) string {
			b, _ := os.ReadFile(out)
			var paths []string
			for _, line := range strings.Split(string(b), "\n") {
				if p, ok := strings.CutPrefix(line, "GOT "); ok && !strings.HasPrefix(p, "/ready-") {
					paths = append(paths, p)
				}
			}
			return strings.Join(paths, " ")
		}
		if got, want := seen(aliceOut), "/a1 /a2 /a1 /a2"; got != want {
			t.Errorf("alice's app saw %q, want %q", got, want)
		}
		if got, want := seen(bobOut), "/b1 /b2 /b1 /b2"; got != want {
			t.Errorf("bob's app saw %q, want %q", got, want)
		}

		// Alice leaves: her requests reach the original app again, bob's
		// still reach his, and the redirect stays for him.
		alice.Process.Signal(syscall.SIGTERM)
		alice.Wait()
		waitFor(t, "alice's requests to reach the original app", func() bool {
			body, _ := get("/after", "alice")
			return body == "hello from original app"
		})
		if got, err := get("/b3", "bob"); err != nil || got != "hello from bob" {
			t.Errorf("bob after alice left: %q, %v", got, err)
		}
		if n := f.nftRules(t); n != 1 {
			t.Errorf("redirect rules after one of two sessions left: %d, want 1", n)
		}
	})
}

// TestIncomingConcurrentSteal: a second session that steals a port another
// session already steals whole follows on_concurrent_steal: "continue"
// runs on without the port (with a warning), "abort" (the default) ends
// the program with an error, and the first session keeps the port; then
// "override" takes it.
func TestIncomingConcurrentSteal(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8895", "hello from original app")
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		session := func(localPort, body, onConcurrent string) (*exec.Cmd, string) {
			extra := ""
			if onConcurrent != "" {
				extra = `, "on_concurrent_steal": "` + onConcurrent + `"`
			}
			cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
				"port_mapping": [[`+localPort+`, 8895]]`+extra+`}}}}`)
			return f.startLocalApp(t, localPort, body, append(engine, "-f", cfg)...)
		}
		first, _ := session("18895", "hello from the first session", "")
		stolen := func() bool {
			body, _ := f.podGet(t, "http://"+podIP+":8895/")
			return body == "hello from the first session"
		}
		waitFor(t, "the first session to steal", stolen)

		exited := func(cmd *exec.Cmd) chan error {
			ch := make(chan error, 1)
			go func() { ch <- cmd.Wait() }()
			return ch
		}
		cont, contOut := session("18896", "hello from the second session", "continue")
		contDone := exited(cont)
		waitFor(t, "the continue warning", func() bool {
			b, _ := os.ReadFile(contOut)
			return strings.Contains(string(b), `mirrord: warning: port 8895 of the target is already taken by another mirrord session; going on without it`)
		})

		abort, abortOut := session("18897", "hello from the third session", "")
		select {
		case err := <-exited(abort):
			b, _ := os.ReadFile(abortOut)
			if err == nil || !strings.Contains(string(b), `mirrord: port 8895 of the target is already taken by another mirrord session; stopping (feature.network.incoming.on_concurrent_steal is "abort"`) {
				t.Errorf("the aborting session ended with %v, output:\n%s", err, b)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("the session with on_concurrent_steal abort still runs")
		}

		select {
		case err := <-contDone:
			b, _ := os.ReadFile(contOut)
			t.Fatalf("the session with on_concurrent_steal continue ended: %v\n%s", err, b)
		default:
		}
		for i := 0; i < 3; i++ {
			if !stolen() {
				t.Fatalf("the first session lost the port")
			}
		}
		// "override" takes the port from the first session.
		session("18898", "hello from the overriding session", "override")
		waitFor(t, "the overriding session to take the port", func() bool {
			body, _ := f.podGet(t, "http://"+podIP+":8895/")
			return body == "hello from the overriding session"
		})
		first.Process.Signal(syscall.SIGTERM)
		first.Wait()
		cont.Process.Signal(syscall.SIGTERM)
		<-contDone
	})
}

// TestIncomingFilteredNonHTTP: bytes that are not HTTP on a port with an
// HTTP filter (here a TLS-like binary greeting, then a line protocol) pass
// through to the target's app untouched, both ways.
func TestIncomingFilteredNonHTTP(t *testing.T) {
	f := newFixture(t)
	var ln net.Listener
	inNetns(t, f.pod, func() (err error) { ln, err = net.Listen("tcp", podIP+":8898"); return err })
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "orig echo: ")
				io.Copy(c, c)
			}()
		}
	}()
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
			"http_filter": {"header_filter": ".*", "ports": [8898]}}}}}`)
		f.startLocalApp(t, "8898", "hello from local app", append(engine, "-f", cfg)...)
		waitFor(t, "the filtered steal", func() bool { return f.nftRules(t) == 1 })
		for _, msg := range []string{"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 not http", "HELLO there\r\n"} {
			c := f.dialPod(t, "8898")
			if _, err := io.WriteString(c, msg); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "orig echo: "+msg {
				t.Errorf("sent %q, got %q, %v; want the original app's echo", msg, got, err)
			}
		}
	})
}

// TestIncomingFilteredIdleUpstreams: apps that close idle keep-alive
// connections (here after 300 ms) do not cost the peer a request: after a
// pause on its kept-alive connection, each request still gets its answer,
// from the local app and from the target's.
func TestIncomingFilteredIdleUpstreams(t *testing.T) {
	f := newFixture(t)
	var ln net.Listener
	inNetns(t, f.pod, func() (err error) { ln, err = net.Listen("tcp", podIP+":8899"); return err })
	orig := &http.Server{IdleTimeout: 300 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "orig "+r.Header.Get("X-Req-Id"))
	})}
	go orig.Serve(ln)
	t.Cleanup(func() { orig.Close() })
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
			"http_filter": {"header_filter": "^x-user: alice$", "ports": [8899]}}}}}`)
		f.startLocal(t, append(engine, "-f", cfg), "node", "testdata/echoserver.js", "8899", "local", "300")
		waitFor(t, "the filtered steal", func() bool {
			body, _ := f.podGetAs(t, "http://"+podIP+":8899/", "alice", "ready")
			return body == "local ready"
		})
		// A raw connection: no client-side retry hides a lost answer.
		conn := f.dialPod(t, "8899")
		br := bufio.NewReader(conn)
		for i, r := range []struct{ user, want string }{
			{"alice", "local"}, {"bob", "orig"}, {"alice", "local"}, {"bob", "orig"}, {"alice", "local"},
		} {
			if i > 0 {
				time.Sleep(800 * time.Millisecond) // both apps close the idle connections
			}
			fmt.Fprintf(conn, "GET /%d HTTP/1.1\r\nHost: %s:8899\r\nX-User: %s\r\nX-Req-Id: %d\r\n\r\n", i, podIP, r.user, i)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request %d as %s after a pause: %v", i, r.user, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("%s %d", r.want, i); string(body) != want {
				t.Errorf("request %d as %s: %q, want %q", i, r.user, body, want)
			}
		}
	})
}

// podGetAs sends a GET with X-User and X-Req-Id from the svc namespace on
// a new connection.
func (f *fixture) podGetAs(t *testing.T, url, user, id string) (string, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-User", user)
	req.Header.Set("X-Req-Id", id)
	client := f.podClient(t)
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestIncomingFlushConnections: a connection to the target's app that is
// already established when a steal starts is ended with
// agent.flush_connections (the default), and the client's next connection
// is stolen; without it, the connection keeps reaching the app.
func TestIncomingFlushConnections(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8892", "hello from original app")
	f.startAgent("--ttl", "30s")
	tests := []struct {
		name  string
		flush string // agent.flush_connections; "" leaves the default
		// tracked: the pod's namespace tracks connections before the
		// steal (a firewall table of its own), so the old connection has
		// a conntrack entry that only a flush removes
		tracked bool
		// the kept-alive connection's next request after the steal starts
		wantOld string // an answer's body, or "reset"
	}{
		{"default", "", false, "reset"},
		{"off", "false", false, "hello from original app"},
		{"on", "true", false, "reset"},
		{"off, tracked", "false", true, "hello from original app"},
		{"on, tracked", "true", true, "reset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
			if tt.tracked {
				f.podFirewall(t)
			}
			old, err := f.svcDialer(t)(ctx(t), "tcp", podIP+":8892")
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			r := bufio.NewReader(old)
			if got, err := rawGet(old, r, "/kept-alive"); got != "hello from original app" {
				t.Fatalf("before the steal: %q, %v", got, err)
			}
			agentCfg := `{}`
			if tt.flush != "" {
				agentCfg = `{"flush_connections": ` + tt.flush + `}`
			}
			cfg := writeConfig(t, `{"target": "pid/1", "agent": `+agentCfg+`, "feature": {"network": {"incoming": "steal"}}}`)
			cmd, _ := f.startLocalApp(t, "8892", "hello from local app", "-f", cfg)
			// A new connection is stolen either way. Once one is, the
			// agent has finished subscribing (the flush is part of it).
			waitFor(t, "a new connection to be stolen", func() bool {
				body, _ := f.podGet(t, "http://"+podIP+":8892/")
				return body == "hello from local app"
			})
			got, err := rawGet(old, r, "/kept-alive")
			if err != nil {
				t.Logf("the old connection: %v", err)
				got = "reset"
				if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("the old connection failed, but not with a reset: %v", err)
				}
			}
			if got != tt.wantOld {
				t.Errorf("the kept-alive connection from before the steal: %q, want %q", got, tt.wantOld)
			}
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		})
	}
}

// podFirewall gives the pod's namespace a table of its own that uses
// connection tracking (as a pod with a firewall or a service mesh has),
// until the test ends.
func (f *fixture) podFirewall(t *testing.T) {
	tb := &nftables.Table{Family: nftables.TableFamilyINet, Name: "pod_firewall"}
	f.withNft(t, func(c *nftables.Conn) {
		c.AddTable(tb)
		ch := c.AddChain(&nftables.Chain{Name: "input", Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{ // ct state established counter
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			&expr.Counter{},
		}})
		if err := c.Flush(); err != nil {
			t.Fatalf("pod firewall table: %v", err)
		}
	})
	t.Cleanup(func() {
		f.withNft(t, func(c *nftables.Conn) {
			c.DelTable(tb)
			c.Flush()
		})
	})
}

// rawGet sends a GET for path on a kept-alive connection c (read through
// r) and returns the answer's body.
func rawGet(c net.Conn, r *bufio.Reader, path string) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: pod\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
