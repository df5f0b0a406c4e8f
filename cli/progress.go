package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// progress reports session setup steps on stderr, as
// MIRRORD_PROGRESS_MODE says: std (human lines), simple (the same without
// timings), json (one object per step, for IDE plugins), off. The
// default is std on a terminal and off otherwise, so that the output of
// `go test -exec mirrord` and pipelines stays the program's own.
type progress struct {
	mode  string
	w     io.Writer
	start time.Time
	last  time.Time
}

func newProgress(env *Env) *progress {
	mode, ok := lookup(env, "MIRRORD_PROGRESS_MODE")
	if !ok || mode == "" {
		mode = "off"
		if f, isFile := env.Stderr.(*os.File); isFile {
			if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
				mode = "std"
			}
		}
	}
	now := time.Now()
	return &progress{mode: mode, w: env.Stderr, start: now, last: now}
}

// step reports that a step finished.
func (p *progress) step(name, detail string) {
	if p == nil {
		return
	}
	now := time.Now()
	took := now.Sub(p.last)
	p.last = now
	switch p.mode {
	case "std":
		fmt.Fprintf(p.w, "* %s: %s (%s)\n", name, detail, took.Round(time.Millisecond))
	case "simple":
		fmt.Fprintf(p.w, "* %s: %s\n", name, detail)
	case "json":
		b, _ := json.Marshal(map[string]any{"type": "step", "name": name, "detail": detail, "ms": took.Milliseconds()})
		fmt.Fprintf(p.w, "%s\n", b)
	}
}
