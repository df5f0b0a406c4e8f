package agent

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDialUnix: a unix socket of the target is reached by its path, and
// the errors are the ones a connect in the target would give.
func TestDialUnix(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serveEach(ln, func(c net.Conn) { io.Copy(c, c); c.Close() })
	if err := os.Symlink("app.sock", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// This process as the target: its root is /proc/<pid>/root, as a
	// real target's is.
	tg := &target{pid: os.Getpid()}
	for _, p := range []string{sock, filepath.Join(dir, "link")} {
		c, err := tg.dialUnix(p)
		if err != nil {
			t.Fatalf("dial %s: %v", p, err)
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo through %s: %q, %v", p, buf, err)
		}
		c.Close()
	}
	for path, want := range map[string]unix.Errno{
		filepath.Join(dir, "missing"): unix.ENOENT,
		filepath.Join(dir, "file"):    unix.ECONNREFUSED, // not a socket
		"relative.sock":               unix.EINVAL,
	} {
		_, err := tg.dialUnix(path)
		if !errors.Is(err, want) || errorCode(err) != unix.ErrnoName(want) {
			t.Errorf("dial %s: %v (code %q), want %v", path, err, errorCode(err), want)
		}
	}
}
