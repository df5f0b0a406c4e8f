//go:build bench

package integration

import (
	"fmt"
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
	const execs = 1000
	// Inside one session: the same loop in a shell without the library
	// (env -u LD_PRELOAD) and in a layered one, each timed in the shell.
	loop := fmt.Sprintf("i=0; while [ $i -lt %d ]; do /bin/true; i=$((i+1)); done", execs)
	script := fmt.Sprintf(`a=$(date +%%s%%N); env -u LD_PRELOAD sh -c '%s'; b=$(date +%%s%%N); sh -c '%s'; c=$(date +%%s%%N); echo $((b-a)) $((c-b))`, loop, loop)
	var plain, layered, preloadLat, netstackLat []float64
	for range benchRuns {
		out, err := f.mirrord(ctx(t), nil, "--engine", "preload", "--", "sh", "-c", script)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		fields := strings.Fields(out)
		if len(fields) < 2 {
			t.Fatalf("exec loop output %q", out)
		}
		p, err1 := strconv.ParseFloat(fields[len(fields)-2], 64)
		l, err2 := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("exec loop output %q", out)
		}
		plain, layered = append(plain, p/1e3), append(layered, l/1e3) // µs
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
	perExec := (median(append([]float64(nil), layered...)) - median(append([]float64(nil), plain...))) / execs
	pl, nl := median(append([]float64(nil), preloadLat...)), median(append([]float64(nil), netstackLat...))
	var b strings.Builder
	fmt.Fprintf(&b, "## Preload engine\n\n%d runs, interleaved; medians.\n\n", benchRuns)
	b.WriteString("| Measure | Median | Target |\n|---|---:|---|\n")
	fmt.Fprintf(&b, "| added time per exec of /bin/true under the preload (loop of %d execs in a layered sh vs the same loop without the library, one session) | %.3f ms | ≤ 0.1 ms |\n", execs, perExec/1000)
	fmt.Fprintf(&b, "| connect latency to a remote service, preload engine | %.0f µs | (reported) |\n", pl)
	fmt.Fprintf(&b, "| connect latency to a remote service, netstack engine | %.0f µs | (reported) |\n", nl)
	fmt.Fprintf(&b, "| preload / netstack connect latency | %.2f | (reported) |\n", pl/nl)
	mergeBenchSection(t, b.String())
	t.Logf("per exec %.3f ms; connect preload %.0f µs, netstack %.0f µs", perExec/1000, pl, nl)
}
