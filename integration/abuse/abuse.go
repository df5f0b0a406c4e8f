// Package abuse sends hostile traffic to a port stolen with an HTTP
// filter, for the hermetic integration tests (an agent next to a fake pod)
// and the e2e tests (an agent pod in a cluster) alike: slowloris, 1 GiB
// bodies, huge request heads, the HTTP/2 rapid reset, clients that never
// read. While each attack runs, a normal client's matching request still
// reaches the local app, one the filter does not match still gets the
// target's app's answer, and the agent's memory stays within its bounds
// (README, "Limits of the HTTP-filtered steal").
//
// The target's app is OrigHandler; the local app is
// integration/testdata/echoserver.js named "local", both on the stolen
// port, stolen with a header_filter matching "x-user: me".
package abuse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Match is the header the session's filter takes ("^x-user: me$").
const Match = "X-User"

// Bounds the attacks hold the agent to: the latency of a normal request
// during an attack (under 1 s on a 2-core machine with nothing else to
// do; the bound leaves room for a machine shared with other heavy jobs,
// where up to 3.7 s were seen), and the agent's resident memory during
// every attack: its own (RssAnon, what the Go runtime holds; the agent's
// pod is limited to 100 MiB by default) and all of it (VmRSS: 40 to 50
// MiB more are pages of the binary, which the kernel can drop).
const (
	abuseLatency = 5 * time.Second
	MiB          = 1 << 20
	AnonBound    = 64 * MiB
	RSSBound     = 112 * MiB
	// the agent's headTimeout (agent/httplimits.go)
	headTimeout = 10 * time.Second
	// Clients that never read the local app's answers: the session's
	// byte budget (16 MiB, agent.DefaultMaxSessionBytes) resets the
	// connections holding the most, but every stream's first window
	// (256 KiB, the yamux protocol's) arrives before the first reset, and
	// the collector catches up after: a peak of 60–76 MiB in the first
	// 100 ms (hermetic and in the pod, where the agent's soft memory limit
	// is 80 MiB), and about 30 MiB once the resets are done. The bound
	// leaves room below the pod's 100 MiB, of which the kernel can take
	// back the binary's pages, before it kills the agent.
	BudgetAnonBound  = 88 * MiB
	SettledAnonBound = 48 * MiB
)

// Target is where the attacks go.
type Target struct {
	// Addr is the stolen port, host:port.
	Addr string
	// Within runs fn where the clients are (for the hermetic tests, a
	// network namespace of their own), on one OS thread.
	Within func(fn func())
	// AgentPID is the agent's process, seen from this machine: its
	// memory and open files are sampled from /proc.
	AgentPID int
	// OrigRequests, when set, counts the requests the target's app got
	// (OrigHandler's counter).
	OrigRequests *atomic.Int64
}

// OrigHandler is the target's app: it answers "orig <length of the
// request's body>", or 8 MiB for /big, and counts requests. Serve it
// with HTTP/1.1 and unencrypted HTTP/2 (Serve).
func OrigHandler(requests *atomic.Int64) http.Handler {
	big := make([]byte, 8<<20)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests != nil {
			requests.Add(1)
		}
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "orig %d", n)
	})
}

// Serve serves OrigHandler on ln with HTTP/1.1 and h2c, until the
// returned server is closed.
func Serve(ln net.Listener, requests *atomic.Int64) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: OrigHandler(requests)}
	go srv.Serve(ln)
	return srv
}

// RaiseNoFile raises this process's limit on open files (children, such
// as a hermetic agent, inherit it) to n, or as far as it may: without
// CAP_SYS_RESOURCE (in a container) only the soft limit rises, up to the
// hard one. The slowloris attack holds 10,000 connections.
func RaiseNoFile(t *testing.T, n uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	old := lim
	lim.Cur, lim.Max = n, max(lim.Max, n)
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		lim.Cur, lim.Max = old.Max, old.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("raise the open files limit: %v", err)
		}
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// Ready reports whether a matching and an unmatched request are answered
// as they should be: the filtered steal is in place.
func Ready(tg Target) bool {
	ab := &abuse{tg: tg}
	_, err := ab.probe()
	return err == nil
}

// Run runs each attack as a subtest of t, checking the agent throughout;
// afterwards the agent must hold no more connections than before.
func Run(t *testing.T, tg Target) {
	ab := &abuse{tg: tg}
	if n := ab.noFileLimit(t); n < 12000 {
		t.Fatalf("the agent may open %d files; the slowloris attack needs more than 10,000", n)
	}
	ab.settle(t)
	t.Logf("agent before the attacks: %s", ab.state())

	t.Run("slowloris", func(t *testing.T) {
		const n = 10_000
		conns := ab.slowloris(t, n)
		t.Logf("%d connections, each with half a request head: agent %s", len(conns), ab.state())
		w := ab.watch()
		time.Sleep(3 * time.Second)
		w.end(t)
		// The agent lets go of them without the clients closing: the
		// oldest were ended for newer ones (it keeps 1024 waiting
		// connections), the newest when their heads did not come whole
		// in time; each got a 408 and the close.
		deadline := time.Now().Add(headTimeout + 10*time.Second)
		last := len(conns) - 1
		for _, i := range []int{0, 1, 2, 3, 4, last - 4, last - 3, last - 2, last - 1, last} {
			c := conns[i]
			c.SetReadDeadline(deadline)
			b, err := io.ReadAll(c)
			if err != nil || !strings.HasPrefix(string(b), "HTTP/1.1 408 ") {
				t.Fatalf("slowloris connection %d: read %q, %v; want a 408 and the close", i, b, err)
			}
		}
		ab.released(t)
		for _, c := range conns {
			c.Close()
		}
	})

	t.Run("1GB body", func(t *testing.T) {
		w := ab.watch()
		var wg sync.WaitGroup
		for _, matched := range []bool{false, true} {
			wg.Go(func() {
				start := time.Now()
				got, err := ab.postBig(t, matched, 1<<30)
				want := "orig 1073741824"
				if matched {
					want = "local big 1073741824"
				}
				if err != nil || got != want {
					t.Errorf("1 GiB body (matched: %v): %q, %v; want %q", matched, got, err, want)
				}
				t.Logf("1 GiB body (matched: %v) delivered in %v", matched, time.Since(start).Round(time.Millisecond))
			})
		}
		wg.Wait()
		w.end(t)
		ab.released(t)
	})

	t.Run("headers", func(t *testing.T) {
		w := ab.watch()
		// 64 KiB of headers, as one header and as 512, pass:
		// net/http takes up to 1 MiB.
		for _, matched := range []bool{false, true} {
			for _, many := range []bool{false, true} {
				status, body, err := ab.bigHead(t, attackHead(matched, many, 64<<10))
				want := "orig 0"
				if matched {
					want = "local h"
				}
				if err != nil || status != 200 || body != want {
					t.Errorf("64 KiB of headers (matched %v, many %v): %d %q, %v; want 200 %q", matched, many, status, body, err, want)
				}
			}
		}
		// 10 MiB heads on 20 connections at once are refused with 431,
		// and not held.
		var heads [][]byte
		for i := range 4 {
			heads = append(heads, attackHead(i%2 == 0, i < 2, 10<<20))
		}
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				status, _, err := ab.bigHead(t, heads[i%4])
				if status != http.StatusRequestHeaderFieldsTooLarge {
					t.Errorf("10 MiB of headers: status %d, %v; want 431", status, err)
				}
			})
		}
		wg.Wait()
		w.end(t)
		ab.released(t)
	})

	t.Run("h2 rapid reset", func(t *testing.T) {
		var before int64
		if tg.OrigRequests != nil {
			before = tg.OrigRequests.Load()
		}
		w := ab.watch()
		stop := time.Now().Add(3 * time.Second)
		var streams, goaways, conns int
		var maxStreams uint32 // what the agent advertises
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for time.Now().Before(stop) {
					s, goaway, ms := ab.rapidReset(t, stop)
					mu.Lock()
					streams, conns, maxStreams = streams+s, conns+1, max(maxStreams, ms)
					if goaway {
						goaways++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		w.end(t)
		saw := "" // the target's app's count, where it is kept
		if tg.OrigRequests != nil {
			saw = fmt.Sprintf("; the target's app saw %d requests", tg.OrigRequests.Load()-before)
		}
		t.Logf("rapid reset: %d streams opened and reset on %d connections (%d ended by the agent's GOAWAY)%s",
			streams, conns, goaways, saw)
		if streams < 10_000 {
			t.Errorf("the attack opened only %d streams", streams)
		}
		// The agent's HTTP/2 server bounds the handlers of a connection,
		// and ends one that piles up reset streams.
		if maxStreams == 0 || maxStreams > 100 {
			t.Errorf("the agent advertises SETTINGS_MAX_CONCURRENT_STREAMS %d, want 1 to 100", maxStreams)
		}
		if goaways == 0 {
			t.Error("the agent sent no GOAWAY to the connections that reset streams")
		}
		ab.released(t)
	})

	t.Run("never reads", func(t *testing.T) {
		// Clients that pipeline requests for 8 MiB answers (and small
		// ones for the local app) and never read.
		var conns []net.Conn
		for i := range 100 {
			c := ab.dial(t)
			var b strings.Builder
			for j := range 50 {
				if i%2 == 0 {
					fmt.Fprintf(&b, "GET /big HTTP/1.1\r\nHost: pod\r\n\r\n")
				} else {
					fmt.Fprintf(&b, "GET /%d HTTP/1.1\r\nHost: pod\r\nX-User: me\r\nX-Req-Id: %d\r\n\r\n", j, j)
				}
			}
			if _, err := io.WriteString(c, b.String()); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		w := ab.watch()
		time.Sleep(3 * time.Second)
		w.end(t)
		for _, c := range conns {
			c.Close()
		}
		ab.released(t)
	})

	t.Run("never reads the local app's answers", func(t *testing.T) {
		// Clients whose requests match, for the local app's 8 MiB
		// answer, and that never read: each stolen connection's stream
		// would hold its window in the agent (100 × up to 1 MiB, as
		// yamux's buffer grows), but the session's byte budget resets
		// the connections holding the most (BudgetAnonBound).
		var conns []net.Conn
		for i := range 100 {
			c := ab.dial(t)
			if _, err := fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: pod\r\nX-User: me\r\nX-Req-Id: %d\r\n\r\n", i); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		w := ab.watch()
		w.anonBound = BudgetAnonBound
		time.Sleep(5 * time.Second)
		w.end(t)
		// Once the resets are done, the agent holds about the budget.
		if _, anon := Resident(ab.tg.AgentPID); anon > SettledAnonBound {
			t.Errorf("the agent's anonymous memory is %.1f MiB 5 s into the attack, want under %d MiB once the session's byte budget reset the connections holding the most", float64(anon)/MiB, SettledAnonBound/MiB)
		}
		// Reset ones read ECONNRESET after what reached them; the others
		// still wait for the rest of their answer.
		reset := 0
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := io.Copy(io.Discard, c); errors.Is(err, syscall.ECONNRESET) {
				reset++
			}
			c.Close()
		}
		t.Logf("%d of %d clients' connections reset", reset, len(conns))
		if reset == 0 {
			t.Error("no client's connection was reset: the session's byte budget did not act")
		}
		ab.released(t)
	})
	t.Logf("agent after the attacks: %s", ab.state())
}

// abuse drives the attacks against one agent.
type abuse struct {
	tg      Target
	baseFDs int // the agent's open files when no attack runs
}

// noFileLimit is the agent's limit on open files.
func (ab *abuse) noFileLimit(t *testing.T) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", ab.tg.AgentPID))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			n, _ := strconv.Atoi(strings.Fields(rest)[0])
			return n
		}
	}
	t.Fatal("no open files limit in /proc/PID/limits")
	return 0
}

// Resident is a process's resident memory in bytes: all of it (VmRSS),
// and its anonymous part (RssAnon: for the agent, the rest are pages of
// the binary).
func Resident(pid int) (all, anon int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if f := strings.Fields(v); len(f) > 0 && (k == "VmRSS" || k == "RssAnon") {
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			if k == "VmRSS" {
				all = kb << 10
			} else {
				anon = kb << 10
			}
		}
	}
	return all, anon
}

// OpenFiles counts a process's open files.
func OpenFiles(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

func (ab *abuse) rss() (all, anon int64) { return Resident(ab.tg.AgentPID) }
func (ab *abuse) fds() int               { return OpenFiles(ab.tg.AgentPID) }

func (ab *abuse) state() string {
	all, anon := ab.rss()
	return fmt.Sprintf("RSS %.1f MiB (anonymous %.1f MiB), %d open files", float64(all)/MiB, float64(anon)/MiB, ab.fds())
}

// settle records the agent's open files once they stop changing.
func (ab *abuse) settle(t *testing.T) {
	prev := -1
	for range 50 {
		n := ab.fds()
		if n == prev {
			break
		}
		prev = n
		time.Sleep(100 * time.Millisecond)
	}
	ab.baseFDs = prev
}

// released waits for the agent to be back at the open files it had
// before the attack (give or take a probe's), and logs its memory then.
func (ab *abuse) released(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for ab.fds() > ab.baseFDs+2 {
		if time.Now().After(deadline) {
			t.Fatalf("the agent still has %d open files, %d before the attack", ab.fds(), ab.baseFDs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("after: agent %s", ab.state())
}

// dial opens a connection to the stolen port from where the clients are.
func (ab *abuse) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := ab.dialContext(context.Background(), "tcp", ab.tg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialContext is a DialContext for HTTP clients: every connection is made
// from where the clients are, whatever address it is given.
func (ab *abuse) dialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	var c net.Conn
	var err error
	ab.tg.Within(func() { c, err = (&net.Dialer{}).DialContext(ctx, network, ab.tg.Addr) })
	return c, err
}

// probe sends a matching request and one the filter does not match, each
// on a new connection, and one over the h2c connection of this probe; it
// returns the slowest answer's latency.
func (ab *abuse) probe() (time.Duration, error) {
	var slowest time.Duration
	for _, p := range []struct {
		user, want string
		h2         bool
	}{{"me", "local p", false}, {"", "orig 0", false}, {"", "orig 0", true}} {
		var protos http.Protocols
		if p.h2 {
			protos.SetUnencryptedHTTP2(true)
		} else {
			protos.SetHTTP1(true)
		}
		tr := &http.Transport{DisableKeepAlives: true, Protocols: &protos, DialContext: ab.dialContext}
		client := &http.Client{Timeout: 5 * time.Second, Transport: tr}
		req, _ := http.NewRequest("GET", "http://"+ab.tg.Addr+"/probe", nil)
		req.Header.Set("X-Req-Id", "p")
		if p.user != "" {
			req.Header.Set(Match, p.user)
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		d := time.Since(start)
		slowest = max(slowest, d)
		if err != nil || string(b) != p.want {
			return d, fmt.Errorf("probe (user %q, h2 %v): %q, %v; want %q", p.user, p.h2, b, err, p.want)
		}
		if d > abuseLatency {
			return d, fmt.Errorf("probe (user %q, h2 %v) answered in %v", p.user, p.h2, d)
		}
	}
	return slowest, nil
}

// abuseWatch probes and samples the agent's memory while an attack runs.
type abuseWatch struct {
	ab    *abuse
	stop  chan struct{}
	done  sync.WaitGroup
	mu    sync.Mutex
	start int64 // RSS when the watch began
	peak  int64 // the highest RSS sampled
	anon  int64 // the highest RssAnon sampled
	// anonBound, when set, is the attack's bound on RssAnon (else
	// AnonBound).
	anonBound int64
	probes    int
	slowest   time.Duration
	errs      []error
}

func (ab *abuse) watch() *abuseWatch {
	w := &abuseWatch{ab: ab, stop: make(chan struct{})}
	w.start, w.anon = ab.rss()
	w.peak = w.start
	w.done.Go(func() {
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			rss, anon := ab.rss()
			w.mu.Lock()
			w.peak, w.anon = max(w.peak, rss), max(w.anon, anon)
			w.mu.Unlock()
		}
	})
	w.done.Go(func() {
		for {
			d, err := ab.probe()
			w.mu.Lock()
			w.probes++
			w.slowest = max(w.slowest, d)
			if err != nil {
				w.errs = append(w.errs, err)
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	return w
}

// end stops the watch and checks its findings: every probe answered in
// time, and the agent's resident memory stayed within its bounds.
func (w *abuseWatch) end(t *testing.T) {
	t.Helper()
	close(w.stop)
	w.done.Wait()
	t.Logf("during: agent RSS %.1f MiB at the start, peak %.1f MiB, anonymous peak %.1f MiB; %d probes, slowest %v, %d failed",
		float64(w.start)/MiB, float64(w.peak)/MiB, float64(w.anon)/MiB, w.probes, w.slowest.Round(time.Millisecond), len(w.errs))
	for i, err := range w.errs {
		if i == 5 {
			t.Errorf("... %d more", len(w.errs)-i)
			break
		}
		t.Errorf("a normal request during the attack: %v", err)
	}
	anonBound := int64(AnonBound)
	if w.anonBound > 0 {
		anonBound = w.anonBound
	}
	if w.peak > RSSBound || w.anon > anonBound {
		t.Errorf("the agent's RSS reached %.1f MiB (anonymous %.1f MiB) during the attack, over its bounds of %d MiB (%d MiB)",
			float64(w.peak)/MiB, float64(w.anon)/MiB, RSSBound/MiB, anonBound/MiB)
	}
}

// slowloris opens n connections that each send the start of a request
// head and then nothing.
func (ab *abuse) slowloris(t *testing.T, n int) []net.Conn {
	t.Helper()
	const workers = 8
	conns := make([][]net.Conn, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ab.tg.Within(func() {
				for range n / workers {
					// A loaded machine may drop SYNs while the agent's
					// accept queue is full: the kernel sends them again.
					c, err := net.DialTimeout("tcp", ab.tg.Addr, 15*time.Second)
					if err != nil {
						errs[w] = err
						return
					}
					conns[w] = append(conns[w], c)
					if _, err := io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: pod\r\nX-Slow: 1\r\n"); err != nil {
						errs[w] = err
						return
					}
				}
			})
		})
	}
	wg.Wait()
	var all []net.Conn
	for _, cs := range conns {
		all = append(all, cs...)
	}
	t.Cleanup(func() {
		for _, c := range all {
			c.Close()
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("slowloris: %d connections, then %v", len(all), err)
	}
	return all
}

// sizedBody is n bytes of a request body made up as they are read.
type sizedBody struct{ n int64 }

func (b *sizedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), b.n))
	b.n -= int64(k)
	return k, nil
}

// postBig posts n bytes, with a Content-Length when matched (to the
// local app) and chunked otherwise, and returns the answer: its body,
// and the local app's count of the bytes it got.
func (ab *abuse) postBig(t *testing.T, matched bool, n int64) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: ab.dialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: 60 * time.Second, Transport: tr}
	req, _ := http.NewRequest("POST", "http://"+ab.tg.Addr+"/upload", io.NopCloser(&sizedBody{n}))
	if matched {
		req.ContentLength = n
		req.Header.Set(Match, "me")
		req.Header.Set("X-Req-Id", "big")
	} else {
		req.ContentLength = -1 // chunked
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if matched {
		return string(b) + " " + resp.Header.Get("X-Request-Bytes"), err
	}
	return string(b), err
}

// attackHead is a request head that carries size bytes of headers, in one
// header or in many of 128 bytes.
func attackHead(matched, many bool, size int) []byte {
	var b bytes.Buffer
	b.WriteString("GET /head HTTP/1.1\r\nHost: pod\r\nX-Req-Id: h\r\n")
	if matched {
		b.WriteString(Match + ": me\r\n")
	}
	if many {
		for i := 0; b.Len() < size; i++ {
			fmt.Fprintf(&b, "X-H%06d: %s\r\n", i, strings.Repeat("v", 115))
		}
	} else {
		b.WriteString("X-Big: " + strings.Repeat("v", size) + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// bigHead sends head on a new connection and returns the answer's status
// and body. The head is written while the answer is read: a server may
// answer before it has all of it.
func (ab *abuse) bigHead(t *testing.T, head []byte) (int, string, error) {
	c := ab.dial(t)
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	go c.Write(head)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body), err
}

// rapidReset is one connection of the HTTP/2 rapid reset attack
// (CVE-2023-44487): it opens streams with a request each and resets them
// at once, as fast as it can, until stop or until the agent ends the
// connection. It returns the streams it opened, whether the agent sent a
// GOAWAY, and the agent's SETTINGS_MAX_CONCURRENT_STREAMS.
func (ab *abuse) rapidReset(t *testing.T, stop time.Time) (streams int, goaway bool, maxStreams uint32) {
	c := ab.dial(t)
	defer c.Close()
	c.SetDeadline(stop.Add(5 * time.Second))
	bw := bufio.NewWriterSize(c, 64<<10)
	fr := http2.NewFramer(bw, c)
	var gotGoaway atomic.Bool
	var advertised atomic.Uint32
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				gotGoaway.Store(true)
			case *http2.SettingsFrame:
				if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
					advertised.Store(v)
				}
			}
		}
	}()
	io.WriteString(bw, http2.ClientPreface)
	if fr.WriteSettings() != nil {
		return 0, false, 0
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for id := uint32(1); time.Now().Before(stop) && !gotGoaway.Load(); id += 2 {
		hb.Reset()
		for _, h := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "pod"}, {":path", "/reset"}} {
			enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
		}
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}) != nil ||
			fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break
		}
		streams++
		if streams%64 == 0 && bw.Flush() != nil {
			break
		}
	}
	bw.Flush()
	c.Close()
	<-readDone
	return streams, gotGoaway.Load(), advertised.Load()
}
