package agent

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mirrord-go/mirrord/protocol"
)

// TestUnattended: Options.Unattended runs once the last client has been
// gone for UnattendedAfter — long before the agent's TTL and its wait for
// a dropped client — and not while a client is connected, nor when the
// client is back within that time.
func TestUnattended(t *testing.T) {
	const after = 150 * time.Millisecond
	calls := make(chan time.Time, 10)
	ready := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Run(ctx, Options{Listen: "127.0.0.1:0", TTL: time.Minute, Ready: func(a net.Addr) { ready <- a },
		UnattendedAfter: after, Unattended: func() { calls <- time.Now() }})
	addr := (<-ready).String()
	connect := func() *yamux.Session {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		s, err := yamux.Client(c, protocol.MuxConfig())
		if err != nil {
			t.Fatal(err)
		}
		call(t, s, &protocol.Hello{Version: protocol.Version, ReconnectSeconds: 60, Session: "s"})
		return s
	}
	noCall := func(d time.Duration, why string) {
		t.Helper()
		select {
		case <-calls:
			t.Fatalf("Unattended ran %s", why)
		case <-time.After(d):
		}
	}

	s := connect()
	noCall(3*after, "while a client was connected")
	// Taken before Close: the agent may see the connection end before
	// Close returns, and its timer starts only then.
	left := time.Now()
	s.Close()
	select {
	case at := <-calls:
		if d := at.Sub(left); d < after {
			t.Errorf("Unattended ran %v after the client left, before UnattendedAfter (%v)", d, after)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Unattended did not run within 5 s of the last client leaving (the client's reconnect wait is 60 s)")
	}

	// Back within UnattendedAfter: nothing.
	s = connect()
	s.Close()
	time.Sleep(after / 3)
	s = connect()
	noCall(3*after, "although the client came back in time")
	s.Close()
	select {
	case <-calls:
	case <-time.After(5 * time.Second):
		t.Fatal("Unattended did not run after the client left again")
	}
}
