package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/mirrord-go/mirrord/session"
)

// extTask is the root task whose successful FinishedTask the IDE plugins
// wait for; its message is the execution's JSON (extExecution).
const extTask = "mirrord preparing to launch"

// ExtCmd is `mirrord ext`, which the IDE plugins run before they start the
// user's program: it starts a session that outlives the command and prints
// the environment that puts a program into it. The session serves every
// process started with that environment (and their children) and ends
// internal_proxy.idle_timeout seconds after the last of them, or
// internal_proxy.start_idle_timeout seconds after ext if none starts.
type ExtCmd struct {
	ConfigFlags
	TargetFlags
	Executable string `short:"e" name:"executable" placeholder:"PATH" help:"The program the IDE will run (accepted for compatibility; the engine is chosen when it starts)."`
	AgentAddr  string `name:"agent-addr" env:"MIRRORD_AGENT_ADDR" placeholder:"HOST:PORT" help:"Use the agent already running at this address instead of starting one (config: connect_tcp)."`

	// Serve is the detached process that holds the session; ext starts it
	// and relays its progress.
	Serve bool `name:"serve-session" hidden:""`
}

func (c *ExtCmd) Run(ctx context.Context, env *Env) error {
	if err := session.CheckRun(); err != nil {
		return err
	}
	if c.Serve {
		return c.serve(ctx, env)
	}
	return startDetached(env, "ext", extReady)
}

// extReady reports whether a line of ext's output says that the session
// is ready: the root task's successful FinishedTask.
func extReady(line []byte) bool {
	var m struct {
		Type    string `json:"type"`
		Name    string `json:"name"`
		Success bool   `json:"success"`
	}
	return json.Unmarshal(line, &m) == nil && m.Type == "FinishedTask" && m.Name == extTask && m.Success
}

// startDetached runs the session process detached (its own session, stdin from
// /dev/null) and relays what it prints until it reports that the session
// is ready, or fails. The IDE reads this command's output to its end, so
// the session process lets go of the pipes once it is ready.
// (verb is the subcommand, ready tells the line that says so).
func startDetached(env *Env, verb string, ready func(line []byte) bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{verb, "--serve-session"}
	for i, a := range env.Args {
		if a == verb {
			args = append(args, env.Args[i+1:]...)
			break
		}
	}
	cmd := exec.Command(self, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start the session: %w", verb, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(env.Stderr, stderr)
	}()
	isReady := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		fmt.Fprintf(env.Stdout, "%s\n", line)
		if ready(line) {
			isReady = true
		}
	}
	wg.Wait()
	if isReady {
		// The session runs on; it is not this process's child to wait for.
		cmd.Process.Release()
		return nil
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Code: ee.ExitCode()}
	}
	if err != nil {
		return err
	}
	return &ExitError{Code: 1}
}
