package container

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEnsureFiles(t *testing.T) {
	root := t.TempDir()
	// An image's own hosts is kept; a missing resolv.conf (and /run,
	// where a dangling symlink points) is made.
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("10.0.0.1 x\n"), 0o644)
	os.Symlink(filepath.Join(root, "run/missing/name"), filepath.Join(root, "etc/name"))
	if err := EnsureFiles(root, []string{"/etc/resolv.conf", "/etc/hosts", "/etc/name"}); err == nil {
		t.Error("a dangling symlink into a missing directory was reported made")
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/hosts")); err != nil || string(b) != "10.0.0.1 x\n" {
		t.Errorf("/etc/hosts: %q, %v; want it untouched", b, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/resolv.conf")); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o644 {
		t.Errorf("/etc/resolv.conf: %v, %v; want an empty file, mode 0644", fi, err)
	}
}
