package integration

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serveTCPApp is the target's app for dump: it reads a connection until
// the peer's half-close and answers "app got: " and what it read.
func (f *fixture) serveTCPApp(addr string) {
	var ln net.Listener
	inNetns(f.t, f.pod, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	f.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(append([]byte("app got: "), b...))
			}()
		}
	}()
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDump: `mirrord dump` prints the connections that arrive at the
// target's port (source, bytes, close) while the target's app still gets
// and answers them; Ctrl-C ends it with status 0 and no redirect left in
// the pod, promptly even with a connection still open.
func TestDump(t *testing.T) {
	f := newFixture(t)
	const port = 8893
	f.serveTCPApp(fmt.Sprintf("%s:%d", podIP, port))
	f.startAgent("--ttl", "30s")

	// Two ports: -p repeats; nothing listens on the second one.
	cmd := exec.Command(mirrordBin, "dump", "--agent-addr", f.agentAddr, "-p", fmt.Sprint(port), "-p", "8894")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, io.MultiWriter(&stderr, os.Stderr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ended := false
	defer func() {
		if !ended {
			cmd.Process.Kill()
			<-exited
		}
	}()
	waitFor(t, "dump's redirects for both ports", func() bool { return f.nftRules(t) == 2 })

	dial := func() net.Conn {
		t.Helper()
		var c net.Conn
		inNetns(t, f.svc, func() (err error) {
			c, err = net.DialTimeout("tcp", fmt.Sprintf("%s:%d", podIP, port), 3*time.Second)
			return err
		})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	// send sends data on a new connection, half-closes it and returns
	// the app's answer and the connection's source address.
	send := func(data string) (answer, source string) {
		t.Helper()
		c := dial()
		defer c.Close()
		if _, err := c.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("reading the app's answer: %v", err)
		}
		return string(b), c.LocalAddr().String()
	}

	datas := []string{"first connection's bytes", "second: \x01binary\xff"}
	var sources []string
	for _, d := range datas {
		answer, src := send(d)
		if answer != "app got: "+d {
			t.Fatalf("the target's app answered %q; mirroring must leave it the connection", answer)
		}
		sources = append(sources, src)
	}
	want := []string{
		fmt.Sprintf("## New TCP connection established: Connection ID 0 from %s to %s:%d\n", sources[0], podIP, port),
		fmt.Sprintf("## Connection ID 0: %d bytes\nData:\n%s\n", len(datas[0]), datas[0]),
		"## Connection ID 0 closed\n",
		fmt.Sprintf("## New TCP connection established: Connection ID 1 from %s to %s:%d\n", sources[1], podIP, port),
		// Not UTF-8: hex.
		fmt.Sprintf("## Connection ID 1: %d bytes\nData (hex):\n%x\n", len(datas[1]), datas[1]),
		"## Connection ID 1 closed\n",
	}
	waitFor(t, "dump to print both connections", func() bool {
		return strings.Contains(stdout.String(), "## Connection ID 1 closed\n")
	})
	out := stdout.String()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("dump output lacks %q:\n%s", w, out)
		}
	}
	// Each connection's lines come in order: announce, data, close.
	for id := 0; id < 2; id++ {
		a := strings.Index(out, want[3*id])
		b := strings.Index(out, want[3*id+1])
		c := strings.Index(out, want[3*id+2])
		if a < 0 || b < a || c < b {
			t.Errorf("connection %d: lines out of order:\n%s", id, out)
		}
	}

	// A connection that is still open when dump ends.
	open := dial()
	defer open.Close()
	open.Write([]byte("still open"))
	waitFor(t, "dump to print the open connection's bytes", func() bool {
		return strings.Contains(stdout.String(), "Data:\nstill open\n")
	})

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		ended = true
		if err != nil {
			t.Errorf("dump after SIGINT: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("dump did not end within 10 s of SIGINT")
	}
	// The agent keeps relaying the connection to the target's app; its
	// table goes with it.
	waitFor(t, "the redirect to be removed", func() bool { return f.nftRules(t) == 0 })
	open.Close()
	waitFor(t, "no mirrord_agent_* nftables table left", func() bool { return len(f.nftTables(t)) == 0 })
	if strings.Contains(stdout.String(), "## Connection ID 2 closed") {
		t.Errorf("dump reported a close for the connection it cut on exit:\n%s", stdout.String())
	}

	// The connection that was open is not checked further: when the
	// agent removes its table, the namespace's last NAT chain, the
	// connection's next packet reaches the app's port untranslated and is
	// reset (with another session keeping the table, it goes on). That is
	// the agent's teardown, the same for every mirror session, not dump's.
	open.Close()

	// A new connection goes straight to the app.
	if answer, _ := send("after"); answer != "app got: after" {
		t.Errorf("after dump ended the app answered %q", answer)
	}
	if strings.Contains(stdout.String(), "Connection ID 3") {
		t.Errorf("dump printed a connection made after it ended:\n%s", stdout.String())
	}
}
