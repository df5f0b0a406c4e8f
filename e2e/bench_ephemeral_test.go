//go:build e2e && bench

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// benchEphemeral times `mirrord exec -t pod/target -- true` with the agent
// as a Job and as an ephemeral container (-e), interleaved, against a pod
// of a namespace of its own (each ephemeral session adds a container to
// its target pod for good, so not the fixture's).
func benchEphemeral(t *testing.T, c *cluster) string {
	ns := c.namespace(t, "mirrord-bench-eph")
	c.apply(t, fmt.Sprintf(targetPod, ns, testappImage))
	c.waitReady(t, ns, "target")
	load := loadAvg()
	type mode struct {
		name, first string // first: the agent step's first record
		args        []string
		wall, agent []float64
	}
	modes := []*mode{
		{name: "Job", first: "agent job created"},
		{name: "ephemeral container (`-e`)", first: "agent ephemeral container added", args: []string{"-e"}},
	}
	for i := 0; i <= startupRuns; i++ {
		for _, m := range modes {
			// A Job agent of the run before is gone first, as in the
			// startup benchmark.
			waitUntil(t, time.Minute, "earlier agent pods to be gone", func() bool {
				out, err := c.run(t.Context(), "get", "pods", "-n", ns, "-l", "app=mirrord", "-o", "name")
				return err == nil && strings.TrimSpace(out) == ""
			})
			wall, logs, took := c.execTimed(t, append(m.args, "-t", "pod/target", "-n", ns)...)
			if i == 0 {
				continue // warm-up
			}
			m.wall = append(m.wall, wall.Seconds()*1000)
			if a, ok := logs[m.first]; ok {
				if l, ok := logs["agent listening"]; ok {
					m.agent = append(m.agent, (l-a+took[m.first]).Seconds()*1000)
				}
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n### Startup: Job agent and ephemeral agent (`mirrord exec [-e] -t pod/target -- true`, issue 21)\n\n")
	fmt.Fprintf(&b, "Warm cluster, a pod of the test app in a namespace of its own; %d runs of each after one uncounted warm-up run, "+
		"interleaved. \"Agent\" is from the end of target resolution (then: the token Secret, and the Job or the pod's "+
		"ephemeralcontainers update) to the agent answering a ping through the port-forward (log: `agent listening`). Load average at the start: %s.\n\n", startupRuns, load)
	b.WriteString("| Agent | wall median ms | wall min ms | agent median ms | agent min ms | wall runs (ms) |\n|---|---:|---:|---:|---:|---|\n")
	for _, m := range modes {
		if len(m.wall) == 0 || len(m.agent) == 0 {
			fmt.Fprintf(&b, "| %s | – | – | – | – | (not seen) |\n", m.name)
			continue
		}
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.0f | %.0f | %s |\n", m.name, median(m.wall), minOf(m.wall), median(m.agent), minOf(m.agent), fmtFloats(m.wall, 0))
		t.Logf("%s: wall median %.0f ms, agent median %.0f ms", m.name, median(m.wall), median(m.agent))
	}
	b.WriteString("\nThe ephemeral agent needs no Job controller, scheduling or pod sandbox (the target's pod has them), " +
		"only the kubelet starting one more container; its teardown deletes nothing (the container exits by itself).\n")
	return b.String()
}

// execTimed runs `mirrord exec ARGS -- true` with debug records and
// returns its wall time and, per record message (its first occurrence),
// the offset from the start and its took=.
func (c *cluster) execTimed(t *testing.T, args ...string) (time.Duration, map[string]time.Duration, map[string]time.Duration) {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "mirrord.log")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{"exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage}, args...)
	cmd := exec.CommandContext(ctx, buildMirrord(t), append(full, "--", "true")...)
	cmd.Env = append(os.Environ(), "MIRRORD_LOG_LEVEL=debug", "MIRRORD_LOG_FILE="+logFile)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	logs, _ := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("mirrord %v: %v\n%s\n%s", args, err, stderr.String(), logs)
	}
	at, took := map[string]time.Duration{}, map[string]time.Duration{}
	for _, line := range strings.Split(string(logs), "\n") {
		rec := parseLogfmt(line)
		when, err := time.Parse(time.RFC3339Nano, rec["time"])
		if err != nil || rec["msg"] == "" {
			continue
		}
		if _, seen := at[rec["msg"]]; seen {
			continue
		}
		at[rec["msg"]] = when.Sub(start)
		if d, err := time.ParseDuration(rec["took"]); err == nil {
			took[rec["msg"]] = d
		}
	}
	return wall, at, took
}
