//go:build bench

package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mirrord-go/mirrord/integration/abuse"
)

const (
	agentMemSection = "## Agent memory: idle, and with 1,000 stolen connections"
	agentMemConns   = 1000
	agentMemPort    = "8894"
)

// memSample is the agent's memory at one moment.
type memSample struct {
	rss, anon int64
	fds       int
}

func (s memSample) mib() (string, string) {
	return strconv.FormatFloat(float64(s.rss)/mib, 'f', 1, 64), strconv.FormatFloat(float64(s.anon)/mib, 'f', 1, 64)
}

// sampleSettled samples the agent every 200 ms until its RSS stops
// growing (three samples within 256 KiB) or 10 s pass, and returns the
// last sample.
func sampleSettled(pid int) memSample {
	var last memSample
	steady := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && steady < 3; {
		time.Sleep(200 * time.Millisecond)
		rss, anon := abuse.Resident(pid)
		s := memSample{rss, anon, abuse.OpenFiles(pid)}
		if d := s.rss - last.rss; d < 256<<10 && d > -(256<<10) {
			steady++
		} else {
			steady = 0
		}
		last = s
	}
	return last
}

// holdConn opens a keep-alive connection from the svc namespace to addr,
// sends request i on it and reads its answer, which must come from the
// app named want; the connection stays open.
func (f *fixture) holdConn(t *testing.T, addr, want string, i int) (net.Conn, error) {
	c, err := f.svcDialer(t)(ctx(t), "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET /hold/%d HTTP/1.1\r\nHost: %s\r\nX-User: alice\r\nX-Req-Id: %d\r\n\r\n", i, addr, i)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.Close()
		return nil, err
	}
	if got := string(body); got != want+" "+strconv.Itoa(i) {
		c.Close()
		return nil, fmt.Errorf("answered %q, want %q", got, want+" "+strconv.Itoa(i))
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// holdConns opens n connections with holdConn.
func (f *fixture) holdConns(t *testing.T, addr, want string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range n {
		c, err := f.holdConn(t, addr, want, i)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// TestBenchAgentMemory measures the agent's memory idle (no client), with
// a session that steals a port, and with 1,000 open connections stolen by
// that session (each has carried one request and stays open: kept-alive
// connections of a busy service), whole and with an HTTP filter. It
// writes its section of bench/results.md.
func TestBenchAgentMemory(t *testing.T) {
	abuse.RaiseNoFile(t, 65536)
	f := newFixture(t)
	startNodeEcho(t, f.pod, agentMemPort, "orig")
	type row struct {
		mode                string
		idle, session, held memSample
	}
	var rows []row
	for _, mode := range []struct{ name, incoming string }{
		{"steal, whole connections", `"steal"`},
		{"steal with an HTTP filter", `{"mode": "steal", "http_filter": {"header_filter": "^x-user: alice$", "ports": [` + agentMemPort + `]}}`},
	} {
		// An agent of its own: Go keeps the heap an earlier mode grew.
		agent := f.startAgent("--ttl", "60s")
		pid := agent.Process.Pid
		idle := sampleSettled(pid)
		cfg := writeConfig(t, `{"target": "pid/1", "feature": {"fs": "local", "network": {"dns": false, "incoming": `+mode.incoming+`}}}`)
		app, appOut := f.startLocal(t, []string{"--engine", "preload", "-f", cfg}, "node", "testdata/echoserver.js", agentMemPort, "local", "600000")
		var err error
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var c net.Conn
			if c, err = f.holdConn(t, podIP+":"+agentMemPort, "local", 0); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(appOut)
				t.Fatalf("%s: the steal did not start: %v\nmirrord:\n%s", mode.name, err, b)
			}
		}
		r := row{mode: mode.name, idle: idle, session: sampleSettled(pid)}
		conns := f.holdConns(t, podIP+":"+agentMemPort, "local", agentMemConns)
		r.held = sampleSettled(pid)
		t.Logf("%s: session %+v, with %d connections %+v", mode.name, r.session, agentMemConns, r.held)
		for _, c := range conns {
			c.Close()
		}
		rows = append(rows, r)
		app.Process.Signal(os.Interrupt)
		app.Wait()
		agent.Process.Signal(syscall.SIGTERM) // it removes its redirects
		agent.Wait()
		waitFor(t, "the agent's redirects to go", func() bool { return len(f.nftTables(t)) == 0 })
	}

	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nWritten by `make bench` (`TestBenchAgentMemory`) on %s (%s/%s, %d CPUs, %s; load average %s).\n",
		agentMemSection, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), loadAvg())
	fmt.Fprintf(&b, "The hermetic agent (`mirrord agent`, the binary the agent image holds; a new one per mode) next to the fake pod; a session (`mirrord exec`, preload, Node's HTTP server) steals the pod's port; "+
		"then %d connections from the svc namespace each carry one request, answered by the local app, and stay open. "+
		"RSS is the agent's whole resident memory: its own allocations (RssAnon) and the pages of its binary it has mapped (shared and reclaimable; once it listens the agent unmaps those that starting up mapped, about 30 MiB). "+
		"Sampled every 200 ms until steady.\n\n", agentMemConns)
	b.WriteString("| State | RSS MiB | RssAnon MiB | Open files |\n|---|---:|---:|---:|\n")
	for _, row := range rows {
		r, a := row.idle.mib()
		fmt.Fprintf(&b, "| %s: the agent idle, no client | %s | %s | %d |\n", row.mode, r, a, row.idle.fds)
		r, a = row.session.mib()
		fmt.Fprintf(&b, "| %s: a session, no connection | %s | %s | %d |\n", row.mode, r, a, row.session.fds)
		r, a = row.held.mib()
		fmt.Fprintf(&b, "| %s: %d open stolen connections | %s | %s | %d |\n", row.mode, agentMemConns, r, a, row.held.fds)
	}
	b.WriteString("\n| Per open stolen connection | KiB (RssAnon) |\n|---|---:|\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s | %.1f |\n", row.mode, float64(row.held.anon-row.session.anon)/1024/agentMemConns)
	}
	mergeBenchSection(t, b.String())
	t.Logf("wrote bench/results.md:\n%s", b.String())
}
