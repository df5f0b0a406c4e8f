package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/mirrord-go/mirrord/protocol"
)

// upstreamResponse reads a response that an upstream writes in parts:
// each part is written once the previous one was taken (a stream), or
// once step is received from.
func upstreamResponse(t *testing.T, parts []string, step <-chan struct{}) (*http.Response, *bufio.Reader) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		for i, p := range parts {
			if i > 0 {
				<-step
			}
			pw.Write([]byte(p))
		}
		pw.Close()
	}()
	src := bufio.NewReader(pr)
	resp, err := http.ReadResponse(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp, src
}

// TestWriteResponseSplit: a body that arrives after the header (the
// upstream wrote them apart) reaches the peer intact.
func TestWriteResponseSplit(t *testing.T) {
	step := make(chan struct{})
	close(step)
	resp, src := upstreamResponse(t, []string{"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", "lo", "cal:"}, step)
	var out strings.Builder
	bw := bufio.NewWriterSize(&out, 4096)
	if err := writeResponse(bw, resp, src); err != nil {
		t.Fatal(err)
	}
	got, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out.String())), nil)
	if err != nil {
		t.Fatalf("%v in %q", err, out.String())
	}
	body, _ := io.ReadAll(got.Body)
	if string(body) != "local:" {
		t.Errorf("body %q, want %q (wrote %q)", body, "local:", out.String())
	}
}

// TestWriteResponseStreams: the parts of a body that the upstream sends
// over time reach the peer as they come, not when the response ends.
func TestWriteResponseStreams(t *testing.T) {
	step := make(chan struct{})
	resp, src := upstreamResponse(t, []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n", "6\r\nsecond\r\n0\r\n\r\n"}, step)
	peer, mine := net.Pipe()
	defer peer.Close()
	done := make(chan error, 1)
	go func() {
		done <- writeResponse(bufio.NewWriter(mine), resp, src)
		mine.Close()
	}()
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	pr := bufio.NewReader(peer)
	got, err := http.ReadResponse(pr, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(got.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("first part: %q, %v (before the upstream sent the second)", first, err)
	}
	close(step)
	rest, _ := io.ReadAll(got.Body)
	if string(rest) != "second" {
		t.Errorf("second part %q", rest)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

// TestRawTargets: a request target that net/http would escape again on
// the way ("/a|b", a UTF-8 path, a fragment sign) reaches the app, and the
// filters, as the peer sent it, over HTTP/1.1 and HTTP/2.
func TestRawTargets(t *testing.T) {
	w := newStealWorld(t)
	for _, target := range []string{"/local/ä|{x}?q=\"y\"#f", "/a|b?", "/a^b`c<d>\\e?x=|"} {
		side := "app"
		if strings.HasPrefix(target, "/local") {
			side = "local"
		}
		want := side + " " + requestDigest("GET", target, nil)

		out, _ := w.steal(t, []byte("GET "+target+" HTTP/1.1\r\nHost: app\r\n\r\n"), nil, false)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("HTTP/1.1 %q: %v in %q", target, err, out)
		}
		if got := resp.Header.Get("X-Echo"); got != want {
			t.Errorf("HTTP/1.1 %q: answered %q, want %q", target, got, want)
		}

		frames := h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteSettings()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(getHeaders(target)...), EndStream: true, EndHeaders: true})
		})
		// The peer waits for its answer: the HTTP/2 server drops the
		// streams of a peer that half-closes.
		got := ""
		w.steal(t, append([]byte(h2Preface), frames...), func(out []byte) bool {
			fr := http2.NewFramer(io.Discard, bytes.NewReader(out))
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return false
				}
				if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == 1 {
					got = "status " + h.PseudoValue("status")
					for _, hf := range h.RegularFields() {
						if hf.Name == "x-echo" {
							got = hf.Value
						}
					}
					return true
				}
			}
		}, true)
		if got != want {
			t.Errorf("HTTP/2 %q: answered %q, want %q", target, got, want)
		}
	}
}

// uaApp answers with the User-Agent lines its request had, in X-UA.
func uaApp(side string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-UA", fmt.Sprintf("%s %q", side, r.Header.Values("User-Agent")))
	})
}

// TestUserAgentAsSent: a request of a filtered steal reaches its app with
// the User-Agent the peer sent, and none when it sent none (net/http's
// Request.Write would add its own), whichever app the filter picks.
func TestUserAgentAsSent(t *testing.T) {
	app := loopbackListener(t)
	t.Cleanup(servesHTTP(app, uaApp("app")))
	front := loopbackListener(t)
	for _, tc := range []struct{ path, ua, want string }{
		{"/x", "", `app []`},
		{"/x", "User-Agent: curl/8.5.0\r\n", `app ["curl/8.5.0"]`},
		{"/local", "", `local []`},
		{"/local", "User-Agent: curl/8.5.0\r\n", `local ["curl/8.5.0"]`},
	} {
		agentSide, cliSide := sessionPair(t)
		stopLocal := servesHTTP(streamListener{cliSide}, uaApp("local"))
		in, _, orig := fuzzIncoming(t, app.Addr().(*net.TCPAddr), agentSide, "steal")
		input := "GET " + tc.path + " HTTP/1.1\r\nHost: app\r\n" + tc.ua + "\r\n"
		out, _ := runConn(t, front, []byte(input), func(c *net.TCPConn) { in.serveFiltered(c, orig) }, nil, false)
		stopLocal()
		agentSide.Close()
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("%q: %v in %q", input, err, out)
		}
		if got := resp.Header.Get("X-UA"); got != tc.want {
			t.Errorf("%q: the app saw User-Agent %s, want %s", input, got, tc.want)
		}
	}
}

// TestHTTP10AsSent: an HTTP/1.0 request of a filtered steal reaches its
// app as HTTP/1.0, whichever app the filter picks, so that the app does
// not answer in chunks, which the HTTP/1.0 peer could not read: the peer
// gets the body as the app sent it, to the connection's end.
func TestHTTP10AsSent(t *testing.T) {
	streams := func(side string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Proto", side+" "+r.Proto)
			w.Write([]byte("part1"))
			w.(http.Flusher).Flush() // no length: chunked, unless HTTP/1.0
			w.Write([]byte("part2"))
		})
	}
	app := loopbackListener(t)
	t.Cleanup(servesHTTP(app, streams("app")))
	front := loopbackListener(t)
	for _, side := range []string{"app", "local"} {
		agentSide, cliSide := sessionPair(t)
		stopLocal := servesHTTP(streamListener{cliSide}, streams("local"))
		in, _, orig := fuzzIncoming(t, app.Addr().(*net.TCPAddr), agentSide, "steal")
		path := map[string]string{"app": "/x", "local": "/local"}[side]
		input := "GET " + path + " HTTP/1.0\r\nHost: app\r\n\r\n"
		out, _ := runConn(t, front, []byte(input), func(c *net.TCPConn) { in.serveFiltered(c, orig) }, nil, false)
		stopLocal()
		agentSide.Close()
		head, body, _ := strings.Cut(string(out), "\r\n\r\n")
		head += "\r\n"
		if !strings.HasPrefix(head, "HTTP/1.0 200 ") || !strings.Contains(head, "X-Proto: "+side+" HTTP/1.0\r\n") ||
			strings.Contains(head, "Transfer-Encoding") || body != "part1part2" {
			t.Errorf("%q: the peer got %q, want an HTTP/1.0 answer from %s, its body to the end", input, out, side)
		}
	}
}

// TestRequestLineVersion: the request line's version is replaced however
// the writes cut the request.
func TestRequestLineVersion(t *testing.T) {
	const in = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nbody"
	const want = "GET /a HTTP/1.0\r\nHost: x\r\n\r\nbody"
	for size := 1; size <= len(in); size++ {
		var out bytes.Buffer
		v := &requestLineVersion{w: &out, proto: "HTTP/1.0"}
		for p := in; p != ""; {
			n := min(size, len(p))
			if m, err := v.Write([]byte(p[:n])); m != n || err != nil {
				t.Fatalf("writes of %d: Write = %d, %v", size, m, err)
			}
			p = p[n:]
		}
		if out.String() != want {
			t.Errorf("writes of %d: %q, want %q", size, out.String(), want)
		}
	}
}

// rawApp answers each request on a connection with answer, after reading
// its head (and a body of the length its Content-Length gives), and
// sends every head it read, byte for byte, to heads.
func rawApp(ln net.Listener, answer string, heads chan<- string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				var head strings.Builder
				n := 0
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					head.WriteString(line)
					if k, ok := strings.CutPrefix(strings.ToLower(line), "content-length:"); ok {
						n, _ = strconv.Atoi(strings.TrimSpace(k))
					}
					if line == "\r\n" {
						break
					}
				}
				body := make([]byte, n)
				if _, err := io.ReadFull(br, body); err != nil {
					return
				}
				heads <- head.String() + string(body)
				if _, err := c.Write([]byte(answer)); err != nil {
					return
				}
			}
		}()
	}
}

// TestHeadsAsSent: the requests of a filtered steal reach their app, and
// the apps' answers the peer, as they were sent, byte for byte (header
// names in their case and order, no header added), whichever app the
// filter picks; each app's answer keeps its own head too.
func TestHeadsAsSent(t *testing.T) {
	app := loopbackListener(t)
	appHeads := make(chan string, 10)
	const appAnswer = "HTTP/1.1 200 OK\r\nx-side: app\r\ncontent-length: 3\r\nX-Mixed-Case:  two  spaces \r\n\r\napp"
	go rawApp(app, appAnswer, appHeads)
	front := loopbackListener(t)
	for _, tc := range []struct {
		request string
		local   bool
	}{
		{"GET /x?a=%7C HTTP/1.1\r\nhost: app\r\nx-b: 2\r\nx-a: 1\r\naccept: */*\r\n\r\n", false},
		{"GET /local HTTP/1.1\r\nhost: app\r\nx-b: 2\r\nx-a: 1\r\n\r\n", true},
		{"POST /x HTTP/1.1\r\nHOST: app\r\ncontent-length: 5\r\nzz: last\r\n\r\nhello", false},
		{"POST /local/p HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nx-dup: 1\r\nx-dup: 2\r\n\r\nhello", true},
		// HTTP/1.0 without a Host: none is added (net/http wrote "Host: ").
		{"GET /x HTTP/1.0\r\n\r\n", false},
	} {
		agentSide, cliSide := sessionPair(t)
		localHeads := make(chan string, 10)
		const localAnswer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-side: local\r\n\r\nlocal"
		go rawApp(streamListener{cliSide}, localAnswer, localHeads)
		in, _, orig := fuzzIncoming(t, app.Addr().(*net.TCPAddr), agentSide, "steal")
		out, _ := runConn(t, front, []byte(tc.request), func(c *net.TCPConn) { in.serveFiltered(c, orig) },
			func(out []byte) bool {
				return bytes.HasSuffix(out, []byte("app")) || bytes.HasSuffix(out, []byte("local"))
			}, false)
		cliSide.Close()
		agentSide.Close()
		heads, answer := appHeads, appAnswer
		if tc.local {
			heads, answer = localHeads, localAnswer
		}
		select {
		case got := <-heads:
			if got != tc.request {
				t.Errorf("the app (local %v) saw\n%q\nwant\n%q", tc.local, got, tc.request)
			}
		default:
			t.Errorf("%q did not reach its app (local %v); the peer got %q", tc.request, tc.local, out)
		}
		if string(out) != answer {
			t.Errorf("%q: the peer got\n%q\nwant\n%q", tc.request, out, answer)
		}
	}
}

// TestMirrorCopyAsSent: a filtered mirror's copy of a request reaches the
// session as the peer sent it, byte for byte.
func TestMirrorCopyAsSent(t *testing.T) {
	app := loopbackListener(t)
	go rawApp(app, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", make(chan string, 10))
	front := loopbackListener(t)
	const request = "GET /local/m?q=%7C HTTP/1.1\r\nhost: app\r\nx-b: 2\r\nx-a: 1\r\n\r\n"
	agentSide, cliSide := sessionPair(t)
	defer cliSide.Close()
	defer agentSide.Close()
	copies := make(chan string, 1)
	go func() {
		st, err := cliSide.AcceptStream()
		if err != nil {
			copies <- err.Error()
			return
		}
		defer st.Close()
		if _, err := protocol.ReadReply[*protocol.Incoming](st); err != nil {
			copies <- err.Error()
			return
		}
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(st)
		copies <- string(b)
	}()
	in, sub, orig := fuzzIncoming(t, app.Addr().(*net.TCPAddr), agentSide, "mirror")
	runConn(t, front, []byte(request), func(c *net.TCPConn) { in.mirrorFiltered(c, orig, sub) },
		func(out []byte) bool { return bytes.HasSuffix(out, []byte("ok")) }, false)
	select {
	case got := <-copies:
		if got != request {
			t.Errorf("the session's copy:\n%q\nwant\n%q", got, request)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no copy")
	}
}
