package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// serveHandler serves h on addr inside the namespace ns until the test
// ends.
func (f *fixture) serveHandler(t *testing.T, ns, addr string, h http.Handler) {
	t.Helper()
	var ln net.Listener
	inNetns(t, ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// dialPod connects to the pod from the svc namespace, as a client in the
// cluster would.
func (f *fixture) dialPod(t *testing.T, port string) net.Conn {
	t.Helper()
	var c net.Conn
	inNetns(t, f.svc, func() (err error) {
		c, err = net.DialTimeout("tcp", podIP+":"+port, 3*time.Second)
		return err
	})
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// wsEcho opens a WebSocket to url on conn (as user, when set), sends each message
// and returns the answers.
func wsEcho(t *testing.T, conn net.Conn, url, user string, msgs ...string) ([]string, error) {
	t.Helper()
	cfg, err := websocket.NewConfig(url, "http://"+svcIP+"/")
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		cfg.Header.Set("X-User", user)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	defer ws.Close()
	var got []string
	for _, m := range msgs {
		if err := websocket.Message.Send(ws, m); err != nil {
			return got, err
		}
		var answer string
		if err := websocket.Message.Receive(ws, &answer); err != nil {
			return got, err
		}
		got = append(got, answer)
	}
	return got, nil
}

// TestIncomingWebSocketFilteredSteal: a WebSocket upgrade that matches the
// HTTP filter is spliced to the local app (a WebSocket echo), one that
// does not to the target's own app, also when the upgrade comes after
// plain requests on a kept-alive connection that went the other way.
func TestIncomingWebSocketFilteredSteal(t *testing.T) {
	f := newFixture(t)
	orig := http.NewServeMux()
	orig.Handle("/ws", websocket.Handler(func(ws *websocket.Conn) {
		for {
			var m string
			if websocket.Message.Receive(ws, &m) != nil {
				return
			}
			websocket.Message.Send(ws, "orig:"+m)
		}
	}))
	orig.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "orig:") })
	f.serveHandler(t, f.pod, podIP+":8892", orig)
	f.startAgent("--ttl", "30s")

	const wsURL = "ws://" + podIP + ":8892"
	big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB: many frames each way
	eachEngine(t, func(t *testing.T, engine ...string) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
			"http_filter": {"header_filter": "^x-user: alice$", "ports": [8892]}}}}}`)
		_, outFile := f.startLocal(t, append(engine, "-f", cfg), "python3", "testdata/wsecho.py", "8892", "local:")
		waitFor(t, "the filtered steal", func() bool {
			got, _ := wsEcho(t, f.dialPod(t, "8892"), wsURL+"/ready", "alice", "ready")
			return len(got) == 1 && got[0] == "local:ready"
		})

		check := func(name string, got []string, err error, want ...string) {
			t.Helper()
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			if len(got) != len(want) {
				t.Errorf("%s: %d answers, want %d", name, len(got), len(want))
				return
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("%s: answer %d = %.40q (%d bytes), want %.40q (%d bytes)", name, i, got[i], len(got[i]), want[i], len(want[i]))
				}
			}
		}
		got, err := wsEcho(t, f.dialPod(t, "8892"), wsURL+"/ws", "alice", "one", "two", big, "three")
		check("alice's WebSocket", got, err, "local:one", "local:two", "local:"+big, "local:three")
		got, err = wsEcho(t, f.dialPod(t, "8892"), wsURL+"/ws", "", "one", big)
		check("an unfiltered WebSocket", got, err, "orig:one", "orig:"+big)

		// One kept-alive connection: a plain request one way, then an
		// upgrade the other way.
		for _, tc := range []struct{ plainUser, plainWant, wsUser, wsWant string }{
			{"bob", "orig:", "alice", "local:"},
			{"alice", "local:", "carol", "orig:"},
		} {
			conn := f.dialPod(t, "8892")
			br := bufio.NewReader(conn)
			fmt.Fprintf(conn, "GET /plain HTTP/1.1\r\nHost: %s:8892\r\nX-User: %s\r\n\r\n", podIP, tc.plainUser)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("plain request as %s: %v", tc.plainUser, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != tc.plainWant {
				t.Errorf("plain request as %s: %q, want %q", tc.plainUser, body, tc.plainWant)
			}
			if br.Buffered() != 0 {
				t.Fatalf("%d bytes after the response", br.Buffered())
			}
			got, err := wsEcho(t, conn, wsURL+"/ws", tc.wsUser, "after "+tc.plainUser)
			check("WebSocket as "+tc.wsUser+" after a request as "+tc.plainUser, got, err, tc.wsWant+"after "+tc.plainUser)
		}

		// An upgrade the app declines (a 200 instead of the 101) leaves
		// the connection HTTP: the next request is routed on its own.
		conn := f.dialPod(t, "8892")
		br := bufio.NewReader(conn)
		for _, r := range []struct{ user, upgrade, want string }{
			{"carol", "Connection: Upgrade\r\nUpgrade: websocket\r\n", "orig:"},
			{"alice", "", "local:"},
			{"bob", "", "orig:"},
		} {
			fmt.Fprintf(conn, "GET /plain HTTP/1.1\r\nHost: %s:8892\r\nX-User: %s\r\n%s\r\n", podIP, r.user, r.upgrade)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("request as %s after a declined upgrade: %v", r.user, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != r.want {
				t.Errorf("request as %s after a declined upgrade: %d %q, want %q", r.user, resp.StatusCode, body, r.want)
			}
		}

		b, _ := os.ReadFile(outFile)
		// alice's, and the one after bob's request.
		if n := strings.Count(string(b), "WS /ws"); n != 2 {
			t.Errorf("the local app saw %d WebSockets, want 2:\n%s", n, b)
		}
		if n := strings.Count(string(b), "GOT /plain"); n != 2 {
			t.Errorf("the local app saw %d plain requests, want 2:\n%s", n, b)
		}
	})
}
