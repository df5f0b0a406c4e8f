package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/willabides/kongplete"

	"github.com/mirrord-go/mirrord/diag"
	"github.com/mirrord-go/mirrord/session"
	"github.com/mirrord-go/mirrord/version"
)

// CLI is the root command.
type CLI struct {
	Version kong.VersionFlag `help:"Print the version and exit." short:"V"`

	Exec          ExecCmd             `cmd:"" help:"Run a local command in the context of a remote target (pod, deployment, ...)."`
	Dump          DumpCmd             `cmd:"" help:"Print the incoming traffic of a target's ports (mirrored: the target still answers it) until interrupted."`
	PortForward   PortForwardCmd      `cmd:"" name:"port-forward" help:"Forward local ports to hosts reachable from a target, or a target's ports to local ports."`
	Ext           ExtCmd              `cmd:"" help:"Start a session for a program an IDE will run, and print the environment that puts it in the session (JSON, for the IDE plugins)."`
	Ls            LsCmd               `cmd:"" help:"List the targets in a namespace."`
	VerifyConfig  VerifyConfigCmd     `cmd:"" name:"verify-config" help:"Check a config file and print the resolved config as JSON."`
	Config        ConfigCmd           `cmd:"" help:"Inspect the configuration format."`
	Container     ContainerCmd        `cmd:"" help:"Run a local container (docker|podman|nerdctl run ...) in the context of a remote target."`
	ContainerExt  ContainerExtCmd     `cmd:"" name:"container-ext" help:"Start a session for a container an IDE will run (docker), and print the run options that put it in the session (JSON, for the IntelliJ plugin)."`
	Completions   CompletionsCmd      `cmd:"" help:"Print a shell completion script (bash, zsh or fish)."`
	AgentImage    AgentImageCmd       `cmd:"" name:"agent-image" help:"Build the agent's container image from this binary and push it to a registry (or a tar, or a kind cluster)."`
	Agent         AgentCmd            `cmd:"" hidden:"" help:"Run the agent (the side next to the target)."`
	GoshimHelper  GoshimHelperCmd     `cmd:"" name:"goshim-helper" hidden:"" help:"Internal: set up a sandbox and exec the program in it."`
	LayerExec     LayerExecCmd        `cmd:"" name:"layer-exec" hidden:"" help:"Internal: run a Go or static program started by a layered process in a sandbox of the same session."`
	CopySelf      CopySelfCmd         `cmd:"" name:"copy-self" hidden:"" help:"Internal: copy this binary to a path (the init container of a target copy)."`
	Idle          IdleCmd             `cmd:"" hidden:"" help:"Internal: do nothing until stopped (the containers of a target copy)."`
	ContainerInit ContainerInitCmd    `cmd:"" name:"container-init" hidden:"" help:"Internal: the entrypoint mirrord container gives a container: run its program in the session."`
	ContainerSide ContainerSidecarCmd `cmd:"" name:"container-sidecar" hidden:"" help:"Internal: container-ext's sidecar: the session's internal proxy for the program's container."`
}

// Env gives commands the process environment and output streams, so that
// tests can run commands in-process without touching the real ones.
type Env struct {
	Stdout, Stderr io.Writer
	Lookup         func(string) (string, bool)
	// Args are the command line's arguments (without the program name).
	Args []string
}

// ExitError asks Main to exit with Code after printing Err (if any).
type ExitError = session.ExitError

// Main runs the CLI and returns the process exit code.
func Main(args []string) int {
	return run(args, &Env{Stdout: os.Stdout, Stderr: os.Stderr, Lookup: os.LookupEnv, Args: args})
}

func newParser(cli *CLI, env *Env, exit func(int)) (*kong.Kong, error) {
	return kong.New(cli,
		kong.Name("mirrord"),
		kong.Description("mirrord runs a local process in the context of a Kubernetes pod: its environment, files, DNS, outgoing and incoming traffic."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Vars{"version": "mirrord " + version.Version},
		agentVars,
		kong.Writers(env.Stdout, env.Stderr),
		kong.Exit(exit),
		kong.Bind(env),
	)
}

type exitPanic int

func run(args []string, env *Env) (code int) {
	var cli CLI
	// kong calls exit for --help and --version; turn that into a return
	// so that run can be tested in-process.
	defer func() {
		if r := recover(); r != nil {
			if c, ok := r.(exitPanic); ok {
				code = int(c)
				return
			}
			panic(r)
		}
	}()
	parser, err := newParser(&cli, env, func(c int) { panic(exitPanic(c)) })
	if err != nil {
		fmt.Fprintf(env.Stderr, "mirrord: %v\n", err)
		return 1
	}
	if env.Lookup != nil {
		if _, ok := env.Lookup("COMP_LINE"); ok {
			kongplete.Complete(parser)
		}
	}
	implicit := false
	if isProgramPath(args, parser) {
		// `go test -exec mirrord` runs `mirrord <test binary> <args>`:
		// a path where a subcommand would be means "exec this".
		args = append([]string{"exec", "--"}, args...)
		implicit = true
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(env.Stderr, "mirrord: %v\n", err)
		return 2
	}
	// Commands install their own signal handling: exec forwards signals
	// to the program instead of stopping on them.
	kctx.BindTo(context.Background(), (*context.Context)(nil))
	if implicit {
		cli.Exec.implicit = true
	}
	if env.Lookup != nil {
		statsCtx, stopStats := context.WithCancel(context.Background())
		defer stopStats()
		if err := diag.Start(statsCtx, env.Lookup, strings.Fields(kctx.Command())[0]); err != nil {
			fmt.Fprintf(env.Stderr, "mirrord: %v\n", err)
			return 2
		}
	}
	if err := kctx.Run(); err != nil {
		var ee *ExitError
		if ide := kctx.Command(); strings.HasPrefix(ide, "ls") || strings.HasPrefix(ide, "ext") || strings.HasPrefix(ide, "container-ext") {
			// The IDE plugins' commands: their errors are JSON (report.go).
			code := 1
			if errors.As(err, &ee) {
				code = ee.Code
				if ee.Err == nil {
					return code
				}
			}
			writeErrorJSON(env.Stderr, err)
			return code
		}
		if errors.As(err, &ee) {
			if ee.Err != nil {
				fmt.Fprintf(env.Stderr, "mirrord: %v\n", ee.Err)
			}
			return ee.Code
		}
		fmt.Fprintf(env.Stderr, "mirrord: %v\n", err)
		return 1
	}
	return 0
}

// isProgramPath reports whether args start with a program to run rather
// than a subcommand or a flag: a path with a slash, or the name of an
// existing file that is not also a subcommand.
func isProgramPath(args []string, parser *kong.Kong) bool {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return false
	}
	for _, n := range parser.Model.Children {
		if n.Name == args[0] || slices.Contains(n.Aliases, args[0]) {
			return false
		}
	}
	if strings.Contains(args[0], "/") {
		return true
	}
	st, err := os.Stat(args[0])
	return err == nil && !st.IsDir()
}
