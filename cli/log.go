package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/mirrord-go/mirrord/progress"
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

// newProgress is the progress reporter MIRRORD_PROGRESS_MODE asks for.
func newProgress(env *Env) *progress.Reporter {
	return progress.FromEnv(func(k string) (string, bool) { return lookup(env, k) }, env.Stdout, env.Stderr)
}
