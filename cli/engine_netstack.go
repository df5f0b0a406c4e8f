package cli

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/goshim"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/netstack"
)

// runNetstack runs the program in a goshim sandbox (private user, network,
// mount and UTS namespaces) whose network the gVisor netstack serves.
func (c *ExecCmd) runNetstack(ctx context.Context, cfg *config.Config, proxy *intproxy.Proxy, progEnv []string, log *slog.Logger) error {
	hello := proxy.Hello()
	spec := goshim.Spec{
		Path:       c.Command[0],
		Args:       c.Command,
		Env:        progEnv,
		ResolvConf: resolvConf(hello.Resolver),
		MTU:        goshim.DefaultMTU,
	}
	if cfg.Feature.Hostname && hello.Hostname != "" && !hello.Targetless {
		spec.Hostname = hello.Hostname
	}
	var opts []goshim.Option
	cwd, _ := os.Getwd()
	files, err := sandboxFiles(cfg.Feature.FS, proxy, cwd, log)
	if err != nil {
		return err
	}
	if files != nil {
		opts = append(opts, goshim.WithFiles(*files))
	}
	sb, err := goshim.Start(spec, opts...)
	if err != nil {
		return err
	}
	defer sb.Close()
	ns, err := netstack.New(sb.TunFD(), proxy, netstack.Options{
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
	incCtx, stopIncoming := context.WithCancel(ctx)
	defer stopIncoming()
	go serveIncoming(incCtx, cfg, proxy, ns, sb.Pid(), log)
	go func() {
		select {
		case <-proxy.Done():
			log.Warn("lost the connection to the agent; remote operations now fail")
		case <-incCtx.Done(): // the program ended: the session closes normally
		}
	}()
	code, err := sb.Wait()
	if err != nil {
		return err
	}
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}
