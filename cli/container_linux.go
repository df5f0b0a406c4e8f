package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/container"
	"github.com/mirrord-go/mirrord/progress"
	"github.com/mirrord-go/mirrord/session"
)

// ContainerCmd is `mirrord container`.
type ContainerCmd struct {
	ConfigFlags
	TargetFlags
	AgentFlags
	KubeFlags
	ExecFlags
	Command []string `arg:"" optional:"" passthrough:"partial" help:"The container runtime's run command: docker|podman|nerdctl run [OPTIONS] IMAGE [COMMAND...]."`
}

func (c *ContainerCmd) settings() []config.Setting {
	var s []config.Setting
	s = append(s, c.TargetFlags.settings()...)
	s = append(s, c.AgentFlags.settings()...)
	s = append(s, c.KubeFlags.settings()...)
	s = append(s, c.ExecFlags.settings()...)
	return s
}

// Run starts the session's agent here and runs the container with its
// program in the session (see container.Run).
func (c *ContainerCmd) Run(ctx context.Context, env *Env) error {
	if len(c.Command) > 0 && c.Command[0] == "--" {
		c.Command = c.Command[1:]
	}
	if len(c.Command) == 0 {
		return errors.New("container: no command given; usage: mirrord container [flags] -- docker run [OPTIONS] IMAGE [COMMAND...]")
	}
	prog := newProgress(env)
	cfg, err := loadConfig(env, prog, &c.ConfigFlags, c.settings())
	if err != nil {
		return err
	}
	if cfg.ConnectTCP != nil {
		// The container's mirrord reaches the agent through a socket
		// this command relays; an agent on an address of the user's
		// would need the container to reach that address instead.
		return errors.New("container: connect_tcp is not supported by mirrord container; use a target (-t) or targetless")
	}
	log, closeLog, err := newLogger(env)
	if err != nil {
		return err
	}
	defer closeLog()
	level, _ := lookup(env, "MIRRORD_LOG_LEVEL")
	return container.Run(ctx, cfg, c.Command, container.Options{
		Log: log, Progress: prog, LogLevel: level,
		Stdin: os.Stdin, Stdout: env.Stdout, Stderr: env.Stderr,
	})
}

// ContainerInitCmd is the entrypoint mirrord container gives the
// container: it connects to the agent the host's mirrord relays through
// a mounted socket and runs the container's program in that session, with
// the engine that reaches it, as exec does.
type ContainerInitCmd struct {
	AgentAddr  string   `name:"agent-addr" required:"" help:"The agent (unix:PATH, relayed by the host's mirrord)."`
	LayerLib   string   `name:"layer-lib" required:"" help:"The preload library mounted into the container."`
	Via        string   `name:"via" help:"The target, for messages."`
	ProbePorts string   `name:"probe-ports" help:"The target's ports that kubelet probes over HTTP (comma-separated)."`
	LogLevel   string   `name:"log-level" help:"mirrord's log level in the container (to its stderr)."`
	Command    []string `arg:"" passthrough:"partial" help:"The container's program and its arguments."`
}

func (c *ContainerInitCmd) Run(ctx context.Context, env *Env) error {
	if len(c.Command) > 0 && c.Command[0] == "--" {
		c.Command = c.Command[1:]
	}
	if len(c.Command) == 0 {
		return errors.New("container-init: no command")
	}
	// The program gets the container's environment as it was; mirrord
	// may change its own below.
	progEnv := os.Environ()
	if _, err := os.Stat(os.TempDir()); err != nil {
		// An image without /tmp (FROM scratch): mirrord's temporary files
		// (the sandbox's /etc files, directory snapshots) go to the run
		// directory, which the host's mirrord removes at the end.
		dir, err := os.MkdirTemp(container.RunDir, "tmp-")
		if err != nil {
			return fmt.Errorf("container-init: %s is missing and no other temporary directory could be made: %w", os.TempDir(), err)
		}
		os.Setenv("TMPDIR", dir)
	}
	// Left missing when they cannot be made: only the sandbox needs them,
	// and it says so.
	_ = container.EnsureFiles("/", container.SandboxFiles)
	_, sess, _, done, err := startInContainer(ctx, inContainer{
		cmd: "container-init", tokenHint: " (the container must run as root or as the user running mirrord container)",
		agentAddr: c.AgentAddr, layerLib: c.LayerLib, via: c.Via, probePorts: c.ProbePorts, logLevel: c.LogLevel,
	}, env.Stderr)
	if err != nil {
		return err
	}
	defer done()
	return sess.RunWithEnv(ctx, c.Command, progEnv)
}

// inContainer is how the host's mirrord starts a mirrord inside a
// container: the command (for errors), its flags, and what to say when the
// agent's token cannot be read.
type inContainer struct {
	cmd, tokenHint                                 string
	agentAddr, layerLib, via, probePorts, logLevel string
}

// startInContainer starts the session of a mirrord inside a container
// (container-init, container-sidecar) from the run directory the host's
// mirrord mounted: the config resolved on the host (flags, MIRRORD_*
// variables, file), which the container's own environment does not
// change, and the agent's token; mirrord's log goes to stderr at the
// host's level, progress is the host's to show. done ends the session
// and then the log.
func startInContainer(ctx context.Context, in inContainer, stderr io.Writer) (cfg *config.Config, sess *session.Session, log *slog.Logger, done func(), err error) {
	cfg, err = config.Load(config.Options{File: container.ConfigFile, Lookup: func(string) (string, bool) { return "", false }})
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%s: %w", in.cmd, err)
	}
	token, err := os.ReadFile(container.TokenFile)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%s: the agent's token: %w%s", in.cmd, err, in.tokenHint)
	}
	probes, err := parseProbePorts(in.probePorts)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%s: %w", in.cmd, err)
	}
	logEnv := &Env{Stderr: stderr, Lookup: func(k string) (string, bool) {
		if k == "MIRRORD_LOG_LEVEL" && in.logLevel != "" {
			return in.logLevel, true
		}
		return "", false
	}}
	log, closeLog, err := newLogger(logEnv)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	sess, err = session.Start(ctx, cfg, session.Options{
		AgentAddr: in.agentAddr, Token: string(token), ProbePorts: probes, LayerLib: in.layerLib,
		Log: log, Progress: progress.New(progress.Off, stderr),
	})
	if err != nil {
		closeLog()
		return nil, nil, nil, nil, fmt.Errorf("%s: %w", in.cmd, err)
	}
	if in.via != "" {
		sess.Via = in.via
	}
	return cfg, sess, log, func() { sess.Close(); closeLog() }, nil
}
