//go:build bench

package integration

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Load through a filtered steal: requests at a given concurrency, a
// random half of them carrying the header the filter takes.
const (
	loadRequests    = 10000
	loadConcurrency = 100
	loadRounds      = 3
	seqRequests     = 1000 // one at a time, for the latency each path adds
	incomingSection = "## Incoming: HTTP-filtered steal under load"
)

// loadResult is one run of requests against one path.
type loadResult struct {
	lost, misrouted int
	local, orig     []time.Duration // latencies of requests answered by each side
	elapsed         time.Duration
}

func (r loadResult) all() []time.Duration { return append(slices.Clone(r.local), r.orig...) }

// percentile returns the p-th percentile (0-100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }

// startNodeEcho runs testdata/echoserver.js in the namespace ns (the pod)
// until the test ends.
func startNodeEcho(t *testing.T, ns, port, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "node", "testdata/echoserver.js", port, name)
	if line := startReading(t, cmd); line != "listening\n" {
		t.Fatalf("echo server in %s: %q", ns, line)
	}
	return cmd
}

// startReading starts cmd until the test ends and returns the first line
// it prints, with its newline (what it printed, if it ended before one);
// the rest of its output is read and dropped.
func startReading(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	go io.Copy(io.Discard, out)
	return line
}

// procCPU is the CPU time (user and system) the process pid has used, 0
// if it is gone.
func procCPU(pid int) time.Duration {
	p, _ := readProc(pid)
	return p.cpu
}

// descendants lists the processes below pid.
func descendants(pid int) map[int]procInfo {
	all := map[int]procInfo{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			if info, ok := readProc(p); ok {
				all[p] = info
			}
		}
	}
	out := map[int]procInfo{}
	for p, info := range all {
		for q := info.ppid; q > 1; q = all[q].ppid {
			if q == pid {
				out[p] = info
				break
			}
		}
	}
	return out
}

// cpuRoles is the CPU time each part of a filtered steal's path has used
// so far: the load client (this process), the apps (the target's, its
// twin, the local one), the agent, and mirrord exec (with any helper
// process of its engine).
type cpuRoles struct{ client, apps, agent, cli time.Duration }

func readCPURoles(agent int, apps []int, cli int) cpuRoles {
	r := cpuRoles{client: procCPU(os.Getpid()), agent: procCPU(agent), cli: procCPU(cli)}
	for _, p := range apps {
		r.apps += procCPU(p)
	}
	for _, p := range descendants(cli) {
		if p.comm == "node" {
			r.apps += p.cpu
		} else {
			r.cli += p.cpu
		}
	}
	return r
}

func (r cpuRoles) sub(o cpuRoles) cpuRoles {
	return cpuRoles{r.client - o.client, r.apps - o.apps, r.agent - o.agent, r.cli - o.cli}
}

func (r cpuRoles) add(o cpuRoles) cpuRoles {
	return cpuRoles{r.client + o.client, r.apps + o.apps, r.agent + o.agent, r.cli + o.cli}
}

func (r cpuRoles) total() time.Duration { return r.client + r.apps + r.agent + r.cli }

// perRequest is d spread over n requests, in µs.
func perRequest(d time.Duration, n int) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond)/float64(n), 'f', 0, 64)
}

// loadClient is a keep-alive HTTP client in the svc namespace with up to
// conns connections.
func (f *fixture) loadClient(t *testing.T, conns int) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost:     conns,
		MaxIdleConnsPerHost: conns,
		DialContext:         f.svcDialer(t),
	}}
}

// answer is how one request went.
type answer struct {
	alice bool // it carried "X-User: alice"
	d     time.Duration
	ok    bool // a 200 with a body
	right bool // from the right app, for this request
}

// doOne sends request i to url: X-Req-Id i and, for a random half,
// "X-User: alice"; with stealing, those must be answered by "local i",
// the others by "orig i" (without stealing, by "orig i" all).
func doOne(client *http.Client, url string, i int, stealing bool) answer {
	alice := rand.IntN(2) == 0
	req, _ := http.NewRequest("GET", url+"/item/"+strconv.Itoa(i), nil)
	req.Header.Set("X-Req-Id", strconv.Itoa(i))
	if alice {
		req.Header.Set("X-User", "alice")
	}
	t0 := time.Now()
	resp, err := client.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	a := answer{alice: alice, d: time.Since(t0), ok: err == nil && resp.StatusCode == 200}
	want := "orig "
	if alice && stealing {
		want = "local "
	}
	a.right = string(body) == want+strconv.Itoa(i)
	return a
}

// tally sorts answers into a loadResult.
func tally(answers []answer, stealing bool) loadResult {
	var r loadResult
	for _, a := range answers {
		switch {
		case !a.ok:
			r.lost++
		case !a.right:
			r.misrouted++
		case a.alice && stealing:
			r.local = append(r.local, a.d)
		default:
			r.orig = append(r.orig, a.d)
		}
	}
	return r
}

// runLoad sends n requests (doOne) to url from workers goroutines.
func runLoad(client *http.Client, url string, n, workers int, stealing bool) loadResult {
	answers := make([]answer, n)
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := range next {
				answers[i] = doOne(client, url, i, stealing)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	r := tally(answers, stealing)
	r.elapsed = time.Since(start)
	return r
}

// runPaired sends n requests one at a time to each of two paths, in
// turns, so that both see the same moments of a busy machine.
func runPaired(directClient *http.Client, directURL string, stolenClient *http.Client, stolenURL string, n int) (direct, stolen loadResult) {
	da, sa := make([]answer, n), make([]answer, n)
	for i := range n {
		da[i] = doOne(directClient, directURL, i, false)
		sa[i] = doOne(stolenClient, stolenURL, i, true)
	}
	return tally(da, false), tally(sa, true)
}

// TestBenchIncoming sends 10,000 requests at concurrency 100 through an
// HTTP-filtered steal (half of them match the filter and are answered by
// the local app through the agent and mirrord, half pass through the agent
// to the target's app), next to the same load sent straight to an
// identical app in the pod, for each engine. Every request must come back
// from the right app with its own answer. Then it times requests one at a
// time for the latency each path adds. It writes its section of
// bench/results.md.
func TestBenchIncoming(t *testing.T) {
	f := newFixture(t)
	// The target's app on the stolen port, and its twin on a port no one
	// subscribes: the direct baseline, measured in the same conditions.
	target := startNodeEcho(t, f.pod, "8896", "orig")
	twin := startNodeEcho(t, f.pod, "8897", "orig")
	agent := f.startAgent("--ttl", "60s")
	stolenURL, directURL := "http://"+podIP+":8896", "http://"+podIP+":8897"

	type row struct {
		engine                string
		direct, steal         []loadResult
		seqDirect, seqThrough loadResult
		cpuDirect, cpuSteal   cpuRoles // over the runs under load
	}
	var rows []row
	for _, engine := range engines {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
			"http_filter": {"header_filter": "^x-user: alice$", "ports": [8896]}}}}}`)
		app, _ := f.startLocal(t, []string{"--engine", engine, "-f", cfg}, "node", "testdata/echoserver.js", "8896", "local")
		waitFor(t, "the filtered steal", func() bool {
			req, _ := http.NewRequest("GET", stolenURL+"/ready", nil)
			req.Header.Set("X-User", "alice")
			req.Header.Set("X-Req-Id", "ready")
			resp, err := f.loadClient(t, 1).Do(req)
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b) == "local ready"
		})
		r := row{engine: engine}
		for round := range loadRounds {
			// A fresh client per path and round; 200 requests first
			// open its connections.
			for _, p := range []struct {
				url      string
				stealing bool
				into     *[]loadResult
				cpu      *cpuRoles
			}{{directURL, false, &r.direct, &r.cpuDirect}, {stolenURL, true, &r.steal, &r.cpuSteal}} {
				client := f.loadClient(t, loadConcurrency)
				runLoad(client, p.url, 200, loadConcurrency, p.stealing)
				before := readCPURoles(agent.Process.Pid, []int{target.Process.Pid, twin.Process.Pid}, app.Process.Pid)
				res := runLoad(client, p.url, loadRequests, loadConcurrency, p.stealing)
				*p.cpu = p.cpu.add(readCPURoles(agent.Process.Pid, []int{target.Process.Pid, twin.Process.Pid}, app.Process.Pid).sub(before))
				client.CloseIdleConnections()
				*p.into = append(*p.into, res)
				t.Logf("%s round %d %s: %d requests in %v, lost %d, misrouted %d, p50 %s ms, p99 %s ms", engine, round, p.url,
					loadRequests, res.elapsed.Round(time.Millisecond), res.lost, res.misrouted, ms(percentile(res.all(), 50)), ms(percentile(res.all(), 99)))
				if res.lost != 0 || res.misrouted != 0 {
					t.Errorf("%s, %s: %d lost, %d misrouted of %d", engine, p.url, res.lost, res.misrouted, loadRequests)
				}
			}
		}
		// One request at a time on one connection per path, the paths
		// in turns: what each hop adds.
		dc, sc := f.loadClient(t, 1), f.loadClient(t, 1)
		runPaired(dc, directURL, sc, stolenURL, 50)
		r.seqDirect, r.seqThrough = runPaired(dc, directURL, sc, stolenURL, seqRequests)
		dc.CloseIdleConnections()
		sc.CloseIdleConnections()
		for _, res := range []loadResult{r.seqDirect, r.seqThrough} {
			if res.lost != 0 || res.misrouted != 0 {
				t.Errorf("%s, one at a time: %d lost, %d misrouted", engine, res.lost, res.misrouted)
			}
		}
		rows = append(rows, r)
		app.Process.Signal(os.Interrupt)
		app.Wait()
	}

	// Percentiles over all rounds of a path.
	merge := func(rs []loadResult) loadResult {
		var m loadResult
		for _, r := range rs {
			m.lost += r.lost
			m.misrouted += r.misrouted
			m.local = append(m.local, r.local...)
			m.orig = append(m.orig, r.orig...)
			m.elapsed += r.elapsed
		}
		return m
	}
	rate := func(r loadResult, rounds int) string {
		return strconv.FormatFloat(float64(rounds*loadRequests)/r.elapsed.Seconds(), 'f', 0, 64)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nWritten by `make bench` (`TestBenchIncoming`) on %s (%s/%s, %d CPUs, %s; load average %s).\n",
		incomingSection, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), loadAvg())
	fmt.Fprintf(&b, "%d HTTP/1.1 requests per run at concurrency %d (keep-alive connections from the svc namespace), %d runs per path, paths interleaved; "+
		"a random half carry `X-User: alice`, which the session's `header_filter` takes. The apps are the same Node server "+
		"(`testdata/echoserver.js`): the target's app on the stolen port, its twin on another port for the direct baseline, the local app under `mirrord exec`. "+
		"Each answer names its app and echoes its request's id: a lost request is an error or a non-200, a misrouted one an answer from the wrong app or for another request. "+
		"Latencies are from the client, percentiles over all runs of a path.\n\n", loadRequests, loadConcurrency, loadRounds)
	b.WriteString("| Engine | Path | Requests | Lost | Misrouted | req/s | p50 ms | p99 ms |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		d, s := merge(r.direct), merge(r.steal)
		fmt.Fprintf(&b, "| %s | direct to the app in the pod (no mirrord) | %d | %d | %d | %s | %s | %s |\n", r.engine, loadRounds*loadRequests, d.lost, d.misrouted, rate(d, loadRounds), ms(percentile(d.all(), 50)), ms(percentile(d.all(), 99)))
		fmt.Fprintf(&b, "| %s | filtered steal, all requests | %d | %d | %d | %s | %s | %s |\n", r.engine, loadRounds*loadRequests, s.lost, s.misrouted, rate(s, loadRounds), ms(percentile(s.all(), 50)), ms(percentile(s.all(), 99)))
		fmt.Fprintf(&b, "| %s | … matched: agent → mirrord → local app | %d | | | | %s | %s |\n", r.engine, len(s.local), ms(percentile(s.local, 50)), ms(percentile(s.local, 99)))
		fmt.Fprintf(&b, "| %s | … not matched: agent → the target's app | %d | | | | %s | %s |\n", r.engine, len(s.orig), ms(percentile(s.orig, 50)), ms(percentile(s.orig, 99)))
	}
	b.WriteString("\n| Engine | filtered steal / direct (req/s) | Target |\n|---|---:|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %.2f | ≥ 0.8 |\n", r.engine, merge(r.direct).elapsed.Seconds()/merge(r.steal).elapsed.Seconds())
	}
	// Where the CPUs go: the machine is saturated under this load, so
	// the rate is what a request costs all the processes on its path.
	n := loadRounds * loadRequests
	fmt.Fprintf(&b, "\nCPU time per request under load (µs; each process's user and system time over the same runs, /proc/PID/stat). "+
		"The machine has %d CPUs: at 0.8 of the direct rate, all processes together can spend at most %d CPUs ÷ (0.8 × that rate) per request.\n\n", runtime.NumCPU(), runtime.NumCPU())
	b.WriteString("| Engine | Path | load client µs | apps µs | agent µs | mirrord exec µs | all processes µs | at most, for 0.8 of direct, µs |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		d, s := r.cpuDirect, r.cpuSteal
		budget := time.Duration(float64(runtime.NumCPU()) * float64(time.Second) / (0.8 * float64(n) / merge(r.direct).elapsed.Seconds()))
		fmt.Fprintf(&b, "| %s | direct (no mirrord) | %s | %s | | | %s | |\n", r.engine, perRequest(d.client, n), perRequest(d.apps, n), perRequest(d.total(), n))
		fmt.Fprintf(&b, "| %s | filtered steal | %s | %s | %s | %s | %s | %s |\n", r.engine, perRequest(s.client, n), perRequest(s.apps, n),
			perRequest(s.agent, n), perRequest(s.cli, n), perRequest(s.total(), n), perRequest(budget, 1))
	}
	fmt.Fprintf(&b, "\nOne request at a time on one connection per path, the paths in turns (%d requests each, after 50 to warm up): the latency each path adds.\n\n", seqRequests)
	b.WriteString("| Engine | Path | p50 ms | p99 ms | p50 added ms | p99 added ms | Target (p50 added) |\n|---|---|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		d, s := r.seqDirect.all(), r.seqThrough
		fmt.Fprintf(&b, "| %s | direct (no mirrord) | %s | %s | | | |\n", r.engine, ms(percentile(d, 50)), ms(percentile(d, 99)))
		fmt.Fprintf(&b, "| %s | matched: agent → mirrord → local app | %s | %s | %s | %s | ≤ 1 ms |\n", r.engine, ms(percentile(s.local, 50)), ms(percentile(s.local, 99)),
			ms(percentile(s.local, 50)-percentile(d, 50)), ms(percentile(s.local, 99)-percentile(d, 99)))
		fmt.Fprintf(&b, "| %s | not matched: agent → the target's app | %s | %s | %s | %s | ≤ 1 ms |\n", r.engine, ms(percentile(s.orig, 50)), ms(percentile(s.orig, 99)),
			ms(percentile(s.orig, 50)-percentile(d, 50)), ms(percentile(s.orig, 99)-percentile(d, 99)))
	}
	b.WriteString("\n| Under load (concurrency 100) | p50 added ms | p99 added ms |\n|---|---:|---:|\n")
	for _, r := range rows {
		d, s := merge(r.direct), merge(r.steal)
		fmt.Fprintf(&b, "| %s, matched | %s | %s |\n", r.engine, ms(percentile(s.local, 50)-percentile(d.all(), 50)), ms(percentile(s.local, 99)-percentile(d.all(), 99)))
		fmt.Fprintf(&b, "| %s, not matched | %s | %s |\n", r.engine, ms(percentile(s.orig, 50)-percentile(d.all(), 50)), ms(percentile(s.orig, 99)-percentile(d.all(), 99)))
	}
	mergeBenchSection(t, b.String())
	t.Logf("wrote bench/results.md:\n%s", b.String())
}

// loadAvg is /proc/loadavg's first three fields: the machine is shared.
func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " / ")
}
