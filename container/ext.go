package container

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/preload"
	"github.com/mirrord-go/mirrord/progress"
	"github.com/mirrord-go/mirrord/session"
)

// `mirrord container-ext` (for the IntelliJ plugin) cannot make mirrord
// the container's entrypoint: the IDE owns the image and the command, and
// only adds options to its `docker run`. So the program is reached the
// one way an option can reach it, LD_PRELOAD, and the library's session
// (the internal proxy) runs in a sidecar container whose network
// namespace the program's container joins (--network container:ID): the
// library sends outgoing connections to the proxy's loopback ports and
// talks to it over an abstract unix socket, both of which belong to a
// network namespace; stolen connections are dialled on the shared
// loopback. The target's files are passed to the program as descriptors
// over that socket, so the two containers share no file system beyond
// the library.

// Files of the sidecar's run directory (besides those of `mirrord
// container`: the config, the token and the agent's socket).
const (
	// SidecarCommand is the hidden subcommand the sidecar runs.
	SidecarCommand = "container-sidecar"
	// ReadyFile is written by the sidecar once its session serves the
	// library: the variables the program needs (SidecarReady).
	ReadyFile = RunDir + "/ready.json"
	// ErrorFile is written by the sidecar when its session fails to start
	// (the container is removed with its log: --rm).
	ErrorFile = RunDir + "/error"
	// sidecarRepo is the sidecar image's name; its tag is the binary's
	// hash, so that each build gets its own and reuses it.
	sidecarRepo = "mirrord-go-sidecar"
	// sidecarLabel marks mirrord's sidecars (docker ps --filter label=...).
	sidecarLabel = "dev.mirrord-go.sidecar"
)

// SidecarReady is what the sidecar tells the host's mirrord once it
// serves the library.
type SidecarReady struct {
	// Env is the target's environment, as the config filters it.
	Env map[string]string `json:"env"`
	// Layer are the variables that turn the library on (MIRRORD_LAYER_*).
	Layer map[string]string `json:"layer"`
}

// ExtOptions are what StartExt needs besides the config.
type ExtOptions struct {
	Log      *slog.Logger
	Progress *progress.Reporter
	// LogLevel is passed to the sidecar's mirrord (MIRRORD_LOG_LEVEL); its
	// log goes to the sidecar's stderr (`docker logs`).
	LogLevel string
	// Runtime is the runtime's CLI (docker).
	Runtime string
}

// Ext is a session of `mirrord container-ext`: the agent, its relay, the
// sidecar and the run directory, on this machine.
type Ext struct {
	// ID is the sidecar container's ID.
	ID string
	// Args are the options to add to the program's `docker run`.
	Args []string

	runtime string
	dir     string
	log     *slog.Logger
	agent   *session.Agent
	relay   *relay
	once    sync.Once
}

// StartExt starts the agent for cfg, relays it into a sidecar container
// that runs the session's internal proxy, and returns once the sidecar
// serves the library. On error nothing is left: no sidecar, no agent, no
// run directory.
func StartExt(ctx context.Context, cfg *config.Config, o ExtOptions) (_ *Ext, err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Runtime == "" {
		o.Runtime = "docker"
	}
	warnUnusedExt(cfg, o.Progress)
	self, err := staticSelf()
	if err != nil {
		return nil, err
	}
	lib, err := preload.Library()
	if err != nil {
		return nil, fmt.Errorf("container-ext: %w", err)
	}
	e := &Ext{runtime: o.Runtime, log: o.Log}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	// Before the agent: no point starting one for a runtime that is not
	// there, and the image is made once per build.
	image, err := sidecarImage(ctx, o.Runtime, self, o.Log)
	if err != nil {
		return nil, err
	}
	o.Progress.Step("sidecar image", image)
	if e.dir, err = os.MkdirTemp("", "mirrord-container-ext-"); err != nil {
		return nil, fmt.Errorf("container-ext: %w", err)
	}
	if err := writeRunDir(e.dir, cfg); err != nil {
		return nil, err
	}
	if e.agent, err = session.StartAgent(ctx, cfg, session.Options{Log: o.Log, Progress: o.Progress}); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(e.dir, "token"), []byte(e.agent.Token), 0o600); err != nil {
		return nil, fmt.Errorf("container-ext: %w", err)
	}
	if e.relay, err = newRelay(filepath.Join(e.dir, "agent.sock"), e.agent.Addr, o.Log); err != nil {
		return nil, err
	}
	args := sidecarArgs(e.dir, image, cfg.Container.CLIExtraArgs, cfg.Container.CLIImageLibPath, e.agent.Via, e.agent.ProbePorts, o.LogLevel)
	o.Log.Info("container-ext: starting the sidecar", "args", args)
	out, err := runtimeOutput(ctx, o.Runtime, args...)
	if err != nil {
		return nil, fmt.Errorf("container-ext: start the sidecar (%s %s): %w", o.Runtime, strings.Join(args, " "), err)
	}
	e.ID = strings.TrimSpace(out)
	ready, err := e.waitReady(ctx, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	o.Progress.Step("sidecar", fmt.Sprintf("%.12s serves the session", e.ID))
	envFile := filepath.Join(e.dir, "env")
	content, skipped := envFileContent(programEnv(ready, cfg.Container.CLIImageLibPath))
	for _, k := range skipped {
		o.Progress.Warning(fmt.Sprintf("the target's variable %s is not passed to the container: its value has a line break, which docker's --env-file cannot carry", k))
	}
	if err := os.WriteFile(envFile, []byte(content), 0o600); err != nil {
		return nil, fmt.Errorf("container-ext: %w", err)
	}
	e.Args = ExtArgs(e.ID, lib, cfg.Container.CLIImageLibPath, envFile)
	return e, nil
}

// warnUnusedExt says which container keys do nothing under container-ext.
func warnUnusedExt(cfg *config.Config, prog *progress.Reporter) {
	def := config.Default().Container
	c := cfg.Container
	if c.CLIImage != def.CLIImage {
		prog.Warning("container.cli_image is ignored: the sidecar's image is made on this machine from this mirrord binary")
	}
	if c.CLIPreventCleanup {
		prog.Warning("container.cli_prevent_cleanup is ignored: the sidecar is removed when its session ends")
	}
	if c.OverrideHostIP != nil {
		prog.Warning("container.override_host_ip is ignored: the sidecar reaches the agent through a mounted unix socket, not this machine's IP")
	}
}

// ExtArgs are the options container-ext adds to the program's run: the
// sidecar's network namespace (the proxy's loopback ports and its
// abstract socket), the library, and the variables in a file. A file
// rather than -e options: IntelliJ joins the options into one string with
// spaces (PyCharm's Docker run options), which a value with spaces (most
// targets have some) would split.
func ExtArgs(sidecarID, lib, libPath, envFile string) []string {
	return []string{
		"--network", "container:" + sidecarID,
		"--volume", lib + ":" + libPath + ":ro",
		"--env-file", envFile,
	}
}

// sidecarArgs is the runtime's command line that starts the sidecar:
// detached, removed when it ends, the run directory mounted, the user's
// container.cli_extra_args (as upstream applies them to its sidecar),
// running this binary's SidecarCommand.
func sidecarArgs(dir, image string, extra []string, libPath, via string, probes []uint16, logLevel string) []string {
	args := []string{"run", "--detach", "--rm", "--label", sidecarLabel + "=1", "--volume", dir + ":" + RunDir}
	args = append(args, extra...)
	// The entrypoint is given, not taken from the image: an image made by
	// another build may have none (the tag changes with the binary only).
	args = append(args, "--entrypoint", BinPath, image, SidecarCommand, "--agent-addr", "unix:"+AgentSock, "--layer-lib", libPath, "--via", via)
	if len(probes) > 0 {
		ps := make([]string, len(probes))
		for i, p := range probes {
			ps[i] = strconv.Itoa(int(p))
		}
		args = append(args, "--probe-ports", strings.Join(ps, ","))
	}
	if logLevel != "" {
		args = append(args, "--log-level", logLevel)
	}
	return args
}

// programEnv is the program's environment from the sidecar's answer: the
// target's variables, then the library's (which win), and LD_PRELOAD.
// MIRRORD_LAYER_EXE is left out: it names this binary, which the
// program's container does not have, and the library would exec it for a
// static or Go child (those are not reached under container-ext).
func programEnv(r *SidecarReady, libPath string) map[string]string {
	env := map[string]string{}
	for k, v := range r.Env {
		env[k] = v
	}
	for k, v := range r.Layer {
		if k != "MIRRORD_LAYER_EXE" {
			env[k] = v
		}
	}
	env["LD_PRELOAD"] = libPath
	return env
}

// envFileContent is env as docker's --env-file reads it (KEY=VALUE per
// line, taken literally), sorted; the names of variables it cannot carry
// (a line break in the value, or no valid name) are returned apart.
func envFileContent(env map[string]string) (string, []string) {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	var skipped []string
	for _, k := range keys {
		v := env[k]
		if k == "" || strings.ContainsAny(k, "=\n\r\x00 \t#") || strings.ContainsAny(v, "\n\r\x00") {
			skipped = append(skipped, k)
			continue
		}
		b.WriteString(k + "=" + v + "\n")
	}
	return b.String(), skipped
}

// waitReady waits until the sidecar has written ReadyFile, or has ended
// (its ErrorFile says why).
func (e *Ext) waitReady(ctx context.Context, limit time.Duration) (*SidecarReady, error) {
	deadline := time.Now().Add(limit)
	lastCheck := time.Now()
	for {
		if data, err := os.ReadFile(filepath.Join(e.dir, "ready.json")); err == nil {
			var r SidecarReady
			if err := json.Unmarshal(data, &r); err != nil {
				return nil, fmt.Errorf("container-ext: the sidecar's answer: %w", err)
			}
			return &r, nil
		}
		if time.Since(lastCheck) > time.Second {
			lastCheck = time.Now()
			if !e.running(ctx) {
				msg, _ := os.ReadFile(filepath.Join(e.dir, "error"))
				if len(msg) == 0 {
					msg = []byte("it said nothing (MIRRORD_LOG_LEVEL=debug and MIRRORD_LOG_FILE show the host's side)")
				}
				return nil, fmt.Errorf("container-ext: the sidecar %.12s ended before its session was ready: %s", e.ID, strings.TrimSpace(string(msg)))
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("container-ext: the sidecar %.12s did not start its session within %v", e.ID, limit)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// running reports whether the sidecar still runs.
func (e *Ext) running(ctx context.Context) bool { return containerRunning(ctx, e.runtime, e.ID) }

// Wait returns when the sidecar has ended (its session ends after the
// program's last process, or when none came), or when ctx is done.
func (e *Ext) Wait(ctx context.Context) {
	for ctx.Err() == nil {
		// `wait` fails at once for a container already removed (--rm).
		cmd := exec.CommandContext(ctx, e.runtime, "wait", e.ID)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		cmd.Run()
		if !e.running(ctx) {
			return
		}
		// The runtime's client failed while the container runs (the
		// engine restarting), or returned early, as podman's wait can
		// (waitDetached): wait again.
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// Close removes the sidecar (if it still runs), ends the relay and the
// agent, and removes the run directory.
func (e *Ext) Close() {
	e.once.Do(func() {
		if e.ID != "" {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			// SIGTERM first: the sidecar's session says goodbye to the
			// agent, which then leaves one agent.ttl later; a connection
			// that merely drops is waited for agent.reconnect_timeout.
			runtimeOutput(ctx, e.runtime, "stop", "--time", "5", e.ID)
			if out, err := runtimeOutput(ctx, e.runtime, "rm", "--force", e.ID); err != nil && !strings.Contains(err.Error(), "No such container") {
				e.log.Warn("container-ext: remove the sidecar", "id", e.ID, "err", err, "out", out)
			}
			cancel()
		}
		if e.relay != nil {
			e.relay.Close()
		}
		if e.agent != nil {
			e.agent.Close()
		}
		if e.dir != "" {
			os.RemoveAll(e.dir)
		}
	})
}

// runtimeOutput runs the runtime's CLI and returns its stdout; its stderr
// is in the error.
func runtimeOutput(ctx context.Context, runtime string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, runtime, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return string(out), fmt.Errorf("%w: %s", err, msg)
		}
		var ee *exec.Error
		if errors.As(err, &ee) {
			return string(out), fmt.Errorf("%w (container-ext needs the %s CLI and a running engine)", err, runtime)
		}
		return string(out), err
	}
	return string(out), nil
}

// sidecarImage returns the sidecar's image, made here when missing: this
// static binary at BinPath and an empty /tmp, imported from a tar (no
// registry, no base image), without an entrypoint (sidecarArgs gives it).
// Its tag is the binary's hash.
func sidecarImage(ctx context.Context, runtime, self string, log *slog.Logger) (string, error) {
	f, err := os.Open(self)
	if err != nil {
		return "", fmt.Errorf("container-ext: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return "", fmt.Errorf("container-ext: read %s: %w", self, err)
	}
	image := sidecarRepo + ":" + hex.EncodeToString(h.Sum(nil))[:16]
	if _, err := runtimeOutput(ctx, runtime, "image", "inspect", image); err == nil {
		return image, nil
	}
	log.Info("container-ext: making the sidecar image", "image", image)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("container-ext: %w", err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeSidecarTar(pw, f, size)) }()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, runtime, "import", "-", image)
	cmd.Stdin, cmd.Stderr = pr, &stderr
	err = cmd.Run()
	pr.Close()
	if err != nil {
		return "", fmt.Errorf("container-ext: make the sidecar image %s (%s import): %w: %s", image, runtime, err, strings.TrimSpace(stderr.String()))
	}
	pruneSidecarImages(ctx, runtime, image, log)
	return image, nil
}

// pruneSidecarImages removes the sidecar images of other builds, so that
// rebuilding mirrord does not pile them up. One a sidecar still uses is
// refused by the runtime (without --force) and stays.
func pruneSidecarImages(ctx context.Context, runtime, keep string, log *slog.Logger) {
	out, err := runtimeOutput(ctx, runtime, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", sidecarRepo)
	if err != nil {
		log.Info("container-ext: list old sidecar images", "err", err)
		return
	}
	for _, img := range strings.Fields(out) {
		if img == keep || !strings.HasPrefix(img, sidecarRepo+":") {
			continue
		}
		if _, err := runtimeOutput(ctx, runtime, "image", "rm", img); err != nil {
			log.Info("container-ext: old sidecar image kept", "image", img, "err", err)
		}
	}
}

// writeSidecarTar writes the sidecar image's file system: BinPath (bin,
// size bytes) with its parent directories, and /tmp.
func writeSidecarTar(w io.Writer, bin io.Reader, size int64) error {
	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	dirs := []struct {
		name string
		mode int64
	}{{"tmp/", 0o1777}, {"opt/", 0o755}, {"opt/mirrord/", 0o755}, {"opt/mirrord/bin/", 0o755}, {"opt/mirrord/run/", 0o755}, {"opt/mirrord/lib/", 0o755}}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: mtime}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(BinPath, "/"), Mode: 0o755, Size: size, ModTime: mtime}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, bin); err != nil {
		return err
	}
	return tw.Close()
}
