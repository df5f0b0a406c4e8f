package cli

import (
	"context"
	"fmt"
	"net"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/alecthomas/kong"

	"github.com/mirrord-go/mirrord/agent"
	"github.com/mirrord-go/mirrord/goshim"
	"github.com/mirrord-go/mirrord/kube"
)

// agentVars are the agent flags' defaults in help texts.
var agentVars = kong.Vars{
	"agent_max_connections":   strconv.Itoa(agent.DefaultMaxConnections),
	"agent_max_session_bytes": strconv.Itoa(agent.DefaultMaxSessionBytes),
}

// AgentCmd is the hidden `mirrord agent`, the side next to the target.
type AgentCmd struct {
	TargetPID          int           `name:"target-pid" help:"Process whose namespaces to work in. Absent: targetless (the agent's own)."`
	ContainerID        string        `name:"container-id" help:"Container (runtime ID) whose namespaces to work in; the agent finds its process under /proc."`
	Listen             string        `name:"listen" default:"127.0.0.1:0" help:"Address to listen on for clients. One that other machines reach needs a session token (MIRRORD_AGENT_TOKEN)."`
	TTL                time.Duration `name:"ttl" default:"0s" help:"How long to keep running after the last client left; 0 (the default for an agent started by hand) serves until stopped. mirrord gives the agents it starts agent.ttl."`
	FirstClientTimeout time.Duration `name:"first-client-timeout" default:"0s" help:"How long to wait for the first client; 0 waits until stopped."`
	CopyPod            string        `name:"copy-pod" help:"NAMESPACE/NAME of the target copy (feature.copy_target) to delete when the agent exits, with the pod's service account."`
	Restore            string        `name:"restore" help:"NAMESPACE/KIND/NAME of the workload the session scaled down (copy_target.scale_down), to restore once no client is left (needs --copy-pod)."`
	RestoreAfter       time.Duration `name:"restore-after" default:"3s" help:"How long after the last client left to restore --restore."`
	MaxConnections     int           `name:"max-connections" default:"${agent_max_connections}" help:"How many connections (and open remote files) each session may have through the agent at once; past it the program's connect fails with ENOBUFS and incoming connections go to the target's app."`
	MaxSessionBytes    int64         `name:"max-session-bytes" default:"${agent_max_session_bytes}" help:"How many bytes the agent holds for each session at most: what its program sent that the destination has not taken yet, and what the agent sends it while the program does not read. Past it, the connections holding the most are reset (the program sees ECONNRESET)."`
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
	ctx, log := srv.ctx, srv.log
	token := agentToken(env)
	if token == "" && !loopbackOnly(c.Listen) {
		return fmt.Errorf("--listen %s: other machines could reach this agent, and without a session token anyone who does could use it (its target's network, files, environment and incoming traffic); set %s for the agent and its clients, or listen on 127.0.0.1", c.Listen, agentTokenVar)
	}
	if soft := agentMemoryLimit(cgroupMemoryLimit("/sys/fs/cgroup")); soft > 0 {
		debug.SetMemoryLimit(soft)
		log.Debug("soft memory limit from the cgroup's", "bytes", soft)
	}
	opts := agent.Options{
		TargetPID:          c.TargetPID,
		ContainerID:        c.ContainerID,
		Token:              token,
		Listen:             c.Listen,
		TTL:                c.TTL,
		FirstClientTimeout: c.FirstClientTimeout,
		MaxConnections:     c.MaxConnections,
		MaxSessionBytes:    c.MaxSessionBytes,
		Logger:             srv.log,
		Ready: func(addr net.Addr) {
			fmt.Fprintf(env.Stdout, "agent listening on %s\n", addr)
			if n, err := releaseImagePages(); err != nil {
				log.Debug("could not release the binary's start-up pages", "err", err)
			} else {
				log.Debug("released the binary's start-up pages", "mapped", n)
			}
		},
	}
	if c.Restore != "" && c.CopyPod == "" {
		return fmt.Errorf("--restore needs --copy-pod")
	}
	if c.CopyPod == "" {
		return agent.Run(ctx, opts)
	}
	// The session's target is a copy: once the session is gone, the
	// workload it scaled down gets its replicas back and the copy goes,
	// whether or not the session's mirrord is still there to do it.
	duty, err := kube.NewAgentDuty(c.CopyPod, c.Restore, log)
	if err != nil {
		return err
	}
	opts.UnattendedAfter = c.RestoreAfter
	opts.Unattended = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		duty.Restore(ctx)
	}
	err = agent.Run(ctx, opts)
	// Not ctx: a SIGTERM may have ended it.
	finish, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ctx.Err() != nil {
		// Stopped from outside (its pod deleted, its node drained): a
		// session still connected starts a new agent for the same copy,
		// and scales the workload down again once it is back; one that
		// is gone must not leave it scaled down.
		duty.Restore(finish)
		return err
	}
	duty.Finish(finish)
	return err
}

// loopbackOnly says whether a listener on addr (HOST:PORT) is reachable
// from this machine only: its host is a loopback address or a name that
// resolves to loopback addresses only (localhost). An empty host or an
// unspecified address (0.0.0.0, ::) listens on every interface.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// GoshimHelperCmd is the process goshim starts inside new namespaces.
type GoshimHelperCmd struct{}

func (GoshimHelperCmd) Run() error {
	if code := goshim.HelperMain(); code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
