package kube

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	gws "github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/transport/websocket"
	"k8s.io/streaming/pkg/httpstream"
)

// PortForward listens on a free port of 127.0.0.1 and connects each
// connection made to it to the agent's port in its pod, through the API
// server; it returns the local address and stops when ctx ends.
//
// Each local connection is a stream pair on one SPDY connection (the
// port-forward protocol kubectl falls back to; the API server and the
// kubelet pass it through as bytes), or, where the cluster refuses the SPDY
// upgrade (a proxy that passes only WebSockets), a WebSocket of its own with
// the "v4.channel.k8s.io" port-forward protocol. kubectl's first choice,
// SPDY tunnelled in a WebSocket, costs more CPU on both ends (the API server
// translates every frame), and so does the WebSocket protocol in the
// container runtime, which copies every message.
func (a *Agent) PortForward(ctx context.Context, log *slog.Logger) (string, error) {
	d := a.dialer
	if d == nil {
		d = newPodDialer(a, log)
		a.dialer = d
	}
	if !d.hasFirst() {
		// Made now, so that a cluster that refuses port-forwarding is
		// reported here rather than as a failing connection.
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		first, err := d.dial(dctx)
		cancel()
		if err != nil {
			return "", fmt.Errorf("port-forward to the agent pod %s/%s: %w", a.Namespace, a.PodName, err)
		}
		d.keep(first)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.close()
		return "", fmt.Errorf("port-forward to the agent pod %s/%s: %w", a.Namespace, a.PodName, err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
		d.close()
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go d.forward(ctx, c)
		}
	}()
	return ln.Addr().String(), nil
}

func newPodDialer(a *Agent, log *slog.Logger) *podDialer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := a.client.Clientset.CoreV1().RESTClient().Post().Resource("pods").Namespace(a.Namespace).Name(a.PodName).SubResource("portforward").URL()
	port := AgentPort
	if a.Port != 0 {
		port = a.Port
	}
	return &podDialer{cfg: a.client.Config, url: u, port: port, log: log}
}

// podDialer opens connections to one port of one pod.
type podDialer struct {
	cfg  *rest.Config
	url  *url.URL
	port int
	log  *slog.Logger

	mu        sync.Mutex
	webSocket bool                  // SPDY was refused: use WebSockets from now on
	spdy      httpstream.Connection // shared by the SPDY streams; nil until needed
	closed    bool
	reqID     int
	first     io.ReadWriteCloser // made in advance, for the first local connection
}

// keep holds c, a connection to the pod's port, for the next dial.
func (d *podDialer) keep(c io.ReadWriteCloser) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.first != nil {
		d.first.Close()
	}
	d.first = c
}

func (d *podDialer) hasFirst() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.first != nil
}

// forward connects local to the pod's port and copies both ways until
// either side ends (a yamux session needs no half-close).
func (d *podDialer) forward(ctx context.Context, local net.Conn) {
	defer local.Close()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	remote, err := d.dial(dctx)
	cancel()
	if err != nil {
		d.log.Warn("port-forward to the agent", "err", err)
		return
	}
	defer remote.Close()
	stop := context.AfterFunc(ctx, func() { local.Close(); remote.Close() })
	defer stop()
	done := make(chan struct{}, 2)
	go func() { copyTo(remote, local); done <- struct{}{} }()
	go func() { copyTo(local, remote); done <- struct{}{} }()
	<-done
}

// copyTo copies until src ends or dst fails; frames of up to 256 KiB
// (yamux data frames) go on in one write.
func copyTo(dst io.Writer, src io.Reader) {
	buf := make([]byte, 256<<10)
	io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, buf)
}

// onlyReader and onlyWriter hide ReadFrom/WriteTo, which would copy
// through a 32 KiB buffer of their own.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

func (d *podDialer) dial(ctx context.Context) (io.ReadWriteCloser, error) {
	d.mu.Lock()
	ws, first := d.webSocket, d.first
	d.first = nil
	d.mu.Unlock()
	if first != nil {
		return first, nil
	}
	if ws {
		return d.dialWebSocket(ctx)
	}
	c, err := d.dialSPDY(ctx)
	if err == nil || !errors.Is(err, errSPDYConnect) {
		return c, err
	}
	wc, wsErr := d.dialWebSocket(ctx)
	if wsErr != nil {
		return nil, fmt.Errorf("%w; WebSocket: %w", err, wsErr)
	}
	d.log.Debug("port-forward: SPDY refused, using the WebSocket protocol", "err", err)
	d.mu.Lock()
	d.webSocket = true
	d.mu.Unlock()
	return wc, nil
}

// errSPDYConnect marks a failure to open the SPDY connection itself (not a
// stream on it): the WebSocket protocol may still work.
var errSPDYConnect = errors.New("SPDY port-forward connection")

// probeTimeout bounds one attempt to reach the agent, ping included.
const probeTimeout = 5 * time.Second

// probe opens a connection to the pod's port and checks that the agent
// answers a yamux ping on it; the connection is then as good as new for a
// yamux client. Only SPDY is tried unless allowWS.
func (d *podDialer) probe(ctx context.Context, allowWS bool) (io.ReadWriteCloser, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	type result struct {
		conn io.ReadWriteCloser
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var c io.ReadWriteCloser
		var err error
		if allowWS {
			c, err = d.dial(ctx)
		} else {
			c, err = d.dialSPDY(ctx)
		}
		if err == nil {
			stop := context.AfterFunc(ctx, func() { c.Close() })
			err = yamuxPing(c)
			if !stop() || err != nil {
				c.Close()
				c, err = nil, cmp.Or(err, ctx.Err())
			}
		}
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.conn, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// yamuxPing sends a yamux ping and reads its answer (yamux spec.md: a
// 12-byte header: version 0, type 2 = ping, flags SYN 1 / ACK 2, stream 0,
// and an opaque value the answer repeats). A yamux server answers before
// it sends anything else: its own keepalive pings start an interval later.
func yamuxPing(rw io.ReadWriter) error {
	const typePing, flagSYN, flagACK = 2, 1, 2
	var hdr [12]byte
	hdr[1] = typePing
	binary.BigEndian.PutUint16(hdr[2:], flagSYN)
	binary.BigEndian.PutUint32(hdr[8:], 0x6d697272) // "mirr"
	if _, err := rw.Write(hdr[:]); err != nil {
		return err
	}
	var ans [12]byte
	if _, err := io.ReadFull(rw, ans[:]); err != nil {
		return fmt.Errorf("the agent did not answer: %w", err)
	}
	if ans[1] != typePing || binary.BigEndian.Uint16(ans[2:])&flagACK == 0 || !bytes.Equal(ans[8:], hdr[8:]) {
		return fmt.Errorf("unexpected answer to a yamux ping: % x", ans)
	}
	return nil
}

// The WebSocket port-forward protocol: every message starts with a channel
// byte (data 0, error 1 for the first port); the server first sends the
// port number (2 bytes, little endian) on each channel; text on the error
// channel says why forwarding failed. The container runtime reads each
// message as one frame, so messages are never fragmented.
const (
	wsProtocol     = "v4.channel.k8s.io"
	wsDataChannel  = 0
	wsErrorChannel = 1
	wsMaxPayload   = 32 << 10 // data bytes per message
)

func (d *podDialer) dialWebSocket(ctx context.Context) (io.ReadWriteCloser, error) {
	rt, holder, err := websocket.RoundTripperFor(d.cfg)
	if err != nil {
		return nil, err
	}
	u := *d.url
	q := u.Query()
	q.Set("ports", strconv.Itoa(d.port)) // PodPortForwardOptions.Ports
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	ws, err := websocket.Negotiate(rt, holder, req, wsProtocol)
	if err != nil {
		return nil, err
	}
	return &wsConn{ws: ws, prefix: [2]int{2, 2}}, nil
}

// wsConn is one port-forward connection over the WebSocket protocol.
type wsConn struct {
	ws *gws.Conn
	// Reads come from one goroutine.
	cur    io.Reader // rest of the data message being read
	prefix [2]int    // port bytes still to skip, per channel
	// Writes may come from several.
	wmu sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.cur != nil {
			n, err := c.cur.Read(p)
			if err == io.EOF {
				c.cur = nil
				err = nil
			}
			if n > 0 || err != nil {
				return n, err
			}
			continue
		}
		typ, r, err := c.ws.NextReader()
		if err != nil {
			if gws.IsCloseError(err, gws.CloseNormalClosure) {
				return 0, io.EOF
			}
			return 0, err
		}
		var ch [1]byte
		if typ != gws.BinaryMessage {
			continue
		}
		if _, err := io.ReadFull(r, ch[:]); err != nil || ch[0] > wsErrorChannel {
			continue
		}
		if skip := c.prefix[ch[0]]; skip > 0 {
			n, _ := io.CopyN(io.Discard, r, int64(skip))
			c.prefix[ch[0]] -= int(n)
		}
		if ch[0] == wsErrorChannel {
			if msg, _ := io.ReadAll(r); len(msg) > 0 {
				return 0, fmt.Errorf("port-forward: %s", msg)
			}
			continue
		}
		c.cur = r
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), wsMaxPayload)]
		w, err := c.ws.NextWriter(gws.BinaryMessage)
		if err != nil {
			return written, err
		}
		w.Write([]byte{wsDataChannel})
		w.Write(chunk)
		if err := w.Close(); err != nil {
			return written, err
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

func (c *wsConn) Close() error {
	c.wmu.Lock()
	c.ws.WriteControl(gws.CloseMessage, gws.FormatCloseMessage(gws.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	return c.ws.Close()
}

// dialSPDY opens a data stream (and its error stream) on the shared SPDY
// connection, dialing it first when there is none. When ctx ends before
// the streams are open, the connection is dropped.
func (d *podDialer) dialSPDY(ctx context.Context) (io.ReadWriteCloser, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("port-forward stopped")
	}
	if d.spdy != nil {
		select {
		case <-d.spdy.CloseChan():
			d.spdy = nil
		default:
		}
	}
	if d.spdy == nil {
		conn, err := d.dialSPDYConn()
		if err != nil {
			d.mu.Unlock()
			return nil, fmt.Errorf("%w: %w", errSPDYConnect, err)
		}
		d.spdy = conn
	}
	conn := d.spdy
	d.reqID++
	id := d.reqID
	d.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { d.drop(conn) })
	defer stop()
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(d.port))
	h.Set(corev1.PortForwardRequestIDHeader, strconv.Itoa(id))
	errStream, err := conn.CreateStream(h)
	if err != nil {
		d.drop(conn)
		return nil, err
	}
	errStream.Close() // nothing to send on it
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		d.drop(conn)
		return nil, err
	}
	if !stop() {
		return nil, ctx.Err()
	}
	s := &spdyConn{Stream: data, conn: conn, errStream: errStream, d: d}
	go s.watchErrors()
	return s, nil
}

// drop closes a SPDY connection and forgets it, so that the next stream
// gets a new one. After the runtime reported an error on a stream pair,
// its connection may never answer another (containerd 1.6 does not reset
// the failed streams; client-go's port-forward closes the connection too).
func (d *podDialer) drop(conn httpstream.Connection) {
	d.mu.Lock()
	if d.spdy == conn {
		d.spdy = nil
	}
	d.mu.Unlock()
	conn.Close()
}

func (d *podDialer) dialSPDYConn() (httpstream.Connection, error) {
	transport, upgrader, err := spdy.RoundTripperFor(d.cfg)
	if err != nil {
		return nil, err
	}
	dialer := spdy.NewDialerForStreaming(upgrader, &http.Client{Transport: transport}, http.MethodPost, d.url)
	conn, _, err := dialer.Dial(portforward.PortForwardProtocolV1Name)
	return conn, err
}

func (d *podDialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.first != nil {
		d.first.Close()
		d.first = nil
	}
	if d.spdy != nil {
		d.spdy.Close()
		d.spdy = nil
	}
}

// spdyConn is one port-forward connection on a shared SPDY connection.
type spdyConn struct {
	httpstream.Stream
	conn      httpstream.Connection
	errStream httpstream.Stream
	d         *podDialer
	once      sync.Once
}

// watchErrors reports what the runtime says on the error stream (e.g. that
// nothing listens on the port) and then drops the SPDY connection.
func (s *spdyConn) watchErrors() {
	msg, err := io.ReadAll(s.errStream)
	if len(msg) > 0 {
		s.d.log.Debug("port-forward to the agent: the pod answered", "err", string(msg))
		s.d.drop(s.conn)
	} else if err != nil {
		s.Stream.Reset()
	}
}

func (s *spdyConn) Close() error {
	s.once.Do(func() {
		s.Stream.Reset()
		s.conn.RemoveStreams(s.Stream, s.errStream)
	})
	return nil
}
