//go:build bench

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

const loopbackSection = "## This machine's loopback from the sandbox (netstack engine)"

// TestBenchLoopback measures, for a static Go program under the netstack
// engine, a connection from the program to a server on this machine's
// loopback and one from this machine to the program's server: bulk
// throughput and the median time of a short connection (connect, one
// byte each way, close), each next to the same without mirrord. Paths are
// interleaved; medians of the runs. It writes its section of
// ../bench/results.md.
func TestBenchLoopback(t *testing.T) {
	const size, conns = 512 << 20, 2000
	bin := filepath.Join(t.TempDir(), "loopbench")
	build := exec.Command("go", "build", "-o", bin, "./testdata/loopbench")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	f := newFixture(t)
	f.startAgent("--ttl", "60s")

	// The sinks: one on this machine, one in the sandbox (its program's
	// server, on this machine's loopback), started once.
	direct := startSink(t, exec.Command(bin, "sink", "127.0.0.1:0"))
	_, out := f.startLocal(t, nil, bin, "sink", "127.0.0.1:0")
	sandboxed := waitLine(t, out, "listening ")

	client := func(mode, addr, arg string, mirrord bool) func() (string, error) {
		return func() (string, error) {
			if mirrord {
				return f.mirrord(ctx(t), nil, "--", bin, mode, addr, arg)
			}
			out, err := exec.Command(bin, mode, addr, arg).CombinedOutput()
			return string(out), err
		}
	}
	sz, n := strconv.Itoa(size), strconv.Itoa(conns)
	type path struct {
		name string
		run  func() (string, error)
	}
	groups := []struct {
		title, unit string
		paths       [2]path // without mirrord, with
		higher      bool    // higher is better
	}{
		{"program → this machine, throughput", "MB/s", [2]path{
			{"no mirrord", client("bulk", direct, sz, false)},
			{"program in the sandbox", client("bulk", direct, sz, true)}}, true},
		{"this machine → program, throughput", "MB/s", [2]path{
			{"no mirrord", client("bulk", direct, sz, false)},
			{"server in the sandbox", client("bulk", sandboxed, sz, false)}}, true},
		{"program → this machine, connection p50", "µs", [2]path{
			{"no mirrord", client("lat", direct, n, false)},
			{"program in the sandbox", client("lat", direct, n, true)}}, false},
		{"this machine → program, connection p50", "µs", [2]path{
			{"no mirrord", client("lat", direct, n, false)},
			{"server in the sandbox", client("lat", sandboxed, n, false)}}, false},
	}
	vals := make([][2][]float64, len(groups))
	for run := 0; run < benchRuns; run++ {
		for g, grp := range groups {
			for i, p := range grp.paths {
				out, err := p.run()
				if err != nil {
					t.Fatalf("%s, %s: %v\n%s", grp.title, p.name, err, out)
				}
				vals[g][i] = append(vals[g][i], parseRate(t, out))
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nWritten by `make bench` (`TestBenchLoopback`) on %s (%s/%s, %d CPUs, %s).\n",
		loopbackSection, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&b, "A static Go program (`testdata/loopbench`) sends %d MiB on one connection (throughput), or makes %d "+
		"connections each sending one byte and reading the sink's answer (connection time: connect, one byte each way, close), "+
		"to a sink on this machine's loopback; the sink runs either on this machine or as the program's server in the sandbox. "+
		"%d runs per path, paths interleaved; medians.\n\n", size>>20, conns, benchRuns)
	b.WriteString("| Measure | Path | Median | Runs |\n|---|---|---:|---|\n")
	var summary strings.Builder
	summary.WriteString("\n| Measure | Sandbox vs without mirrord | Goal |\n|---|---:|---|\n")
	for g, grp := range groups {
		var med [2]float64
		for i, p := range grp.paths {
			med[i] = median(append([]float64(nil), vals[g][i]...))
			fmt.Fprintf(&b, "| %s | %s | %.1f %s | %s |\n", grp.title, p.name, med[i], grp.unit, fmtRunsPrec(vals[g][i], 1))
		}
		if grp.higher {
			fmt.Fprintf(&summary, "| %s | %.2f× | ≥ 0.5× |\n", grp.title, med[1]/med[0])
		} else {
			fmt.Fprintf(&summary, "| %s | %+.3f ms | ≤ +0.2 ms |\n", grp.title, (med[1]-med[0])/1000)
		}
		t.Logf("%s: %.1f → %.1f %s", grp.title, med[0], med[1], grp.unit)
	}
	b.WriteString(summary.String())
	mergeBenchSection(t, b.String())
}

// startSink starts a sink and returns the address it says it listens on.
func startSink(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "sink.out")
	fh, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = fh, fh
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); fh.Close() })
	return waitLine(t, out, "listening ")
}
