package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/mirrord-go/mirrord/goshim"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/protocol"
)

// LayerExec runs the program a layered process executes instead of a Go
// or static one (`mirrord layer-exec PATH ARGV...`): the program runs in a
// netstack sandbox whose traffic goes to the same session (the parent's
// internal proxy, over the layer socket), so every process of the
// program's tree shares one agent connection and one set of rules.
func LayerExec(ctx context.Context, path string, args []string) error {
	sock := os.Getenv("MIRRORD_LAYER_SOCK")
	if sock == "" {
		return errors.New("layer-exec: MIRRORD_LAYER_SOCK is not set (this command is started by the preload library)")
	}
	if len(args) == 0 {
		args = []string{path}
	}
	client := intproxy.LayerClient{Sock: sock}
	hostname, ndots, search, err := client.Session(ctx)
	if err != nil {
		return fmt.Errorf("layer-exec: %w", err)
	}
	if os.Getenv("MIRRORD_LAYER_HOLD") == "1" {
		// A session that outlives its command (ext) lasts while one of
		// the program's processes does; this one counts as the program.
		hold, err := client.Hold(ctx)
		if err != nil {
			return fmt.Errorf("layer-exec: %w", err)
		}
		defer hold.Close()
	}
	// The sandboxed program needs no preload: its network is the sandbox's.
	var progEnv []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LD_PRELOAD" || strings.HasPrefix(k, "MIRRORD_LAYER_") {
			continue
		}
		progEnv = append(progEnv, kv)
	}
	spec := goshim.Spec{
		Path:       path,
		Args:       args,
		Env:        progEnv,
		ResolvConf: resolvConf(protocol.Resolver{Search: search, Ndots: ndots}),
		Hostname:   hostname,
		MTU:        goshim.DefaultMTU,
	}
	// Its servers are this machine's sockets: the session subscribes their
	// ports as it does the preloaded parent's.
	// (A debugger's port is left out by the session, which reads this
	// process's command line and environment.)
	listening := goshim.WithListenHook(func(l goshim.Listener) {
		go func() {
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			client.Listening(lctx, l.Addr)
		}()
	})
	opts := []goshim.Option{listening}
	// Its file calls go to the target as the parent's do: the same
	// feature.fs rules, applied here by the sandbox's supervisor, and the
	// session's agent connection (and FUSE view) for the remote ones.
	fsCfg, err := client.FSConfig(ctx)
	if err != nil {
		return fmt.Errorf("layer-exec: %w", err)
	}
	cwd, _ := os.Getwd()
	files, err := sandboxFiles(fsCfg, layerFiles(client), cwd, skipNames(os.Getenv("MIRRORD_LAYER_SKIP")), nil)
	if err != nil {
		return fmt.Errorf("layer-exec: %w", err)
	}
	if files != nil {
		// The session's progress reporter is the parent mirrord's: the
		// program's stderr is where its user looks.
		files.Warn = func(msg string) { fmt.Fprintf(os.Stderr, "mirrord: warning: %s\n", msg) }
		opts = append(opts, goshim.WithFiles(*files))
	}
	if os.Getenv("MIRRORD_LAYER_INCOMING") != "0" {
		// Its servers' connections from the target show the target's
		// client, which the session remembers (goshim/peers.go).
		opts = append(opts, goshim.WithIncomingPeers(func(from netip.AddrPort, port uint16) (netip.AddrPort, bool) {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return client.OriginalPeer(lctx, from, port)
		}))
	}
	opts = append(opts, goshim.WithConnectCheck(func(dst netip.AddrPort, udp func() (bool, bool)) (bool, syscall.Errno) {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return client.ConnectRoute(lctx, dst, udp)
	}))
	if os.Getenv("MIRRORD_LAYER_UNIX") == "1" {
		// The session's proxy decides about each path, as it does for
		// the preloaded parent.
		opts = append(opts, goshim.WithUnixStreams(client.RelayUnix))
	}
	return RunSandbox(ctx, spec, opts, client, nil, func(ctx context.Context, pid int) {
		go endWithSession(ctx, sock, pid)
	})
}

// endWithSession kills the program (and its process group, which it
// leads) once the session that started it is gone: the preloaded parent
// may have been killed and mirrord exited, and a program whose network and
// files were the session's must not outlive it. The session socket stops
// accepting connections when mirrord closes it or dies.
func endWithSession(ctx context.Context, sock string, pid int) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
			return
		}
	}
}
