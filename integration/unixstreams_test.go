package integration

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// unixclientBin is integration/testdata/unixclient, a static Go program
// that talks to unix sockets; built on first use.
var (
	unixclientOnce sync.Once
	unixclientBin  string
	unixclientErr  error
)

func buildUnixClient(t *testing.T) string {
	t.Helper()
	unixclientOnce.Do(func() {
		unixclientBin = filepath.Join(filepath.Dir(mirrordBin), "unixclient")
		cmd := exec.Command("go", "build", "-o", unixclientBin, "./testdata/unixclient")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			unixclientErr = fmt.Errorf("build unixclient: %v\n%s", err, out)
		}
	})
	if unixclientErr != nil {
		t.Fatal(unixclientErr)
	}
	return unixclientBin
}

// serveUnixLines answers each line a client sends on the unix socket at
// path with prefix, a space and the line.
func serveUnixLines(t *testing.T, path, prefix string) {
	t.Helper()
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
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "%s %s\n", prefix, sc.Text())
				}
			}()
		}
	}()
}

// pyUnixClient does what unixclient does, with Python's socket module.
const pyUnixClient = `
import errno, socket, sys
for path in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        s.connect(addr)
    except OSError as e:
        print(path, "error", errno.errorcode[e.errno])
        continue
    s.sendall(b"hi\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(100)
        if not chunk:
            break
        data += chunk
    peer = s.getpeername()
    if isinstance(peer, bytes):
        peer = "@" + peer[1:].decode()
    print(path, "peer", peer, "reply", data.decode().strip())
    s.close()
`

// TestUnixStreams: with feature.network.outgoing.unix_streams, a program's
// connection to a matching unix socket path reaches the socket at that
// path in the target (its mount namespace: the fixture's pod has a tmpfs
// there that this machine does not see), under both engines and from
// socat, Python, curl and a Go program (also one a preloaded shell
// starts, which goes through layer-exec). Other paths and abstract
// sockets stay on this machine, and a matching path the target does not
// have gives the program the target's error.
func TestUnixStreams(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	client := buildUnixClient(t)
	dir, inPod := podOnlyDir(t, f)

	// The target's sockets, only in its mount namespace.
	serveUnixLines(t, inPod+"/echo.sock", "pod")
	httpLn, err := net.Listen("unix", inPod+"/http.sock")
	if err != nil {
		t.Fatal(err)
	}
	httpSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "pod http "+r.URL.Path)
	})}
	go httpSrv.Serve(httpLn)
	t.Cleanup(func() { httpSrv.Close() })
	// An absolute symlink in the target: it must resolve in the target's
	// root, not in the agent's (where it would reach this machine's
	// echo.sock below).
	if err := os.Symlink(dir+"/echo.sock", inPod+"/link.sock"); err != nil {
		t.Fatal(err)
	}
	// Not a socket: connect says ECONNREFUSED.
	mustWrite(t, inPod+"/file.sock", "")

	// This machine's sockets: at the same path (which must not be used),
	// at a path the target does not have, at a path not matched, and an
	// abstract one (matched, yet this machine's, as abstract names are).
	serveUnixLines(t, dir+"/echo.sock", "local")
	serveUnixLines(t, dir+"/missing.sock", "local")
	serveUnixLines(t, dir+"/other.sock", "local-other")
	b := make([]byte, 4)
	rand.Read(b)
	abstract := "@mirrord-it-abs-" + hex.EncodeToString(b)
	serveUnixLines(t, abstract, "local-abstract")
	if _, err := os.Stat(inPod + "/other.sock"); err == nil {
		t.Fatal("this machine's sockets are visible in the target: the fixture is wrong")
	}

	cfg := writeConfig(t, `{"feature": {"network": {"outgoing": {"unix_streams": ["(echo|http|missing|file|link)\\.sock$", "mirrord-it-abs"]}}}}`)
	paths := []string{dir + "/echo.sock", dir + "/link.sock", dir + "/other.sock", dir + "/missing.sock", dir + "/file.sock", abstract}
	want := []string{
		dir + "/echo.sock peer " + dir + "/echo.sock reply pod hi",
		dir + "/link.sock peer " + dir + "/link.sock reply pod hi",
		dir + "/other.sock peer " + dir + "/other.sock reply local-other hi",
		dir + "/missing.sock error ENOENT",
		dir + "/file.sock error ECONNREFUSED",
		abstract + " peer " + abstract + " reply local-abstract hi",
	}
	run := func(t *testing.T, engine []string, args ...string) string {
		t.Helper()
		out, err := f.mirrord(ctx(t), nil, append(append(engine, "-f", cfg, "--"), args...)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return out
	}
	// A static Go program runs in the netstack sandbox whatever the
	// engine asked for (LD_PRELOAD cannot reach it).
	t.Run("go", func(t *testing.T) {
		out := run(t, nil, append([]string{client}, paths...)...)
		mustContain(t, out, want...)
	})
	eachEngine(t, func(t *testing.T, engine ...string) {
		run := func(t *testing.T, args ...string) string {
			t.Helper()
			return run(t, engine, args...)
		}
		t.Run("python", func(t *testing.T) {
			out := run(t, append([]string{"python3", "-c", pyUnixClient}, paths...)...)
			mustContain(t, out, want...)
		})
		t.Run("go from a shell", func(t *testing.T) {
			// Under the preload, the shell's Go child runs through
			// layer-exec, served by the same session.
			out := run(t, "sh", "-c", `"$0" "$@"; echo done`, client, dir+"/echo.sock", dir+"/other.sock", dir+"/missing.sock")
			mustContain(t, out, want[0], want[2], want[3], "done")
		})
		t.Run("socat", func(t *testing.T) {
			out := run(t, "sh", "-c", `echo hi | socat - UNIX-CONNECT:"$0"; echo hi | socat - UNIX-CONNECT:"$1"`,
				dir+"/echo.sock", dir+"/other.sock")
			mustContain(t, out, "pod hi", "local-other hi")
			if strings.Contains(out, "local hi") {
				t.Errorf("socat reached this machine's socket at the target's path:\n%s", out)
			}
		})
		t.Run("curl", func(t *testing.T) {
			out := run(t, "curl", "-sS", "--unix-socket", dir+"/http.sock", "http://pod/status")
			mustContain(t, out, "pod http /status")
		})
	})
}
