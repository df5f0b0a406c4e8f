package container

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestWaitDetached runs waitDetached against a fake runtime whose `wait`
// returns at once with status 0 while its `inspect` may still say the
// container runs, as podman's sometimes does.
func TestWaitDetached(t *testing.T) {
	for _, tt := range []struct {
		name      string
		stopsAt   int    // the wait after which inspect says the container stopped (0: never runs)
		waitCode  int    // wait's exit status
		inspect   string // "": true until stopsAt, then false; "gone": inspect fails
		wantCode  int
		wantWaits int
	}{
		{"wait returns early twice", 3, 0, "", 0, 3},
		{"wait returns when the container stopped", 1, 0, "", 0, 1},
		{"container removed (--rm)", 5, 0, "gone", 0, 1},
		{"wait signalled (Ctrl-C relayed)", 5, 143, "", 143, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			// Quoted: the subtests' directories have parentheses.
			count, stopped := filepath.Join(dir, "waits"), filepath.Join(dir, "stopped")
			qc, qs := "'"+count+"'", "'"+stopped+"'"
			inspect := `if [ -f ` + qs + ` ]; then echo false; else echo true; fi`
			if tt.inspect == "gone" {
				inspect = `echo "Error: no such container" >&2; exit 125`
			}
			script := `#!/bin/sh
case "$1" in
wait)
	n=$(( $(cat ` + qc + ` 2>/dev/null || echo 0) + 1 ))
	echo $n > ` + qc + `
	[ $n -ge ` + strconv.Itoa(tt.stopsAt) + ` ] && touch ` + qs + `
	echo 0
	exit ` + strconv.Itoa(tt.waitCode) + `;;
container)
	` + inspect + `;;
esac
`
			runtime := filepath.Join(dir, "podman")
			if err := os.WriteFile(runtime, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			code, err := waitDetached(context.Background(), runtime, "c0ffee", Options{Log: slog.New(slog.DiscardHandler)})
			b, _ := os.ReadFile(count)
			waits, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || code != tt.wantCode || waits != tt.wantWaits {
				t.Errorf("waitDetached: %d, %v after %d waits; want %d after %d", code, err, waits, tt.wantCode, tt.wantWaits)
			}
		})
	}
}
