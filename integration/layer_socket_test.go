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
