package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The engine is invisible (DESIGN.md §3): under either engine a program's
// servers answer on this machine, it reaches this machine's loopback
// services, and a debugger attaches, while everything else goes to the pod.

var (
	loopserverOnce sync.Once
	loopserverBin  string
	loopserverErr  error
)

// loopserver builds testdata/loopserver (a static Go binary: the sandbox
// runs it under the default engine).
func loopserver(t *testing.T) string {
	t.Helper()
	loopserverOnce.Do(func() {
		loopserverBin = filepath.Join(filepath.Dir(mirrordBin), "loopserver")
		cmd := exec.Command("go", "build", "-o", loopserverBin, "./testdata/loopserver")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			loopserverErr = fmt.Errorf("%v\n%s", err, out)
		}
	})
	if loopserverErr != nil {
		t.Fatal(loopserverErr)
	}
	return loopserverBin
}

// waitLine waits for a line starting with prefix in the file the program
// writes its output to, and returns the rest of it.
func waitLine(t *testing.T, file, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(file)
		// Whole lines only: the program may be writing the last one (a
		// read once took "listening 127.0.0.1:" for the line, port
		// missing).
		b = b[:bytes.LastIndexByte(b, '\n')+1]
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				return strings.TrimSpace(rest)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	b, _ := os.ReadFile(file)
	t.Fatalf("no line %q in the program's output:\n%s", prefix, b)
	return ""
}

// getOnce GETs url without retrying: a server that said it listens must
// answer at once.
func getOnce(t *testing.T, u string) string {
	t.Helper()
	body, err := httpGet(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return body
}

// hostHTTP serves body on this machine's loopback (network tcp4 or tcp6)
// and returns its address.
func hostHTTP(t *testing.T, network, body string) string {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// hostUDPEcho echoes datagrams on this machine's 127.0.0.1.
func hostUDPEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("host-echo:"), buf[:n]...), from)
		}
	}()
	return pc.LocalAddr().String()
}

// TestLoopbackGoServer: a static Go server in the sandbox answers on this
// machine's loopback (each address scope), reaches this machine's
// loopback services (TCP v4 and v6, UDP), and still has the pod's env,
// DNS and network.
func TestLoopbackGoServer(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	host4 := hostHTTP(t, "tcp4", "hello from this machine v4")
	host6 := hostHTTP(t, "tcp6", "hello from this machine v6")
	udpEcho := hostUDPEcho(t)
	for _, tc := range []struct {
		listen, udp string
		reach       []string // addresses this machine reaches it at (%s the port)
	}{
		{"127.0.0.1:0", "127.0.0.1:0", []string{"127.0.0.1:%s"}},
		{"[::1]:0", "[::1]:0", []string{"[::1]:%s"}},
		{":0", "", []string{"127.0.0.1:%s", "[::1]:%s"}},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			args := []string{loopserver(t), tc.listen}
			if tc.udp != "" {
				args = append(args, tc.udp)
			}
			_, out := f.startLocal(t, nil, args...)
			_, port, _ := net.SplitHostPort(waitLine(t, out, "listening "))
			for _, r := range tc.reach {
				base := "http://" + fmt.Sprintf(r, port)
				if got := getOnce(t, base+"/"); got != "hello from loopserver" {
					t.Errorf("%s/: %q", base, got)
				}
			}
			base := "http://" + fmt.Sprintf(tc.reach[0], port)
			for _, c := range []struct{ path, want string }{
				{"/env?k=SECRET_TOKEN", secret},
				{"/get?url=" + url.QueryEscape("http://"+host4+"/"), "hello from this machine v4"},
				{"/get?url=" + url.QueryEscape("http://"+host6+"/"), "hello from this machine v6"},
				{"/get?url=" + url.QueryEscape("http://localhost:"+portOf(host4)+"/"), "hello from this machine v4"},
				{"/udp?addr=" + url.QueryEscape(udpEcho), "host-echo:ping"},
				// The pod's DNS and network, as before.
				{"/get?url=" + url.QueryEscape("http://"+svcName+":8080/"), svcBody},
				{"/udp?addr=" + url.QueryEscape(svcName+":9000"), "echo:ping"},
			} {
				if got := getOnce(t, base+c.path); got != c.want {
					t.Errorf("%s: %q, want %q", c.path, got, c.want)
				}
			}
			if tc.udp != "" {
				addr := strings.Replace(waitLine(t, out, "udp "), "0.0.0.0", "127.0.0.1", 1)
				c, err := net.Dial("udp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Write([]byte("hi"))
				buf := make([]byte, 100)
				n, err := c.Read(buf)
				if err != nil || string(buf[:n]) != "echo:hi" {
					t.Errorf("UDP server at %s: %q, %v", addr, buf[:n], err)
				}
			}
		})
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestLoopbackPortTaken: a port taken on this machine is taken for the
// program too, under both engines.
func TestLoopbackPortTaken(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	taken := hostHTTP(t, "tcp4", "taken")
	eachEngine(t, func(t *testing.T, engine ...string) {
		script := fmt.Sprintf(`import socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", %s))
    print("bound")
except OSError as e:
    print("error", e.errno)`, portOf(taken))
		out, err := f.mirrord(ctx(t), nil, append(engine, "--", "python3", "-c", script)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "error 98") // EADDRINUSE
	})
}

// TestLoopbackPython: a Python server (both engines) answers on this
// machine's loopback as soon as it says it listens; Python, curl and two
// processes of the program's tree reach this machine's loopback and
// unix sockets.
func TestLoopbackPython(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	host4 := hostHTTP(t, "tcp4", "hello from this machine v4")
	host6 := hostHTTP(t, "tcp6", "hello from this machine v6")
	udpEcho := hostUDPEcho(t)
	b := make([]byte, 4)
	rand.Read(b)
	abstract := "mirrord-itest-" + hex.EncodeToString(b)
	unixPath := filepath.Join(t.TempDir(), "app.sock")
	for _, l := range []string{"@" + abstract, unixPath} {
		ln, err := net.Listen("unix", l)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello over unix") })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	server := "testdata/loopserver.py" // prints "listening HOST:PORT", answers "/" with a greeting
	eachEngine(t, func(t *testing.T, engine ...string) {
		for _, bind := range []struct{ addr, reach string }{
			{"127.0.0.1", "127.0.0.1"}, {"::1", "[::1]"}, {"0.0.0.0", "127.0.0.1"}, {"::", "[::1]"},
		} {
			_, out := f.startLocal(t, engine, "python3", server, bind.addr)
			_, port, _ := net.SplitHostPort(waitLine(t, out, "listening "))
			if got := getOnce(t, "http://"+bind.reach+":"+port+"/"); got != "hello from loopserver" {
				t.Errorf("python on %s: %q", bind.addr, got)
			}
		}
		client := fmt.Sprintf(`import socket, urllib.request
for u in ["http://%s/", "http://%s/", "http://localhost:%s/"]:
    print("tcp", urllib.request.urlopen(u, timeout=5).read().decode())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"ping", ("127.0.0.1", %s))
print("udp", u.recv(100).decode())
print("env", __import__("os").environ.get("SECRET_TOKEN"))`, host4, host6, portOf(host4), portOf(udpEcho))
		out, err := f.mirrord(ctx(t), nil, append(engine, "--", "python3", "-c", client)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "tcp hello from this machine v4", "tcp hello from this machine v6",
			"udp host-echo:ping", "env "+secret)
		out, err = f.mirrord(ctx(t), nil, append(engine, "--", "sh", "-c",
			`curl -sS --abstract-unix-socket "$0" http://x/; echo; curl -sS --unix-socket "$1" http://x/; echo`, abstract, unixPath)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if strings.Count(out, "hello over unix") != 2 {
			t.Errorf("unix sockets on this machine:\n%s", out)
		}
		// Two processes of the program's tree, over loopback.
		pair := `python3 "$0" 127.0.0.1 > "$1" 2>&1 &
for i in $(seq 100); do p=$(sed -n 's/^listening //p' "$1"); [ -n "$p" ] && break; sleep 0.05; done
curl -sS "http://$p/"; echo; kill $!`
		out, err = f.mirrord(ctx(t), nil, append(engine, "--", "sh", "-c", pair, server, filepath.Join(t.TempDir(), "port"))...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "hello from loopserver")
	})
}

var (
	dlvOnce sync.Once
	dlvBin  string
	dlvErr  error
)

// dlv builds the debugger pinned in go.mod (cached by the Go build cache).
func dlv(t *testing.T) string {
	t.Helper()
	dlvOnce.Do(func() {
		dlvBin = filepath.Join(filepath.Dir(mirrordBin), "dlv")
		cmd := exec.Command("go", "build", "-o", dlvBin, "github.com/go-delve/delve/cmd/dlv")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			dlvErr = fmt.Errorf("building dlv: %v\n%s", err, out)
		}
	})
	if dlvErr != nil {
		t.Fatal(dlvErr)
	}
	return dlvBin
}

// dlvCall makes one JSON-RPC call to a headless dlv.
func dlvCall(t *testing.T, addr, method, params string) map[string]any {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dialing dlv at %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, `{"method":"RPCServer.%s","params":[%s],"id":1}`+"\n", method, params)
	var resp struct {
		Result map[string]any
		Error  any
	}
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		t.Fatalf("dlv %s: %v", method, err)
	}
	if resp.Error != nil {
		t.Fatalf("dlv %s: %v", method, resp.Error)
	}
	return resp.Result
}

// TestDebuggerDlv: `mirrord exec -- dlv exec --headless ...`: the
// debugger's API and the debugged program's server answer on this
// machine's loopback, and the program has the pod's env, DNS and network.
func TestDebuggerDlv(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	dbg := dlv(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	api := ln.Addr().String()
	ln.Close()
	_, out := f.startLocal(t, nil, dbg, "exec", "--headless", "--accept-multiclient", "--api-version", "2",
		"--listen", api, "--continue", loopserver(t), "--", "127.0.0.1:0")
	waitLine(t, out, "API server listening at:")
	_, port, _ := net.SplitHostPort(waitLine(t, out, "listening "))
	base := "http://127.0.0.1:" + port
	if got := getOnce(t, base+"/"); got != "hello from loopserver" {
		t.Errorf("debugged program: %q", got)
	}
	mustContain(t, getOnce(t, base+"/env?k=SECRET_TOKEN"), secret)
	mustContain(t, getOnce(t, base+"/get?url="+url.QueryEscape("http://"+svcName+":8080/")), svcBody)
	v := dlvCall(t, api, "GetVersion", "{}")
	if v["APIVersion"] != float64(2) {
		t.Errorf("dlv GetVersion: %v", v)
	}
	// The debugger holds the program, which runs.
	st, _ := dlvCall(t, api, "State", `{"NonBlocking":true}`)["State"].(map[string]any)
	if st == nil || st["Running"] != true || st["Pid"] == nil {
		t.Errorf("dlv State: %v", st)
	}
}

// TestLoopbackGoChildIncoming: a Go server started by a preloaded program
// (it runs in the sandbox through layer-exec) listens on this machine, and
// the session steals the target's traffic for its port to it.
func TestLoopbackGoChildIncoming(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	_, out := f.startLocal(t, []string{"--engine", "preload", "--steal", "-t", "pid/1"},
		"sh", "-c", `"$0" 0.0.0.0:8890; echo "exit $?"`, loopserver(t))
	waitLine(t, out, "listening ")
	if got := getOnce(t, "http://127.0.0.1:8890/"); got != "hello from loopserver" {
		t.Errorf("on this machine: %q", got)
	}
	var body string
	waitFor(t, "stolen traffic to reach the Go child", func() bool {
		body, _ = f.podGet(t, "http://"+podIP+":8890/")
		return body == "hello from loopserver"
	})
}

// TestLoopbackGoChildEndsWithSession: a Go child of a preloaded shell does
// not outlive the session when the shell is killed.
func TestLoopbackGoChildEndsWithSession(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	cmd, out := f.startLocal(t, []string{"--engine", "preload"}, "sh", "-c", `"$0" 127.0.0.1:0; echo "exit $?"`, loopserver(t))
	addr := waitLine(t, out, "listening ")
	getOnce(t, "http://"+addr+"/")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	waitClosed(t, "the Go child to end with the session", addr)
}

// waitClosed waits (as waitFor does) until nothing accepts connections on
// this machine at addr.
func waitClosed(t *testing.T, what, addr string) {
	t.Helper()
	waitFor(t, what, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}
