//go:build bench

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBenchPreload measures what the preload engine costs: time added to
// each exec of /bin/true (the library loads into every process of the
// program's tree) and connect latency to a remote service, preload next to
// netstack. Rows go to bench/results.md (section "preload").
func TestBenchPreload(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	loadBefore, _ := os.ReadFile("/proc/loadavg")
	// Inside one session, paired rounds: the same loop of execs in a shell
	// without the library (env -u LD_PRELOAD) and in a layered one, each
	// timed in the shell; the median of the per-round differences is
	// robust to a busy machine.
	//
	// A third shell preloads an empty library: what any LD_PRELOAD costs
	// on this machine (mapping a file and its page faults), the floor
	// under ours.
	empty := filepath.Join(t.TempDir(), "empty.so")
	if out, err := exec.Command("cc", "-shared", "-fPIC", "-Wl,-z,noseparate-code", "-Wl,-z,norelro", "-s", "-o", empty, "-x", "c", "/dev/null").CombinedOutput(); err != nil {
		t.Fatalf("build an empty library: %v\n%s", err, out)
	}
	const execs, rounds = 100, 9
	loop := fmt.Sprintf("i=0; while [ $i -lt %d ]; do /bin/true; i=$((i+1)); done", execs)
	script := fmt.Sprintf(`for r in $(seq %d); do a=$(date +%%s%%N); env -u LD_PRELOAD sh -c '%s'; b=$(date +%%s%%N); sh -c '%s'; c=$(date +%%s%%N); env LD_PRELOAD=%s sh -c '%s'; d=$(date +%%s%%N); echo pair $((b-a)) $((c-b)) $((d-c)); done`, rounds, loop, loop, empty, loop)
	hopsSock := startConnHops(t, f.pod)
	var added, floor, preloadLat, netstackLat, directLat, hopsLat []float64
	for range benchRuns {
		out, err := f.mirrord(ctx(t), nil, "--engine", "preload", "--", "sh", "-c", script)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			fields := strings.Fields(line)
			if len(fields) != 4 || fields[0] != "pair" {
				continue
			}
			p, err1 := strconv.ParseFloat(fields[1], 64)
			l, err2 := strconv.ParseFloat(fields[2], 64)
			e, err3 := strconv.ParseFloat(fields[3], 64)
			if err1 != nil || err2 != nil || err3 != nil {
				t.Fatalf("exec loop output %q", line)
			}
			added = append(added, (l-p)/execs/1e3) // µs per exec
			floor = append(floor, (e-p)/execs/1e3)
		}
		// The same connects from the pod's own namespace, without
		// mirrord: what the engines' numbers compare with.
		dout, err := exec.CommandContext(ctx(t), "ip", "netns", "exec", f.pod, "python3", "testdata/connlat.py", svcName, "8080", "200").CombinedOutput()
		if err != nil {
			t.Fatalf("direct connlat in the pod's namespace: %v\n%s", err, dout)
		}
		dfields := strings.Fields(string(dout))
		v, err := strconv.ParseFloat(dfields[len(dfields)-1], 64)
		if err != nil {
			t.Fatalf("connlat output %q", dout)
		}
		directLat = append(directLat, v)
		// The floor: the same hops, with nothing else in them.
		hout, err := exec.CommandContext(ctx(t), "python3", "testdata/connhops.py", hopsSock, svcIP, "8080", "200").CombinedOutput()
		if err != nil {
			t.Fatalf("connhops: %v\n%s", err, hout)
		}
		v, err = strconv.ParseFloat(strings.TrimSpace(string(hout)), 64)
		if err != nil {
			t.Fatalf("connhops output %q", hout)
		}
		hopsLat = append(hopsLat, v)
		for _, e := range []struct {
			engine string
			into   *[]float64
		}{{"preload", &preloadLat}, {"netstack", &netstackLat}} {
			out, err := f.mirrord(ctx(t), nil, "--engine", e.engine, "--", "python3", "testdata/connlat.py", svcName, "8080", "200")
			if err != nil {
				t.Fatalf("%s: %v\n%s", e.engine, err, out)
			}
			fields := strings.Fields(out)
			v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			if err != nil {
				t.Fatalf("connlat output %q", out)
			}
			*e.into = append(*e.into, v)
		}
	}
	if len(added) == 0 {
		t.Fatal("no exec timings")
	}
	perExec := median(append([]float64(nil), added...)) // µs
	pl, nl := median(append([]float64(nil), preloadLat...)), median(append([]float64(nil), netstackLat...))
	dl := median(append([]float64(nil), directLat...))
	var b strings.Builder
	loadAfter, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "## Preload engine\n\n%d runs, interleaved; medians. Load average (1/5/15 min) before: %s, after: %s.\n\n",
		benchRuns, loadFields(loadBefore), loadFields(loadAfter))
	b.WriteString("| Measure | Median | Target |\n|---|---:|---|\n")
	fmt.Fprintf(&b, "| added time per exec of /bin/true under the preload (median of %d paired rounds: %d execs from a layered sh vs from one without the library) | %.3f ms | ≤ 0.07 ms |\n", len(added), execs, perExec/1000)
	fmt.Fprintf(&b, "| the same with an empty LD_PRELOAD library instead (what any preload costs on this machine) | %.3f ms | (reported) |\n", median(floor)/1000)
	fmt.Fprintf(&b, "| connect latency to that service from the pod's namespace, no mirrord (200 back-to-back connects of `testdata/connlat.py`, median) | %.0f µs | (reported) |\n", dl)
	fmt.Fprintf(&b, "| connect latency to a remote service, preload engine | %.0f µs | ≤ 300 µs |\n", pl)
	fmt.Fprintf(&b, "| connect latency to a remote service, netstack engine | %.0f µs | ≤ 300 µs |\n", nl)
	fmt.Fprintf(&b, "| preload / netstack connect latency | %.2f | (reported) |\n", pl/nl)
	fmt.Fprintf(&b, "| reference: the preload's hops with nothing else in them (`testdata/connhops`: the socket goes with a request over a unix socket to a proxy, which asks an agent over one open TCP connection, which connects from the pod's namespace; the proxy connects the socket to its loopback listener; Python client as above) | %.0f µs | (reported: the floor of this design on this machine) |\n", median(hopsLat))
	mergeBenchSection(t, b.String())
	t.Logf("per exec %.3f ms; connect direct %.0f µs, preload %.0f µs, netstack %.0f µs", perExec/1000, dl, pl, nl)
}

// startConnHops builds and starts testdata/connhops (an agent whose
// sockets are in the namespace ns, and a proxy asking it) until the test
// ends, and returns the proxy's unix socket.
func startConnHops(t *testing.T, ns string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "connhops")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/connhops").CombinedOutput(); err != nil {
		t.Fatalf("build connhops: %v\n%s", err, out)
	}
	start := func(args ...string) string {
		line := startReading(t, exec.Command(bin, args...))
		if !strings.HasSuffix(line, "\n") {
			t.Fatalf("connhops %s: no line (%q)", args[0], line)
		}
		return strings.TrimSpace(line)
	}
	agent := start("agent", "/var/run/netns/"+ns)
	sock := fmt.Sprintf("@mirrord-connhops-%d", os.Getpid())
	start("proxy", agent, sock)
	return sock
}

// loadFields is the 1, 5 and 15 minute load averages of /proc/loadavg.
func loadFields(b []byte) string {
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
