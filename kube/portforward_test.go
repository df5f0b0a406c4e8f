package kube

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gws "github.com/gorilla/websocket"
	"github.com/hashicorp/yamux"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/mirrord-go/mirrord/protocol"
)

// fakePortForwardServer refuses the SPDY upgrade and serves the WebSocket
// port-forward protocol as the container runtime does: the port on both
// channels first, then the data channel echoed back. A data message
// "fail" makes it report an error on the error channel.
func fakePortForwardServer(t *testing.T, maxMessage *atomic.Int64) *httptest.Server {
	up := gws.Upgrader{Subprotocols: []string{wsProtocol}}
	return httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/pods/agent-pod/portforward") {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "SPDY is not passed here", http.StatusBadRequest)
			return
		}
		if r.URL.Query().Get("ports") != strconv.Itoa(AgentPort) {
			http.Error(w, `query parameter "port" is required`, http.StatusBadRequest)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		port := binary.LittleEndian.AppendUint16(nil, AgentPort)
		ws.WriteMessage(gws.BinaryMessage, append([]byte{wsDataChannel}, port...))
		ws.WriteMessage(gws.BinaryMessage, append([]byte{wsErrorChannel}, port...))
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if int64(len(msg)) > maxMessage.Load() {
				maxMessage.Store(int64(len(msg)))
			}
			if len(msg) == 0 || msg[0] != wsDataChannel {
				t.Errorf("message on channel %v", msg[:min(len(msg), 1)])
				return
			}
			if string(msg[1:]) == "fail" {
				ws.WriteMessage(gws.BinaryMessage, append([]byte{wsErrorChannel}, "connection refused"...))
				return
			}
			ws.WriteMessage(gws.BinaryMessage, msg)
		}
	}))
}

// TestPortForwardWebSocket: where the SPDY upgrade is refused, connections
// go over the WebSocket protocol: the port prefixes are skipped, data is
// sent in unfragmented messages of at most 32 KiB, and an error from the
// runtime ends the connection.
func TestPortForwardWebSocket(t *testing.T) {
	var maxMessage atomic.Int64
	srv := fakePortForwardServer(t, &maxMessage)
	defer srv.Close()
	cfg := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{Namespace: "ns", PodName: "agent-pod", client: &Client{Config: cfg, Clientset: cs}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := a.PortForward(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	want := bytes.Repeat([]byte("0123456789"), 20000) // 200 kB: several messages
	go c.Write(want)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("echo: %v (equal %v)", err, bytes.Equal(got, want))
	}
	if m := maxMessage.Load(); m > 1+wsMaxPayload {
		t.Errorf("largest message %d bytes, want at most %d", m, 1+wsMaxPayload)
	}

	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	c2.Write([]byte("fail"))
	if n, err := c2.Read(make([]byte, 10)); err == nil {
		t.Errorf("read %d bytes after the runtime reported an error, want the connection closed", n)
	}
}

// TestYamuxPing: the agent's yamux session answers the probe's ping, and
// the connection then serves a yamux client as if it were new.
func TestYamuxPing(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	sess, err := yamux.Server(server, protocol.MuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	client.SetDeadline(time.Now().Add(5 * time.Second))
	if err := yamuxPing(client); err != nil {
		t.Fatal(err)
	}
	cs, err := yamux.Client(client, protocol.MuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	go func() {
		if st, err := cs.OpenStream(); err == nil {
			st.Write([]byte("hello"))
			st.Close()
		}
	}()
	st, err := sess.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(st); err != nil || string(b) != "hello" {
		t.Fatalf("stream after the ping: %q, %v", b, err)
	}

	// Something that is not a yamux server is no agent.
	a, b := net.Pipe()
	defer a.Close()
	go func() { io.ReadFull(b, make([]byte, 12)); b.Write([]byte("HTTP/1.1 400")); b.Close() }()
	if err := yamuxPing(a); err == nil {
		t.Error("a non-yamux answer passed the ping")
	}
}
