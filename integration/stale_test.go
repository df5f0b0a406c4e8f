package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// ownerFile, in a test binary's build directory, holds that binary's pid.
const ownerFile = "owner.pid"

// claimBuildDir records this test binary as the owner of dir, the
// directory its mirrord and test programs are built in.
func claimBuildDir(dir string) error {
	return os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600)
}

// killStaleProcesses ends what an earlier test binary left running when
// it died without its cleanups (a `go test -timeout` panic, a kill): the
// agents, `mirrord exec`s and test servers run from its build directory
// (/tmp/mirrord-itest-*, whose owner is gone), and their descendants,
// such as a local app that holds a port a later test needs. The build
// directory goes too.
func killStaleProcesses(t *testing.T) {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "mirrord-itest-*"))
	var stale []string
	for _, d := range dirs {
		if d == filepath.Dir(mirrordBin) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not (yet) claimed: its binary may be building it
		}
		if pid, err := strconv.Atoi(string(b)); err == nil && syscall.Kill(pid, 0) == nil {
			continue // its test binary still runs
		}
		stale = append(stale, d+"/")
	}
	if len(stale) == 0 {
		return
	}
	// Every process, with its parent, and the roots: those whose
	// executable lies in a stale directory.
	children := map[int][]int{}
	var roots []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			children[p.ppid] = append(children[p.ppid], pid)
		}
		exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
		for _, d := range stale {
			if strings.HasPrefix(exe, d) {
				roots = append(roots, pid)
			}
		}
	}
	var kill func(pid int)
	kill = func(pid int) {
		for _, c := range children[pid] {
			kill(c)
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			t.Logf("killed a process left by an earlier test run: %d", pid)
		}
	}
	for _, pid := range roots {
		kill(pid)
	}
	for _, d := range stale {
		os.RemoveAll(d)
	}
}
