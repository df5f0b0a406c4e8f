package container

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/preload"
	"github.com/mirrord-go/mirrord/progress"
	"github.com/mirrord-go/mirrord/session"
)

// Paths inside the container. The library's is container.cli_image_lib_path.
const (
	// BinPath is where this binary is mounted: the container's entrypoint.
	BinPath = "/opt/mirrord/bin/mirrord"
	// RunDir holds the session's files: the agent's socket, the resolved
	// config, the agent's token.
	RunDir = "/opt/mirrord/run"
	// AgentSock is the socket the container's mirrord reaches the agent
	// through (relayed to the agent's port-forward on this machine).
	AgentSock = RunDir + "/agent.sock"
	// ConfigFile is the resolved config, as JSON.
	ConfigFile = RunDir + "/config.json"
	// TokenFile is the agent's session secret.
	TokenFile = RunDir + "/token"
	// envFile is feature.env.env_file, copied from this machine.
	envFile = RunDir + "/env_file"
	// InitCommand is the hidden subcommand the container runs.
	InitCommand = "container-init"
)

// Options are what Run needs besides the config and the command line.
type Options struct {
	Log      *slog.Logger
	Progress *progress.Reporter
	// LogLevel is passed to the container's mirrord (MIRRORD_LOG_LEVEL).
	LogLevel string
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
}

// Run runs argv (`docker run ...`) with the container's program in a
// session of cfg: it starts the agent, relays it into the container
// through a unix socket, mounts this binary and the preload library into
// the container, makes the binary the entrypoint (`mirrord
// container-init -- ENTRYPOINT CMD...`) and runs the runtime's command.
// It returns the runtime's exit status as a *session.ExitError.
func Run(ctx context.Context, cfg *config.Config, argv []string, o Options) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if len(argv) == 0 || !isRuntime(argv[0]) {
		return ErrNotRun
	}
	help, err := exec.CommandContext(ctx, argv[0], append(runVerb(argv), "--help")...).Output()
	if err != nil {
		return fmt.Errorf("container: `%s run --help` (to read its options): %w", argv[0], err)
	}
	flags, err := ParseHelp(string(help))
	if err != nil {
		return fmt.Errorf("container: `%s run --help`: %w", argv[0], err)
	}
	ra, err := ParseRun(argv, flags)
	if err != nil {
		return fmt.Errorf("container: %w", err)
	}
	warnUnused(cfg, o.Progress)
	self, err := staticSelf()
	if err != nil {
		return err
	}
	lib, err := preload.Library()
	if err != nil {
		return fmt.Errorf("container: %w", err)
	}
	image, err := inspectImage(ctx, ra, o)
	if err != nil {
		return err
	}
	if err := checkUser(ra, image); err != nil {
		return err
	}
	prog := programArgv(ra, image)
	if len(prog) == 0 {
		return fmt.Errorf("container: image %s has no entrypoint or command, and none was given after it", ra.Image)
	}
	dir, err := os.MkdirTemp("", "mirrord-container-")
	if err != nil {
		return fmt.Errorf("container: %w", err)
	}
	defer os.RemoveAll(dir)
	// Written before the agent starts: a bad env_file is reported before
	// anything runs in the cluster.
	if err := writeRunDir(dir, cfg); err != nil {
		return err
	}

	agent, err := session.StartAgent(ctx, cfg, session.Options{Log: o.Log, Progress: o.Progress})
	if err != nil {
		return err
	}
	defer agent.Close()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(agent.Token), 0o600); err != nil {
		return fmt.Errorf("container: %w", err)
	}
	relay, err := newRelay(filepath.Join(dir, "agent.sock"), agent.Addr, o.Log)
	if err != nil {
		return err
	}
	defer relay.Close()

	cidFile := ra.CIDFile
	args := append([]string{}, ra.Verb...)
	args = append(args, ra.Options...)
	args = append(args,
		"--volume", self+":"+BinPath+":ro",
		"--volume", lib+":"+cfg.Container.CLIImageLibPath+":ro",
		"--volume", dir+":"+RunDir,
		// The sandbox for Go and static programs (goshim) makes user,
		// network and mount namespaces, a TUN device and a seccomp
		// listener inside the container: the runtimes' default seccomp
		// and AppArmor profiles forbid the first, and a container has no
		// /dev/net/tun of its own.
		"--security-opt", "seccomp=unconfined",
		"--security-opt", "apparmor=unconfined",
	)
	if _, err := os.Stat("/dev/net/tun"); err == nil {
		args = append(args, "--device", "/dev/net/tun")
	}
	if cidFile == "" && ra.Detach {
		cidFile = filepath.Join(dir, "cid")
		args = append(args, "--cidfile", cidFile)
	}
	args = append(args, cfg.Container.CLIExtraArgs...)
	args = append(args, "--entrypoint", BinPath, ra.Image, InitCommand,
		"--agent-addr", "unix:"+AgentSock, "--layer-lib", cfg.Container.CLIImageLibPath, "--via", agent.Via)
	if len(agent.ProbePorts) > 0 {
		ps := make([]string, len(agent.ProbePorts))
		for i, p := range agent.ProbePorts {
			ps[i] = strconv.Itoa(int(p))
		}
		args = append(args, "--probe-ports", strings.Join(ps, ","))
	}
	if o.LogLevel != "" {
		args = append(args, "--log-level", o.LogLevel)
	}
	args = append(args, "--")
	args = append(args, prog...)
	o.Log.Info("container: running", "runtime", ra.Runtime, "args", args)

	code, err := runRuntime(ctx, ra.Runtime, args, o)
	if err != nil {
		return err
	}
	if code == 0 && ra.Detach {
		// The runtime returned once the container started; the session
		// (the agent and its relay) must last as long as the container.
		cid, err := os.ReadFile(cidFile)
		if err != nil {
			return fmt.Errorf("container: the detached container's id (--cidfile %s): %w", cidFile, err)
		}
		id := strings.TrimSpace(string(cid))
		o.Progress.Info(fmt.Sprintf("container %.12s runs detached; mirrord keeps its session until it stops (Ctrl-C ends the session, and the container's program with it)", id))
		code, err = waitDetached(ctx, ra.Runtime, id, o)
		if err != nil {
			return err
		}
	}
	if code != 0 {
		return &session.ExitError{Code: code}
	}
	return nil
}

// waitDetached waits for the detached container id to stop and returns
// the runtime's wait status. podman's wait can return while the container
// still runs (seen in CI: within 0.8 s of the start, with status 0; podman
// issue 27423 and dockerode issue 807 report the same): it waits again
// while the runtime says the container runs. A wait that failed or was
// signalled (Ctrl-C, relayed to it) ends the session.
func waitDetached(ctx context.Context, runtime, id string, o Options) (int, error) {
	for {
		code, err := runRuntime(ctx, runtime, []string{"wait", id}, Options{Stdout: io.Discard, Stderr: o.Stderr})
		if err != nil || code != 0 || !containerRunning(ctx, runtime, id) {
			return code, err
		}
		o.Log.Info("container: the runtime's wait returned while the container runs; waiting again", "id", id)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// containerRunning says whether the runtime reports container id running
// (false once it is gone, or when the runtime cannot say).
func containerRunning(ctx context.Context, runtime, id string) bool {
	out, err := runtimeOutput(ctx, runtime, "container", "inspect", "--format", "{{.State.Running}}", id)
	return err == nil && strings.TrimSpace(out) == "true"
}

func isRuntime(argv0 string) bool {
	for _, r := range Runtimes {
		if filepath.Base(argv0) == r {
			return true
		}
	}
	return false
}

// runVerb is "run" or "container run", as argv has it (for --help).
func runVerb(argv []string) []string {
	if len(argv) > 2 && argv[1] == "container" {
		return []string{"container", "run"}
	}
	return []string{"run"}
}

// warnUnused says which container keys do nothing here: there is no
// sidecar image and no TCP proxy to reach, the container's mirrord gets
// the agent through a mounted unix socket.
func warnUnused(cfg *config.Config, prog *progress.Reporter) {
	def := config.Default().Container
	c := cfg.Container
	if c.CLIImage != def.CLIImage {
		prog.Warning("container.cli_image is ignored: mirrord mounts this binary into the container instead of running a sidecar image")
	}
	if c.CLIPreventCleanup {
		prog.Warning("container.cli_prevent_cleanup is ignored: there is no sidecar container to keep")
	}
	if c.OverrideHostIP != nil {
		prog.Warning("container.override_host_ip is ignored: the container reaches the agent through a mounted unix socket, not this machine's IP")
	}
}

// staticSelf is this binary's path; it must be static to run in any image
// (scratch, Alpine).
func staticSelf() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("container: %w", err)
	}
	f, err := elf.Open(self)
	if err != nil {
		return "", fmt.Errorf("container: read %s: %w", self, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("container: %s is dynamically linked and cannot run in any image; use a static build (`make build`, or CGO_ENABLED=0 go build ./cmd/mirrord)", self)
		}
	}
	return self, nil
}

// imageConfig is the part of `RUNTIME image inspect` mirrord reads.
type imageConfig struct {
	Entrypoint []string
	Cmd        []string
	User       string
}

// checkUser refuses a container whose user (--user, or the image's USER)
// could not read the session's private directory: root's and this user's
// can. Another user would fail inside the container, after the agent
// started.
func checkUser(ra *RunArgs, img *imageConfig) error {
	user, from := ra.User, "--user"
	if user == "" {
		user, from = img.User, "the image's USER"
	}
	name, _, _ := strings.Cut(user, ":")
	if name == "" || name == "root" || name == "0" || name == strconv.Itoa(os.Geteuid()) {
		return nil
	}
	return fmt.Errorf("container: %s is %q: the container's mirrord reads this session's private directory (mode 0700), so the container must run as root or as uid %d; run it as one of those (the program may drop privileges itself)", from, user, os.Geteuid())
}

// inspectImage reads the image's entrypoint and command, pulling it first
// if the runtime does not have it (as its run would).
func inspectImage(ctx context.Context, ra *RunArgs, o Options) (*imageConfig, error) {
	inspect := func() (*imageConfig, error) {
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, ra.Runtime, "image", "inspect", ra.Image)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		var imgs []struct{ Config imageConfig }
		if err := json.Unmarshal(out, &imgs); err != nil || len(imgs) != 1 {
			return nil, fmt.Errorf("unexpected output of `%s image inspect %s` (%v)", ra.Runtime, ra.Image, err)
		}
		return &imgs[0].Config, nil
	}
	img, err := inspect()
	if err == nil {
		return img, nil
	}
	o.Log.Info("container: image not found locally; pulling it", "image", ra.Image, "err", err)
	pull := exec.CommandContext(ctx, ra.Runtime, "pull", ra.Image)
	pull.Stdout, pull.Stderr = o.Stderr, o.Stderr
	if perr := pull.Run(); perr != nil {
		return nil, fmt.Errorf("container: image %s: not on this machine (%v), and `%s pull %s` failed: %w", ra.Image, err, ra.Runtime, ra.Image, perr)
	}
	if img, err = inspect(); err != nil {
		return nil, fmt.Errorf("container: image %s: %w", ra.Image, err)
	}
	return img, nil
}

// programArgv is what the container would run: the entrypoint (the
// user's --entrypoint, or the image's) and the command (what follows the
// image, or the image's CMD unless --entrypoint was given: the runtimes
// drop the image's CMD when the entrypoint is replaced).
func programArgv(ra *RunArgs, img *imageConfig) []string {
	var argv []string
	switch {
	case ra.Entrypoint != nil && ra.RuntimeName() == "podman" && jsonArgv(*ra.Entrypoint) != nil:
		// podman's --entrypoint may be a JSON array: the program and
		// its first arguments.
		argv = append(argv, jsonArgv(*ra.Entrypoint)...)
	case ra.Entrypoint != nil && *ra.Entrypoint != "":
		argv = append(argv, *ra.Entrypoint)
	case ra.Entrypoint == nil:
		argv = append(argv, img.Entrypoint...)
	}
	switch {
	case len(ra.Command) > 0:
		argv = append(argv, ra.Command...)
	case ra.Entrypoint == nil:
		argv = append(argv, img.Cmd...)
	}
	return argv
}

// jsonArgv is s as a JSON array of strings (podman's reading of its
// --entrypoint), or nil if it is not one.
func jsonArgv(s string) []string {
	var argv []string
	if json.Unmarshal([]byte(s), &argv) != nil || argv == nil {
		return nil
	}
	return argv
}

// writeRunDir writes the resolved config for the container's mirrord.
// Paths of this machine in it are replaced by copies in the run directory
// (feature.env.env_file); the others name the container's files.
func writeRunDir(dir string, cfg *config.Config) error {
	c := *cfg
	if ef := cfg.Feature.Env.EnvFile; ef != nil {
		data, err := os.ReadFile(*ef)
		if err != nil {
			return fmt.Errorf("feature.env.env_file: cannot read %s: %w", *ef, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "env_file"), data, 0o600); err != nil {
			return fmt.Errorf("container: %w", err)
		}
		p := envFile
		c.Feature.Env.EnvFile = &p
	}
	data, err := json.Marshal(&c)
	if err != nil {
		return fmt.Errorf("container: config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		return fmt.Errorf("container: %w", err)
	}
	return nil
}

// runRuntime runs the runtime's command with mirrord's stdio, relaying
// signals to it (the runtime passes them on to the container), and returns
// its exit status.
func runRuntime(ctx context.Context, runtime string, args []string, o Options) (int, error) {
	cmd := exec.Command(runtime, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	// If mirrord is killed, the runtime's client gets SIGTERM and stops
	// the container (its signal proxy): its program's session is gone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	lockThread()
	defer unlockThread()
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("container: %w", err)
	}
	// The runtime's client proxies them to the container (docker's
	// --sig-proxy).
	stop := session.ForwardSignals(cmd, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer stop()
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("container: %w", err)
	}
	return 0, ctx.Err()
}

// Pdeathsig fires when the thread that started the child exits: keep it
// until the child is waited for.
func lockThread()   { runtime.LockOSThread() }
func unlockThread() { runtime.UnlockOSThread() }

// relay passes connections from the container's mirrord (a unix socket in
// the mounted run directory) to the agent's address on this machine.
type relay struct {
	ln   net.Listener
	addr string
	log  *slog.Logger
	wg   sync.WaitGroup
}

func newRelay(sock, agentAddr string, log *slog.Logger) (*relay, error) {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("container: agent socket: %w", err)
	}
	r := &relay{ln: ln, addr: agentAddr, log: log}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

func (r *relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			a, err := net.DialTimeout("tcp", r.addr, 10*time.Second)
			if err != nil {
				r.log.Warn("container: relay to the agent", "addr", r.addr, "err", err)
				return
			}
			defer a.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(a, c); a.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(c, a); c.(*net.UnixConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

// Close stops accepting; open connections end with the agent's session.
func (r *relay) Close() {
	r.ln.Close()
	r.wg.Wait()
}
