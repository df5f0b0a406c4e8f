package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/fsfilter"
	"github.com/mirrord-go/mirrord/goshim"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/preload"
)

// Layer is the preload library's side of a session: the socket the
// library talks to and the variables that turn it on in a program.
type Layer struct {
	// Lib is the library's path (LD_PRELOAD).
	Lib string
	// Vars are the MIRRORD_LAYER_* variables.
	Vars map[string]string

	ln     net.Listener
	ports  *portSet
	view   *goshim.View
	copies *goshim.Copies
}

// LayerOptions configure ServeLayer.
type LayerOptions struct {
	// OnJoin and OnLeave are called when a process of the program's tree
	// starts and ends, if set: each process then holds a connection to
	// the session (MIRRORD_LAYER_HOLD), so that a session that outlives
	// its command (ext) knows when the last one is gone.
	OnJoin, OnLeave func()
}

// ServeLayer serves the preload library on a new socket until Close.
func (s *Session) ServeLayer(o LayerOptions) (*Layer, error) {
	cfg, proxy, log := s.Config, s.Proxy, s.log
	lib := s.layerLib
	if lib == "" {
		var err error
		if lib, err = preload.Library(); err != nil {
			return nil, fmt.Errorf("engine preload: %w", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// With mode local the library leaves file calls alone: no request
	// per open.
	var fsf *fsfilter.Filter
	fsOn := "0"
	if cfg.Feature.FS.Mode != config.FsLocal {
		cwd, _ := os.Getwd()
		if fsf, err = fsFilter(cfg.Feature.FS, cwd); err != nil {
			return nil, err
		}
		fsOn = "1"
	}
	// An abstract socket: nothing to clean up on disk, reachable from this
	// network namespace only (a netstack sandbox reaches it through
	// layer-exec, which runs outside the sandbox).
	var rnd [8]byte
	rand.Read(rnd[:])
	sock := fmt.Sprintf("@mirrord-layer-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:]))
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("engine preload: session socket: %w", err)
	}
	hostname := s.hostname()
	l := &Layer{Lib: lib, ln: ln, ports: newPortSet()}
	opts := intproxy.LayerOptions{FS: fsf, Hostname: hostname, RemoteWrites: remoteWrites(cfg.Feature.FS),
		OnJoin: o.OnJoin, OnLeave: o.OnLeave}
	if fsf != nil {
		// Remote files as real kernel files when this process may mount
		// FUSE (root); otherwise copies, as the sandbox's fallback.
		if view, err := goshim.NewView(proxyFiles(proxy), log); err != nil {
			log.Info("preload: no FUSE view of the target's files; remote files are copies (writes: write-only opens only)", "err", err)
			inner := err
			if u := errors.Unwrap(err); u != nil {
				inner = u
			}
			why := fmt.Sprintf("%v; the preload engine needs root and /dev/fuse", inner)
			copies := goshim.NewCopies(proxyFiles(proxy), log, s.prog.Warning, why)
			l.copies = copies
			opts.Copies = copies
		} else {
			l.view = view
			opts.View = view
		}
	}
	opts.OnListen = func(port uint16, pid int) {
		if debuggerPort(pid, port) {
			log.Info("incoming: a debugger's port stays on this machine", "port", port, "pid", pid)
			return
		}
		l.ports.add(port)
	}
	go proxy.ServeLayer(ln, opts)
	hold := "0"
	if o.OnJoin != nil {
		hold = "1"
	}
	// Without incoming traffic, accept never asks the session for a
	// delivered connection's client (intproxy/peers.go).
	incoming := "1"
	if cfg.Feature.Network.Incoming.Mode == config.IncomingOff {
		incoming = "0"
	}
	// Without unix_streams patterns, the library leaves connects to unix
	// sockets alone: no request per connect (nscd, D-Bus, ...).
	unixStreams := "0"
	if proxy.HasUnixStreams() {
		unixStreams = "1"
	}
	l.Vars = map[string]string{
		"MIRRORD_LAYER_SOCK":     sock,
		"MIRRORD_LAYER_HOSTNAME": hostname,
		"MIRRORD_LAYER_EXE":      self,
		"MIRRORD_LAYER_SKIP":     skipList(cfg),
		"MIRRORD_LAYER_FS":       fsOn,
		"MIRRORD_LAYER_HOLD":     hold,
		"MIRRORD_LAYER_INCOMING": incoming,
		"MIRRORD_LAYER_UNIX":     unixStreams,
	}
	return l, nil
}

// Env returns env with the layer's variables set and the library first in
// LD_PRELOAD.
func (l *Layer) Env(env []string) []string { return withLayerEnv(env, l.Vars, l.Lib) }

// Ports are the ports the program's processes listen on (not on
// loopback, and not a debugger's).
func (l *Layer) Ports() map[uint16]bool { return l.ports.snapshot() }

// Close stops serving the layer.
func (l *Layer) Close() {
	l.ln.Close()
	if l.view != nil {
		l.view.Close()
	}
	if l.copies != nil {
		l.copies.Close()
	}
}

// hostname is the name the program sees as its host's (empty: this
// machine's).
func (s *Session) hostname() string {
	hello := s.Proxy.Hello()
	if s.Config.Feature.Hostname && hello.Hostname != "" && !hello.Targetless {
		return hello.Hostname
	}
	return ""
}

// runPreload runs a dynamically linked program on this machine with the
// preload library, which sends its libc calls to the internal proxy over a
// unix socket. Go or static programs it starts come back to this session
// through `mirrord layer-exec`.
func (s *Session) runPreload(ctx context.Context, path string, argv, progEnv []string) error {
	cfg, proxy, log := s.Config, s.Proxy, s.log
	layer, err := s.ServeLayer(LayerOptions{})
	if err != nil {
		return err
	}
	defer layer.Close()
	env := layer.Env(progEnv)
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The program dies with mirrord, also when mirrord is killed: the
	// session it depends on is gone then. Pdeathsig fires when the thread
	// that started the child exits, so that thread stays ours until Wait.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	stop := ForwardSignals(cmd, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer stop()
	if err := cmd.Start(); err != nil {
		return &ExitError{Code: 127, Err: err}
	}
	incCtx, stopIncoming := context.WithCancel(ctx)
	defer stopIncoming()
	go serveIncomingPorts(incCtx, cfg, proxy, layer.Ports, log)
	lost := stopWhenAgentLost(incCtx, proxy, log, func(sig syscall.Signal) { cmd.Process.Signal(sig) })
	err = cmd.Wait()
	if err := lost(); err != nil {
		return err
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return &ExitError{Code: 128 + int(ws.Signal())}
		}
		return &ExitError{Code: ee.ExitCode()}
	}
	return err
}

// withLayerEnv returns env with the layer's variables set and the library
// first in LD_PRELOAD.
//
// What an earlier mirrord run left in the environment (an IDE's run
// configuration, a shell started under mirrord) is dropped: another
// mirrord layer library in LD_PRELOAD would hook the same calls twice, and
// upstream's MIRRORD_RESOLVED_CONFIG makes IntelliJ refuse to start.
func withLayerEnv(env []string, vars map[string]string, lib string) []string {
	out := make([]string, 0, len(env)+len(vars)+1)
	preloads := lib
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if _, ours := vars[k]; ours || strings.HasPrefix(k, "MIRRORD_LAYER_") || k == "MIRRORD_RESOLVED_CONFIG" {
			continue
		}
		if k == "LD_PRELOAD" {
			for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ':' || r == ' ' }) {
				if !strings.Contains(filepath.Base(p), "libmirrord") {
					preloads += ":" + p
				}
			}
			continue
		}
		out = append(out, kv)
	}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return append(out, "LD_PRELOAD="+preloads)
}

// portSet collects the ports the program listens on (from the layer's
// listen hook).
type portSet struct {
	mu sync.Mutex
	m  map[uint16]bool
}

func newPortSet() *portSet { return &portSet{m: map[uint16]bool{}} }

func (s *portSet) add(p uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[p] = true
}

func (s *portSet) snapshot() map[uint16]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint16]bool, len(s.m))
	for p := range s.m {
		out[p] = true
	}
	return out
}

// stopWhenAgentLost ends the program (signal: SIGTERM, then SIGKILL 5 s later)
// when the proxy ends on its own: the agent is gone and no other could be
// reached, so the program cannot go on as if it ran in the target. The
// returned function, called after the program exited, says so as an error
// (nil when the session did not end). It stops watching when ctx ends.
func stopWhenAgentLost(ctx context.Context, proxy *intproxy.Proxy, log *slog.Logger, signal func(syscall.Signal)) (lost func() error) {
	var mu sync.Mutex
	var why error
	go func() {
		select {
		case <-proxy.Done():
		case <-ctx.Done():
			return
		}
		err := proxy.Err()
		if err == nil {
			return // closed: the session is ending normally
		}
		mu.Lock()
		why = err
		mu.Unlock()
		log.Warn("the session ended; stopping the program", "err", err)
		signal(syscall.SIGTERM)
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			signal(syscall.SIGKILL)
		}
	}()
	return func() error {
		mu.Lock()
		defer mu.Unlock()
		if why == nil {
			return nil
		}
		return &ExitError{Code: 1, Err: fmt.Errorf("the program was stopped: %w", why)}
	}
}
