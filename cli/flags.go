package cli

import (
	"strconv"

	"github.com/mirrord-go/mirrord/config"
)

// ConfigFlags picks the config file.
type ConfigFlags struct {
	ConfigFile string `short:"f" name:"config-file" type:"path" placeholder:"FILE" help:"Config file (.json, .toml, .yaml). Default: $MIRRORD_CONFIG_FILE."`
}

// KubeFlags picks the cluster.
type KubeFlags struct {
	Context                   string `name:"context" help:"Kube context to use (config: kube_context)."`
	Kubeconfig                string `name:"kubeconfig" type:"path" help:"Path to the kubeconfig (config: kubeconfig). Default: $KUBECONFIG, then ~/.kube/config."`
	AcceptInvalidCertificates *bool  `short:"c" name:"accept-invalid-certificates" help:"Accept invalid TLS certificates from the API server."`
}

// TargetFlags picks the target.
type TargetFlags struct {
	Target          string `short:"t" name:"target" placeholder:"PATH" help:"Target: targetless, or pod|deployment|rollout|job|cronjob|statefulset|service|replicaset/NAME[/container/CONTAINER]."`
	TargetNamespace string `short:"n" name:"target-namespace" placeholder:"NS" help:"Namespace of the target. Default: the kube context's namespace."`
}

// AgentFlags configure the agent.
type AgentFlags struct {
	AgentNamespace      string  `short:"a" name:"agent-namespace" placeholder:"NS" help:"Namespace to run the agent in."`
	AgentLogLevel       string  `short:"l" name:"agent-log-level" placeholder:"LEVEL" help:"Agent log level."`
	AgentImage          string  `short:"i" name:"agent-image" placeholder:"IMAGE" help:"Agent container image."`
	AgentTTL            *uint16 `name:"agent-ttl" placeholder:"SECONDS" help:"Seconds the agent pod lingers after the session."`
	AgentStartupTimeout *uint64 `name:"agent-startup-timeout" placeholder:"SECONDS" help:"Seconds to wait for the agent to start."`
	EphemeralContainer  bool    `short:"e" name:"ephemeral-container" help:"Run the agent as an ephemeral container in the target pod."`
}

// settings turns the flags that were given into config settings; flags
// left at their zero value do not override anything.
func (c *ConfigFlags) options(env *Env, s []config.Setting) config.Options {
	return config.Options{File: c.ConfigFile, Lookup: env.Lookup, Settings: s}
}

func (k *KubeFlags) settings() []config.Setting {
	var s []config.Setting
	if k.Context != "" {
		s = append(s, config.Setting{Source: "--context", Key: "kube_context", Value: k.Context})
	}
	if k.Kubeconfig != "" {
		s = append(s, config.Setting{Source: "--kubeconfig", Key: "kubeconfig", Value: k.Kubeconfig})
	}
	if k.AcceptInvalidCertificates != nil {
		s = append(s, config.Setting{Source: "--accept-invalid-certificates", Key: "accept_invalid_certificates", Value: *k.AcceptInvalidCertificates})
	}
	return s
}

func (t *TargetFlags) settings() []config.Setting {
	var s []config.Setting
	if t.Target != "" {
		s = append(s, config.Setting{Source: "--target", Key: "target.path", Value: t.Target})
	}
	if t.TargetNamespace != "" {
		s = append(s, config.Setting{Source: "--target-namespace", Key: "target.namespace", Value: t.TargetNamespace})
	}
	return s
}

func (a *AgentFlags) settings() []config.Setting {
	var s []config.Setting
	if a.AgentNamespace != "" {
		s = append(s, config.Setting{Source: "--agent-namespace", Key: "agent.namespace", Value: a.AgentNamespace})
	}
	if a.AgentLogLevel != "" {
		s = append(s, config.Setting{Source: "--agent-log-level", Key: "agent.log_level", Value: a.AgentLogLevel})
	}
	if a.AgentImage != "" {
		s = append(s, config.Setting{Source: "--agent-image", Key: "agent.image", Value: a.AgentImage})
	}
	if a.AgentTTL != nil {
		s = append(s, config.Setting{Source: "--agent-ttl", Key: "agent.ttl", Value: strconv.Itoa(int(*a.AgentTTL))})
	}
	if a.AgentStartupTimeout != nil {
		s = append(s, config.Setting{Source: "--agent-startup-timeout", Key: "agent.startup_timeout", Value: strconv.FormatUint(*a.AgentStartupTimeout, 10)})
	}
	if a.EphemeralContainer {
		s = append(s, config.Setting{Source: "--ephemeral-container", Key: "agent.ephemeral", Value: true})
	}
	return s
}

// ExecFlags are the feature switches of exec.
type ExecFlags struct {
	Engine                 string `name:"engine" enum:"auto,preload,netstack," default:"" placeholder:"ENGINE" help:"How to reach into the program: auto, preload (LD_PRELOAD library) or netstack (sandbox). Default auto."`
	FsMode                 string `name:"fs-mode" enum:"local,localwithoverrides,read,write," default:"" placeholder:"MODE" help:"File system mode: local, localwithoverrides, read or write."`
	OverrideEnvVarsExclude string `short:"x" name:"override-env-vars-exclude" placeholder:"PATTERNS" help:"Remote env vars not to take (';'-separated, * and ? wildcards)."`
	OverrideEnvVarsInclude string `short:"s" name:"override-env-vars-include" placeholder:"PATTERNS" help:"Only take these remote env vars (';'-separated, * and ? wildcards)."`
	EnvFile                string `name:"env-file" type:"path" help:"A .env file whose variables override the target's."`
	NoRemoteDNS            bool   `name:"no-remote-dns" help:"Resolve names locally."`
	SkipProcesses          string `name:"skip-processes" placeholder:"NAMES" help:"Processes (';'-separated) that run fully locally."`
	Steal                  bool   `name:"steal" aliases:"tcp-steal" help:"Steal incoming traffic instead of mirroring it."`
	NoOutgoing             bool   `name:"no-outgoing" help:"Do not send outgoing TCP or UDP traffic through the target."`
	NoTCPOutgoing          bool   `name:"no-tcp-outgoing" help:"Do not send outgoing TCP traffic through the target."`
	NoUDPOutgoing          bool   `name:"no-udp-outgoing" help:"Do not send outgoing UDP traffic through the target."`
	CompatFlags
}

// CompatFlags are upstream's flags that change nothing here; commands
// that start a session accept them so that scripts written for upstream
// keep working.
type CompatFlags struct {
	NoTelemetry         bool `name:"no-telemetry" help:"Accepted for compatibility; this mirrord sends no telemetry."`
	DisableVersionCheck bool `name:"disable-version-check" help:"Accepted for compatibility; this mirrord does not check for updates."`
}

func (c *CompatFlags) settings() []config.Setting {
	if c.NoTelemetry {
		return []config.Setting{{Source: "--no-telemetry", Key: "telemetry", Value: false}}
	}
	return nil
}

func (e *ExecFlags) settings() []config.Setting {
	var s []config.Setting
	add := func(src, key string, v any) { s = append(s, config.Setting{Source: src, Key: key, Value: v}) }
	if e.Engine != "" {
		add("--engine", "engine", e.Engine)
	}
	if e.FsMode != "" {
		add("--fs-mode", "feature.fs.mode", e.FsMode)
	}
	if e.OverrideEnvVarsExclude != "" {
		add("--override-env-vars-exclude", "feature.env.exclude", e.OverrideEnvVarsExclude)
	}
	if e.OverrideEnvVarsInclude != "" {
		add("--override-env-vars-include", "feature.env.include", e.OverrideEnvVarsInclude)
	}
	if e.EnvFile != "" {
		add("--env-file", "feature.env.env_file", e.EnvFile)
	}
	if e.NoRemoteDNS {
		add("--no-remote-dns", "feature.network.dns.enabled", false)
	}
	if e.SkipProcesses != "" {
		add("--skip-processes", "skip_processes", e.SkipProcesses)
	}
	if e.Steal {
		add("--steal", "feature.network.incoming.mode", "steal")
	}
	if e.NoOutgoing || e.NoTCPOutgoing {
		add(firstSet("--no-outgoing", e.NoOutgoing, "--no-tcp-outgoing"), "feature.network.outgoing.tcp", false)
	}
	if e.NoOutgoing || e.NoUDPOutgoing {
		add(firstSet("--no-outgoing", e.NoOutgoing, "--no-udp-outgoing"), "feature.network.outgoing.udp", false)
	}
	return append(s, e.CompatFlags.settings()...)
}

func firstSet(a string, aSet bool, b string) string {
	if aSet {
		return a
	}
	return b
}
