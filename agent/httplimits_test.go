package agent

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWaitListEvicts: past maxWaiting waiting connections, the one that
// has waited longest is ended (its read fails at once), and only it; one
// that stopped waiting is not counted.
func TestWaitListEvicts(t *testing.T) {
	var wl waitList
	var waiters []*waiter
	var peers []net.Conn
	for range maxWaiting + 1 {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		w := wl.add(a)
		w.wait(time.Time{})
		waiters = append(waiters, w)
		peers = append(peers, b)
	}
	readFails := func(i int) bool { // for an ended connection: it does not block
		_, err := waiters[i].c.Read(make([]byte, 1))
		return err != nil && isTimeout(err)
	}
	ended := func(i int) bool {
		wl.mu.Lock()
		defer wl.mu.Unlock()
		return waiters[i].evicted
	}
	if !ended(0) || !readFails(0) {
		t.Fatal("the oldest waiting connection was not ended")
	}
	waiters[0].setDeadline(time.Now().Add(time.Hour)) // no way back
	if !readFails(0) || !waiters[0].stop() {
		t.Error("an ended connection waits again")
	}
	if ended(1) {
		t.Error("the second oldest was ended too")
	}
	go peers[1].Write([]byte("x"))
	if _, err := waiters[1].c.Read(make([]byte, 1)); err != nil {
		t.Errorf("the second oldest cannot read: %v", err)
	}
	// One stops waiting (a request is being served): a newcomer ends the
	// oldest still waiting, not it.
	if waiters[1].stop() {
		t.Error("stop says a connection that was not ended was")
	}
	for range 2 { // the first takes the place waiters[1] left
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		wl.add(a).wait(time.Time{})
	}
	if ended(1) {
		t.Error("a connection that stopped waiting was ended")
	}
	if !ended(2) || !readFails(2) {
		t.Error("the oldest waiting connection was not ended")
	}
}

// rawRequest sends head on a new connection to front and returns the
// answer's status and body.
func rawRequest(t *testing.T, front, head string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(c, head)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%.40q...: %v", head, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// TestFilteredHeadLimits: serveFiltered reads request heads up to
// maxHeaderBytes (431 beyond); heads above smallHead take from
// headBudget, and get 431 while it is spent, when smaller ones still pass.
func TestFilteredHeadLimits(t *testing.T) {
	front := filteredSetup(t)
	head := func(id string, size int, user string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "GET / HTTP/1.1\r\nHost: x\r\nX-Req-Id: %s\r\n", id)
		if user != "" {
			fmt.Fprintf(&b, "X-User: %s\r\n", user)
		}
		for i := 0; b.Len() < size; i++ {
			fmt.Fprintf(&b, "X-Pad-%d: %s\r\n", i, strings.Repeat("p", 100))
		}
		b.WriteString("\r\n")
		return b.String()
	}
	for _, tt := range []struct {
		name       string
		size       int
		user       string
		spent      bool // headBudget is spent
		wantStatus int
		wantBody   string
	}{
		{"small", 1 << 10, "", false, 200, "orig small"},
		{"64 KiB", 64 << 10, "", false, 200, "orig 64 KiB"},
		{"64 KiB matched", 64 << 10, "alice", false, 200, "local 64 KiB matched"},
		{"1 MiB", maxHeaderBytes - 1024, "", false, 200, "orig 1 MiB"},
		{"2 MiB", 2 << 20, "", false, 431, ""},
		{"small, budget spent", 4 << 10, "", true, 200, "orig small, budget spent"},
		{"64 KiB, budget spent", 64 << 10, "", true, 431, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.spent {
				if !takeHeadBytes(headBudget) {
					t.Fatal("headBudget is not free")
				}
				defer headBytes.Add(-headBudget)
			}
			status, body := rawRequest(t, front, head(tt.name, tt.size, tt.user))
			if status != tt.wantStatus || status == 200 && body != tt.wantBody {
				t.Errorf("%d %q, want %d %q", status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
	if n := headBytes.Load(); n != 0 {
		t.Errorf("heads still hold %d bytes of the budget", n)
	}
}
