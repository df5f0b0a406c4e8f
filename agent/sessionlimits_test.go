package agent

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mirrord-go/mirrord/protocol"
)

// TestSessionConnectionLimit: past MaxConnections open streams, a
// session's dial is refused with ENOBUFS and a message naming the limit;
// another session is not affected, and once the session closes one
// connection it may open one again.
func TestSessionConnectionLimit(t *testing.T) {
	const limit = 4
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveEach(ln, func(c net.Conn) { defer c.Close(); c.Read(make([]byte, 1)) })
	addr, _ := runAgent(t, Options{MaxConnections: limit})
	session := func() *yamux.Session {
		return dialAgent(t, addr, &protocol.Hello{Version: protocol.Version, Client: "test"})
	}
	dial := func(s *yamux.Session) (*yamux.Stream, error) {
		st, err := s.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.SetDeadline(time.Now().Add(5 * time.Second))
		if err := protocol.Write(st, &protocol.DialRequest{Network: protocol.NetworkTCP, Addr: ln.Addr().String()}); err != nil {
			t.Fatal(err)
		}
		if _, err := protocol.ReadReply[*protocol.DialReply](st); err != nil {
			st.Close()
			return nil, err
		}
		return st, nil
	}

	s := session()
	var open []*yamux.Stream
	for i := range limit {
		st, err := dial(s)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", i+1, limit, err)
		}
		open = append(open, st)
	}
	_, err = dial(s)
	var er *protocol.ErrorReply
	if !errors.As(err, &er) || er.Code != "ENOBUFS" {
		t.Fatalf("connection %d past a limit of %d: got %v, want an ENOBUFS refusal", limit+1, limit, err)
	}
	t.Logf("refusal: %v", er)

	// Another session has its own count.
	if st, err := dial(session()); err != nil {
		t.Fatalf("another session's first connection: %v", err)
	} else {
		st.Close()
	}

	// One closed (both ways): room for one more.
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := dial(s)
		if err == nil {
			st.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after a connection closed, the session still may not open one: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
