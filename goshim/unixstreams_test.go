package goshim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestUnixPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw  []byte
		path string
		ok   bool
	}{
		{rawUnix("/run/app.sock\x00"), "/run/app.sock", true},
		{rawUnix("/run/app.sock"), "/run/app.sock", true}, // no NUL: the length says where it ends
		{rawUnix("rel.sock\x00\x00\x00"), "rel.sock", true},
		{rawUnix("\x00abstract"), "", false},
		{rawUnix(""), "", false}, // unnamed
		{rawInet("127.0.0.1:80"), "", false},
	} {
		sa, ok := parseSockaddr(tc.raw)
		if !ok {
			t.Fatalf("parseSockaddr(%q) failed", tc.raw)
		}
		if path, ok := unixPath(sa); path != tc.path || ok != tc.ok {
			t.Errorf("unixPath(%q) = %q, %t; want %q, %t", tc.raw, path, ok, tc.path, tc.ok)
		}
	}
	if got, want := unixPeerName("/a"), rawUnix("/a\x00"); !bytes.Equal(got, want) {
		t.Errorf("unixPeerName = %q, want %q", got, want)
	}
}

// modeUnix makes the test binary a client of unix stream sockets: for
// each path it connects, sends a line and prints what it got back and
// what getpeername says (see unixProgram).
const modeUnix = "goshim-test-unix"

// unixProgram prints, per path, "PATH peer NAME reply LINE" (and
// "PATH short LEN NAMEPART": getpeername into a 4-byte buffer), or
// "PATH error ERRNO". A path starting with "dgram:" is connected with a
// datagram socket.
func unixProgram(paths []string) int {
	for _, arg := range paths {
		typ, path := unix.SOCK_STREAM, arg
		if p, ok := strings.CutPrefix(arg, "dgram:"); ok {
			typ, path = unix.SOCK_DGRAM, p
		}
		fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			fmt.Println(arg, "error", err)
			continue
		}
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			var errno unix.Errno
			errors.As(err, &errno)
			fmt.Println(arg, "error", unix.ErrnoName(errno))
			unix.Close(fd)
			continue
		}
		f := os.NewFile(uintptr(fd), path)
		fmt.Fprint(f, "hi\n")
		line, _ := bufio.NewReader(f).ReadString('\n')
		var peer string
		if sa, err := unix.Getpeername(fd); err == nil {
			peer = sa.(*unix.SockaddrUnix).Name
		}
		fmt.Println(arg, "peer", peer, "reply", strings.TrimSpace(line))
		var short [4]byte
		n := uint32(len(short))
		if _, _, errno := unix.Syscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&short[0])), uintptr(unsafe.Pointer(&n))); errno == 0 {
			fmt.Println(arg, "short", n, string(short[2:]))
		}
		f.Close()
	}
	return 0
}

// TestUnixStreams: a stream connect to a path the relay takes reaches the
// relay's listener instead, on the program's own socket, whose
// getpeername names the path it asked for; the relay's error is
// connect's; other paths, and datagram sockets, are left to the kernel.
func TestUnixStreams(t *testing.T) {
	dir := t.TempDir()
	serve := func(path, prefix string) {
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "%s %s", prefix, line)
				c.Close()
			}
		}()
	}
	relayLn := filepath.Join(dir, "relay.sock")
	serve(relayLn, "relayed")
	serve(filepath.Join(dir, "remote.sock"), "local") // must not be reached
	serve(filepath.Join(dir, "local.sock"), "local")
	var mu sync.Mutex
	var asked []string
	relay := func(ctx context.Context, path string) (string, error) {
		mu.Lock()
		asked = append(asked, path)
		mu.Unlock()
		switch filepath.Base(path) {
		case "remote.sock", "dgram.sock":
			return relayLn, nil
		case "missing.sock":
			return "", unix.ENOENT
		}
		return "", nil
	}
	remote, local, missing := filepath.Join(dir, "remote.sock"), filepath.Join(dir, "local.sock"), filepath.Join(dir, "missing.sock")
	args := []string{os.Args[0], modeUnix, remote, local, missing, "dgram:" + filepath.Join(dir, "dgram.sock")}
	var out, errOut bytes.Buffer
	s := startSandbox(t, Spec{Path: os.Args[0], Args: args, Env: []string{testPath}}, WithStdio(nil, &out, &errOut), WithUnixStreams(relay))
	if err := s.Go(); err != nil {
		t.Fatal(err)
	}
	if code, err := s.Wait(); err != nil || code != 0 {
		t.Fatalf("exit %d, %v\n%s%s", code, err, out.String(), errOut.String())
	}
	for _, want := range []string{
		remote + " peer " + remote + " reply relayed hi",
		fmt.Sprintf("%s short %d %s", remote, 2+len(remote)+1, remote[:2]),
		local + " peer " + local + " reply local hi",
		missing + " error ENOENT",
		"dgram:" + filepath.Join(dir, "dgram.sock") + " error ENOENT", // the kernel's: no such socket here
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(asked, " "); got != strings.Join([]string{remote, local, missing}, " ") {
		t.Errorf("the relay was asked about %q; want the three stream connects", got)
	}
}
