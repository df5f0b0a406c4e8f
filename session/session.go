package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// Token and ProbePorts go with an AgentAddr that another mirrord
	// started (`mirrord container` hands its agent to the mirrord in the
	// container): the agent's session secret and the target's ports that
	// kubelet probes over HTTP (intproxy.WithHTTPProbePorts). Token is
	// also the one of an agent started by hand (MIRRORD_AGENT_TOKEN).
	Token      string
	ProbePorts []uint16
	// LayerLib is the preload library to give programs, when not this
	// binary's own extracted copy: in a container, the host's, mounted
	// read-only, so that nothing is written into the container.
	LayerLib string
	Log      *slog.Logger
	Progress *progress.Reporter
}

// Session is an internal proxy connected to the agent of a config.
type Session struct {
	Config *config.Config
	Proxy  *intproxy.Proxy
	// Via names the agent for messages: "pod/x/container/y", "pid/42",
	// "127.0.0.1:7000", "targetless".
	Via string

	log      *slog.Logger
	prog     *progress.Reporter // warnings for the user (nil-safe)
	layerLib string
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
	a, err := findAgent(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	if a.token != "" {
		a.opts = append(a.opts, intproxy.WithToken(a.token))
	}
	if a.probePorts != nil {
		a.opts = append(a.opts, intproxy.WithHTTPProbePorts(a.probePorts))
	}
	a.opts = append(a.opts, intproxy.WithReconnect(time.Duration(cfg.Agent.ReconnectTimeout)*time.Second, a.redial, func(e intproxy.Event) {
		// All of them, the recovery included, as warnings: shown in
		// every progress mode, since the loss was.
		o.Progress.Warning(e.Message)
		if e.Kind == intproxy.Reconnected && a.connected != nil {
			// The agent may have restored what the session changed
			// while it was away (copy_target.scale_down).
			go func() {
				if err := a.connected(context.Background()); err != nil {
					o.Progress.Warning(err.Error())
				}
			}()
		}
	}))
	proxy, err := connectRetry(ctx, a, cfg, o.Log)
	if err != nil {
		a.close()
		return nil, err
	}
	if a.connected != nil {
		if err := a.connected(ctx); err != nil {
			proxy.Close()
			a.close()
			return nil, err
		}
	}
	hello := proxy.Hello()
	o.Log.Info("connected to agent", "addr", a.addr, "agent", hello.Agent, "hostname", hello.Hostname)
	return &Session{Config: cfg, Proxy: proxy, Via: a.via, log: o.Log, prog: o.Progress, layerLib: o.LayerLib, endAgent: a.close}, nil
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
	// token is the agent's session secret; probePorts the target's ports
	// that kubelet probes over HTTP.
	token      string
	probePorts []uint16
	via        string
	// named is the flag or key that gave addr, for an agent the user
	// says is running; empty for one this session starts.
	named string
	// redial says where the agent is after the connection dropped (nil:
	// the same address).
	redial intproxy.Redialer
	// connected, when set, is run once the proxy is connected, and again
	// after each reconnection.
	connected func(context.Context) error
	close     func()
}

func findAgent(ctx context.Context, cfg *config.Config, o Options) (*agentConn, error) {
	agentAddr, log, prog := o.AgentAddr, o.Log, o.Progress
	named := "--agent-addr"
	if agentAddr == "" && cfg.ConnectTCP != nil {
		agentAddr, named = *cfg.ConnectTCP, "connect_tcp"
	}
	if agentAddr != "" {
		return &agentConn{addr: agentAddr, via: agentAddr, named: named, token: o.Token, probePorts: o.ProbePorts, close: func() {}}, nil
	}
	if cfg.Target.Path != nil && cfg.Target.Path.Kind == "pid" {
		addr, token, exited, err := startLocalAgent(ctx, cfg.Target.Path.Name, cfg.Agent.TTL)
		if err != nil {
			return nil, err
		}
		// The connection is loopback: it drops only when the agent
		// exits, which it does when its target process ends.
		redial := func(context.Context) (intproxy.AgentAddr, error) {
			select {
			case <-exited:
				return intproxy.AgentAddr{}, fmt.Errorf("%w: the local agent for %s has exited (has the process ended?)", intproxy.ErrAgentGone, cfg.Target.Path)
			default:
				return intproxy.AgentAddr{Addr: addr, Token: token}, nil
			}
		}
		return &agentConn{addr: addr, token: token, via: cfg.Target.Path.String(), redial: redial, close: func() {}}, nil
	}
	return startClusterAgent(ctx, cfg, log, prog)
}

// startClusterAgent resolves the target, starts an agent pod next to
// it and port-forwards to it through the API server.
func startClusterAgent(ctx context.Context, cfg *config.Config, log *slog.Logger, prog *progress.Reporter) (*agentConn, error) {
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
	agentNS := ns
	if cfg.Agent.Namespace != nil && *cfg.Agent.Namespace != "" {
		agentNS = *cfg.Agent.Namespace
	}
	c := &clusterAgent{cfg: cfg, client: client, ns: ns, agentNS: agentNS, log: log, prog: prog}
	if err := c.start(ctx, steps); err != nil {
		c.mu.Lock()
		c.dropCopy()
		c.mu.Unlock()
		return nil, err
	}
	log.Info("agent ready", "job", c.agent.JobName, "pod", c.agent.PodName, "container", c.agent.Container, "local", c.addr, "took", time.Since(start))
	a := &agentConn{addr: c.addr, token: c.agent.Token, via: c.via, redial: c.redial, close: c.close}
	if c.target != nil {
		a.probePorts = c.target.HTTPProbePorts()
	}
	if c.scaled != nil {
		a.connected = c.scaleDown
	}
	return a, nil
}

// clusterAgent is the agent pod a session uses, and the port-forward to
// it. When the agent's pod goes away (deleted, its node drained, its
// target's pod replaced) it starts another for the same target.
type clusterAgent struct {
	cfg     *config.Config
	client  *kube.Client
	ns      string // the target's namespace
	agentNS string
	log     *slog.Logger
	prog    *progress.Reporter

	mu      sync.Mutex
	target  *kube.Target // nil: targetless
	via     string
	agent   *kube.Agent
	addr    string // the port-forward's local address
	stopFwd func()
	// replacing is the agent whose pod went away, once that was said.
	replacing *kube.Agent
	// copy is the pod made for a Job or CronJob target without a
	// running pod (kube.StartCopy), or for feature.copy_target
	// (kube.StartTargetCopy), removed when the session ends.
	copy *corev1.Pod
	// duty is what the agent of a copy_target session does once the
	// session is gone (kube.CopyDuty); nil: nothing (the copy is owned
	// by the agent's Job).
	duty *kube.CopyDuty
	// scaled is the workload copy_target.scale_down scales to 0 once
	// the session is connected.
	scaled *kube.Workload
	dyn    dynamic.Interface
}

// start resolves the target, starts (or joins) its agent and
// port-forwards to it.
func (c *clusterAgent) start(ctx context.Context, steps *kube.Steps) error {
	cfg := c.cfg
	var target *kube.Target
	via := "targetless"
	if !cfg.Target.Targetless() {
		if c.dyn == nil {
			dyn, err := dynamic.NewForConfig(c.client.Config)
			if err != nil {
				return err
			}
			c.dyn = dyn
		}
		var err error
		if target, err = c.resolve(ctx, c.dyn, steps); err != nil {
			return err
		}
		via = fmt.Sprintf("pod/%s/container/%s", target.Pod.Name, target.Container)
		steps.Done("target resolved", "pod", target.Pod.Name, "container", target.Container, "node", target.Pod.Spec.NodeName)
		c.prog.Step("target", via)
	}
	var agent *kube.Agent
	var err error
	if cfg.Agent.Ephemeral {
		// In the target's pod: agent.namespace does not apply (the
		// config's validation warns). A new session, or a new agent
		// after the old one went away, adds a new container: an
		// ephemeral container cannot be restarted.
		agent, err = c.client.StartEphemeralAgent(ctx, cfg, target, steps)
	} else {
		agent, err = c.client.StartAgent(ctx, cfg, target, c.agentNS, steps)
	}
	if err != nil {
		if !cfg.Feature.CopyTarget.Enabled {
			// A new copy on the next try. A copy_target copy stays
			// for the session: the scaled-down workload names it.
			c.dropCopy()
		}
		return err
	}
	// The copy goes with the agent's Job (also when mirrord is killed
	// before the agent could do its duty), unless they are in different
	// namespaces, where an owner counts as absent; the agent's duty then
	// removes it. An ephemeral agent has no Job to own it.
	if c.copy != nil && agent.Ephemeral {
		c.log.Warn("the target's copy is removed when the session ends, but not if mirrord is killed: an ephemeral agent has no Job to own it", "pod", c.copy.Name)
	} else if c.copy != nil && (c.duty == nil || c.copy.Namespace == agent.Namespace) {
		if err := agent.Adopt(ctx, c.copy); err != nil {
			// close still removes it; only a killed mirrord would
			// leave it.
			c.log.Warn("the target's copy is not tied to the agent's job", "pod", c.copy.Name, "err", err)
		}
	}
	if agent.Joined {
		c.log.Info("joined the target's running agent (sessions on one target share it; its agent settings are the ones it was started with)", "job", agent.JobName)
	}
	if agent.Ephemeral {
		c.prog.Step("agent", agent.Namespace+"/"+agent.PodName+"/ephemeral/"+agent.Container)
	} else {
		c.prog.Step("agent", agent.Namespace+"/"+agent.PodName)
	}
	fwdCtx, stopFwd := context.WithCancel(context.Background())
	addr, err := agent.PortForward(fwdCtx, c.log)
	if err != nil {
		stopFwd()
		if !agent.Shared {
			agent.Delete(context.Background())
		}
		return err
	}
	steps.Done("port-forward ready", "local", addr)
	c.prog.Step("port-forward", addr)
	c.mu.Lock()
	c.target, c.via, c.agent, c.addr, c.stopFwd = target, via, agent, addr, stopFwd
	c.mu.Unlock()
	return nil
}

// resolve finds the target's pod. A Job or CronJob without a running pod
// gets a copy of its pod (kube.StartCopy), made once per session: a new
// agent for the session targets the same copy while it runs.
func (c *clusterAgent) resolve(ctx context.Context, dyn dynamic.Interface, steps *kube.Steps) (*kube.Target, error) {
	tp := c.cfg.Target.Path
	copyTarget := c.cfg.Feature.CopyTarget.Enabled
	job := tp.Kind == "job" || tp.Kind == "cronjob"
	if c.copy != nil {
		if p, err := c.client.Clientset.CoreV1().Pods(c.copy.Namespace).Get(ctx, c.copy.Name, metav1.GetOptions{}); err == nil && p.Status.Phase == corev1.PodRunning {
			t, err := kube.TargetOf(p, tp.Container)
			if t != nil {
				t.Duty = c.duty
			}
			return t, err
		}
		if copyTarget && !job {
			return nil, fmt.Errorf("the target's copy, pod %s/%s, is gone or not running (feature.copy_target): %w", c.copy.Namespace, c.copy.Name, kube.ErrTargetNotFound)
		}
		c.dropCopy()
	}
	if copyTarget && job {
		// A Job's pods do the job's work: their copy idles (the copy
		// made for a Job without a running pod), with or without a
		// running pod.
		return c.startCopy(ctx, tp, steps)
	}
	target, err := kube.ResolveTarget(ctx, c.client.Clientset, dyn, c.ns, tp.Kind, tp.Name, tp.Container)
	if copyTarget && err == nil {
		return c.startTargetCopy(ctx, dyn, target, steps)
	}
	if err == nil || !job || !errors.Is(err, kube.ErrNoRunningPod) {
		return target, err
	}
	c.log.Info("the target has no running pod: running a copy of its pod", "target", tp.String())
	return c.startCopy(ctx, tp, steps)
}

// startCopy runs an idle copy of a Job's or CronJob's pod template.
func (c *clusterAgent) startCopy(ctx context.Context, tp *config.TargetPath, steps *kube.Steps) (*kube.Target, error) {
	c.prog.Step("target copy", tp.String())
	copy, err := c.client.StartCopy(ctx, c.cfg, c.ns, tp.Kind, tp.Name, steps)
	if err != nil {
		return nil, err
	}
	c.copy = copy
	return kube.TargetOf(copy, tp.Container)
}

// startTargetCopy runs the copy of target's pod that feature.copy_target
// asks for, checks first that copy_target.scale_down can scale the
// workload, and, when the agent must clean up after the session
// (scale_down, or an agent in another namespace than the copy, which
// cannot own it), gives the agent the permissions for it.
func (c *clusterAgent) startTargetCopy(ctx context.Context, dyn dynamic.Interface, target *kube.Target, steps *kube.Steps) (*kube.Target, error) {
	tp := c.cfg.Target.Path
	var scaled *kube.Workload
	if c.cfg.Feature.CopyTarget.ScaleDown {
		w, err := kube.ScaledWorkload(ctx, c.client.Clientset, c.ns, tp.Kind, tp.Name)
		if err != nil {
			return nil, err
		}
		if err := kube.CheckScalable(ctx, dyn, w); err != nil {
			return nil, err
		}
		scaled = &w
	}
	copy, err := c.client.StartTargetCopy(ctx, c.cfg, target, tp.Kind, tp.Name, steps)
	if err != nil {
		return nil, err
	}
	c.prog.Step("target copy", copy.Namespace+"/"+copy.Name)
	c.copy = copy
	if scaled != nil || c.agentNS != copy.Namespace {
		duty, err := c.client.GrantCopyDuty(ctx, c.agentNS, copy, scaled, c.cfg.Agent.ServiceAccount)
		if err != nil {
			return nil, err
		}
		c.duty, c.scaled = duty, scaled
	}
	t, err := kube.TargetOf(copy, tp.Container)
	if err != nil {
		return nil, err
	}
	t.Duty = c.duty
	return t, nil
}

// scaleDown scales the target's workload to 0 for copy_target.scale_down,
// once the session is connected to the agent that restores it when the
// session is gone; again after a reconnection, if the agent restored it
// meanwhile.
func (c *clusterAgent) scaleDown(ctx context.Context) error {
	c.mu.Lock()
	w, copy := c.scaled, c.copy
	c.mu.Unlock()
	if w == nil || copy == nil {
		return nil
	}
	if err := kube.ScaleDown(ctx, c.dyn, *w, copy.Name); err != nil {
		return err
	}
	c.log.Info("scaled down to 0 replicas for the session (feature.copy_target.scale_down)", "workload", w.String(), "namespace", w.Namespace)
	c.prog.Step("scaled down", w.String())
	return nil
}

// dropCopy removes the target's copy, if the session made one, and the
// permissions of its agent's duty.
func (c *clusterAgent) dropCopy() {
	if c.copy != nil {
		c.client.DeleteCopy(context.Background(), c.copy)
		c.copy = nil
	}
	if c.duty != nil {
		if err := c.duty.Revoke(context.Background()); err != nil {
			c.log.Warn("the agent's permissions stay until the garbage collector removes them with the copy", "err", err)
		}
		c.duty, c.scaled = nil, nil
	}
}

// redial answers where the agent is after the connection to it dropped:
// the same port-forward while the agent's pod runs (the port-forward dials
// the pod again for each connection), or a new agent once it is gone.
func (c *clusterAgent) redial(ctx context.Context) (intproxy.AgentAddr, error) {
	c.mu.Lock()
	agent, addr := c.agent, c.addr
	c.mu.Unlock()
	same := intproxy.AgentAddr{Addr: addr, Token: agent.Token}
	running, err := agent.Running(ctx)
	if err != nil || running {
		// Running, or the API server cannot say (it may be what went
		// away): try the port-forward.
		return same, nil
	}
	c.mu.Lock()
	if c.replacing != agent {
		c.replacing = agent
		if agent.Ephemeral {
			c.prog.Warning(fmt.Sprintf("the agent (ephemeral container %s of pod %s/%s) is gone; starting a new agent", agent.Container, agent.Namespace, agent.PodName))
		} else {
			c.prog.Warning(fmt.Sprintf("the agent pod %s/%s is gone; starting a new agent", agent.Namespace, agent.PodName))
		}
		c.stopFwd()
		if !agent.Shared {
			agent.Delete(context.Background())
		}
	}
	c.mu.Unlock()
	if err := c.start(ctx, kube.NewSteps(c.log)); err != nil {
		if errors.Is(err, kube.ErrTargetNotFound) {
			return intproxy.AgentAddr{}, fmt.Errorf("%w: %w", intproxy.ErrAgentGone, err)
		}
		// Try again: the target's pod may not be ready yet.
		return intproxy.AgentAddr{}, fmt.Errorf("start a new agent: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log.Info("new agent", "job", c.agent.JobName, "pod", c.agent.PodName, "container", c.agent.Container, "via", c.via)
	return intproxy.AgentAddr{Addr: c.addr, Token: c.agent.Token}, nil
}

// close ends the port-forward. A targetless agent is removed at once when
// the session ends. A targeted one may serve other sessions on the target
// too: it exits one TTL (agent.ttl) after its last session left, and the
// Job's TTL removes the rest; the same happens when mirrord is killed.
//
// A session on a copy restores the workload it scaled down first, then
// removes its agent (no other session targets its copy) and the copy. If
// the restore fails, the agent and the copy stay: the agent restores the
// workload when it exits, and removes the copy.
func (c *clusterAgent) close() {
	t := time.Now()
	c.mu.Lock()
	agent, stopFwd, scaled, copy := c.agent, c.stopFwd, c.scaled, c.copy
	c.mu.Unlock()
	if scaled != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		restored, err := kube.RestoreScale(ctx, c.dyn, *scaled, copy.Name)
		cancel()
		if err != nil {
			c.prog.Warning(fmt.Sprintf("%v; the agent (job %s/%s) restores it when it exits, one agent.ttl from now", err, agent.Namespace, agent.JobName))
			stopFwd()
			return
		}
		if restored {
			c.log.Info("restored the scaled-down workload", "workload", scaled.String(), "namespace", scaled.Namespace)
		}
	}
	stopFwd()
	if !agent.Shared || copy != nil {
		agent.Delete(context.Background())
	}
	c.mu.Lock()
	c.dropCopy()
	c.mu.Unlock()
	c.log.Debug("session teardown", "job", agent.JobName, "took", time.Since(t))
}

// Agent is an agent ready for a session, not yet connected to: `mirrord
// container` starts one here and hands it to the mirrord in the container.
type Agent struct {
	// Addr is where it listens, reachable from this machine (host:port;
	// for a cluster agent, the port-forward's local end).
	Addr string
	// Token is its session secret; ProbePorts the target's ports that
	// kubelet probes over HTTP (see Options).
	Token      string
	ProbePorts []uint16
	// Via names it for messages, as Session.Via.
	Via string

	close func()
}

// StartAgent finds or starts the agent for cfg as Start does, and holds
// it with a connection of its own until Close: a target's agent, shared
// by the sessions on it, exits agent.ttl after its last client, and the
// mirrord it is handed to (in a container) connects seconds later, when
// an agent joined near the end of its TTL would be gone. The hold makes
// the window as short as Start's, which connects at once.
func StartAgent(ctx context.Context, cfg *config.Config, o Options) (*Agent, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	a, err := findAgent(ctx, cfg, o)
	if err != nil {
		return nil, err
	}
	held := *a
	held.opts = append([]intproxy.Option{}, a.opts...)
	if a.token != "" {
		held.opts = append(held.opts, intproxy.WithToken(a.token))
	}
	hold, err := connectRetry(ctx, &held, cfg, o.Log)
	if err != nil {
		a.close()
		return nil, err
	}
	end := func() {
		hold.Close()
		a.close()
	}
	return &Agent{Addr: a.addr, Token: a.token, ProbePorts: a.probePorts, Via: a.via, close: end}, nil
}

// Close ends the agent where this mirrord owns it (see clusterAgent.close).
func (a *Agent) Close() { a.close() }
