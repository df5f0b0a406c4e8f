package session

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mirrord-go/mirrord/config"
)

// TestNamedAgentNotAnswering: an agent address the user gave that nobody
// listens on is reported at once, naming where the address came from,
// instead of being retried for agent.startup_timeout.
func TestNamedAgentNotAnswering(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a port nothing listens on

	cfg := config.Default()
	cfg.Agent.StartupTimeout = 60 // the default; a named agent must not wait for it
	for _, named := range []string{"--agent-addr", "connect_tcp"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := connectRetry(ctx, &agentConn{addr: addr, named: named}, cfg, slog.New(slog.DiscardHandler))
		ended := ctx.Err()
		cancel()
		if err == nil || ended != nil {
			t.Fatalf("%s: want an error before the context ends, got %v (ctx %v)", named, err, ended)
		}
		if !strings.Contains(err.Error(), named) || !strings.Contains(err.Error(), addr) {
			t.Errorf("%s: the error names neither the address nor where it came from: %v", named, err)
		}
	}
}
