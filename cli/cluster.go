package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/kube"
	"github.com/mirrord-go/mirrord/protocol"
)

// runInCluster resolves the target, starts an agent pod next to it,
// port-forwards to it through the API server and runs the program.
func (c *ExecCmd) runInCluster(ctx context.Context, env *Env, cfg *config.Config, log *slog.Logger) error {
	if cfg.Agent.Ephemeral {
		return notBuilt("agent.ephemeral: running the agent as an ephemeral container is not built yet; the agent runs as a Job")
	}
	start := time.Now()
	client, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	ns := client.Namespace
	if cfg.Target.Namespace != nil && *cfg.Target.Namespace != "" {
		ns = *cfg.Target.Namespace
	}
	var target *kube.Target
	if !cfg.Target.Targetless() {
		tp := cfg.Target.Path
		dyn, err := dynamic.NewForConfig(client.Config)
		if err != nil {
			return err
		}
		if target, err = kube.ResolveTarget(ctx, client.Clientset, dyn, ns, tp.Kind, tp.Name, tp.Container); err != nil {
			return err
		}
		log.Info("target resolved", "pod", target.Pod.Name, "container", target.Container, "node", target.Pod.Spec.NodeName, "took", time.Since(start))
	}
	agentNS := ns
	if cfg.Agent.Namespace != nil && *cfg.Agent.Namespace != "" {
		agentNS = *cfg.Agent.Namespace
	}
	agent, err := client.StartAgent(ctx, cfg, target, agentNS)
	if err != nil {
		return err
	}
	// Removed at once when the session ends normally; if mirrord is
	// killed, the agent exits one TTL after its connection drops and the
	// Job's TTL removes the rest.
	defer agent.Delete(context.Background())
	log.Info("agent running", "job", agent.JobName, "pod", agent.PodName, "took", time.Since(start))
	fwdCtx, stopFwd := context.WithCancel(ctx)
	defer stopFwd()
	addr, err := agent.PortForward(fwdCtx)
	if err != nil {
		return err
	}
	return c.runWithAgent(ctx, env, cfg, addr, log, intproxy.WithToken(agent.Token))
}

// connectRetry connects to an agent that may still be starting to listen.
func connectRetry(ctx context.Context, addr string, cfg *config.Config, log *slog.Logger, opts ...intproxy.Option) (*intproxy.Proxy, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		p, err := intproxy.Connect(ctx, addr, cfg, log, opts...)
		if err == nil {
			return p, nil
		}
		// A refused or reset connection means the agent is still coming
		// up behind the port-forward; an answer that says no is final.
		var pe *protocol.ErrorReply
		if errors.As(err, &pe) || strings.Contains(err.Error(), "version mismatch") || time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to the agent: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
