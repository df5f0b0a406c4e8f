//go:build !linux

package session

import (
	"context"
	"fmt"
	"runtime"
)

// The engines that run a program in a session are Linux's: the preload
// library is an ELF LD_PRELOAD library, the netstack sandbox is made of
// Linux namespaces, a TUN device and seccomp, and a local agent enters a
// process's namespaces. Elsewhere the session serves what needs no engine
// (port-forward, dump); a macOS engine would take the place of this file.

// CheckRun says whether this build can run a program in a session.
func CheckRun() error {
	return NotBuilt(fmt.Sprintf("running a program in a target's context needs Linux for now (this mirrord is the %s/%s build: ls, verify-config, config schema, port-forward, dump and agent-image push work here)",
		runtime.GOOS, runtime.GOARCH))
}

// Run is Linux's only (CheckRun).
func (s *Session) Run(ctx context.Context, argv []string) error { return CheckRun() }

// LayerExec is Linux's only (CheckRun).
func LayerExec(ctx context.Context, path string, args []string) error { return CheckRun() }

// startLocalAgent: the agent of a pid target enters the process's
// namespaces, which only Linux has.
func startLocalAgent(ctx context.Context, pid string, ttl uint16) (addr, token string, exited <-chan struct{}, err error) {
	return "", "", nil, NotBuilt(fmt.Sprintf("target pid/%s: a local process as the target needs Linux (the agent enters its namespaces); on %s, target a pod or use --agent-addr", pid, runtime.GOOS))
}
