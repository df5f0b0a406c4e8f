package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/mirrord-go/mirrord/protocol"
)

// h2Preface opens every HTTP/2 connection (RFC 9113, section 3.4): a
// client with prior knowledge that the server speaks cleartext HTTP/2
// (h2c) sends it first.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxUpgradeBody bounds the body of an h2c upgrade request, which must be
// read whole before the connection switches to HTTP/2. A larger one
// declines the upgrade: the request stays HTTP/1.1.
const maxUpgradeBody = 1 << 20

// h2cUpgrade says whether an HTTP/1.1 request asks to switch to HTTP/2
// (RFC 7540, section 3.2), and returns its decoded HTTP2-Settings.
func h2cUpgrade(req *http.Request) (settings []byte, ok bool) {
	if req.ProtoAtLeast(2, 0) || !httpguts.HeaderValuesContainsToken(req.Header["Upgrade"], "h2c") ||
		!httpguts.HeaderValuesContainsToken(req.Header["Connection"], "HTTP2-Settings") {
		return nil, false
	}
	values := req.Header.Values("HTTP2-Settings")
	if len(values) != 1 {
		return nil, false
	}
	settings, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(values[0], "="))
	return settings, err == nil
}

// acceptH2cUpgrade switches a filtered HTTP/1.1 connection to HTTP/2 for
// an h2c upgrade request: it reads the request's body, answers 101 and
// serves the connection as HTTP/2, the upgrade request being its stream 1.
// It returns false, without writing anything, when the body is too large;
// req then goes on as an HTTP/1.1 request without the upgrade.
func (in *incoming) acceptH2cUpgrade(c net.Conn, br *bufio.Reader, orig netAddrPort, req *http.Request, settings []byte) bool {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxUpgradeBody+1))
	if err != nil {
		return true // the peer is gone
	}
	for _, h := range []string{"Upgrade", "Connection", "HTTP2-Settings"} {
		req.Header.Del(h)
	}
	if len(body) > maxUpgradeBody {
		req.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), req.Body), req.Body}
		return false
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	if _, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"); err != nil {
		return true
	}
	in.serveH2(bufferedConn{c, br}, orig, req, settings, nil)
	return true
}

// serveH2 serves a filtered HTTP/2 cleartext connection: the agent ends
// HTTP/2 itself and sends each request (stream) on to the first session
// whose filter matches it, or to the target's own app, so that one
// connection's streams may go to several places. A peer that came with
// prior knowledge gets HTTP/2 upstreams too (the app speaks h2c); after an
// h2c upgrade (upgrade is the request that asked for it, settings its
// HTTP2-Settings) the upstreams get HTTP/1.1, which is what the peer knew
// the app to speak. Inside a TLS connection the agent ended (e), the
// target's app gets HTTP/2 over TLS again, and local apps h2 on their
// streams (the local side adds TLS per https_delivery).
func (in *incoming) serveH2(c net.Conn, orig netAddrPort, upgrade *http.Request, settings []byte, e *endedTLS) {
	ctx, cancel := context.WithCancel(context.Background())
	errLog := slog.NewLogLogger(in.a.log.Handler(), slog.LevelDebug)
	rt := &h2Router{in: in, orig: orig, source: c.RemoteAddr().String(), http1: upgrade != nil, tls: e,
		errLog: errLog, proxies: map[*yamux.Session]*h2Upstream{}}
	// With no stream open, the connection waits as an idle HTTP/1.x one
	// does, and may be ended for newer ones (httplimits.go).
	w := in.waiting.add(c)
	defer w.stop()
	// After an upgrade the server says "idle" once as it starts, while
	// the upgrade request's stream is still open.
	skipIdle := upgrade != nil
	// The server bounds the work of one connection: at most
	// MaxConcurrentStreams handlers run (100, as envoy; x/net's default
	// is 250, nginx's 128), and a peer that resets streams faster than
	// they end (rapid reset, CVE-2023-44487) is sent a GOAWAY
	// (ENHANCE_YOUR_CALM) once 4×MaxConcurrentStreams wait. Frames of at
	// most 16 KiB (the protocol's initial size): the framer keeps a buffer
	// of the largest frame read per connection.
	h2conf := &http.HTTP2Config{MaxConcurrentStreams: 100, MaxReadFrameSize: 16 << 10}
	base := &http.Server{ErrorLog: errLog, MaxHeaderBytes: maxHeaderBytes, HTTP2: h2conf, ConnState: func(_ net.Conn, state http.ConnState) {
		switch {
		case state == http.StateIdle && skipIdle:
			skipIdle = false
		case state == http.StateIdle:
			w.wait(time.Time{})
		case state == http.StateActive:
			w.stop()
		}
	}}
	//lint:ignore SA1019 see ServeConn below
	opts := &http2.ServeConnOpts{Context: ctx, BaseConfig: base, Handler: rt, Settings: settings}
	if upgrade != nil {
		opts.UpgradeRequest = upgrade.WithContext(ctx)
	}
	//lint:ignore SA1019 net/http serves h2c only from a listener and has no h2c upgrade; this is a connection already read from
	(&http2.Server{}).ServeConn(c, opts)
	// Handlers still running end with ctx; the last one out closes the
	// upstream connections.
	cancel()
	rt.close()
}

// h2Router routes the requests of one HTTP/2 connection.
type h2Router struct {
	in     *incoming
	orig   netAddrPort
	source string
	http1  bool // upstreams speak HTTP/1.1 rather than h2c
	tls    *endedTLS
	errLog *log.Logger

	mu      sync.Mutex
	proxies map[*yamux.Session]*h2Upstream // nil key: the target's app
	active  int                            // handlers running
	closed  bool                           // the peer's connection is done
}

// h2Upstream is where requests routed one way go: a reverse proxy whose
// connections lead to a session's local app (one stream each) or to the
// target's app.
type h2Upstream struct {
	proxy *httputil.ReverseProxy
	tr    *http.Transport
}

func (rt *h2Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !rt.enter() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	defer rt.leave()
	if rt.http1 && req.Method == http.MethodConnect {
		// An HTTP/1.1 CONNECT is a tunnel: the transport would write
		// the stream's data unframed on the upstream connection that the
		// next requests share, where the app reads it as the start of
		// the next request (one stream's bytes smuggled into another's).
		w.WriteHeader(http.StatusNotImplemented)
		return
	}
	keepTarget(req)
	fr := filterRequest(req)
	rt.upstream(rt.in.route(rt.orig.port, fr)).proxy.ServeHTTP(w, req)
}

// upstream returns the way to owner's local app, or to the target's app
// when owner is nil.
func (rt *h2Router) upstream(owner *yamux.Session) *h2Upstream {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if u := rt.proxies[owner]; u != nil {
		return u
	}
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		if owner == nil && rt.tls != nil {
			return rt.tls.dialApp(ctx, rt.in, rt.orig)
		}
		if owner == nil {
			return rt.in.a.target.dial(ctx, "tcp", rt.orig.String(), 10*time.Second)
		}
		st, err := rt.in.a.openStream(owner)
		if err != nil {
			return nil, err
		}
		inc := &protocol.Incoming{Port: rt.orig.port, Source: rt.source, Dest: rt.orig.String()}
		if rt.tls != nil {
			inc.TLS = rt.tls.incoming("h2")
		}
		if err := protocol.Write(st, inc); err != nil {
			st.Close()
			return nil, err
		}
		return st, nil
	}
	var protos http.Protocols
	scheme := "http"
	switch {
	case rt.http1:
		protos.SetHTTP1(true)
	case owner == nil && rt.tls != nil:
		// HTTP/2 over TLS, which the app negotiated (ALPN) when the
		// agent's probe connected: serveTLS offers peers h2 only then.
		protos.SetHTTP2(true)
		scheme = "https"
	default:
		protos.SetUnencryptedHTTP2(true)
	}
	tr := &http.Transport{
		DialContext:        dial,
		Protocols:          &protos,
		DisableCompression: true, // bodies pass as they are
		IdleConnTimeout:    90 * time.Second,
	}
	if scheme == "https" {
		tr.DialTLSContext = dial
	}
	orig := rt.orig.String()
	u := &h2Upstream{tr: tr, proxy: &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = scheme, orig
			// Rewrite drops these; the app is to see what the peer sent.
			for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
		},
		Transport:     tr,
		FlushInterval: -1, // streams (gRPC, server-sent events) flow as they come
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			rt.errLog.Printf("incoming: h2: %s %s: %v", req.Method, req.URL.Path, err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}}
	rt.proxies[owner] = u
	return u
}

func (rt *h2Router) enter() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return false
	}
	rt.active++
	return true
}

func (rt *h2Router) leave() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.active--
	if rt.closed && rt.active == 0 {
		rt.closeUpstreamsLocked()
	}
}

// close marks the peer's connection done; the upstream connections are
// closed now or when the last handler leaves.
func (rt *h2Router) close() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.closed = true
	if rt.active == 0 {
		rt.closeUpstreamsLocked()
	}
}

func (rt *h2Router) closeUpstreamsLocked() {
	for _, u := range rt.proxies {
		u.tr.CloseIdleConnections()
	}
}
