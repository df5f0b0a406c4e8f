package agent

// Fuzz targets for what the agent parses from the network on a stolen or
// mirrored port: the peer's bytes go through the real serveFiltered (HTTP/1
// requests, chunked bodies, upgrades, HTTP/2 frames and HPACK) and
// mirrorFiltered, over loopback TCP, to a fake target app and a fake session
// whose local app answers. Each input is one connection; it must end (the
// agent returns, the peer sees EOF) within fuzzDeadline, with no goroutine of
// the agent left behind, and the requests it carried must reach the app
// their filter picks, unchanged. Seeds: testdata/fuzz/FuzzXxx and the f.Add
// calls; `make fuzz` runs each target briefly, and for instance
// `make fuzz FUZZTIME=10m FUZZ=FuzzFilteredStealH2` one for longer.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mirrord-go/mirrord/httpfilter"
	"github.com/mirrord-go/mirrord/protocol"
)

// fuzzDeadline bounds each wait for one input: the connection must have
// ended, the agent returned, and its goroutines for the connection too,
// each within it (go test gives an input 10 s in all).
const fuzzDeadline = 3 * time.Second

// idleAnswer is how long a client that waits for its answers (HTTP/2)
// waits for the next bytes before it gives up and closes.
const idleAnswer = 200 * time.Millisecond

// fuzzFilter is the session's filter in the steal and mirror targets: a
// header or a path prefix, so that seeds can pick a side either way.
var fuzzFilter = &httpfilter.Spec{AnyOf: []httpfilter.Spec{{Header: "^x-user: alice$"}, {Path: "^/local"}}}

// requestDigest identifies a request by what must reach its app unchanged.
func requestDigest(method, uri string, body []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%q %q %d\n", method, uri, len(body))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// echoApp answers every request with "X-Echo: SIDE DIGEST" (the request as
// this server saw it) and a short body; a WebSocket upgrade is accepted
// with a 101, after which it echoes the bytes back until the peer is done.
func echoApp(side string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		w.Header().Set("X-Echo", side+" "+requestDigest(r.Method, r.RequestURI, body))
		if r.ProtoMajor == 1 && httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket") {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Echo: %s\r\n\r\n", w.Header().Get("X-Echo"))
			brw.Flush()
			c.SetDeadline(time.Now().Add(fuzzDeadline))
			io.Copy(c, brw)
			return
		}
		fmt.Fprintf(w, "%s %d\n", side, len(body))
	})
}

// servesHTTP serves h with HTTP/1.1 and h2c on ln until the returned stop
// is called.
func servesHTTP(ln net.Listener, h http.Handler) (stop func()) {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: h, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, 0)}
	done := make(chan struct{})
	go func() {
		srv.Serve(ln)
		close(done)
	}()
	return func() {
		srv.Close()
		<-done
	}
}

// streamListener makes the streams a session opens (each starting with an
// Incoming, as the CLI receives them) connections of a local app.
type streamListener struct{ s *yamux.Session }

func (l streamListener) Accept() (net.Conn, error) {
	for {
		st, err := l.s.AcceptStream()
		if err != nil {
			return nil, err
		}
		if _, err := protocol.ReadReply[*protocol.Incoming](st); err != nil {
			st.Close()
			continue
		}
		return st, nil
	}
}

func (l streamListener) Close() error   { return l.s.Close() }
func (l streamListener) Addr() net.Addr { return l.s.Addr() }

// sessionPair is a yamux session as the agent holds it and the CLI's end.
func sessionPair(t *testing.T) (agentSide, cliSide *yamux.Session) {
	t.Helper()
	a, b := net.Pipe()
	agentSide, err := yamux.Server(a, protocol.MuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	cliSide, err = yamux.Client(b, protocol.MuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	return agentSide, cliSide
}

// fuzzIncoming is an agent's incoming side with one subscription to the
// port of orig, for sess.
func fuzzIncoming(t *testing.T, orig *net.TCPAddr, sess *yamux.Session, mode string) (*incoming, *subscription, netAddrPort) {
	t.Helper()
	port := uint16(orig.Port)
	sub, err := newSubscription(sess, &protocol.Subscribe{Port: port, Mode: mode, Filter: fuzzFilter})
	if err != nil {
		t.Fatal(err)
	}
	in := &incoming{a: &Agent{log: slog.New(slog.DiscardHandler), target: &target{}},
		subs: map[uint16][]*subscription{port: {sub}}}
	return in, sub, netAddrPort{ip: "127.0.0.1", port: port}
}

func loopbackListener(tb testing.TB) *net.TCPListener {
	tb.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// runConn makes one connection to front, hands the accepted end to serve,
// sends input and half-closes (unless keepOpen: a client that waits for
// its answers), and returns what the peer received; the peer closes
// when stop says so of what it received. The connection must end and
// serve return within fuzzDeadline. reset says
// the connection ended with a reset rather than a FIN (the agent closed it
// with input unread), which may have cut off what it sent before.
func runConn(t *testing.T, front *net.TCPListener, input []byte, serve func(*net.TCPConn), stop func(out []byte) bool, keepOpen bool) (out []byte, reset bool) {
	t.Helper()
	client, err := net.DialTCP("tcp", nil, front.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := front.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		defer server.Close()
		serve(server)
	}()
	go func() {
		client.Write(input)
		if !keepOpen {
			client.CloseWrite()
		}
	}()
	overall := time.Now().Add(fuzzDeadline)
	buf := make([]byte, 32<<10)
	for {
		deadline := overall
		if idle := time.Now().Add(idleAnswer); keepOpen && idle.Before(deadline) {
			deadline = idle
		}
		client.SetReadDeadline(deadline)
		var n int
		n, err = client.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			err = nil
			break
		}
		if keepOpen && errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(overall) {
			err = nil // the client gives up waiting
			break
		}
		if err != nil || stop != nil && stop(out) {
			break
		}
	}
	client.Close()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection did not end within %v (received %d bytes: %.200q)\n%s", fuzzDeadline, len(out), out, agentStacks())
	}
	select {
	case <-served:
	case <-time.After(fuzzDeadline):
		t.Fatalf("the agent did not return within %v after the connection ended\n%s", fuzzDeadline, agentStacks())
	}
	return out, err != nil
}

// agentStacks returns the stacks of the goroutines that run agent code or
// were started by it (the fuzz harness's own excepted).
func agentStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "mirrord/agent.(*incoming)") || strings.Contains(g, "mirrord/agent.(*h2Router)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// noAgentGoroutines waits until no goroutine runs agent code.
func noAgentGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(fuzzDeadline)
	for {
		s := agentStacks()
		if s == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent goroutines left %v after the connection ended:\n%s", fuzzDeadline, s)
		}
		time.Sleep(time.Millisecond)
	}
}

// stealWorld is the target's app and the front listener of the steal
// targets, shared by the inputs of one fuzz process.
type stealWorld struct {
	front *net.TCPListener
	app   *net.TCPAddr
}

func newStealWorld(tb testing.TB) *stealWorld {
	app := loopbackListener(tb)
	stop := servesHTTP(app, echoApp("app"))
	tb.Cleanup(stop)
	return &stealWorld{front: loopbackListener(tb), app: app.Addr().(*net.TCPAddr)}
}

// steal sends input through serveFiltered on a connection of its own, with
// a fresh session whose local app answers, and returns what the peer got.
func (w *stealWorld) steal(t *testing.T, input []byte, stop func([]byte) bool, keepOpen bool) (out []byte, reset bool) {
	agentSide, cliSide := sessionPair(t)
	stopLocal := servesHTTP(streamListener{cliSide}, echoApp("local"))
	in, _, orig := fuzzIncoming(t, w.app, agentSide, "steal")
	out, reset = runConn(t, w.front, input, func(c *net.TCPConn) { in.serveFiltered(c, orig) }, stop, keepOpen)
	noAgentGoroutines(t)
	stopLocal()
	agentSide.Close()
	return out, reset
}

// wantTarget is the request target an app is to see for req: the peer's,
// byte for byte, but for an absolute URI ("http://host/path"), which
// reaches it as a path, and a path that starts with "//" (see keepTarget).
func wantTarget(req *http.Request) string {
	if strings.HasPrefix(req.RequestURI, "/") && !strings.HasPrefix(req.RequestURI, "//") {
		return req.RequestURI
	}
	return req.URL.RequestURI()
}

// checkAnswers checks what the peer of a filtered steal received against
// the HTTP/1 requests it sent: each request is answered, in order, by the
// app its filter picks, which saw the request's method, target and body
// unchanged. It stops where the connection legitimately stops being HTTP/1
// request by request (an upgrade, CONNECT, Connection: close, a request the
// app refused, a body that does not parse).
func checkAnswers(t *testing.T, filter httpfilter.Filter, input, out []byte, reset bool) {
	t.Helper()
	ir := bufio.NewReader(bytes.NewReader(input))
	if head, _ := ir.Peek(8); !looksLikeHTTP1(head) {
		return
	}
	or := bufio.NewReader(bytes.NewReader(out))
	for i := 0; ; i++ {
		req, err := http.ReadRequest(ir)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		if _, ok := h2cUpgrade(req); ok || req.Method == "CONNECT" {
			return
		}
		side := "app"
		if filter.Match(filterRequest(req)) {
			side = "local"
		}
		want := side + " " + requestDigest(req.Method, wantTarget(req), body)
		var resp *http.Response
		for {
			resp, err = http.ReadResponse(or, req)
			if err != nil {
				if reset {
					return // the rest was lost to the reset
				}
				t.Fatalf("request %d (%s %q, to %s) got no answer: %v; the peer received:\n%q", i, req.Method, req.RequestURI, side, err, out)
			}
			if resp.StatusCode/100 != 1 || resp.StatusCode == http.StatusSwitchingProtocols {
				break
			}
		}
		got := resp.Header.Get("X-Echo")
		if got == "" {
			return // the app's server refused it (400, 417, 505, ...)
		}
		if got != want {
			t.Fatalf("request %d (%s %q): answered %q, want %q (side, then the digest of method, target and body as the app saw them); the peer received:\n%q", i, req.Method, req.RequestURI, got, want, out)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			if reset {
				return
			}
			t.Fatalf("request %d: answer's body: %v; the peer received:\n%q", i, err, out)
		}
		if req.Close || resp.Close {
			return
		}
	}
}

// FuzzFilteredSteal: any bytes from the peer of a port stolen with an HTTP
// filter. HTTP/1 requests are checked to reach the right app unchanged.
func FuzzFilteredSteal(f *testing.F) {
	for _, s := range basicHTTP1Seeds {
		f.Add([]byte(s))
	}
	w := newStealWorld(f)
	filter, err := httpfilter.Build(*fuzzFilter)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		out, reset := w.steal(t, input, nil, false)
		checkAnswers(t, filter, input, out, reset)
	})
}

// FuzzFilteredStealH2: HTTP/2 frames (and HPACK blocks in them) after the
// connection preface, with prior knowledge or after an h2c upgrade. The
// client keeps the connection open until every request it ended has its
// answer (the server drops the streams of a client that half-closes), the
// server sends a GOAWAY, or nothing comes for idleAnswer. Each answer from
// an app must come from the app the filter picks, which saw the request's
// method, path and body unchanged.
func FuzzFilteredStealH2(f *testing.F) {
	seeds := h2SeedFrames()
	f.Add(false, seeds["get-local-and-app"])
	f.Add(true, seeds["get-local-and-app"])
	w := newStealWorld(f)
	filter, err := httpfilter.Build(*fuzzFilter)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, upgrade bool, frames []byte) {
		input := []byte(h2Preface)
		reqs := h2Requests(filter, frames)
		if upgrade {
			input = append([]byte(h2cUpgradeRequest), input...)
			reqs[1] = &h2Request{method: "GET", path: "/h2c", side: "app", ended: true}
		}
		out, _ := w.steal(t, append(input, frames...), func(out []byte) bool { return h2Done(reqs, out) }, true)
		checkH2Answers(t, reqs, out)
	})
}

// h2Request is a request of the client's HTTP/2 frames, as the server
// reads them.
type h2Request struct {
	method, path, side string
	body               []byte
	ended              bool // the client sent END_STREAM
	reset              bool // the client reset the stream
	answered           bool // the server ended or reset it
}

// h2Requests reads the requests in a client's HTTP/2 frames (after the
// preface), up to the first frame a server would not take.
func h2Requests(filter httpfilter.Filter, frames []byte) map[uint32]*h2Request {
	reqs := map[uint32]*h2Request{}
	fr := http2.NewFramer(nil, bytes.NewReader(frames))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.SetMaxReadFrameSize(1 << 20)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return reqs
		}
		id := f.Header().StreamID
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			r := reqs[id]
			if r == nil {
				r = &h2Request{method: f.PseudoValue("method"), path: f.PseudoValue("path")}
				fr := &httpfilter.Request{Method: r.method, Path: r.path, Header: http.Header{}}
				for _, hf := range f.RegularFields() {
					fr.Header.Add(hf.Name, hf.Value)
				}
				if a := f.PseudoValue("authority"); a != "" {
					fr.Header.Set("Host", a)
				}
				r.side = "app"
				if filter.Match(fr) {
					r.side = "local"
				}
				reqs[id] = r
			}
			r.ended = r.ended || f.StreamEnded()
		case *http2.DataFrame:
			if r := reqs[id]; r != nil && !r.ended {
				r.body = append(r.body, f.Data()...)
				r.ended = f.StreamEnded()
			}
		case *http2.RSTStreamFrame:
			if r := reqs[id]; r != nil {
				r.reset = true
			}
		}
	}
}

// h2Frames returns the frames of the server's answer so far, past the
// 101 of an h2c upgrade.
func h2ServerFrames(out []byte) []byte {
	if bytes.HasPrefix(out, []byte("HTTP/1.1 101 ")) {
		i := bytes.Index(out, []byte("\r\n\r\n"))
		if i < 0 {
			return nil
		}
		return out[i+4:]
	}
	return out
}

// h2Done says whether a client that sent reqs has what it waits for in
// out: an answer for each request it ended, or a GOAWAY (the server would
// wait a second for it to close before it closes itself).
func h2Done(reqs map[uint32]*h2Request, out []byte) bool {
	out = h2ServerFrames(out)
	for len(out) >= 9 {
		n := 9 + (int(out[0])<<16 | int(out[1])<<8 | int(out[2]))
		if n > len(out) {
			break
		}
		id := binary.BigEndian.Uint32(out[5:9]) & (1<<31 - 1)
		switch t, flags := http2.FrameType(out[3]), http2.Flags(out[4]); {
		case t == http2.FrameGoAway:
			return true
		case t == http2.FrameRSTStream, (t == http2.FrameData || t == http2.FrameHeaders) && flags.Has(http2.FlagDataEndStream):
			if r := reqs[id]; r != nil {
				r.answered = true
			}
		}
		out = out[n:]
	}
	for _, r := range reqs {
		if r.ended && !r.reset && !r.answered {
			return false
		}
	}
	return true
}

// checkH2Answers checks each answer from an app in out against the request
// of its stream: it came from the app the filter picks, which saw the
// request's method, path and body unchanged.
func checkH2Answers(t *testing.T, reqs map[uint32]*h2Request, out []byte) {
	t.Helper()
	fr := http2.NewFramer(nil, bytes.NewReader(h2ServerFrames(out)))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.SetMaxReadFrameSize(1 << 24)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		h, ok := f.(*http2.MetaHeadersFrame)
		if !ok {
			continue
		}
		r := reqs[h.StreamID]
		if r == nil || !r.ended || r.reset || r.method == "CONNECT" {
			continue
		}
		for _, hf := range h.RegularFields() {
			if hf.Name != "x-echo" {
				continue
			}
			if want := r.side + " " + requestDigest(r.method, r.path, r.body); hf.Value != want {
				t.Fatalf("stream %d (%s %q, %d bytes): answered %q, want %q", h.StreamID, r.method, r.path, len(r.body), hf.Value, want)
			}
		}
	}
}

// h2cUpgradeRequest asks for HTTP/2 as curl --http2 does (its
// HTTP2-Settings: max concurrent streams 100, initial window 10 MiB,
// no push).
const h2cUpgradeRequest = "GET /h2c HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"

// mirrorWorld is the fuzz process's target app for the mirror target: it
// records the bytes of each connection, which must be the peer's exactly.
type mirrorWorld struct {
	front    *net.TCPListener
	app      *net.TCPAddr
	received chan []byte
}

func newMirrorWorld(f *testing.F) *mirrorWorld {
	app := loopbackListener(f)
	w := &mirrorWorld{front: loopbackListener(f), app: app.Addr().(*net.TCPAddr), received: make(chan []byte, 1)}
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(2 * fuzzDeadline))
				b, _ := io.ReadAll(c)
				w.received <- b
			}()
		}
	}()
	return w
}

// FuzzFilteredMirror: any bytes from the peer of a port mirrored with an
// HTTP filter. The target's app must get every byte, and the session a
// copy of exactly the HTTP/1 requests that match, each whole.
func FuzzFilteredMirror(f *testing.F) {
	for _, s := range basicHTTP1Seeds {
		f.Add([]byte(s))
	}
	w := newMirrorWorld(f)
	filter, err := httpfilter.Build(*fuzzFilter)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		agentSide, cliSide := sessionPair(t)
		defer agentSide.Close()
		copies := make(chan []string, 1)
		go func() { copies <- receiveCopies(cliSide) }()
		in, sub, orig := fuzzIncoming(t, w.app, agentSide, "mirror")
		out, _ := runConn(t, w.front, input, func(c *net.TCPConn) { in.mirrorFiltered(c, orig, sub) }, nil, false)
		if len(out) != 0 {
			t.Errorf("the peer received %q from an app that sent nothing", out)
		}
		select {
		case got := <-w.received:
			if !bytes.Equal(got, input) {
				t.Fatalf("the target's app received %q, want the peer's %q", got, input)
			}
		case <-time.After(fuzzDeadline):
			t.Fatal("the target's app got no connection")
		}
		// A last stream after the copies: when it arrives, every copy
		// has (streams are accepted in the order they were opened).
		st, err := agentSide.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		protocol.Write(st, &protocol.Incoming{})
		st.Close()
		var got []string
		select {
		case got = <-copies:
		case <-time.After(fuzzDeadline):
			t.Fatalf("the copies did not arrive within %v\n%s", fuzzDeadline, agentStacks())
		}
		noAgentGoroutines(t)
		want := wantCopies(filter, input)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("copies for the session:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

// receiveCopies reads the mirrored requests a session receives, each on a
// stream of its own, until a stream with port 0; it returns the digest of
// each, or a description of what was wrong with it.
func receiveCopies(s *yamux.Session) []string {
	var got []string
	for {
		st, err := s.AcceptStream()
		if err != nil {
			return append(got, "session: "+err.Error())
		}
		inc, err := protocol.ReadReply[*protocol.Incoming](st)
		if err != nil {
			st.Close()
			return append(got, "stream header: "+err.Error())
		}
		if inc.Port == 0 {
			st.Close()
			return got
		}
		st.SetReadDeadline(time.Now().Add(fuzzDeadline))
		b, err := io.ReadAll(st)
		st.Close()
		if err != nil {
			got = append(got, "copy: "+err.Error())
			continue
		}
		got = append(got, copyDigest(inc, b))
	}
}

func copyDigest(inc *protocol.Incoming, b []byte) string {
	if !inc.Mirror {
		return "not marked as a mirror"
	}
	br := bufio.NewReader(bytes.NewReader(b))
	req, err := http.ReadRequest(br)
	if err != nil {
		return fmt.Sprintf("copy %q: %v", b, err)
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return fmt.Sprintf("copy %q: body: %v", b, err)
	}
	if br.Buffered() > 0 {
		return fmt.Sprintf("copy %q: %d bytes after the request", b, br.Buffered())
	}
	return requestDigest(req.Method, req.RequestURI, body)
}

// wantCopies is what a session should receive of input: each HTTP/1
// request that the filter matches, up to the first that does not parse.
func wantCopies(filter httpfilter.Filter, input []byte) []string {
	br := bufio.NewReader(bytes.NewReader(input))
	if head, _ := br.Peek(8); !looksLikeHTTP1(head) {
		return nil
	}
	var want []string
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return want
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, mirrorBodyLimit+1))
		if err != nil {
			return want
		}
		if len(body) <= mirrorBodyLimit && filter.Match(filterRequest(req)) {
			want = append(want, requestDigest(req.Method, wantTarget(req), body))
		}
	}
}
