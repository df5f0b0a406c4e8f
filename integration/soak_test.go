//go:build bench

package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mirrord-go/mirrord/diag"
)

// mib is a mebibyte, for memory figures.
const mib = 1 << 20

const soakSection = "## Soak: one session under mixed traffic"

// soakCounts is the soak program's last "soak {...}" line.
type soakCounts struct {
	DNSOK    int `json:"dns_ok"`
	DNSFail  int `json:"dns_fail"`
	HTTPOK   int `json:"http_ok"`
	HTTPFail int `json:"http_fail"`
	FileOK   int `json:"file_ok"`
	FileFail int `json:"file_fail"`
	Served   int `json:"served"`
}

// envDuration reads a duration from the environment, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// slope is the least-squares slope of ys over xs (per unit of x).
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// TestSoak runs one session for SOAK_DURATION (default 30m; `make soak`)
// under mixed traffic: the program (testdata/soak.js, preload engine)
// resolves a cluster name, GETs a service on a new connection and reads a
// file only the target has, ten times a second each, while a client in
// the cluster sends 40 requests a second to the target's port, half of
// which the session's HTTP filter steals. mirrord exec and the agent
// record their goroutines, heap, RSS and open files every SOAK_SAMPLE
// (default 1m; package diag). Nothing may be lost; goroutines and open
// files must end where they started (±20), and the slopes are written to
// bench/results.md.
func TestSoak(t *testing.T) {
	duration := envDuration(t, "SOAK_DURATION", 30*time.Minute)
	sample := envDuration(t, "SOAK_SAMPLE", time.Minute)
	const port = "8892"
	stats := filepath.Join(t.TempDir(), "stats.jsonl")
	t.Setenv(diag.FileEnv, stats)
	t.Setenv(diag.IntervalEnv, sample.String())

	f := newFixture(t)
	startNodeEcho(t, f.pod, port, "orig")
	f.startAgent("--ttl", "60s")
	cfg := writeConfig(t, `{"target": "pid/1", "feature": {
		"fs": {"mode": "read", "read_only": ["^`+f.podFiles+`"]},
		"network": {"incoming": {"mode": "steal", "http_filter": {"header_filter": "^x-user: alice$", "ports": [`+port+`]}}}}}`)
	app, out := f.startLocal(t, []string{"--engine", "preload", "-f", cfg}, "node", "testdata/soak.js", port, f.podFiles+"/config.yaml", svcName)
	url := "http://" + podIP + ":" + port
	waitFor(t, "the filtered steal", func() bool {
		a := doOne(f.loadClient(t, 1), url, 0, true)
		return a.ok && a.right && a.alice
	})

	// The load: 40 requests a second from 4 keep-alive connections,
	// which are replaced every 5 minutes.
	var (
		mu      sync.Mutex
		answers []answer
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		client := f.loadClient(t, 4)
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		renew := time.NewTicker(5 * time.Minute)
		defer renew.Stop()
		var inflight sync.WaitGroup
		for i := 1; ; i++ {
			select {
			case <-stop:
				inflight.Wait()
				return
			case <-renew.C:
				// Requests still in flight put their connections
				// back into the old client's pool after this: close
				// them again once those requests are done, or they
				// would stay open (the old client has no idle
				// timeout) and show as the agent's.
				old := client
				old.CloseIdleConnections()
				time.AfterFunc(5*time.Second, old.CloseIdleConnections)
				client = f.loadClient(t, 4)
			case <-tick.C:
				c := client
				inflight.Go(func() {
					a := doOne(c, url, i, true)
					mu.Lock()
					answers = append(answers, a)
					mu.Unlock()
				})
			}
		}
	})
	start := time.Now()
	for time.Since(start) < duration {
		time.Sleep(min(sample, duration-time.Since(start)))
		mu.Lock()
		r := tally(answers, true)
		mu.Unlock()
		t.Logf("%v: %d requests, %d lost, %d misrouted", time.Since(start).Round(time.Second), len(answers), r.lost, r.misrouted)
	}
	close(stop)
	wg.Wait()
	app.Process.Signal(os.Interrupt)
	app.Wait()

	// The program's counts: its last report.
	var counts soakCounts
	progOut, _ := os.ReadFile(out)
	for _, line := range strings.Split(string(progOut), "\n") {
		if j, ok := strings.CutPrefix(line, "soak "); ok {
			json.Unmarshal([]byte(j), &counts)
		}
	}
	r := tally(answers, true)

	// The samples, per process.
	byCmd := map[string][]diag.Sample{}
	fh, err := os.Open(stats)
	if err != nil {
		t.Fatal(err)
	}
	for sc := bufio.NewScanner(fh); sc.Scan(); {
		var s diag.Sample
		if json.Unmarshal(sc.Bytes(), &s) == nil && (s.Command == "exec" || s.Command == "agent") {
			byCmd[s.Command] = append(byCmd[s.Command], s)
		}
	}
	fh.Close()

	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nWritten by `make soak` (`TestSoak`, SOAK_DURATION=%v) on %s (%s/%s, %d CPUs, %s; load average %s).\n",
		soakSection, duration, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), loadAvg())
	fmt.Fprintf(&b, "One session (`mirrord exec`, preload engine, Node: `testdata/soak.js`) against the hermetic agent: the program resolves a cluster name, "+
		"GETs a cluster service on a new connection and reads a file only the target has, 10 times a second each; a client in the cluster sends 40 requests a second "+
		"(4 keep-alive connections, replaced every 5 minutes) to the target's port, half of which the session's `header_filter` steals. "+
		"Each process samples itself every %v (package `diag`, `MIRRORD_STATS_FILE`); slopes are least squares over the samples after the first two.\n\n", sample)
	fmt.Fprintf(&b, "| Traffic | Done | Failed |\n|---|---:|---:|\n")
	fmt.Fprintf(&b, "| DNS lookups (program) | %d | %d |\n| outgoing HTTP, new connection each (program) | %d | %d |\n| remote file reads (program) | %d | %d |\n",
		counts.DNSOK, counts.DNSFail, counts.HTTPOK, counts.HTTPFail, counts.FileOK, counts.FileFail)
	fmt.Fprintf(&b, "| incoming requests (filtered steal: %d to the program, %d to the target's app) | %d | %d lost, %d misrouted |\n\n",
		len(r.local), len(r.orig), len(answers), r.lost, r.misrouted)
	b.WriteString("| Process | Samples | RSS MiB first → last | Heap MiB first → last | Goroutines first → last | Open files first → last | RSS slope MiB/h | Heap slope MiB/h | Goroutines slope /h | Open files slope /h |\n|---|---:|---|---|---|---|---:|---:|---:|---:|\n")
	for _, name := range []string{"exec", "agent"} {
		ss := byCmd[name]
		if len(ss) < 3 {
			t.Errorf("%s: %d samples; want at least 3", name, len(ss))
			continue
		}
		steady := ss[2:]
		var xs, rss, heap, gor, fds []float64
		for _, s := range steady {
			xs = append(xs, s.Time.Sub(start).Hours())
			rss = append(rss, float64(s.RSSBytes)/mib)
			heap = append(heap, float64(s.HeapBytes)/mib)
			gor = append(gor, float64(s.Goroutines))
			fds = append(fds, float64(s.FDs))
		}
		first, last := ss[1], ss[len(ss)-1]
		fmt.Fprintf(&b, "| mirrord %s | %d | %.1f → %.1f | %.1f → %.1f | %d → %d | %d → %d | %+.2f | %+.2f | %+.1f | %+.1f |\n", name, len(ss),
			float64(first.RSSBytes)/mib, float64(last.RSSBytes)/mib, float64(first.HeapBytes)/mib, float64(last.HeapBytes)/mib,
			first.Goroutines, last.Goroutines, first.FDs, last.FDs, slope(xs, rss), slope(xs, heap), slope(xs, gor), slope(xs, fds))
		// Goroutines and files come back: a leak of one per request
		// would be thousands.
		maxG := slices.MaxFunc(ss[1:3], func(a, b diag.Sample) int { return a.Goroutines - b.Goroutines }).Goroutines
		maxF := slices.MaxFunc(ss[1:3], func(a, b diag.Sample) int { return a.FDs - b.FDs }).FDs
		if last.Goroutines > maxG+20 || last.FDs > maxF+20 {
			t.Errorf("mirrord %s: goroutines %d → %d, open files %d → %d: a leak", name, maxG, last.Goroutines, maxF, last.FDs)
		}
		// Memory stays where it settled: the Go heap within 8 MiB of its
		// largest early sample, RSS within 24 MiB (30 minutes carry some
		// 18,000 of each kind of request, so a leak of even a few
		// hundred bytes per request shows).
		maxHeap := slices.MaxFunc(ss[1:3], func(a, b diag.Sample) int { return int(a.HeapBytes) - int(b.HeapBytes) }).HeapBytes
		maxRSS := slices.MaxFunc(ss[1:3], func(a, b diag.Sample) int { return int(a.RSSBytes) - int(b.RSSBytes) }).RSSBytes
		if last.HeapBytes > maxHeap+8*mib || last.RSSBytes > maxRSS+24*mib {
			t.Errorf("mirrord %s: heap %.1f → %.1f MiB, RSS %.1f → %.1f MiB: memory grows", name,
				float64(maxHeap)/mib, float64(last.HeapBytes)/mib, float64(maxRSS)/mib, float64(last.RSSBytes)/mib)
		}
	}
	b.WriteString("\nPer sample (minutes since the start: RSS MiB / goroutines / open files):\n\n| Minute | mirrord exec | agent |\n|---:|---|---|\n")
	for i := range max(len(byCmd["exec"]), len(byCmd["agent"])) {
		cell := func(name string) string {
			if i >= len(byCmd[name]) {
				return ""
			}
			s := byCmd[name][i]
			return fmt.Sprintf("%.1f / %d / %d", float64(s.RSSBytes)/mib, s.Goroutines, s.FDs)
		}
		var at time.Time
		if i < len(byCmd["agent"]) {
			at = byCmd["agent"][i].Time
		} else {
			at = byCmd["exec"][i].Time
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", strconv.FormatFloat(at.Sub(start).Minutes(), 'f', 1, 64), cell("exec"), cell("agent"))
	}
	if r.lost != 0 || r.misrouted != 0 || counts.DNSFail+counts.HTTPFail+counts.FileFail != 0 {
		t.Errorf("lost %d, misrouted %d incoming requests; the program's failures: %+v", r.lost, r.misrouted, counts)
	}
	if counts.DNSOK == 0 || counts.HTTPOK == 0 || counts.FileOK == 0 || len(r.local) == 0 {
		t.Errorf("some traffic never happened: %+v, %d stolen requests", counts, len(r.local))
	}
	mergeBenchSection(t, b.String())
	t.Logf("wrote bench/results.md:\n%s", b.String())
}
