package goshim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/protocol"
)

// countFS counts the requests the view makes to the target: each one is
// an agent round trip in a real session.
type countFS struct {
	dirFS
	stats, opens, closes atomic.Int64
}

func (c *countFS) Stat(ctx context.Context, p string, follow bool) (*protocol.FileInfo, error) {
	c.stats.Add(1)
	return c.dirFS.Stat(ctx, p, follow)
}

func (c *countFS) Open(ctx context.Context, p string, flags int, perm uint32) (RemoteFile, error) {
	c.opens.Add(1)
	f, err := c.dirFS.Open(ctx, p, flags, perm)
	if err != nil {
		return nil, err
	}
	return countedFile{f, c}, nil
}

type countedFile struct {
	RemoteFile
	c *countFS
}

func (f countedFile) Close() error {
	f.c.closes.Add(1)
	return f.RemoteFile.Close()
}

func newCountView(t *testing.T) (*View, *countFS, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a FUSE view needs root")
	}
	dir := t.TempDir()
	c := &countFS{dirFS: dirFS{root: dir}}
	v, err := NewView(c, nil)
	if err != nil {
		t.Skipf("no FUSE view here: %v", err)
	}
	t.Cleanup(v.Close)
	return v, c, dir
}

func readAll(t *testing.T, v *View, p string) string {
	t.Helper()
	f, err := v.Open(p, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	return string(b[:n])
}

// TestViewOpenRoundTrips counts the target's requests per read-only
// open+close of one file, repeated: the issue 22 profile.
func TestViewOpenRoundTrips(t *testing.T) {
	v, c, dir := newCountView(t)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	start := time.Now()
	for range n {
		f, err := v.Open("/f", unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	el := time.Since(start)
	time.Sleep(50 * time.Millisecond) // RELEASE is asynchronous
	t.Logf("%d open+close in %v (%.1f µs each): %d stats, %d opens, %d closes on the target",
		n, el, float64(el.Microseconds())/n, c.stats.Load(), c.opens.Load(), c.closes.Load())
}

// TestViewSharedReadOnly: read-only opens share the target's open file for
// viewTimeout, and only then: a file replaced on the target is seen after
// it, a file written in place at once; writable opens are never shared;
// the shared file is closed on the target when it expires.
func TestViewSharedReadOnly(t *testing.T) {
	v, c, dir := newCountView(t)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if got := readAll(t, v, "/f"); got != "one" {
			t.Fatalf("read %q, want one", got)
		}
	}
	if got := c.opens.Load(); got != 1 {
		t.Fatalf("10 read-only opens within %v made %d opens on the target, want 1", viewTimeout, got)
	}
	// Written in place: the same file on the target, seen at once.
	if err := os.WriteFile(p, []byte("uno"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, v, "/f"); got != "uno" {
		t.Fatalf("after a write in place read %q, want uno", got)
	}
	// Replaced: seen once the cache lifetime has passed.
	tmp := filepath.Join(dir, "g")
	if err := os.WriteFile(tmp, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(viewTimeout + 100*time.Millisecond)
	if got := readAll(t, v, "/f"); got != "two" {
		t.Fatalf("%v after the file was replaced, read %q, want two", viewTimeout, got)
	}
	// A writable open is the target's own, every time.
	before := c.opens.Load()
	for range 3 {
		f, err := v.Open("/f", unix.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if got := c.opens.Load() - before; got != 3 {
		t.Fatalf("3 read-write opens made %d opens on the target, want 3", got)
	}
	// Errors are the target's, and not remembered.
	if _, err := v.Open("/missing", unix.O_RDONLY, 0); err != unix.ENOENT {
		t.Fatalf("open of a missing file: %v, want ENOENT", err)
	}
	// Nothing stays open on the target once the lifetime is over.
	deadline := time.Now().Add(3 * viewTimeout)
	for c.closes.Load() != c.opens.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if o, cl := c.opens.Load(), c.closes.Load(); o != cl {
		t.Fatalf("%d files opened on the target, %d closed", o, cl)
	}
}

// TestViewSharedConcurrent: many threads opening, reading and closing one
// file at once share the target's file and read it whole; nothing stays
// open on the target afterwards.
func TestViewSharedConcurrent(t *testing.T) {
	v, c, dir := newCountView(t)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("shared"), 0o644); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	start := time.Now()
	for range 8 {
		go func() {
			for range 50 {
				f, err := v.Open("/f", unix.O_RDONLY, 0)
				if err != nil {
					errs <- err
					return
				}
				b := make([]byte, 16)
				n, _ := f.ReadAt(b, 0)
				f.Close()
				if string(b[:n]) != "shared" {
					errs <- fmt.Errorf("read %q, want shared", b[:n])
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// At most one open per thread per cache lifetime (each thread may
	// miss when the shared file is missing or expired).
	most := 8 * (int64(time.Since(start)/viewTimeout) + 1)
	deadline := time.Now().Add(3 * viewTimeout)
	for c.closes.Load() != c.opens.Load() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if o, cl := c.opens.Load(), c.closes.Load(); o != cl || o > most {
		t.Fatalf("400 read-only opens: %d files opened on the target, %d closed (want at most %d, all closed)", o, cl, most)
	}
}
