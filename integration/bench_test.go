//go:build bench

package integration

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mirrord-go/mirrord/bench"
	"github.com/mirrord-go/mirrord/goshim"
)

// The benchmark runs each path several times, alternating them, and keeps
// the median, so that both sides of a ratio see the same machine state.
const (
	benchBytes = 1 << 30
	benchRuns  = 5
)

// serveSink counts bytes until EOF and answers with the count.
func serveSink(t *testing.T, ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				io.WriteString(c, strconv.FormatInt(n, 10))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
}

func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

func parseRate(t *testing.T, out string) float64 {
	lines := strings.Fields(strings.TrimSpace(out))
	v, err := strconv.ParseFloat(lines[len(lines)-1], 64)
	if err != nil {
		t.Fatalf("bulk output %q", out)
	}
	return v
}

// TestBench measures bulk TCP throughput through the netstack engine and
// through the agent, each next to its direct baseline, and writes
// ../bench/results.md.
func TestBench(t *testing.T) {
	dir := t.TempDir()
	bulk := filepath.Join(dir, "bulk")
	build := exec.Command("go", "build", "-o", bulk, "./testdata/bulk")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	f := newFixture(t)
	f.startAgent("--ttl", "30s")

	// Sinks: on loopback and on this machine's end of the local link
	// (both served by this process), and in the svc namespace.
	lo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveSink(t, lo)
	hostSink, err := net.Listen("tcp", hostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	serveSink(t, hostSink)
	var svcSink net.Listener
	inNetns(t, f.svc, func() (err error) { svcSink, err = net.Listen("tcp", svcIP+":9999"); return err })
	serveSink(t, svcSink)

	// The floor of any path through two relays that look at the bytes
	// (mirrord's two, the CLI and the agent, must: yamux frames the
	// streams): two plain relays copying through user space, one on
	// loopback in the CLI's place, one in the agent's, which connects from
	// the pod's namespace. Both run in this process.
	podDial := func() (c net.Conn, err error) {
		inNetns(t, f.pod, func() error { c, err = net.Dial("tcp", svcIP+":9999"); return nil })
		return c, err
	}
	agentPlace := plainRelay(t, podDial)
	cliPlace := plainRelay(t, func() (net.Conn, error) { return net.Dial("tcp", agentPlace) })

	size := strconv.Itoa(benchBytes)
	localCfg := writeConfig(t, `{"feature": {"network": {"outgoing": {"filter": {"local": ["`+hostIP+`"]}}}}}`)
	paths := []struct {
		name string
		run  func() (string, error)
	}{
		{"loopback (no mirrord)", func() (string, error) {
			out, err := exec.Command(bulk, lo.Addr().String(), size).CombinedOutput()
			return string(out), err
		}},
		{"netstack engine to a local sink (outgoing filter: local; the socket moves here)", func() (string, error) {
			return f.mirrord(ctx(t), nil, "-f", localCfg, "--", bulk, hostSink.Addr().String(), size)
		}},
		{"the same through gVisor's netstack (bound to the sandbox's address first)", func() (string, error) {
			return f.mirrord(ctx(t), nil, "-f", localCfg, "--", bulk, hostSink.Addr().String(), size, goshim.SandboxAddr4.String())
		}},
		{"direct in the pod namespace (no mirrord)", func() (string, error) {
			out, err := exec.Command("ip", "netns", "exec", f.pod, bulk, svcIP+":9999", size).CombinedOutput()
			return string(out), err
		}},
		{"through the agent (netstack + agent)", func() (string, error) {
			return f.mirrord(ctx(t), nil, "--", bulk, svcIP+":9999", size)
		}},
		{"reference: two plain relays in mirrord's places (user-space copies, no mirrord)", func() (string, error) {
			out, err := exec.Command(bulk, cliPlace, size).CombinedOutput()
			return string(out), err
		}},
		{"direct in the pod namespace, Python sender (no mirrord)", func() (string, error) {
			out, err := exec.Command("ip", "netns", "exec", f.pod, "python3", "testdata/bulk.py", svcIP+":9999", size).CombinedOutput()
			return string(out), err
		}},
		{"through the agent, preload engine, Python sender", func() (string, error) {
			return f.mirrord(ctx(t), nil, "--engine", "preload", "--", "python3", "testdata/bulk.py", svcIP+":9999", size)
		}},
	}
	rates := make([][]float64, len(paths))
	for run := 0; run < benchRuns; run++ {
		for i, p := range paths {
			out, err := p.run()
			if err != nil {
				t.Fatalf("%s: %v\n%s", p.name, err, out)
			}
			rates[i] = append(rates[i], parseRate(t, out))
		}
	}
	med := make([]float64, len(paths))
	for i := range paths {
		med[i] = median(append([]float64(nil), rates[i]...))
		t.Logf("%-45s median %8.1f MB/s  runs %v", paths[i].name, med[i], rates[i])
	}
	netstackRatio := med[1] / med[0]
	gvisorRatio := med[2] / med[0]
	agentRatio := med[4] / med[3]
	floorRatio := med[5] / med[3]
	preloadRatio := med[7] / med[6]

	var b strings.Builder
	fmt.Fprintf(&b, "## Bulk TCP throughput (netstack engine, agent)\n\nWritten by `make bench` (`TestBench`) on %s (%s/%s, %d CPUs, %s).\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&b, "Bulk TCP upload of %d MiB per run, %d runs per path, paths interleaved; medians.\n\n", benchBytes>>20, benchRuns)
	b.WriteString("| Path | Median MB/s | Runs (MB/s) |\n|---|---:|---|\n")
	for i, p := range paths {
		fmt.Fprintf(&b, "| %s | %.1f | %s |\n", p.name, med[i], fmtRuns(rates[i]))
	}
	fmt.Fprintf(&b, "\n| Ratio | Value | Target |\n|---|---:|---|\n")
	fmt.Fprintf(&b, "| netstack engine / loopback | %.2f | ≥ 0.8 |\n", netstackRatio)
	fmt.Fprintf(&b, "| gVisor's netstack / loopback | %.2f | (reported: the data path of a connection to the target) |\n", gvisorRatio)
	fmt.Fprintf(&b, "| through the agent / direct in the pod | %.2f | ≥ 0.7 |\n", agentRatio)
	fmt.Fprintf(&b, "| through the agent, preload engine / direct in the pod (Python sender both) | %.2f | ≥ 0.7 |\n", preloadRatio)
	fmt.Fprintf(&b, "| two plain relays / direct in the pod | %.2f | (reported: the floor of a path through two relays that copy the bytes, on this machine) |\n", floorRatio)
	mergeBenchSection(t, b.String())
	t.Logf("netstack/loopback = %.2f (gVisor %.2f), agent/direct = %.2f; wrote bench/results.md", netstackRatio, gvisorRatio, agentRatio)
}

// plainRelay listens on loopback and relays each connection to one that
// dial makes, copying both ways through a user-space buffer as mirrord's
// relays do (no splice), half-closing each direction at its end. It
// returns the listener's address.
func plainRelay(t *testing.T, dial func() (net.Conn, error)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	copyHalf := func(dst, src net.Conn, done chan<- struct{}) {
		buf := make([]byte, 256<<10)
		io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
		dst.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				d, err := dial()
				if err != nil {
					return
				}
				defer d.Close()
				done := make(chan struct{}, 2)
				go copyHalf(d, c, done)
				go copyHalf(c, d, done)
				<-done
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

func fmtRuns(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(s, ", ")
}

// TestBenchOpenat measures what the sandbox adds to an openat of a local
// file (answered "continue" by the supervisor): a static Go program opens
// and closes the same file in a loop without mirrord, in the sandbox with
// fs mode local (the supervisor still sees every open, for the socket
// tables under /proc), and in the sandbox with the file layer (the default
// mode, read). It also times opens of a remote file (through the
// FUSE view and the agent). It writes its section of ../bench/results.md.
func TestBenchOpenat(t *testing.T) {
	const localOpens, remoteOpens = 20000, 2000
	fsclient := buildFSClient(t)
	f := newFixture(t)
	f.startAgent("--ttl", "60s")
	dir, inPod := podOnlyDir(t, f)
	mustWrite(t, inPod+"/remote.txt", "remote")
	file := filepath.Join(t.TempDir(), "local.txt")
	mustWrite(t, file, "local")
	localCfg := writeConfig(t, `{"feature": {"fs": "local"}}`)
	loop := func(path string, n int) string { return fmt.Sprintf("openloop %s %d", path, n) }
	paths := []struct {
		name string
		run  func() (string, error)
	}{
		{"no mirrord", func() (string, error) {
			out, err := exec.Command(fsclient, loop(file, localOpens)).CombinedOutput()
			return string(out), err
		}},
		{"sandbox, fs mode local (opens seen by the supervisor)", func() (string, error) {
			return f.mirrord(ctx(t), nil, "-f", localCfg, "--", fsclient, loop(file, localOpens))
		}},
		{"sandbox with the file layer (fs mode read), local file", func() (string, error) {
			return f.mirrord(ctx(t), nil, "--", fsclient, loop(file, localOpens))
		}},
		{"sandbox with the file layer, remote file (FUSE view + agent)", func() (string, error) {
			return f.mirrord(ctx(t), nil, "--", fsclient, loop(dir+"/remote.txt", remoteOpens))
		}},
	}
	loadBefore := loadAvg()
	perOpen := make([][]float64, len(paths))
	for run := 0; run < benchRuns; run++ {
		for i, p := range paths {
			out, err := p.run()
			if err != nil {
				t.Fatalf("%s: %v\n%s", p.name, err, out)
			}
			var us float64
			if _, err := fmt.Sscanf(out[strings.LastIndex(out, ": ")+2:], "%f us/open", &us); err != nil {
				t.Fatalf("%s: unexpected output %q", p.name, out)
			}
			perOpen[i] = append(perOpen[i], us)
		}
	}
	med := make([]float64, len(paths))
	for i := range paths {
		med[i] = median(append([]float64(nil), perOpen[i]...))
		t.Logf("%-62s median %7.2f µs/open  runs %v", paths[i].name, med[i], perOpen[i])
	}
	added := med[2] - med[0]

	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nWritten by `make bench` (`TestBenchOpenat`) on %s (%s/%s, %d CPUs, %s).\n",
		openatSection, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&b, "A static Go program opens and closes one file in a loop (%d times for local files, %d for the remote one), "+
		"%d runs per path, paths interleaved; medians of the mean time per open+close. "+
		"Load average (1/5/15 min) before: %s, after: %s (the machine is shared).\n\n", localOpens, remoteOpens, benchRuns, loadBefore, loadAvg())
	b.WriteString("| Path | Median µs/open | Runs (µs/open) |\n|---|---:|---|\n")
	for i, p := range paths {
		fmt.Fprintf(&b, "| %s | %.2f | %s |\n", p.name, med[i], fmtRunsPrec(perOpen[i], 1))
	}
	fmt.Fprintf(&b, "\n| Measure | Value | Target |\n|---|---:|---|\n")
	fmt.Fprintf(&b, "| added per openat of a local path: sandbox with the file layer vs no mirrord (seccomp notification, answered \"continue\") | %.1f µs | ≤ 50 µs |\n", added)
	fmt.Fprintf(&b, "| open+close of a remote file (FUSE view + agent) | %.1f µs | ≤ 200 µs |\n", med[len(med)-1])
	mergeBenchSection(t, b.String())
	t.Logf("the sandbox adds %.1f µs per openat of a local path; wrote bench/results.md", added)
}

const openatSection = "## File layer (goshim): cost per openat"

func fmtRunsPrec(xs []float64, prec int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatFloat(x, 'f', prec, 64)
	}
	return strings.Join(s, ", ")
}

// mergeBenchSection puts section (which starts with its "## " heading)
// into ../bench/results.md in place of an earlier run's.
func mergeBenchSection(t *testing.T, section string) {
	t.Helper()
	if err := bench.Merge("../bench/results.md", section); err != nil {
		t.Fatal(err)
	}
}
