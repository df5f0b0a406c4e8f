package integration

import (
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/protocol"
)

// TestFilesStayInTargetRoot: the agent's file service resolves every path
// inside the target's root. The target here is chrooted into a directory
// whose symlinks point at this machine's files (absolute, relative with
// many "..", through /proc/self/root); paths climb with ".." and go
// through /proc/<pid>/root. No read, listing or write, through any of
// them, reaches the file outside.
func TestFilesStayInTargetRoot(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox (Debian busybox-static; make deps installs it): %v", err)
	}
	if f, err := elf.Open(busybox); err != nil {
		t.Fatal(err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatalf("%s is dynamically linked; the chrooted target needs busybox-static", busybox)
			}
		}
		f.Close()
	}
	host := t.TempDir() // this machine's files, outside the target's root
	secret := filepath.Join(host, "secret")
	const secretBody = "this machine's secret"
	if err := os.WriteFile(secret, []byte(secretBody), 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	b, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755)
	os.WriteFile(filepath.Join(root, "etc", "inside"), []byte("inside"), 0o644)
	links := map[string]string{
		"abs":      secret,
		"rel":      strings.Repeat("../", 20) + strings.TrimPrefix(secret, "/"),
		"procself": "/proc/self/root" + secret,
		"hostdir":  host,
	}
	for name, to := range links {
		if err := os.Symlink(to, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	target := exec.Command("/bin/busybox", "sleep", "600")
	target.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { target.Process.Kill(); target.Wait() })

	agent := exec.Command(mirrordBin, "agent", "--target-pid", fmt.Sprint(target.Process.Pid), "--listen", "127.0.0.1:0")
	agent.Stderr = os.Stderr
	out, _ := agent.StdoutPipe()
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	line := make([]byte, 128)
	n, _ := out.Read(line)
	addr, ok := strings.CutPrefix(strings.TrimSpace(string(line[:n])), "agent listening on ")
	if !ok {
		t.Fatalf("agent: %q", line[:n])
	}
	go io.Copy(io.Discard, out)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := intproxy.Connect(ctx, addr, config.Default(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	read := func(path string) (string, error) {
		f, err := p.OpenFile(ctx, path, os.O_RDONLY, 0)
		if err != nil {
			return "", err
		}
		defer f.Close()
		b, err := io.ReadAll(io.NewSectionReader(f, 0, max(f.Info.Size, 1<<10)))
		return string(b), err
	}
	if got, err := read("/etc/inside"); got != "inside" {
		t.Fatalf("the target's own file: %q, %v (the premise of this test)", got, err)
	}
	hostStat, _ := os.Stat(secret)
	hostIno := hostStat.Sys().(*syscall.Stat_t).Ino
	escapes := []string{"/abs", "/rel", "/procself", "/hostdir/secret", "/../../../.." + secret,
		"/etc/../../.." + secret, "/proc/self/root" + secret, fmt.Sprintf("/proc/%d/root%s", os.Getpid(), secret), secret}
	for _, path := range escapes {
		if got, err := read(path); strings.Contains(got, secretBody) {
			t.Errorf("read %s reached this machine's file: %q, %v", path, got, err)
		}
		if st, err := p.Stat(ctx, path, true); err == nil && st.Ino == hostIno {
			t.Errorf("stat %s reached this machine's file", path)
		}
	}
	if entries, err := p.ReadDir(ctx, "/hostdir"); err == nil {
		for _, e := range entries {
			if e.Name == "secret" {
				t.Errorf("readdir /hostdir listed this machine's directory")
			}
		}
	}

	// Writes through the same ways out.
	p.Truncate(ctx, "/abs", 0)
	mode := uint32(0o666)
	p.Setattr(ctx, "/abs", true, protocol.SetAttr{Mode: &mode})
	p.Setattr(ctx, "/hostdir/secret", true, protocol.SetAttr{Mode: &mode})
	p.Unlink(ctx, "/hostdir/secret", false)
	p.Rename(ctx, "/etc/inside", "/hostdir/planted")
	p.Link(ctx, "/etc/inside", "/hostdir/linked")
	p.Symlink(ctx, "/etc/inside", "/hostdir/symlinked")
	p.Mkdir(ctx, "/hostdir/made", 0o755)
	if f, err := p.OpenFile(ctx, "/hostdir/created", os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
		f.Close()
	}
	if f, err := p.OpenFile(ctx, "/abs", os.O_WRONLY|os.O_TRUNC, 0); err == nil {
		f.Close()
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != secretBody {
		t.Errorf("this machine's file after the writes: %q, %v", b, err)
	}
	if st, err := os.Stat(secret); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("this machine's file's mode after the writes: %v, %v", st.Mode(), err)
	}
	for _, name := range []string{"planted", "linked", "symlinked", "made", "created"} {
		if _, err := os.Lstat(filepath.Join(host, name)); err == nil {
			t.Errorf("a write through /hostdir made %s on this machine", name)
		}
	}
}
