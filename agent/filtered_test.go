package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mirrord-go/mirrord/httpfilter"
	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
)

// serveNamed serves HTTP/1.1 and h2c on a loopback port, answering
// "NAME <X-Req-Id>", until the test ends.
func serveNamed(t testing.TB, name string) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s", name, r.Header.Get("X-Req-Id"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr)
}

// filteredSetup is an agent's incoming side without nftables: a front
// listener whose connections serveFiltered takes, for the target's app
// ("orig") and one session whose local app ("local") gets the requests
// with "X-User: alice", through a yamux session as in the CLI.
func filteredSetup(t testing.TB) (front string) {
	return subscribedSetup(t, protocol.Subscribe{Mode: "steal", Filter: &httpfilter.Spec{Header: "^x-user: alice$"}})
}

// subscribedSetup is filteredSetup for the subscription req (its port is
// set here).
func subscribedSetup(t testing.TB, req protocol.Subscribe) (front string) {
	t.Helper()
	orig := serveNamed(t, "orig")
	local := serveNamed(t, "local")

	a, b := net.Pipe()
	agentSide, err := yamux.Server(a, protocol.MuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	cliSide, err := yamux.Client(b, protocol.MuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cliSide.Close(); agentSide.Close() })
	go func() { // the CLI: each stream to the local app
		for {
			st, err := cliSide.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				if _, err := protocol.ReadReply[*protocol.Incoming](st); err != nil {
					return
				}
				conn, err := net.Dial("tcp", local.String())
				if err != nil {
					return
				}
				defer conn.Close()
				relay.Splice(st, conn)
			}()
		}
	}()

	port := uint16(orig.Port)
	req.Port = port
	sub, err := newSubscription(agentSide, &req)
	if err != nil {
		t.Fatal(err)
	}
	if sub.filter == nil {
		t.Fatalf("subscription %+v is not served by serveFiltered", req)
	}
	in := &incoming{a: &Agent{log: slog.New(slog.DiscardHandler), target: &target{}},
		subs: map[uint16][]*subscription{port: {sub}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				in.serveFiltered(c.(*net.TCPConn), netAddrPort{ip: "127.0.0.1", port: port})
			})
		}
	}()
	return ln.Addr().String()
}

// TestFilteredRouting sends concurrent requests over HTTP/1.1 keep-alive
// connections and over one h2c connection through serveFiltered: each
// must be answered by the app its header selects, with its own answer.
// (Run with -race: connections and streams share the routing state.)
func TestFilteredRouting(t *testing.T) {
	front := filteredSetup(t)
	h2 := new(http.Protocols)
	h2.SetUnencryptedHTTP2(true)
	for _, tc := range []struct {
		name      string
		transport *http.Transport
	}{
		{"HTTP/1.1", &http.Transport{MaxConnsPerHost: 8, MaxIdleConnsPerHost: 8}},
		{"h2c", &http.Transport{Protocols: h2, MaxConnsPerHost: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := &http.Client{Transport: tc.transport}
			defer tc.transport.CloseIdleConnections()
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := w; i < 400; i += 8 {
						req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://"+front+"/"+strconv.Itoa(i), nil)
						req.Header.Set("X-Req-Id", strconv.Itoa(i))
						want := "orig "
						if i%3 == 0 {
							req.Header.Set("X-User", "alice")
							want = "local "
						}
						resp, err := client.Do(req)
						if err != nil {
							t.Errorf("request %d: %v", i, err)
							return
						}
						body, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if string(body) != want+strconv.Itoa(i) {
							t.Errorf("request %d: %q, want %q", i, body, want+strconv.Itoa(i))
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// TestProbesPassThrough: an unfiltered steal of a port with HTTP probes
// takes every request but kubelet's probes, on kept-alive connections
// too, and no other session can share the port.
func TestProbesPassThrough(t *testing.T) {
	req := protocol.Subscribe{Mode: "steal", HTTPProbes: true}
	front := subscribedSetup(t, req)
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	for i, tt := range []struct{ userAgent, want string }{
		{"kube-probe/1.33", "orig"},
		{"curl/8.5.0", "local"},
		{"", "local"},
		{"Kube-Probe/1.33", "local"}, // kubelet writes it in lower case; anything else is a client
		{"kube-probe/1.33", "orig"},
	} {
		r, _ := http.NewRequest("GET", "http://"+front+"/health", nil)
		r.Header.Set("User-Agent", tt.userAgent)
		r.Header.Set("X-Req-Id", strconv.Itoa(i))
		resp, err := client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := tt.want + " " + strconv.Itoa(i); string(b) != want {
			t.Errorf("User-Agent %q: %q, want %q", tt.userAgent, b, want)
		}
	}

	whole, _ := newSubscription(nil, &req)
	filtered, _ := newSubscription(nil, &protocol.Subscribe{Mode: "steal", Filter: &httpfilter.Spec{Header: "^x-user: a$"}, HTTPProbes: true})
	other, _ := newSubscription(nil, &protocol.Subscribe{Mode: "steal", Filter: &httpfilter.Spec{Header: "^x-user: b$"}})
	if whole.shares(other) || other.shares(whole) {
		t.Error("an unfiltered steal with probes shares its port with a filtered one")
	}
	if !filtered.shares(other) {
		t.Error("two filtered steals (one on a probed port) cannot share a port")
	}
}

// TestInterimAnswers: an app's interim answer (100 Continue, to a request
// with "Expect: 100-continue") reaches the peer, followed by the real
// answer; it was taken for the real one, which then answered the next
// request on the connection, each answer after it one late.
func TestInterimAnswers(t *testing.T) {
	front := filteredSetup(t)
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, user := range []string{"alice", "bob"} {
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: app\r\nX-User: %s\r\nX-Req-Id: 1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"+
			"GET /next HTTP/1.1\r\nHost: app\r\nX-User: %[1]s\r\nX-Req-Id: 2\r\n\r\n", user)
	}
	br := bufio.NewReader(c)
	var got []string
	for len(got) < 6 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		body, _ := io.ReadAll(resp.Body)
		got = append(got, fmt.Sprintf("%d %s", resp.StatusCode, body))
		if resp.StatusCode == http.StatusContinue && resp.Header.Get("Content-Length") != "" {
			t.Errorf("100 Continue with a Content-Length")
		}
	}
	want := []string{"100 ", "200 local 1", "200 local 2", "100 ", "200 orig 1", "200 orig 2"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("answers %q, want %q", got, want)
	}
}
