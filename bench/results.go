package bench

import (
	"os"
	"strings"
)

// Merge puts section (which starts with its "## Heading" line) into the
// results file at path: in place of the section with the same heading (up
// to the next "## " heading), else at the end. Other sections stay.
func Merge(path, section string) error {
	heading, _, _ := strings.Cut(section, "\n")
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	head, tail := string(old), ""
	if i := strings.Index(head, heading+"\n"); i >= 0 && (i == 0 || head[i-1] == '\n') {
		head, tail = head[:i], head[i+len(heading)+1:]
		if j := strings.Index(tail, "\n## "); j >= 0 {
			tail = tail[j+1:]
		} else {
			tail = ""
		}
	}
	if strings.TrimSpace(head) == "" {
		head = "# Benchmark results\n"
	}
	out := strings.TrimRight(head, "\n") + "\n\n" + strings.TrimRight(section, "\n") + "\n"
	if tail != "" {
		out += "\n" + tail
	}
	return os.WriteFile(path, []byte(out), 0o644)
}
