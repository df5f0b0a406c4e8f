package cli

import (
	"os"
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
