package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/progress"
	"github.com/mirrord-go/mirrord/session"
)

// newLogger builds mirrord's own logger. The program's stdout and stderr
// belong to the program, so mirrord logs nowhere unless asked:
// MIRRORD_LOG_LEVEL (debug, info, warn, error) turns logging on, to the file
// named by MIRRORD_LOG_FILE or, failing that, to stderr.
func newLogger(env *Env) (*slog.Logger, func(), error) {
	level, ok := lookup(env, "MIRRORD_LOG_LEVEL")
	if !ok || level == "" {
		return slog.New(slog.DiscardHandler), func() {}, nil
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, nil, fmt.Errorf("MIRRORD_LOG_LEVEL=%q: expected debug, info, warn or error", level)
	}
	var w io.Writer = env.Stderr
	closeFn := func() {}
	if path, ok := lookup(env, "MIRRORD_LOG_FILE"); ok && path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("MIRRORD_LOG_FILE: %w", err)
		}
		w = f
		closeFn = func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})), closeFn, nil
}

func lookup(env *Env, key string) (string, bool) {
	if env.Lookup == nil {
		return "", false
	}
	return env.Lookup(key)
}

// agentTokenVar holds the session token of an agent started by hand:
// `mirrord agent` requires it of every client, and the commands that use
// an agent at --agent-addr (or connect_tcp) present it. Only the
// environment carries it (a process's arguments are world-readable).
const agentTokenVar = "MIRRORD_AGENT_TOKEN"

// agentToken is the value of MIRRORD_AGENT_TOKEN ("" when unset).
func agentToken(env *Env) string {
	v, _ := lookup(env, agentTokenVar)
	return v
}

// newProgress is the progress reporter MIRRORD_PROGRESS_MODE asks for.
func newProgress(env *Env) *progress.Reporter {
	return progress.FromEnv(func(k string) (string, bool) { return lookup(env, k) }, env.Stdout, env.Stderr)
}

// serving is what a command that serves until Ctrl-C holds: a context
// that ends on SIGINT or SIGTERM, mirrord's log, and, from startServing,
// a session.
type serving struct {
	ctx  context.Context
	log  *slog.Logger
	sess *session.Session
	undo []func() // in the order done
}

// close ends the session, the signal handling and the log.
func (s *serving) close() {
	for i := len(s.undo) - 1; i >= 0; i-- {
		s.undo[i]()
	}
}

// untilInterrupted starts the log and the signal handling of a command
// that serves until Ctrl-C.
func untilInterrupted(env *Env) (*serving, error) {
	log, closeLog, err := newLogger(env)
	if err != nil {
		return nil, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	return &serving{ctx: ctx, log: log, undo: []func(){closeLog, stop}}, nil
}

// startServing is untilInterrupted, then the session for cfg (with the
// agent at agentAddr when one is given).
func startServing(env *Env, cfg *config.Config, prog *progress.Reporter, agentAddr string) (*serving, error) {
	s, err := untilInterrupted(env)
	if err != nil {
		return nil, err
	}
	s.sess, err = session.Start(s.ctx, cfg, session.Options{AgentAddr: agentAddr, Token: agentToken(env), Log: s.log, Progress: prog})
	if err != nil {
		s.close()
		return nil, err
	}
	s.undo = append(s.undo, s.sess.Close)
	return s, nil
}
