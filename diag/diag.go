package diag

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// Environment variables that turn recording on.
const (
	FileEnv     = "MIRRORD_STATS_FILE"     // the file samples are appended to
	IntervalEnv = "MIRRORD_STATS_INTERVAL" // between samples (Go duration; default 60s)
)

// DefaultInterval is the time between samples when IntervalEnv is unset.
const DefaultInterval = time.Minute

// Sample is one line of the file.
type Sample struct {
	Time       time.Time `json:"time"`
	PID        int       `json:"pid"`
	Command    string    `json:"command"` // the mirrord command: "exec", "agent", ...
	Goroutines int       `json:"goroutines"`
	HeapBytes  uint64    `json:"heap_bytes"` // live and not yet swept heap objects
	RSSBytes   int64     `json:"rss_bytes"`  // VmRSS
	FDs        int       `json:"fds"`
}

// Take samples this process now.
func Take(command string) Sample {
	s := Sample{Time: time.Now().UTC(), PID: os.Getpid(), Command: command, Goroutines: runtime.NumGoroutine()}
	m := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() == metrics.KindUint64 {
		s.HeapBytes = m[0].Value.Uint64()
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					s.RSSBytes = kb << 10
				}
			}
		}
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.FDs = len(ents) - 1 // the directory being read
	}
	return s
}

// Start records samples of this process, the mirrord command command, to
// the file the environment names (lookup reads it), one now and one per
// interval until ctx ends. Without the variable it does nothing; a bad
// interval is an error naming it.
func Start(ctx context.Context, lookup func(string) (string, bool), command string) error {
	path, ok := lookup(FileEnv)
	if !ok || path == "" {
		return nil
	}
	every := DefaultInterval
	if v, ok := lookup(IntervalEnv); ok && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s=%q: want a positive duration such as 60s", IntervalEnv, v)
		}
		every = d
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("%s: %w", FileEnv, err)
	}
	write := func() {
		b, _ := json.Marshal(Take(command))
		// One write of one line: O_APPEND keeps the lines of several
		// processes sharing the file whole.
		f.Write(append(b, '\n'))
	}
	write()
	go func() {
		defer f.Close()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				write()
				return
			case <-t.C:
				write()
			}
		}
	}()
	return nil
}
