package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// h2cClient is an HTTP/2 client with prior knowledge (cleartext, no
// upgrade) in the svc namespace; it counts the connections it makes.
func (f *fixture) h2cClient(t *testing.T, conns *atomic.Int32) *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Protocols:       &protos,
		MaxConnsPerHost: 1, // concurrent requests wait for the one connection
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conns.Add(1)
			return f.svcDialer(t)(ctx, network, addr)
		},
	}}
}

// TestIncomingH2CFilteredSteal: HTTP/2 with prior knowledge through a
// filtered steal. Concurrent requests share one connection as streams;
// each stream goes to the local app (an h2c server in Node) when it
// matches the filter and to the target's app (h2c too) otherwise.
func TestIncomingH2CFilteredSteal(t *testing.T) {
	f := newFixture(t)
	var origProtos http.Protocols
	origProtos.SetHTTP1(true)
	origProtos.SetUnencryptedHTTP2(true)
	var ln net.Listener
	inNetns(t, f.pod, func() (err error) { ln, err = net.Listen("tcp", podIP+":8893"); return err })
	orig := &http.Server{Protocols: &origProtos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Request-Bytes", fmt.Sprint(n))
		fmt.Fprintf(w, "orig %s", r.Proto)
	})}
	go orig.Serve(ln)
	t.Cleanup(func() { orig.Close() })
	f.startAgent("--ttl", "30s")

	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
			"http_filter": {"any_of": [{"header": "^x-user: alice$"}, {"path": "^/api/(?!health)"}], "ports": [8893]}}}}}`)
		_, outFile := f.startLocal(t, append(engine, "-f", cfg), "node", "testdata/h2server.js", "8893", "local h2")

		var conns atomic.Int32
		client := f.h2cClient(t, &conns)
		do := func(method, path, user, body string) (string, error) {
			var rd io.Reader
			if body != "" {
				rd = strings.NewReader(body)
			}
			req, _ := http.NewRequest(method, "http://"+podIP+":8893"+path, rd)
			if user != "" {
				req.Header.Set("X-User", user)
			}
			resp, err := client.Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if resp.Proto != "HTTP/2.0" {
				return "", fmt.Errorf("answered over %s", resp.Proto)
			}
			return fmt.Sprintf("%s (%s bytes)", b, resp.Header.Get("X-Request-Bytes")), err
		}
		waitFor(t, "the filtered steal", func() bool {
			got, _ := do("GET", "/ready", "alice", "")
			return strings.HasPrefix(got, "local h2")
		})
		// From here on, one new connection.
		client.CloseIdleConnections()
		conns.Store(0)

		type call struct{ method, path, user, body, want string }
		var calls []call
		upload := strings.Repeat("x", 300<<10) // beyond the initial flow-control windows
		for i := range 10 {
			calls = append(calls,
				call{"GET", fmt.Sprintf("/a%d", i), "alice", "", "local h2 (0 bytes)"},
				call{"GET", fmt.Sprintf("/b%d", i), "bob", "", "orig HTTP/2.0 (0 bytes)"},
				call{"POST", fmt.Sprintf("/api/u%d", i), "", upload, fmt.Sprintf("local h2 (%d bytes)", len(upload))},
				call{"POST", fmt.Sprintf("/api/health%d", i), "", upload, fmt.Sprintf("orig HTTP/2.0 (%d bytes)", len(upload))},
			)
		}
		var wg sync.WaitGroup
		for _, c := range calls {
			wg.Go(func() {
				got, err := do(c.method, c.path, c.user, c.body)
				if err != nil || got != c.want {
					t.Errorf("%s %s as %q = %q, %v; want %q", c.method, c.path, c.user, got, err, c.want)
				}
			})
		}
		wg.Wait()
		if n := conns.Load(); n != 1 {
			t.Errorf("the client made %d connections, want 1 (all streams on one)", n)
		}
		b, _ := os.ReadFile(outFile)
		var seen []string
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "GOT "); ok && !strings.HasPrefix(rest, "/ready") {
				seen = append(seen, rest)
			}
		}
		slices.Sort(seen)
		var want []string
		for _, c := range calls {
			if strings.HasPrefix(c.want, "local") {
				want = append(want, c.path+" 2.0")
			}
		}
		slices.Sort(want)
		if !slices.Equal(seen, want) {
			t.Errorf("the local app saw\n%v\nwant\n%v", seen, want)
		}
	})
}

// TestIncomingH2CUpgradeFilteredSteal: a client that upgrades an HTTP/1.1
// connection to h2c (curl --http2) through a filtered steal gets HTTP/2
// from the agent, and each request on the upgraded connection, the
// upgrade request included, goes its own way (as HTTP/1.1, which the apps
// speak).
func TestIncomingH2CUpgradeFilteredSteal(t *testing.T) {
	f := newFixture(t)
	f.serveHTTP(f.pod, podIP+":8894", "hello from original app")
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
			"http_filter": {"header_filter": "^x-user: alice$", "ports": [8894]}}}}}`)
		_, outFile := f.startLocalApp(t, "8894", "hello from local app", append(engine, "-f", cfg)...)
		waitFor(t, "the filtered steal", func() bool { return f.nftRules(t) == 1 })

		url := "http://" + podIP + ":8894"
		// One curl, one connection: the first transfer upgrades it, the
		// others reuse it.
		args := []string{"netns", "exec", f.svc, "curl", "-v", "--http2", "-sS", "-H", "X-User: alice", "-w", " %{http_version}\n", url + "/u1"}
		for _, next := range []struct{ path, user string }{{"/u2", ""}, {"/u3", "alice"}, {"/u4", "bob"}} {
			args = append(args, "--next", "--http2", "-sS", "-w", " %{http_version}\n")
			if next.user != "" {
				args = append(args, "-H", "X-User: "+next.user)
			}
			args = append(args, url+next.path)
		}
		var stdout, stderr strings.Builder
		cmd := exec.Command("ip", args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("curl: %v\n%s", err, stderr.String())
		}
		want := "hello from local app 2\nhello from original app 2\nhello from local app 2\nhello from original app 2\n"
		if stdout.String() != want {
			t.Errorf("curl --http2 printed\n%s\nwant\n%s\n%s", stdout.String(), want, stderr.String())
		}
		if n := strings.Count(stderr.String(), "101 Switching Protocols"); n != 1 {
			t.Errorf("curl saw %d upgrades, want 1 (one connection):\n%s", n, stderr.String())
		}
		b, _ := os.ReadFile(outFile)
		if got := strings.Count(string(b), "GOT "); got != 2 || !strings.Contains(string(b), "GOT /u1") || !strings.Contains(string(b), "GOT /u3") {
			t.Errorf("the local app saw:\n%s\nwant /u1 and /u3", b)
		}
	})
}
