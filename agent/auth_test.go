package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mirrord-go/mirrord/protocol"
)

// TestAuthentication: the first request of every connection must be a
// Hello with the agent's token; anything else is refused, the connection
// is closed, and no other request is served on it. The token never
// appears in the agent's log.
func TestAuthentication(t *testing.T) {
	const token = "0123456789abcdef-secret-token"
	var logBuf syncBuffer
	addr, _ := runAgent(t, Options{Token: token,
		Logger: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	dial := func(t *testing.T) *yamux.Session { return dialAgent(t, addr, nil) }
	// send writes req on a new stream and returns the reply.
	send := func(s *yamux.Session, req protocol.Message) (protocol.Message, error) {
		st, err := s.OpenStream()
		if err != nil {
			return nil, err
		}
		defer st.Close()
		st.SetDeadline(time.Now().Add(3 * time.Second))
		if err := protocol.Write(st, req); err != nil {
			return nil, err
		}
		return protocol.Read(st)
	}
	hello := func(tok string) *protocol.Hello {
		return &protocol.Hello{Version: protocol.Version, Client: "test", Token: tok}
	}
	for _, tc := range []struct {
		name  string
		first protocol.Message
	}{
		{"request before hello", &protocol.EnvRequest{}},
		{"dial before hello", &protocol.DialRequest{Network: protocol.NetworkTCP, Addr: "127.0.0.1:1"}},
		{"no token", hello("")},
		{"wrong token", hello("0123456789abcdef-secret-tokeX")},
		{"wrong version", &protocol.Hello{Version: protocol.Version + 1, Token: token}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dial(t)
			reply, err := send(s, tc.first)
			if err != nil {
				t.Fatalf("no refusal: %v", err)
			}
			if _, ok := reply.(*protocol.ErrorReply); !ok {
				t.Fatalf("reply %T %+v, want a refusal", reply, reply)
			}
			// The connection is closed: nothing more is served.
			select {
			case <-s.CloseChan():
			case <-time.After(3 * time.Second):
				if reply, err := send(s, &protocol.EnvRequest{}); err == nil {
					t.Fatalf("after the refusal, a request was answered: %T %+v", reply, reply)
				}
			}
		})
	}
	t.Run("right token", func(t *testing.T) {
		s := dial(t)
		if reply, err := send(s, hello(token)); err != nil {
			t.Fatal(err)
		} else if _, ok := reply.(*protocol.HelloReply); !ok {
			t.Fatalf("reply %T %+v, want a HelloReply", reply, reply)
		}
		if reply, err := send(s, &protocol.EnvRequest{}); err != nil {
			t.Fatal(err)
		} else if _, ok := reply.(*protocol.EnvReply); !ok {
			t.Fatalf("env: %T %+v", reply, reply)
		}
	})
	if strings.Contains(logBuf.String(), "secret-tok") {
		t.Errorf("the token is in the agent's log:\n%s", logBuf.String())
	}
	if !strings.Contains(logBuf.String(), "client refused") {
		t.Errorf("refusals are not logged:\n%s", logBuf.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
