package cli

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/alecthomas/kong"

	"github.com/mirrord-go/mirrord/agent"
	"github.com/mirrord-go/mirrord/goshim"
)

// agentVars are the agent flags' defaults in help texts.
var agentVars = kong.Vars{"agent_max_connections": strconv.Itoa(agent.DefaultMaxConnections)}

// AgentCmd is the hidden `mirrord agent`, the side next to the target.
type AgentCmd struct {
	TargetPID          int           `name:"target-pid" help:"Process whose namespaces to work in. Absent: targetless (the agent's own)."`
	ContainerID        string        `name:"container-id" help:"Container (runtime ID) whose namespaces to work in; the agent finds its process under /proc."`
	Listen             string        `name:"listen" default:"0.0.0.0:0" help:"Address to listen on for clients."`
	TTL                time.Duration `name:"ttl" default:"0s" help:"How long to keep running after the last client left; 0 (the default for an agent started by hand) serves until stopped. mirrord gives the agents it starts agent.ttl."`
	FirstClientTimeout time.Duration `name:"first-client-timeout" default:"0s" help:"How long to wait for the first client; 0 waits until stopped."`
	MaxConnections     int           `name:"max-connections" default:"${agent_max_connections}" help:"How many connections (and open remote files) each session may have through the agent at once; past it the program's connect fails with ENOBUFS and incoming connections go to the target's app."`
}

// Run serves until the TTL expires. The first line on stdout is
// "agent listening on ADDR", which a parent process can read to learn
// the port.
func (c *AgentCmd) Run(env *Env) error {
	srv, err := untilInterrupted(env)
	if err != nil {
		return err
	}
	defer srv.close()
	return agent.Run(srv.ctx, agent.Options{
		TargetPID:          c.TargetPID,
		ContainerID:        c.ContainerID,
		Token:              os.Getenv("MIRRORD_AGENT_TOKEN"),
		Listen:             c.Listen,
		TTL:                c.TTL,
		FirstClientTimeout: c.FirstClientTimeout,
		MaxConnections:     c.MaxConnections,
		Logger:             srv.log,
		Ready: func(addr net.Addr) {
			fmt.Fprintf(env.Stdout, "agent listening on %s\n", addr)
		},
	})
}

// GoshimHelperCmd is the process goshim starts inside new namespaces.
type GoshimHelperCmd struct{}

func (GoshimHelperCmd) Run() error {
	if code := goshim.HelperMain(); code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
