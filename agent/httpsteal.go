package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/httpfilter"
	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
)

// httpMethods start every HTTP/1.x request. On a filtered port, HTTP/2
// with prior knowledge is known by its preface (h2Preface); anything else
// (TLS, another protocol) passes through to the target's app untouched.
var httpMethods = [][]byte{[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("DELETE "), []byte("HEAD "),
	[]byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "), []byte("TRACE ")}

func looksLikeHTTP1(b []byte) bool {
	for _, m := range httpMethods {
		if bytes.HasPrefix(b, m) {
			return true
		}
	}
	return false
}

// upstream is one keep-alive connection that requests are sent to: the
// target's app, or one client's local app through a stream.
type upstream struct {
	conn net.Conn
	r    *bufio.Reader
	tap  *headTap
}

func newUpstream(conn net.Conn) *upstream {
	tap := &headTap{r: conn}
	return &upstream{conn: conn, r: bufio.NewReader(tap), tap: tap}
}

func (u *upstream) close() {
	if u != nil && u.conn != nil {
		u.conn.Close()
	}
}

// closed says whether the other end has closed the connection while it was
// idle (an app's keep-alive timeout): a request written to it would get no
// answer. It does not wait.
func (u *upstream) closed() bool {
	if u.r.Buffered() > 0 {
		return false // an early answer, or garbage: the request will tell
	}
	if sc, ok := u.conn.(syscall.Conn); ok {
		// A socket: a read with an expired deadline would not even
		// look, so peek without waiting.
		raw, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		closed := false
		raw.Read(func(fd uintptr) bool {
			var b [1]byte
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			closed = err == nil && n == 0 || err != nil && err != unix.EAGAIN && err != unix.EINTR
			return true
		})
		return closed
	}
	// A stream: it reports its end before it looks at the deadline.
	u.conn.SetReadDeadline(time.Now())
	_, err := u.r.Peek(1)
	u.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// serveFiltered takes an HTTP/1.x connection apart request by request:
// each request goes to the first session whose filter matches it, or to
// the target's own app. An upgrade (WebSocket) that its side accepts with
// a 101 is spliced whole to that side from then on. Request heads are
// read within the limits of httplimits.go.
func (in *incoming) serveFiltered(c net.Conn, orig netAddrPort) {
	in.serveHTTP(c, orig, nil)
}

// serveHTTP is serveFiltered for c, a cleartext connection (e nil) or the
// inside of a TLS connection the agent ended (e says how): then the
// target's app is reached with TLS again, and the local side is told.
func (in *incoming) serveHTTP(c net.Conn, orig netAddrPort, e *endedTLS) {
	tap := &headTap{r: c}
	lim := &headLimiter{r: tap}
	br := bufio.NewReader(lim)
	w := in.waiting.add(c)
	defer w.stop()
	w.wait(time.Now().Add(firstBytesTimeout))
	head, err := br.Peek(8)
	if err != nil && len(head) == 0 {
		return
	}
	var app *upstream
	defer func() { app.close() }()
	dialApp := func() (*upstream, error) {
		if app != nil && !app.closed() {
			return app, nil
		}
		app.close()
		conn, err := e.dialApp(context.Background(), in, orig)
		if err != nil {
			return nil, err
		}
		app = newUpstream(conn)
		return app, nil
	}
	if e == nil && bytes.HasPrefix([]byte(h2Preface), head) {
		// (Inside TLS, HTTP/2 is what ALPN says: serveTLS.)
		// HTTP/2 with prior knowledge; its preface comes whole.
		w.setDeadline(time.Now().Add(10 * time.Second))
		head, _ = br.Peek(len(h2Preface))
		if string(head) == h2Preface {
			w.stop()
			in.serveH2(bufferedConn{c, br}, orig, nil, nil, nil)
			return
		}
	}
	if !looksLikeHTTP1(head) {
		w.stop()
		u, err := dialApp()
		if err != nil {
			return
		}
		spliceBuffered(c, br, u.conn)
		return
	}
	clients := map[*yamux.Session]*upstream{}
	defer func() {
		for _, u := range clients {
			u.close()
		}
	}()
	for {
		// Between requests the connection waits as long as the peer
		// likes (unless newer waiting ones need its place); once the
		// next head has begun, it must come whole within headTimeout.
		w.wait(time.Time{})
		if _, err := br.Peek(1); err != nil {
			return
		}
		w.setDeadline(time.Now().Add(headTimeout))
		lim.start()
		tap.begin(br)
		req, err := http.ReadRequest(br)
		rawReq := tap.end(br)
		tooLarge := lim.end()
		evicted := w.stop()
		if err != nil {
			if tooLarge {
				refuse(c, http.StatusRequestHeaderFieldsTooLarge)
			} else if evicted || isTimeout(err) {
				refuse(c, http.StatusRequestTimeout)
			}
			return
		}
		keepTarget(req)
		if settings, ok := h2cUpgrade(req); ok && e == nil {
			// (h2c is cleartext only, RFC 9113 section 3.1: inside TLS
			// the request passes with its headers.)
			// The agent accepts the upgrade itself, so that each
			// HTTP/2 stream is routed on its own.
			for _, u := range clients {
				u.close()
			}
			clear(clients)
			app.close()
			app = nil
			if in.acceptH2cUpgrade(c, br, orig, req, settings) {
				return
			}
		}
		fr := filterRequest(req)
		var dst *upstream
		owner := in.route(orig.port, fr)
		if owner != nil {
			dst = clients[owner]
			if dst != nil && dst.closed() {
				dst.close()
				dst = nil
			}
		}
		if owner != nil && dst == nil {
			st, err := in.a.openStream(owner)
			switch {
			case isSessionFull(err):
				// Past the session's limit the request is the
				// target's app's, as if it did not match.
				in.a.log.Warn("incoming: session at its limit; the target's app serves the request", "port", orig.port, "err", err)
				owner = nil
			case err != nil:
				return
			default:
				if protocol.Write(st, &protocol.Incoming{Port: orig.port, Source: c.RemoteAddr().String(), Dest: orig.String(), TLS: e.incoming("http/1.1")}) != nil {
					st.Close()
					return
				}
				// A peer that does not read its answers keeps their
				// bytes on this stream: when the session's budget
				// resets it, the peer's connection goes too.
				st.OnAbort(func() { relay.Abort(c) })
				dst = newUpstream(st)
				clients[owner] = dst
			}
		}
		if owner == nil {
			if dst, err = dialApp(); err != nil {
				return
			}
		}
		if err := forwardRequest(dst.conn, req, br, rawReq); err != nil {
			return
		}
		readResponse := func() (*http.Response, []byte, error) {
			dst.tap.begin(dst.r)
			resp, err := http.ReadResponse(dst.r, req)
			return resp, dst.tap.end(dst.r), err
		}
		resp, rawResp, err := readResponse()
		for err == nil && resp.StatusCode/100 == 1 && resp.StatusCode != http.StatusSwitchingProtocols {
			// An interim answer (100 Continue, 103 Early Hints): the
			// peer gets it, and the final answer follows.
			if writeInterim(c, resp) != nil {
				return
			}
			resp, rawResp, err = readResponse()
		}
		if err != nil {
			return
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// An upgrade (WebSocket): after the 101 the bytes are no
			// longer HTTP, and the connection belongs to the side that
			// accepted it. Splice both ways with what each side
			// already buffered. (An upgrade that is declined leaves
			// the connection HTTP, request by request.)
			if writePooled(c, resp, dst.r) != nil {
				return
			}
			relay.Splice(bufferedConn{c, br}, bufferedConn{dst.conn, dst.r})
			return
		}
		drop := false
		if owner != nil && resp.Close && !req.Close && req.ProtoAtLeast(1, 1) {
			// The local app ends its connection (an HTTP/1.0 server,
			// say): the next request for it gets a new one, while the
			// peer's connection, which without mirrord is the target
			// app's, stays open for the requests that follow.
			keepAlive(resp)
			delete(clients, owner)
			drop = true
			rawResp = nil // changed
		}
		err = forwardResponse(c, resp, dst.r, rawResp)
		resp.Body.Close()
		if drop {
			dst.close()
		}
		// Otherwise a response with "Connection: close" closes the
		// peer's connection too, as it would without mirrord.
		if err != nil || req.Close || resp.Close {
			return
		}
	}
}

// keepAlive makes resp, which its server sent with "Connection: close",
// one that leaves an HTTP/1.1 connection open: HTTP/1.1, no Connection
// header, and chunked when its length is unknown.
func keepAlive(resp *http.Response) {
	resp.Close = false
	resp.Header.Del("Connection")
	resp.Header.Del("Keep-Alive")
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	if resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 {
		resp.TransferEncoding = []string{"chunked"}
	}
}

// writeResponse writes resp, which is being read from src, to the peer
// through bw: a response that src holds whole leaves in one write, while
// one whose body is still coming (a stream, server-sent events) is passed
// on as it arrives, since bw is flushed whenever reading on would wait.
func writeResponse(bw *bufio.Writer, resp *http.Response, src *bufio.Reader) error {
	resp.Body = flushingBody{resp.Body, bw, src}
	// Only Write: bufio.Writer's ReadFrom would read the body into its
	// buffer, which the body's reads flush from under it.
	if err := resp.Write(struct{ io.Writer }{bw}); err != nil {
		return err
	}
	return bw.Flush()
}

// writeInterim writes a 1xx response, which has no body, to the peer
// (resp.Write would add a Content-Length, which RFC 9110 forbids there).
func writeInterim(c net.Conn, resp *http.Response) error {
	bw, done := pooledWriter(c)
	defer done()
	reason := strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)))
	if reason == "" {
		reason = http.StatusText(resp.StatusCode)
	}
	fmt.Fprintf(bw, "HTTP/1.1 %03d %s\r\n", resp.StatusCode, reason)
	resp.Header.Write(bw)
	bw.WriteString("\r\n")
	return bw.Flush()
}

// flushingBody flushes bw before a read of the body that src cannot
// answer from its buffer.
type flushingBody struct {
	io.ReadCloser
	bw  *bufio.Writer
	src *bufio.Reader
}

func (b flushingBody) Read(p []byte) (int, error) {
	if b.src.Buffered() == 0 {
		if err := b.bw.Flush(); err != nil {
			return 0, err
		}
	}
	return b.ReadCloser.Read(p)
}

// bufferedConn is a connection whose first bytes were already read into a
// bufio.Reader: reads go through the reader, writes and CloseWrite to the
// connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite half-closes the connection (relay.Splice ends each direction
// with it).
func (b bufferedConn) CloseWrite() error {
	relay.CloseWrite(b.Conn)
	return nil
}

// route returns the session whose filter takes a request to port: the
// first that matches among those subscribed now (sessions come and go
// while a peer keeps its connection alive), or nil for the target's app.
func (in *incoming) route(port uint16, r *httpfilter.Request) *yamux.Session {
	in.mu.Lock()
	subs := slices.Clone(in.subs[port]) // unsubscribe deletes in place
	in.mu.Unlock()
	for _, s := range subs {
		if s.filter != nil && s.filter.Match(r) {
			return s.sess
		}
	}
	return nil
}

// spliceBuffered splices c (whose first bytes wait in br) with app.
func spliceBuffered(c net.Conn, br *bufio.Reader, app net.Conn) {
	relay.Splice(bufferedConn{c, br}, app)
}
