package cli

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// written lives in a writable mapping of the test binary (its data
// segment): releaseImagePages must leave what the process wrote there.
var written = 41

func rssFileKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

func TestReleaseImagePages(t *testing.T) {
	written = 42
	before := rssFileKiB(t)
	n, err := releaseImagePages()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFileKiB(t)
	t.Logf("went over %d MiB of the binary's read-only mappings; RssFile %d → %d KiB", n>>20, before, after)
	if n == 0 || after >= before {
		t.Errorf("released %d bytes; RssFile %d → %d KiB, want less", n, before, after)
	}
	if written != 42 {
		t.Fatalf("a written variable reads %d after the release, want 42 (a writable mapping was dropped)", written)
	}
	// The code it dropped is mapped back when it runs again.
	if _, err := releaseImagePages(); err != nil {
		t.Fatal(err)
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                int64
	}{
		{"v2 limited", "memory.max", "104857600\n", 104857600},
		{"v2 unlimited", "memory.max", "max\n", 0},
		{"v1 limited", "memory/memory.limit_in_bytes", "268435456\n", 268435456},
		{"v1 unlimited", "memory/memory.limit_in_bytes", "9223372036854771712\n", 0},
		{"none", "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.file != "" {
				os.MkdirAll(filepath.Dir(filepath.Join(root, tc.file)), 0o755)
				if err := os.WriteFile(filepath.Join(root, tc.file), []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := cgroupMemoryLimit(root); got != tc.want {
				t.Errorf("cgroupMemoryLimit = %d, want %d", got, tc.want)
			}
		})
	}
	t.Setenv("GOMEMLIMIT", "")
	os.Unsetenv("GOMEMLIMIT")
	if got := agentMemoryLimit(100 << 20); got != 100<<20/10*8 {
		t.Errorf("agentMemoryLimit(100 MiB) = %d, want 80 %%", got)
	}
	if got := agentMemoryLimit(0); got != 0 {
		t.Errorf("agentMemoryLimit(0) = %d, want 0", got)
	}
	t.Setenv("GOMEMLIMIT", "50MiB")
	if got := agentMemoryLimit(100 << 20); got != 0 {
		t.Errorf("agentMemoryLimit with GOMEMLIMIT set = %d, want 0 (the variable rules)", got)
	}
}
