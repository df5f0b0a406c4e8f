package session

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/goshim"
	"github.com/mirrord-go/mirrord/netstack"
)

// runNetstack runs the program in a goshim sandbox (private user, network,
// mount and UTS namespaces) whose network the gVisor netstack serves.
func (s *Session) runNetstack(ctx context.Context, argv, progEnv []string) error {
	cfg, proxy, log := s.Config, s.Proxy, s.log
	spec := goshim.Spec{
		Path:       argv[0],
		Args:       argv,
		Env:        progEnv,
		ResolvConf: resolvConf(proxy.Hello().Resolver),
		Hostname:   s.hostname(),
		MTU:        goshim.DefaultMTU,
	}
	debugger := newDebuggerPorts(progEnv, argv)
	// The program's servers are sockets of this machine (goshim moves
	// them out of the sandbox): the ones not on loopback are the ports to
	// take the target's traffic for, as under the preload.
	ports := newPortSet()
	opts := []goshim.Option{goshim.WithLogger(log), goshim.WithListenHook(func(l goshim.Listener) {
		if !l.Addr.Addr().IsLoopback() && !debugger.has(l.Addr.Port()) {
			ports.add(l.Addr.Port())
		}
	})}
	if cfg.Feature.Network.Incoming.Mode != config.IncomingOff {
		// accept and getpeername show the target's client of a delivered
		// connection, as under the preload (goshim/peers.go).
		opts = append(opts, goshim.WithIncomingPeers(proxy.OriginalPeer))
	}
	cwd, _ := os.Getwd()
	files, err := sandboxFiles(cfg.Feature.FS, proxyFiles(proxy), cwd, skipper(cfg), log)
	if err != nil {
		return err
	}
	if files != nil {
		files.Warn = s.prog.Warning
		opts = append(opts, goshim.WithFiles(*files))
	}
	if proxy.HasUnixStreams() {
		opts = append(opts, goshim.WithUnixStreams(proxy.RelayUnix))
	}
	opts = append(opts, goshim.WithConnectCheck(proxy.ConnectRoute))
	var lost func() error
	err = RunSandbox(ctx, spec, opts, proxy, log, func(ctx context.Context, pid int) {
		go serveIncomingPorts(ctx, cfg, proxy, ports.snapshot, log)
		lost = stopWhenAgentLost(ctx, proxy, log, func(sig syscall.Signal) { syscall.Kill(pid, sig) })
	})
	if lost != nil {
		if lerr := lost(); lerr != nil {
			return lerr
		}
	}
	return err
}

// RunSandbox runs spec in a goshim sandbox whose network h serves, and
// returns the program's exit as an *ExitError (nil for status 0). running,
// if not nil, is called once the program runs, with a context that ends
// when it exits and the program's pid.
func RunSandbox(ctx context.Context, spec goshim.Spec, opts []goshim.Option, h netstack.Handler, log *slog.Logger,
	running func(ctx context.Context, pid int)) error {
	sb, err := goshim.Start(spec, opts...)
	if err != nil {
		return err
	}
	defer sb.Close()
	ns, err := netstack.New(sb.TunFD(), h, netstack.Options{
		MTU:    uint32(spec.MTU),
		DNS4:   goshim.DNSAddr4,
		DNS6:   goshim.DNSAddr6,
		Logger: log,
	})
	if err != nil {
		return err
	}
	defer ns.Close()
	stopSignals := sb.ForwardSignals(ctx)
	defer stopSignals()
	if err := sb.Go(); err != nil {
		code := 1
		if errors.Is(err, exec.ErrNotFound) || strings.Contains(err.Error(), "not found") {
			code = 127
		}
		return &ExitError{Code: code, Err: err}
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	if running != nil {
		running(runCtx, sb.Pid())
	}
	code, err := sb.Wait()
	if err != nil {
		return err
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
