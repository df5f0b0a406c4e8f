package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FindContainerPID finds the main process of a container from its runtime
// ID, as the agent sees its processes: all the node's (a Job agent has
// hostPID) or the target container's (an ephemeral agent shares its PID
// namespace; its main process is then not necessarily PID 1, as a pod with
// shareProcessNamespace has one PID namespace for all its containers).
// Every process of a container has the ID in its cgroup path (for example
// ".../cri-containerd-<id>.scope" or "/kubepods/.../<id>"); the container's
// first process is the one with the lowest PID whose parent is not in the
// same container.
func FindContainerPID(procRoot, id string) (int, error) {
	if len(id) < 12 {
		return 0, fmt.Errorf("container id %q is too short", id)
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return 0, err
	}
	in := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cg, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cgroup"))
		if err == nil && strings.Contains(string(cg), id) {
			in[pid] = true
		}
	}
	best := 0
	for pid := range in {
		if in[parentPID(procRoot, pid)] {
			continue
		}
		if best == 0 || pid < best {
			best = pid
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("no process of container %s found under %s (the agent must see the target's processes: hostPID on its node, or as an ephemeral container, the target container's PID namespace)", id, procRoot)
	}
	return best, nil
}

func parentPID(procRoot string, pid int) int {
	stat, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may contain spaces.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}
