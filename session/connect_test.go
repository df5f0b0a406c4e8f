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

// TestStartingAgentWaitedFor: an agent handed over by the mirrord that
// started it a moment ago (mirrord container, container-ext), which
// closes connections while its pod comes up, is retried past the few
// seconds a named agent gets: until agent.startup_timeout.
func TestStartingAgentWaitedFor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// As a port-forward in front of an agent that does not listen yet:
	// each connection is accepted and closed (the handshake sees EOF).
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	cfg := config.Default()
	cfg.Agent.StartupTimeout = 60
	wait := givenAgentWait + 2*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	_, err = connectRetry(ctx, &agentConn{addr: ln.Addr().String(), named: "--agent-addr", starting: true}, cfg, slog.New(slog.DiscardHandler))
	if err == nil || time.Since(start) < wait-100*time.Millisecond {
		t.Fatalf("gave up after %v (%v); want retries until the context ends at %v", time.Since(start), err, wait)
	}
	// The same agent named by the user is given up on sooner.
	start = time.Now()
	_, err = connectRetry(context.Background(), &agentConn{addr: ln.Addr().String(), named: "--agent-addr"}, cfg, slog.New(slog.DiscardHandler))
	if err == nil || time.Since(start) > givenAgentWait+2*time.Second {
		t.Fatalf("named agent: %v after %v", err, time.Since(start))
	}
}
