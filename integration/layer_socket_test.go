package integration

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLayerSocketOtherUser: the preload's session socket is abstract, so
// any local process can reach it; only the session's own user (and the
// program's descendants, such as a server that drops its privileges) may
// use it. Another user's process gets no answer, while a child of the
// program that switched to that same user still resolves names through
// the session.
func TestLayerSocketOtherUser(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	sockFile := f.dir + "/sock"
	// The program prints its session socket for the test, then a child
	// that becomes nobody resolves a name only the target knows.
	script := `echo "$MIRRORD_LAYER_SOCK" > ` + sockFile + `; setpriv --reuid=65534 --regid=65534 --clear-groups getent hosts ` + svcName + `; sleep 3`
	done := make(chan struct{})
	var out string
	var err error
	go func() {
		defer close(done)
		out, err = f.mirrord(ctx(t), nil, "--engine", "preload", "--", "sh", "-c", script)
	}()
	var sock string
	waitFor(t, "the program to print its session socket", func() bool {
		b, _ := os.ReadFile(sockFile)
		sock = strings.TrimSpace(string(b))
		return sock != ""
	})
	py := `import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(3)
try:
    s.connect("\0" + sys.argv[1].lstrip("@"))
    s.sendall(b"H\n")
    got = s.recv(100)
    print("answer:", repr(got) if got else "none")
except OSError as e:
    print("answer: none", e)`
	other, _ := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", py, sock).CombinedOutput()
	own, _ := exec.Command("/usr/bin/python3", "-c", py, sock).CombinedOutput()
	<-done
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(string(other), "answer: none") {
		t.Errorf("another user's process was answered by the session:\n%s", other)
	}
	if !strings.Contains(string(own), "answer: b'H\\t") {
		t.Errorf("the session's own user got no answer:\n%s", own)
	}
	mustContain(t, out, svcIP) // the child that dropped its privileges
}

// TestLayerRelayOtherUser: the loopback sockets the session relays the
// program's remote connections and datagrams through serve the program's
// own sockets only. The program here asks for its routes itself and
// takes its time before using them, as a slow program could, while
// another user (nobody) goes for the relays: for TCP the session must
// hand out no port to connect to (it connects the program's socket
// itself), and the UDP relay must ignore datagrams from other sockets.
// The program's own socket then carries its connection and datagrams.
func TestLayerRelayOtherUser(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	ports, goFile := f.dir+"/ports", f.dir+"/go"
	prog := `import os, socket, sys, time
layer = "\0" + os.environ["MIRRORD_LAYER_SOCK"].lstrip("@")
svc, ports, go = sys.argv[1], sys.argv[2], sys.argv[3]
def ask(req, fd):
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(layer)
    socket.send_fds(u, [req.encode()], [fd])
    r = u.recv(200).decode().strip().split("\t")
    u.close()
    return r
t = socket.socket()
tr = ask("C\ttcp\t%s\t8080\n" % svc, t.fileno())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ur = ask("C\tudp\t%s\t9000\n" % svc, u.fileno())
print("replies", tr, ur, flush=True)
with open(ports + ".tmp", "w") as fh:
    fh.write("%s %s" % (tr[2] if tr[0] == "R" else "none", ur[2]))
os.rename(ports + ".tmp", ports)
while not os.path.exists(go):
    time.sleep(0.05)
try:
    if tr[0] == "R":
        t.connect(("127.0.0.1", int(tr[2])))
    t.settimeout(3)
    t.sendall(b"GET / HTTP/1.0\r\nHost: svc\r\n\r\n")
    data = b""
    while True:
        b = t.recv(4096)
        if not b:
            break
        data += b
    print("tcp own:", data.decode(errors="replace").split("\r\n\r\n")[-1])
except OSError as e:
    print("tcp own: failed", e)
u.settimeout(3)
u.sendto(b"mine", ("127.0.0.1", int(ur[2])))
try:
    print("udp own:", u.recv(100).decode())
except OSError as e:
    print("udp own: failed", e)
`
	attack := `import socket, sys
tport, uport = sys.argv[1], int(sys.argv[2])
if tport != "none":
    try:
        c = socket.create_connection(("127.0.0.1", int(tport)), timeout=2)
        c.sendall(b"GET / HTTP/1.0\r\nHost: svc\r\n\r\n")
        print("tcp stolen:", c.recv(1000))
    except OSError as e:
        print("tcp refused:", e)
else:
    print("tcp: no port handed out")
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(1)
u.sendto(b"theirs", ("127.0.0.1", uport))
try:
    print("udp stolen:", u.recv(100))
except OSError as e:
    print("udp refused:", e)
`
	done := make(chan struct{})
	var out string
	var err error
	go func() {
		defer close(done)
		out, err = f.mirrord(ctx(t), nil, "--engine", "preload", "--", "/usr/bin/python3", "-c", prog, svcIP, ports, goFile)
	}()
	var fields []string
	waitFor(t, "the program's routes", func() bool {
		b, _ := os.ReadFile(ports)
		fields = strings.Fields(string(b))
		return len(fields) == 2
	})
	other, _ := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", attack, fields[0], fields[1]).CombinedOutput()
	os.WriteFile(goFile, nil, 0o644)
	<-done
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("another user:\n%s", other)
	if strings.Contains(string(other), "stolen") || !strings.Contains(string(other), "udp refused") {
		t.Errorf("another user's process used the program's relay:\n%s", other)
	}
	mustContain(t, out, "tcp own: "+svcBody, "udp own: echo:mine")
}
