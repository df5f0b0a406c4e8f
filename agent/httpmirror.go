package agent

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/mirrord-go/mirrord/httpfilter"
	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
)

// mirrorBodyLimit bounds the body of one request copied to a filtered
// mirror: a larger request still reaches the target's app, but is not
// copied (the copy would have to be held whole to be sent in one piece).
const mirrorBodyLimit = 8 << 20

// filterRequest is what an HTTP filter sees of req: Go moves the Host
// header out of the header map, the filters match it as a header.
func filterRequest(req *http.Request) *httpfilter.Request {
	fr := &httpfilter.Request{Method: req.Method, Path: req.URL.RequestURI(), Header: req.Header.Clone()}
	if req.Host != "" {
		fr.Header.Set("Host", req.Host)
	}
	return fr
}

// keepTarget makes req, read from a peer, go on to an app with the
// request target the peer sent, byte for byte: net/http writes the path it
// parsed, escaped again ("/a|b" as "/a%7Cb", a UTF-8 path %-encoded),
// which an app that routes or checks signatures on the raw path tells
// apart. The filters then see that target too. An absolute URI
// ("http://host/path"), CONNECT's authority and "*" are left as parsed,
// and so is a path that starts with "//", which net/http cannot write as
// it came (it would take it for a scheme-relative URL).
func keepTarget(req *http.Request) {
	raw := req.RequestURI
	if !strings.HasPrefix(raw, "/") || strings.HasPrefix(raw, "//") || raw == req.URL.RequestURI() {
		return
	}
	path, query, hasQuery := strings.Cut(raw, "?")
	req.URL.Opaque, req.URL.RawQuery, req.URL.ForceQuery = path, query, hasQuery && query == ""
}

// writeRequest writes req, read from a peer, to w. Request.Write is a
// client's, and two of its ways would change what the app sees: to a
// request without a User-Agent it adds its own ("Go-http-client/1.1"),
// which an empty one in the header map keeps out (and is not written
// itself); and it writes every request as HTTP/1.1, so an HTTP/1.0
// peer's request is given back its version in the request line. (An app
// that took it for HTTP/1.1 would answer in chunks, which an HTTP/1.0
// client cannot read.)
func writeRequest(w io.Writer, req *http.Request) error {
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""}
		defer delete(req.Header, "User-Agent")
	}
	if req.ProtoMajor == 1 && req.ProtoMinor == 0 {
		w = &requestLineVersion{w: w, proto: "HTTP/1.0"}
	}
	return req.Write(w)
}

// requestLineVersion passes writes to w, replacing the version at the end
// of the first line (Request.Write's "HTTP/1.1") with proto. It holds the
// writes back until that line is whole.
type requestLineVersion struct {
	w     io.Writer
	proto string
	held  []byte // what was written before the first line ended
	done  bool
}

func (v *requestLineVersion) Write(p []byte) (int, error) {
	if v.done {
		return v.w.Write(p)
	}
	v.held = append(v.held, p...)
	i := bytes.Index(v.held, []byte("\r\n"))
	if i < 0 {
		return len(p), nil
	}
	v.done = true
	line, rest := v.held[:i+2], v.held[i+2:]
	if head, ok := bytes.CutSuffix(line, []byte(" HTTP/1.1\r\n")); ok {
		line = append(append(head[:len(head):len(head)], ' '), v.proto+"\r\n"...)
	}
	if _, err := v.w.Write(line); err != nil {
		return 0, err
	}
	if _, err := v.w.Write(rest); err != nil {
		return 0, err
	}
	return len(p), nil
}

// dialApp connects to the target's app at orig, from the target's
// network namespace (past the redirect, which spares the agent's own
// connections).
func (in *incoming) dialApp(orig netAddrPort) (net.Conn, error) {
	return in.a.target.dial(context.Background(), "tcp", orig.String(), 10*time.Second)
}

// mirrorFiltered serves a mirrored connection of a port whose mirror
// has an HTTP filter: the target's app gets every byte, untouched, and
// the subscriber gets a copy of only the HTTP/1.x requests that match,
// each on a stream of its own. The local app's answers are dropped. A connection that does not speak
// HTTP/1.x (HTTP/2 included) is not copied at all.
func (in *incoming) mirrorFiltered(c *net.TCPConn, orig netAddrPort, sub *subscription) {
	app, err := in.dialApp(orig)
	if err != nil {
		in.a.log.Warn("incoming: mirror: original app unreachable", "addr", orig.String(), "err", err)
		return
	}
	defer app.Close()
	pr, pw := io.Pipe()
	parsed := make(chan struct{})
	go func() {
		defer close(parsed)
		defer io.Copy(io.Discard, pr) // whatever the parser gave up on
		in.copyMatching(pr, c, orig, sub)
	}()
	done := make(chan struct{})
	go func() {
		relay.Copy(c, app)
		close(done)
	}()
	io.Copy(io.MultiWriter(app, writerIgnoringErrors{pw}), c)
	relay.CloseWrite(app)
	pw.Close()
	<-parsed
	<-done
}

// copyMatching reads the client's requests from r and writes the ones
// sub's filter matches to a stream of sub's session. Request heads are
// read within the steal's size limits (httplimits.go): a head beyond them
// ends the copies of the connection, which the target's app still gets.
// Only a matching request's body is held.
func (in *incoming) copyMatching(r io.Reader, c net.Conn, orig netAddrPort, sub *subscription) {
	tap := &headTap{r: r}
	lim := &headLimiter{r: tap}
	br := bufio.NewReader(lim)
	head, _ := br.Peek(8)
	if !looksLikeHTTP1(head) {
		return
	}
	for {
		lim.start()
		tap.begin(br)
		req, err := http.ReadRequest(br)
		raw := tap.end(br)
		lim.end()
		if err != nil {
			return
		}
		if len(req.TransferEncoding) > 0 {
			raw = nil // the copy's body goes with a length instead
		}
		keepTarget(req)
		if !sub.filter.Match(filterRequest(req)) {
			// Close reads the body to its end. A body that does not parse
			// (a bad chunk or trailer) ends the copies: what follows is
			// not a request the target's app reads as one, and copying it
			// would mirror a smuggled request.
			if err := req.Body.Close(); err != nil {
				return
			}
			continue
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, mirrorBodyLimit+1))
		req.Body.Close()
		if err != nil {
			return
		}
		if len(body) > mirrorBodyLimit {
			continue
		}
		// The request as read, with its body whole: Content-Length
		// rather than the client's chunking, which the copy need not keep.
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		req.TransferEncoding = nil
		if err := in.mirrorRequest(sub, c.RemoteAddr().String(), orig.String(), req, raw); err != nil {
			return
		}
	}
}

// mirrorRequest sends one request to sub on a stream of its own: the
// local app sees each copy on a new connection, so a server that closes
// after one answer (HTTP/1.0, Connection: close) still gets every copy.
func (in *incoming) mirrorRequest(sub *subscription, source, dest string, req *http.Request, raw []byte) error {
	st, err := in.a.openStream(sub.sess)
	if err != nil {
		return err
	}
	if err := protocol.Write(st, &protocol.Incoming{Port: sub.port, Source: source, Dest: dest, Mirror: true}); err != nil {
		st.Close()
		return err
	}
	if err := forwardRequest(st, req, nil, raw); err != nil {
		st.Close()
		return err
	}
	// Closing our side ends the copy; the local app's answer is read and
	// dropped until it closes (or the session ends).
	go io.Copy(io.Discard, st)
	st.Close()
	return nil
}
