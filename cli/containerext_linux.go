package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mirrord-go/mirrord/container"
	"github.com/mirrord-go/mirrord/progress"
	"github.com/mirrord-go/mirrord/session"
)

// serve is container-ext's session process: as ext's (see
// ExtCmd.serve), it answers through private copies of stdout and stderr,
// closed once the sidecar serves the session, and then lives until the
// sidecar ends.
func (c *ContainerExtCmd) serve(ctx context.Context, env *Env) error {
	out, errOut, err := privateStdio()
	if err != nil {
		return err
	}
	log, closeLog, err := newLogger(env)
	if err != nil {
		return err
	}
	defer closeLog()
	env.Stdout, env.Stderr = out, errOut
	defer out.Close()
	prog := newProgress(env)
	prog.Begin(extTask)
	cfg, err := loadConfig(env, prog, &c.ConfigFlags, c.TargetFlags.settings())
	if err != nil {
		prog.Finish(false, err.Error())
		return err
	}
	if cfg.ConnectTCP != nil {
		// The sidecar reaches the agent through a socket this process
		// relays from the agent it started.
		err := errors.New("container-ext: connect_tcp is not supported by container-ext; use a target (-t) or targetless")
		prog.Finish(false, err.Error())
		return err
	}
	if v, _ := lookup(env, "MIRRORD_EXT_PRINT_CONFIG"); strings.EqualFold(v, "true") {
		configSummary(prog, cfg, c.ConfigFile)
	}
	prog.Warning("container-ext reaches dynamically linked programs only (through LD_PRELOAD): a static or Go program in the container runs outside the session; use `mirrord container` for those")
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	level, _ := lookup(env, "MIRRORD_LOG_LEVEL")
	ext, err := container.StartExt(ctx, cfg, container.ExtOptions{Log: log, Progress: prog, LogLevel: level})
	if err != nil {
		prog.Finish(false, err.Error())
		return err
	}
	defer ext.Close()
	b, err := json.Marshal(containerExecution{Runtime: "docker", ExtraArgs: ext.Args})
	if err != nil {
		return err
	}
	if prog.Mode() == progress.JSON {
		prog.Finish(true, string(b))
	} else {
		prog.Finish(true, "")
		fmt.Fprintf(out, "%s\n", b)
	}
	// Let go of the IDE's pipes: container-ext exits, and the IDE reads
	// to the end.
	out.Close()
	errOut.Close()
	env.Stderr = io.Discard
	ext.Wait(ctx)
	log.Info("container-ext: the sidecar has ended; the session ends")
	return nil
}

// ContainerSidecarCmd is what container-ext's sidecar runs: the internal
// proxy of the session, connected to the agent the host's mirrord relays
// through the mounted run directory, serving the preload library of the
// program's container (which shares the sidecar's network namespace). It
// ends after the program's last process, or when none came.
type ContainerSidecarCmd struct {
	AgentAddr  string `name:"agent-addr" required:"" help:"The agent (unix:PATH, relayed by the host's mirrord)."`
	LayerLib   string `name:"layer-lib" required:"" help:"The preload library's path in the program's container."`
	Via        string `name:"via" help:"The target, for messages."`
	ProbePorts string `name:"probe-ports" help:"The target's ports that kubelet probes over HTTP (comma-separated)."`
	LogLevel   string `name:"log-level" help:"mirrord's log level in the sidecar (to its stderr)."`
}

func (c *ContainerSidecarCmd) Run(ctx context.Context, env *Env) error {
	err := c.run(ctx, env)
	if err != nil && !errors.Is(err, context.Canceled) {
		// The host's mirrord reads why: the container and its log go
		// away with it (--rm).
		os.WriteFile(container.ErrorFile, []byte(err.Error()), 0o600)
	}
	return err
}

func (c *ContainerSidecarCmd) run(ctx context.Context, env *Env) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, sess, log, done, err := startInContainer(ctx, inContainer{
		cmd: "container-sidecar", agentAddr: c.AgentAddr, layerLib: c.LayerLib, via: c.Via,
		probePorts: c.ProbePorts, logLevel: c.LogLevel,
	}, env.Stderr)
	if err != nil {
		return err
	}
	defer done()
	live := newLiveness()
	layer, err := sess.ServeLayer(session.LayerOptions{OnJoin: live.join, OnLeave: live.leave})
	if err != nil {
		return fmt.Errorf("container-sidecar: %w", err)
	}
	defer layer.Close()
	remote, err := sess.Proxy.Environment(ctx, nil)
	if err != nil {
		return fmt.Errorf("container-sidecar: the target's environment: %w", err)
	}
	ready := container.SidecarReady{Env: map[string]string{}, Layer: layer.Vars}
	for _, kv := range remote {
		k, v, _ := strings.Cut(kv, "=")
		ready.Env[k] = v
	}
	b, err := json.Marshal(ready)
	if err != nil {
		return err
	}
	// Written whole, then renamed: the host polls for the name.
	tmp := filepath.Join(container.RunDir, ".ready.json")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("container-sidecar: %w", err)
	}
	if err := os.Rename(tmp, container.ReadyFile); err != nil {
		return fmt.Errorf("container-sidecar: %w", err)
	}
	go sess.ServeIncoming(ctx, layer.Ports)
	start := time.Duration(cfg.InternalProxy.StartIdleTimeout) * time.Second
	idle := time.Duration(cfg.InternalProxy.IdleTimeout) * time.Second
	select {
	case <-live.ended(start, idle):
		log.Info("container-sidecar: the program's processes have ended; the session ends")
	case <-sess.Proxy.Done():
		log.Warn("container-sidecar: lost the connection to the agent; the session ends")
	case <-ctx.Done():
	}
	return nil
}

// parseProbePorts reads --probe-ports (comma-separated).
func parseProbePorts(s string) ([]uint16, error) {
	var probes []uint16
	for _, p := range strings.Split(s, ",") {
		if p == "" {
			continue
		}
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("--probe-ports: %w", err)
		}
		probes = append(probes, uint16(n))
	}
	return probes, nil
}

// containerExecution is what IntelliJ reads from container-ext
// (MirrordContainerExecution in the plugin's MirrordApi.kt).
type containerExecution struct {
	Runtime      string   `json:"runtime"`
	ExtraArgs    []string `json:"extra_args"`
	UsesOperator bool     `json:"uses_operator"`
}
