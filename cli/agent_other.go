//go:build !linux

package cli

import (
	"fmt"
	"runtime"

	"github.com/alecthomas/kong"

	"github.com/mirrord-go/mirrord/session"
)

// agentVars: the agent's flags exist in the Linux build only.
var agentVars = kong.Vars{}

// AgentCmd is the hidden `mirrord agent`: the agent runs on Linux (in
// the cluster, or next to a local process), as the Linux build.
type AgentCmd struct {
	Args []string `arg:"" optional:"" passthrough:"" help:"The agent's flags (Linux only)."`
}

func (AgentCmd) Run() error {
	return session.NotBuilt(fmt.Sprintf("agent: the agent runs on Linux; this is the %s/%s build of mirrord", runtime.GOOS, runtime.GOARCH))
}

// GoshimHelperCmd is the sandbox's helper, which Linux's netstack engine
// starts.
type GoshimHelperCmd struct{}

func (GoshimHelperCmd) Run() error { return session.CheckRun() }
