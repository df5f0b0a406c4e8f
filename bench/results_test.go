package bench

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMerge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.md")
	steps := []struct{ section, want string }{
		{"## A\n\na1\n", "# Benchmark results\n\n## A\n\na1\n"},
		{"## B\n\nb1\n", "# Benchmark results\n\n## A\n\na1\n\n## B\n\nb1\n"},
		{"## A\n\na2\n", "# Benchmark results\n\n## A\n\na2\n\n## B\n\nb1\n"}, // in place
		{"## B\n\nb2\n\n### sub\n", "# Benchmark results\n\n## A\n\na2\n\n## B\n\nb2\n\n### sub\n"},
	}
	for i, s := range steps {
		if err := Merge(path, s.section); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != s.want {
			t.Errorf("step %d:\n got %q\nwant %q", i, got, s.want)
		}
	}
}
