package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/progress"
	"github.com/mirrord-go/mirrord/session"
)

// loadConfig resolves the config and prints its warnings.
func loadConfig(env *Env, prog *progress.Reporter, cf *ConfigFlags, settings []config.Setting) (*config.Config, error) {
	cfg, err := config.Load(cf.options(env, settings))
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			return nil, fmt.Errorf("invalid configuration:\n%w", err)
		}
		return nil, err
	}
	for _, w := range cfg.Warnings() {
		prog.Warning(w)
	}
	return cfg, nil
}

// ExecCmd is `mirrord exec`.
type ExecCmd struct {
	ConfigFlags
	TargetFlags
	AgentFlags
	KubeFlags
	ExecFlags
	// implicit is set when mirrord was called as `mirrord PROGRAM ARGS`
	// (go test -exec mirrord): the config file may then also come from
	// .mirrord/ above the working directory.
	implicit bool

	AgentAddr string   `name:"agent-addr" env:"MIRRORD_AGENT_ADDR" placeholder:"HOST:PORT" help:"Use the agent already running at this address instead of starting one (config: connect_tcp)."`
	Command   []string `arg:"" passthrough:"partial" name:"command" help:"The command to run, with its arguments."`
}

func (c *ExecCmd) settings() []config.Setting {
	var s []config.Setting
	s = append(s, c.TargetFlags.settings()...)
	s = append(s, c.AgentFlags.settings()...)
	s = append(s, c.KubeFlags.settings()...)
	s = append(s, c.ExecFlags.settings()...)
	return s
}

// Run runs the command in the target's context. The agent is one that
// already runs (--agent-addr, MIRRORD_AGENT_ADDR or connect_tcp), one this
// command starts for a local process (-t pid/PID), or, for Kubernetes
// targets, one in the cluster (not built yet).
func (c *ExecCmd) Run(ctx context.Context, env *Env) error {
	// Before the config and the agent: nothing to undo.
	if err := session.CheckRun(); err != nil {
		return err
	}
	if c.implicit && c.ConfigFile == "" {
		if _, ok := lookup(env, "MIRRORD_CONFIG_FILE"); !ok {
			c.ConfigFile = findProjectConfig()
		}
	}
	prog := newProgress(env)
	cfg, err := loadConfig(env, prog, &c.ConfigFlags, c.settings())
	if err != nil {
		return err
	}
	if len(c.Command) > 0 && c.Command[0] == "--" {
		c.Command = c.Command[1:]
	}
	if len(c.Command) == 0 {
		return errors.New("exec: no command given; usage: mirrord exec [flags] -- COMMAND [ARGS...]")
	}
	log, closeLog, err := newLogger(env)
	if err != nil {
		return err
	}
	defer closeLog()
	sess, err := session.Start(ctx, cfg, session.Options{AgentAddr: c.AgentAddr, Token: agentToken(env), Log: log, Progress: prog})
	if err != nil {
		return err
	}
	defer sess.Close()
	return sess.Run(ctx, c.Command)
}

// PortForwardCmd is `mirrord port-forward`.
type PortForwardCmd struct {
	ConfigFlags
	TargetFlags
	AgentFlags
	KubeFlags
	AgentAddr string   `name:"agent-addr" env:"MIRRORD_AGENT_ADDR" placeholder:"HOST:PORT" help:"Use the agent already running at this address instead of starting one (config: connect_tcp)."`
	Local     []string `short:"L" name:"port-mapping" aliases:"port-mappings" placeholder:"[udp/][LOCAL_PORT:]REMOTE_HOST:REMOTE_PORT" help:"Forward a local port to a host and port reachable from the target (repeatable; udp/ for UDP)."`
	Remote    []string `short:"R" name:"reverse-port-mapping" placeholder:"[REMOTE_PORT:]LOCAL_PORT" help:"Forward a port of the target to a local port (repeatable)."`
}

// LsCmd is `mirrord ls`.
type LsCmd struct {
	ConfigFlags
	KubeFlags
	Namespace string `short:"n" name:"namespace" help:"Namespace to list. Default: the target namespace of the config, then the kube context's."`
	Output    string `short:"o" name:"output" enum:"text,json" default:"text" help:"Output format: text or json (a list of paths; with MIRRORD_LS_RICH_OUTPUT=true, always the IDE plugins' object)."`
}

// lsRich is the listing the IDE plugins ask for with
// MIRRORD_LS_RICH_OUTPUT=true (upstream's cli/src/list.rs).
type lsRich struct {
	Targets          []lsTarget `json:"targets"`
	CurrentNamespace string     `json:"current_namespace"`
	Namespaces       []string   `json:"namespaces"`
}

type lsTarget struct {
	Path      string `json:"path"`
	Available bool   `json:"available"`
}

func (c *LsCmd) Run(ctx context.Context, env *Env) error {
	// The plugins: MIRRORD_LS_TARGET_TYPES='["deployment","rollout","pod"]'.
	var types []string
	if v, ok := lookup(env, "MIRRORD_LS_TARGET_TYPES"); ok && v != "" {
		if err := json.Unmarshal([]byte(v), &types); err != nil {
			return fmt.Errorf("MIRRORD_LS_TARGET_TYPES=%q: expected a JSON array of target types, e.g. [\"deployment\",\"pod\"]: %w", v, err)
		}
	}
	rich := false
	if v, _ := lookup(env, "MIRRORD_LS_RICH_OUTPUT"); v == "true" {
		rich = true
	}
	cfg, err := loadConfig(env, newProgress(env), &c.ConfigFlags, c.KubeFlags.settings())
	if err != nil {
		return err
	}
	client, err := session.Cluster(ctx, cfg)
	if err != nil {
		return err
	}
	ns := c.Namespace
	if ns == "" && cfg.Target.Namespace != nil {
		ns = *cfg.Target.Namespace
	}
	if ns == "" {
		ns = client.Namespace
	}
	all, err := client.ListTargets(ctx, ns)
	if err != nil {
		return err
	}
	targets := []string{}
	for _, t := range all {
		kind, _, _ := strings.Cut(t, "/")
		if len(types) == 0 || slices.Contains(types, kind) {
			targets = append(targets, t)
		}
	}
	if rich {
		out := lsRich{Targets: []lsTarget{}, CurrentNamespace: ns, Namespaces: client.Namespaces(ctx)}
		for _, t := range targets {
			out.Targets = append(out.Targets, lsTarget{Path: t, Available: true})
		}
		if !slices.Contains(out.Namespaces, ns) {
			out.Namespaces = append(out.Namespaces, ns)
		}
		return json.NewEncoder(env.Stdout).Encode(out)
	}
	if c.Output == "json" {
		return json.NewEncoder(env.Stdout).Encode(targets)
	}
	for _, t := range targets {
		fmt.Fprintln(env.Stdout, t)
	}
	return nil
}

// VerifyConfigCmd is `mirrord verify-config`.
type VerifyConfigCmd struct {
	IDE      bool   `name:"ide" help:"Print the IDE plugins' result: {\"type\": \"Success\"|\"Fail\", ...} (always exit status 0)."`
	Resolved bool   `name:"resolved" help:"With --ide, add the whole resolved config as \"resolved_config\"."`
	Path     string `arg:"" name:"FILE" type:"path" help:"The config file to check."`
}

// The verify-config --ide document is upstream's (cli/src/
// verify_config.rs): {"type":"Success","config":{path,namespace},
// "warnings":[...],"compatible_target_types":[...]} or {"type":"Fail",
// "errors":[...]}; config holds the target only, path null when no target
// is set.
type ideTarget struct {
	Path      any     `json:"path"`
	Namespace *string `json:"namespace"`
}

// idePath is a target path as upstream serializes it: "targetless", or
// {"deployment": "d", "container": null}.
func idePath(tp *config.TargetPath) any {
	if tp == nil {
		return nil
	}
	if tp.Kind == "targetless" {
		return "targetless"
	}
	var container *string
	if tp.Container != "" {
		container = &tp.Container
	}
	return map[string]any{tp.Kind: tp.Name, "container": container}
}

// compatibleTargetTypes are the target types the config can run with:
// a copied target cannot be targetless, and only a workload with replicas
// can be scaled down (config.validate says the same).
func compatibleTargetTypes(cfg *config.Config) []string {
	var out []string
	ct := cfg.Feature.CopyTarget
	for _, k := range []string{"targetless", "pod", "deployment", "rollout", "job", "cronjob", "statefulset", "service", "replicaset"} {
		if ct.Enabled && k == "targetless" {
			continue
		}
		if ct.Enabled && ct.ScaleDown && k != "deployment" && k != "rollout" && k != "statefulset" && k != "replicaset" {
			continue
		}
		out = append(out, k)
	}
	return out
}

// Run loads the file with the current environment (templates and MIRRORD_*
// variables apply, as they would for exec) and prints the resolved config.
func (c *VerifyConfigCmd) Run(env *Env) error {
	cfg, err := config.Load(config.Options{File: c.Path, Lookup: env.Lookup})
	if c.IDE {
		if err != nil {
			return writeJSON(env.Stdout, map[string]any{"type": "Fail", "errors": errorLines(err)})
		}
		warnings := cfg.Warnings()
		if warnings == nil {
			warnings = []string{}
		}
		res := map[string]any{
			"type":                    "Success",
			"config":                  ideTarget{Path: idePath(cfg.Target.Path), Namespace: cfg.Target.Namespace},
			"warnings":                warnings,
			"compatible_target_types": compatibleTargetTypes(cfg),
		}
		if c.Resolved {
			res["resolved_config"] = cfg
		}
		return writeJSON(env.Stdout, res)
	}
	if err != nil {
		return &ExitError{Code: 1, Err: fmt.Errorf("%s is not a valid mirrord config:\n%w", c.Path, err)}
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(env.Stderr, "mirrord: warning: %s\n", w)
	}
	return writeJSON(env.Stdout, cfg)
}

func errorLines(err error) []string {
	var es config.Errors
	if errors.As(err, &es) {
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = e.Error()
		}
		return out
	}
	return []string{err.Error()}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ConfigCmd groups config inspection commands.
type ConfigCmd struct {
	Schema SchemaCmd `cmd:"" help:"Print the JSON Schema of the config file."`
}

// SchemaCmd is `mirrord config schema`.
type SchemaCmd struct {
	Output string `short:"o" name:"output" type:"path" help:"Write the schema to this file instead of stdout."`
}

func (c *SchemaCmd) Run(env *Env) error {
	if c.Output == "" {
		return writeJSON(env.Stdout, config.JSONSchema())
	}
	if err := os.MkdirAll(filepath.Dir(c.Output), 0o755); err != nil {
		return err
	}
	f, err := os.Create(c.Output)
	if err != nil {
		return err
	}
	if err := writeJSON(f, config.JSONSchema()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// CompletionsCmd prints a completion script. The script calls mirrord back
// with COMP_LINE set; Main answers those calls through kongplete.
type CompletionsCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

func (c *CompletionsCmd) Run(env *Env) error {
	self, err := os.Executable()
	if err != nil {
		self = "mirrord"
	}
	switch c.Shell {
	case "bash":
		fmt.Fprintf(env.Stdout, "complete -o default -C %q mirrord\n", self)
	case "zsh":
		fmt.Fprintf(env.Stdout, "autoload -U +X bashcompinit && bashcompinit\ncomplete -o default -C %q mirrord\n", self)
	case "fish":
		fmt.Fprintf(env.Stdout, "complete -c mirrord -f -a '(env COMP_LINE=(commandline -cp) %s)'\n", self)
	}
	return nil
}

// findProjectConfig looks for .mirrord/mirrord.{json,toml,yaml,yml} in the
// working directory and its parents, as the IDE plugins do, so that
// `go test -exec mirrord ./...` finds the project's config from any
// package directory.
func findProjectConfig() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		for _, ext := range []string{"json", "toml", "yaml", "yml"} {
			p := filepath.Join(dir, ".mirrord", "mirrord."+ext)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
