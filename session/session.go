package session

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/kube"
	"github.com/mirrord-go/mirrord/progress"
)

// Options are what Start needs besides the config.
type Options struct {
	// AgentAddr is an agent already running (--agent-addr,
	// MIRRORD_AGENT_ADDR); connect_tcp in the config says the same.
	AgentAddr string
	Log       *slog.Logger
	Progress  *progress.Reporter
}

// Session is an internal proxy connected to the agent of a config.
type Session struct {
	Config *config.Config
	Proxy  *intproxy.Proxy
	// Via names the agent for messages: "pod/x/container/y", "pid/42",
	// "127.0.0.1:7000", "targetless".
	Via string

	log      *slog.Logger
	endAgent func()
	once     sync.Once
}

// Start finds or starts the agent for cfg: one already running
// (Options.AgentAddr, connect_tcp), one for a local process (target
// pid/PID), or an agent pod next to a Kubernetes target; then connects
// the internal proxy to it. Close ends it.
func Start(ctx context.Context, cfg *config.Config, o Options) (*Session, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	a, err := findAgent(ctx, cfg, o.AgentAddr, o.Log, o.Progress)
	if err != nil {
		return nil, err
	}
	proxy, err := connectRetry(ctx, a, cfg, o.Log)
	if err != nil {
		a.close()
		return nil, err
	}
	hello := proxy.Hello()
	o.Log.Info("connected to agent", "addr", a.addr, "agent", hello.Agent, "hostname", hello.Hostname)
	return &Session{Config: cfg, Proxy: proxy, Via: a.via, log: o.Log, endAgent: a.close}, nil
}

// Close ends the session: the proxy's connection, the port-forward, and
// the agent where this session owns it.
func (s *Session) Close() {
	s.once.Do(func() {
		s.Proxy.Close()
		s.endAgent()
	})
}

// agentConn is an agent ready to be connected to.
type agentConn struct {
	addr string
	opts []intproxy.Option
	via  string
	// named is the flag or key that gave addr, for an agent the user
	// says is running; empty for one this session starts.
	named string
	close func()
}

func findAgent(ctx context.Context, cfg *config.Config, agentAddr string, log *slog.Logger, prog *progress.Reporter) (*agentConn, error) {
	named := "--agent-addr"
	if agentAddr == "" && cfg.ConnectTCP != nil {
		agentAddr, named = *cfg.ConnectTCP, "connect_tcp"
	}
	if agentAddr != "" {
		return &agentConn{addr: agentAddr, via: agentAddr, named: named, close: func() {}}, nil
	}
	if cfg.Target.Path != nil && cfg.Target.Path.Kind == "pid" {
		addr, done, err := startLocalAgent(ctx, cfg.Target.Path.Name, cfg.Agent.TTL)
		if err != nil {
			return nil, err
		}
		return &agentConn{addr: addr, via: cfg.Target.Path.String(), close: done}, nil
	}
	return startClusterAgent(ctx, cfg, log, prog)
}

// startClusterAgent resolves the target, starts an agent pod next to
// it and port-forwards to it through the API server.
func startClusterAgent(ctx context.Context, cfg *config.Config, log *slog.Logger, prog *progress.Reporter) (*agentConn, error) {
	if cfg.Agent.Ephemeral {
		return nil, NotBuilt("agent.ephemeral: running the agent as an ephemeral container is not built yet; the agent runs as a Job")
	}
	start := time.Now()
	steps := kube.NewSteps(log)
	client, err := Cluster(ctx, cfg)
	if err != nil {
		return nil, err
	}
	steps.Done("cluster connected", "server", client.Where.Server)
	prog.Step("cluster", client.Where.Server)
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
		prog.Step("target", via)
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
	prog.Step("agent", agent.Namespace+"/"+agent.PodName)
	fwdCtx, stopFwd := context.WithCancel(context.Background())
	addr, err := agent.PortForward(fwdCtx, log)
	if err != nil {
		stopFwd()
		agent.Delete(context.Background())
		return nil, err
	}
	steps.Done("port-forward ready", "local", addr)
	log.Info("agent ready", "job", agent.JobName, "pod", agent.PodName, "local", addr, "took", time.Since(start))
	prog.Step("port-forward", addr)
	opts := []intproxy.Option{intproxy.WithToken(agent.Token)}
	if target != nil {
		opts = append(opts, intproxy.WithHTTPProbePorts(target.HTTPProbePorts()))
	}
	return &agentConn{
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
