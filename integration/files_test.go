package integration

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/intproxy"
)

// TestRemoteFiles drives the agent's file service through the internal
// proxy against files that only the target process can see.
func TestRemoteFiles(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := intproxy.Connect(ctx, f.agentAddr, config.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dir := f.podFiles

	if _, err := os.Stat(filepath.Join(dir, "config.yaml")); err == nil {
		t.Fatal("the pod's files are visible on this machine: the fixture is wrong")
	}
	info, err := p.Stat(ctx, dir+"/config.yaml", true)
	if err != nil || info.Size != int64(len("pod: config\n")) || info.Mode&syscall.S_IFMT != syscall.S_IFREG {
		t.Fatalf("stat: %+v, %v", info, err)
	}
	rf, err := p.OpenFile(ctx, dir+"/link", os.O_RDONLY, 0) // through the symlink
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.NewSectionReader(rf, 0, rf.Info.Size))
	rf.Close()
	if err != nil || string(b) != "pod: config\n" {
		t.Errorf("read: %q, %v", b, err)
	}
	entries, err := p.ReadDir(ctx, dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"config.yaml", "link", "sub"}) {
		t.Errorf("readdir: %v, %v", names, err)
	}
	if target, err := p.Readlink(ctx, dir+"/link"); err != nil || target != "config.yaml" {
		t.Errorf("readlink: %q, %v", target, err)
	}
	if lst, err := p.Stat(ctx, dir+"/link", false); err != nil || lst.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Errorf("lstat: %+v, %v", lst, err)
	}
	if _, err := p.Stat(ctx, dir+"/missing", true); intproxy.Errno(err) != syscall.ENOENT {
		t.Errorf("missing file: %v (errno %v), want ENOENT", err, intproxy.Errno(err))
	}
	// ".." cannot climb out of the target's root.
	if _, err := p.Stat(ctx, "/../../"+dir+"/config.yaml", true); err != nil {
		t.Errorf("a path with .. inside the root: %v", err)
	}

	// Writes land in the target's file system.
	wf, err := p.OpenFile(ctx, dir+"/out.txt", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wf.WriteAt([]byte("written by mirrord"), 0); err != nil {
		t.Fatal(err)
	}
	wf.Close()
	got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s/out.txt", f.podPID, dir))
	if err != nil || string(got) != "written by mirrord" {
		t.Errorf("written file seen by the target: %q, %v", got, err)
	}
	if err := p.Mkdir(ctx, dir+"/newdir", 0o755); err != nil {
		t.Error(err)
	}
	if err := p.Rename(ctx, dir+"/out.txt", dir+"/newdir/moved.txt"); err != nil {
		t.Error(err)
	}
	if err := p.Unlink(ctx, dir+"/newdir/moved.txt", false); err != nil {
		t.Error(err)
	}
	if err := p.Unlink(ctx, dir+"/newdir", true); err != nil {
		t.Error(err)
	}

	// A 100 MB file comes through in chunks with its checksum intact.
	big := make([]byte, 100<<20)
	rand.Read(big)
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root%s/big", f.podPID, dir), big, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	bf, err := p.OpenFile(ctx, dir+"/big", os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(bf, 0, bf.Info.Size)); err != nil {
		t.Fatal(err)
	}
	bf.Close()
	want := sha256.Sum256(big)
	if string(h.Sum(nil)) != string(want[:]) {
		t.Error("100 MB file: checksum mismatch")
	}
	t.Logf("read 100 MB remotely in %v", time.Since(start).Round(time.Millisecond))
}
