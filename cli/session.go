package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/kube"
)

// session is an agent ready to be connected to.
type session struct {
	addr  string
	opts  []intproxy.Option
	via   string // for messages: "pod/x", "pid/42", "127.0.0.1:7000"
	close func()
}

// startSession finds or starts the agent for cfg: one already running
// (agentAddr, MIRRORD_AGENT_ADDR, connect_tcp), one for a local process
// (target pid/PID), or an agent pod next to a Kubernetes target.
func startSession(ctx context.Context, cfg *config.Config, agentAddr string, log *slog.Logger, prog *progress) (*session, error) {
	if agentAddr == "" && cfg.ConnectTCP != nil {
		agentAddr = *cfg.ConnectTCP
	}
	if agentAddr != "" {
		return &session{addr: agentAddr, via: agentAddr, close: func() {}}, nil
	}
	if cfg.Target.Path != nil && cfg.Target.Path.Kind == "pid" {
		addr, done, err := startLocalAgent(ctx, cfg.Target.Path.Name, cfg.Agent.TTL)
		if err != nil {
			return nil, err
		}
		return &session{addr: addr, via: cfg.Target.Path.String(), close: done}, nil
	}
	return startClusterSession(ctx, cfg, log, prog)
}

// startClusterSession resolves the target, starts an agent pod next to
// it and port-forwards to it through the API server.
func startClusterSession(ctx context.Context, cfg *config.Config, log *slog.Logger, prog *progress) (*session, error) {
	if cfg.Agent.Ephemeral {
		return nil, notBuilt("agent.ephemeral: running the agent as an ephemeral container is not built yet; the agent runs as a Job")
	}
	start := time.Now()
	steps := kube.NewSteps(log)
	client, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	steps.Done("cluster connected", "server", client.Where.Server)
	prog.step("cluster", client.Where.Server)
	ns := client.Namespace
	if cfg.Target.Namespace != nil && *cfg.Target.Namespace != "" {
		ns = *cfg.Target.Namespace
	}
	var target *kube.Target
	via := "targetless"
	if !cfg.Target.Targetless() {
		tp := cfg.Target.Path
		dyn, err := dynamic.NewForConfig(client.Config)
		if err != nil {
			return nil, err
		}
		if target, err = kube.ResolveTarget(ctx, client.Clientset, dyn, ns, tp.Kind, tp.Name, tp.Container); err != nil {
			return nil, err
		}
		via = fmt.Sprintf("pod/%s/container/%s", target.Pod.Name, target.Container)
		steps.Done("target resolved", "pod", target.Pod.Name, "container", target.Container, "node", target.Pod.Spec.NodeName)
		prog.step("target", via)
	}
	agentNS := ns
	if cfg.Agent.Namespace != nil && *cfg.Agent.Namespace != "" {
		agentNS = *cfg.Agent.Namespace
	}
	agent, err := client.StartAgent(ctx, cfg, target, agentNS, steps)
	if err != nil {
		return nil, err
	}
	if agent.Joined {
		log.Info("joined the target's running agent (sessions on one target share it; its agent settings are the ones it was started with)", "job", agent.JobName)
	}
	prog.step("agent", agent.Namespace+"/"+agent.PodName)
	fwdCtx, stopFwd := context.WithCancel(context.Background())
	addr, err := agent.PortForward(fwdCtx, log)
	if err != nil {
		stopFwd()
		agent.Delete(context.Background())
		return nil, err
	}
	steps.Done("port-forward ready", "local", addr)
	log.Info("agent ready", "job", agent.JobName, "pod", agent.PodName, "local", addr, "took", time.Since(start))
	prog.step("port-forward", addr)
	opts := []intproxy.Option{intproxy.WithToken(agent.Token)}
	if target != nil {
		opts = append(opts, intproxy.WithHTTPProbePorts(target.HTTPProbePorts()))
	}
	return &session{
		addr: addr,
		opts: opts,
		via:  via,
		// A targetless agent is removed at once when the session ends.
		// A targeted one may serve other sessions on the target too: it
		// exits one TTL (agent.ttl) after its last session left, and the
		// Job's TTL removes the rest; the same happens when mirrord is
		// killed.
		close: func() {
			t := time.Now()
			stopFwd()
			if !agent.Shared {
				agent.Delete(context.Background())
			}
			log.Debug("session teardown", "job", agent.JobName, "took", time.Since(t))
		},
	}, nil
}
