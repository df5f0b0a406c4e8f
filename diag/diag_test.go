package diag

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stats.jsonl")
	env := map[string]string{FileEnv: path, IntervalEnv: "20ms"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	ctx, cancel := context.WithCancel(context.Background())
	if err := Start(ctx, lookup, "exec"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(110 * time.Millisecond)
	cancel()
	time.Sleep(50 * time.Millisecond)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); n++ {
		var s Sample
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("line %d: %v: %s", n+1, err, sc.Text())
		}
		if s.PID != os.Getpid() || s.Command != "exec" || s.Goroutines < 1 || s.HeapBytes == 0 || s.RSSBytes == 0 || s.FDs < 3 {
			t.Errorf("line %d: implausible sample %+v", n+1, s)
		}
	}
	if n < 4 {
		t.Errorf("%d samples in 110 ms at 20 ms, and one at the end", n)
	}

	env[IntervalEnv] = "soon"
	if err := Start(context.Background(), lookup, "exec"); err == nil || !strings.Contains(err.Error(), IntervalEnv) {
		t.Errorf("a bad interval: %v, want an error naming %s", err, IntervalEnv)
	}
	if err := Start(context.Background(), func(string) (string, bool) { return "", false }, "exec"); err != nil {
		t.Errorf("without the variable: %v", err)
	}
}
