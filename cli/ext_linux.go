package cli

import (
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/progress"
	"github.com/mirrord-go/mirrord/session"
)

// serve is the session process. What it says to the IDE goes through
// private copies of its stdout and stderr, closed once the session is
// ready; descriptors 1 and 2 point at /dev/null from the
// start, so that nothing it starts (a local agent) holds the IDE's pipes.
func (c *ExtCmd) serve(ctx context.Context, env *Env) error {
	out, errOut, err := privateStdio()
	if err != nil {
		return err
	}
	// mirrord's own log (MIRRORD_LOG_LEVEL) goes to MIRRORD_LOG_FILE, or
	// to descriptor 2: nowhere.
	log, closeLog, err := newLogger(env)
	if err != nil {
		return err
	}
	defer closeLog()
	env.Stdout, env.Stderr = out, errOut
	defer out.Close()
	// The JSON stream whatever MIRRORD_PROGRESS_MODE says: it is this
	// command's output, also for a person running it by hand.
	prog := progress.New(progress.JSON, out)
	prog.Begin(extTask)
	var s []config.Setting
	s = append(s, c.TargetFlags.settings()...)
	cfg, err := loadConfig(env, prog, &c.ConfigFlags, s)
	if err != nil {
		prog.Finish(false, err.Error())
		return err
	}
	if c.Executable != "" && staticELF(c.Executable) {
		prog.Warning(fmt.Sprintf("%s is statically linked: started by the IDE, it cannot load the library that puts a program into the mirrord session (build it dynamically linked; for Go, with cgo enabled)", c.Executable))
	}
	if v, _ := lookup(env, "MIRRORD_EXT_PRINT_CONFIG"); strings.EqualFold(v, "true") {
		configSummary(prog, cfg, c.ConfigFile)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	sess, err := session.Start(ctx, cfg, session.Options{AgentAddr: c.AgentAddr, Token: agentToken(env), Log: log, Progress: prog})
	if err != nil {
		prog.Finish(false, err.Error())
		return err
	}
	defer sess.Close()
	live := newLiveness()
	layer, err := sess.ServeLayer(session.LayerOptions{OnJoin: live.join, OnLeave: live.leave})
	if err != nil {
		prog.Finish(false, err.Error())
		return err
	}
	defer layer.Close()
	base := os.Environ()
	progEnv, err := sess.Proxy.Environment(ctx, base)
	if err != nil {
		prog.Finish(false, err.Error())
		return err
	}
	execution := envDiff(base, layer.Env(progEnv))
	b, err := json.Marshal(execution)
	if err != nil {
		return err
	}
	prog.Finish(true, string(b))
	// Let go of the IDE's pipes: ext exits, and the IDE reads to the end.
	out.Close()
	errOut.Close()
	env.Stderr = io.Discard
	go sess.ServeIncoming(ctx, layer.Ports)
	start := time.Duration(cfg.InternalProxy.StartIdleTimeout) * time.Second
	idle := time.Duration(cfg.InternalProxy.IdleTimeout) * time.Second
	select {
	case <-live.ended(start, idle):
		log.Info("ext: the program's processes have ended; the session ends")
	case <-sess.Proxy.Done():
		log.Warn("ext: lost the connection to the agent; the session ends")
	case <-ctx.Done():
	}
	return nil
}

// extExecution is what upstream calls the execution info: the variables
// the IDE adds to the program's environment and the ones it removes.
type extExecution struct {
	Environment  map[string]string `json:"environment"`
	PatchedPath  *string           `json:"patched_path"`
	EnvToUnset   []string          `json:"env_to_unset"`
	UsesOperator bool              `json:"uses_operator"`
}

// staticELF reports whether path is a statically linked ELF program.
func staticELF(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// configSummary reports what the session will do, as Info lines
// (MIRRORD_EXT_PRINT_CONFIG=TRUE, which IntelliJ sets and shows).
func configSummary(prog *progress.Reporter, cfg *config.Config, file string) {
	target := "targetless"
	if cfg.Target.Path != nil {
		target = cfg.Target.Path.String()
	}
	if file == "" {
		file = "(none)"
	}
	on := func(b bool) string {
		if b {
			return "enabled"
		}
		return "disabled"
	}
	net := cfg.Feature.Network
	prog.Info(fmt.Sprintf("mirrord will target: %s, the configuration file was loaded from %s", target, file))
	prog.Info("mirrord will run without the mirrord Operator")
	prog.Info(fmt.Sprintf("env: include %v, exclude %v", cfg.Feature.Env.Include, cfg.Feature.Env.Exclude))
	prog.Info(fmt.Sprintf("fs: file operations are %s", cfg.Feature.FS.Mode))
	prog.Info(fmt.Sprintf("incoming: incoming traffic will be %s", net.Incoming.Mode))
	prog.Info(fmt.Sprintf("outgoing: tcp %s, udp %s", on(net.Outgoing.TCP), on(net.Outgoing.UDP)))
	prog.Info(fmt.Sprintf("dns: DNS will be resolved %s", map[bool]string{true: "remotely", false: "locally"}[net.DNS.Enabled]))
	prog.Step("config summary", "config summary")
}

// privateStdio moves this process's stdout and stderr to close-on-exec
// descriptors of their own and points 1 and 2 at /dev/null.
func privateStdio() (out, errOut *os.File, err error) {
	dup := func(fd int) (*os.File, error) {
		n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return nil, fmt.Errorf("ext: %w", err)
		}
		return os.NewFile(uintptr(n), fmt.Sprintf("ide-%d", fd)), nil
	}
	if out, err = dup(1); err != nil {
		return nil, nil, err
	}
	if errOut, err = dup(2); err != nil {
		return nil, nil, err
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	defer devnull.Close()
	unix.Dup2(int(devnull.Fd()), 1)
	unix.Dup2(int(devnull.Fd()), 2)
	return out, errOut, nil
}

// envDiff is what turns the environment from into to: the variables to
// set (new or changed) and the ones to unset.
func envDiff(from, to []string) extExecution {
	before := map[string]string{}
	for _, kv := range from {
		k, v, _ := strings.Cut(kv, "=")
		before[k] = v
	}
	out := extExecution{Environment: map[string]string{}, EnvToUnset: []string{}}
	after := map[string]bool{}
	for _, kv := range to {
		k, v, _ := strings.Cut(kv, "=")
		after[k] = true
		if old, ok := before[k]; !ok || old != v {
			out.Environment[k] = v
		}
	}
	for k := range before {
		if !after[k] {
			out.EnvToUnset = append(out.EnvToUnset, k)
		}
	}
	sort.Strings(out.EnvToUnset)
	return out
}

// liveness counts the program's live processes.
type liveness struct {
	mu     sync.Mutex
	n      int
	joined bool
	change chan struct{}
}

func newLiveness() *liveness { return &liveness{change: make(chan struct{}, 1)} }

func (l *liveness) join() {
	l.mu.Lock()
	l.n++
	l.joined = true
	l.mu.Unlock()
	l.poke()
}

func (l *liveness) leave() {
	l.mu.Lock()
	l.n--
	l.mu.Unlock()
	l.poke()
}

func (l *liveness) poke() {
	select {
	case l.change <- struct{}{}:
	default:
	}
}

// ended is closed once no process has joined within start, or once none
// has been alive for idle.
func (l *liveness) ended(start, idle time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		timer := time.NewTimer(start)
		for {
			select {
			case <-l.change:
				l.mu.Lock()
				n := l.n
				l.mu.Unlock()
				if n > 0 {
					timer.Stop()
				} else {
					timer.Reset(idle)
				}
			case <-timer.C:
				l.mu.Lock()
				n := l.n
				l.mu.Unlock()
				if n == 0 {
					return
				}
			}
		}
	}()
	return done
}
