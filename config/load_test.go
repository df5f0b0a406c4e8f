package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPrecedence checks flags > MIRRORD_* env > config file > defaults for
// several kinds of keys.
func TestPrecedence(t *testing.T) {
	file := `{"target": "pod/from-file", "agent": {"ttl": 5, "namespace": "file-ns"},
	  "feature": {"fs": "write", "network": {"incoming": "steal", "outgoing": {"udp": false}}}}`
	get := map[string]func(c *Config) any{
		"target":     func(c *Config) any { return c.Target.Path.String() },
		"agent.ttl":  func(c *Config) any { return c.Agent.TTL },
		"agent.ns":   func(c *Config) any { return *c.Agent.Namespace },
		"fs.mode":    func(c *Config) any { return c.Feature.FS.Mode },
		"incoming":   func(c *Config) any { return c.Feature.Network.Incoming.Mode },
		"udp":        func(c *Config) any { return c.Feature.Network.Outgoing.UDP },
		"skip_procs": func(c *Config) any { return []string(c.SkipProcesses) },
	}
	tests := []struct {
		name     string
		file     bool
		env      map[string]string
		settings []Setting
		key      string
		want     any
	}{
		{"default", false, nil, nil, "agent.ttl", uint16(1)},
		{"file over default", true, nil, nil, "agent.ttl", uint16(5)},
		{"env over file", true, map[string]string{"MIRRORD_AGENT_TTL": "9"}, nil, "agent.ttl", uint16(9)},
		{"flag over env", true, map[string]string{"MIRRORD_AGENT_TTL": "9"}, []Setting{{"--agent-ttl", "agent.ttl", "12"}}, "agent.ttl", uint16(12)},
		{"target from file", true, nil, nil, "target", "pod/from-file"},
		{"target env over file", true, map[string]string{"MIRRORD_IMPERSONATED_TARGET": "deploy/env"}, nil, "target", "deployment/env"},
		{"target flag over env", true, map[string]string{"MIRRORD_IMPERSONATED_TARGET": "deploy/env"}, []Setting{{"--target", "target.path", "pod/flag/container/c"}}, "target", "pod/flag/container/c"},
		{"namespace env", true, map[string]string{"MIRRORD_AGENT_NAMESPACE": "env-ns"}, nil, "agent.ns", "env-ns"},
		{"fs default", false, nil, nil, "fs.mode", FsRead},
		{"fs shorthand from file", true, nil, nil, "fs.mode", FsWrite},
		{"fs env over file", true, map[string]string{"MIRRORD_FILE_MODE": "local"}, nil, "fs.mode", FsLocal},
		{"fs flag over env", true, map[string]string{"MIRRORD_FILE_MODE": "local"}, []Setting{{"--fs-mode", "feature.fs.mode", "read"}}, "fs.mode", FsRead},
		{"incoming default", false, nil, nil, "incoming", IncomingMirror},
		{"incoming file shorthand", true, nil, nil, "incoming", IncomingSteal},
		{"steal env false means mirror", true, map[string]string{"MIRRORD_AGENT_TCP_STEAL_TRAFFIC": "false"}, nil, "incoming", IncomingMirror},
		{"steal env true", false, map[string]string{"MIRRORD_AGENT_TCP_STEAL_TRAFFIC": "true"}, nil, "incoming", IncomingSteal},
		{"steal flag", false, nil, []Setting{{"--steal", "feature.network.incoming.mode", "steal"}}, "incoming", IncomingSteal},
		{"udp file", true, nil, nil, "udp", false},
		{"udp env over file", true, map[string]string{"MIRRORD_UDP_OUTGOING": "true"}, nil, "udp", true},
		{"udp flag over env", true, map[string]string{"MIRRORD_UDP_OUTGOING": "true"}, []Setting{{"--no-udp-outgoing", "feature.network.outgoing.udp", false}}, "udp", false},
		{"list env is ;-separated", false, map[string]string{"MIRRORD_SKIP_PROCESSES": "a;b"}, nil, "skip_procs", []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{Lookup: envMap(tt.env), Settings: tt.settings}
			if tt.file {
				opts.File = writeFile(t, "c.json", file)
			}
			cfg, err := Load(opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := get[tt.key](cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s = %#v, want %#v", tt.key, got, tt.want)
			}
		})
	}
}

func TestConfigFileFromEnv(t *testing.T) {
	p := writeFile(t, "m.yaml", "agent:\n  ttl: 7\n")
	cfg, err := Load(Options{Lookup: envMap(map[string]string{"MIRRORD_CONFIG_FILE": p})})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.TTL != 7 {
		t.Errorf("agent.ttl = %d, want 7 from $MIRRORD_CONFIG_FILE", cfg.Agent.TTL)
	}
}

func TestEnvAndSettingErrorsNameTheirSource(t *testing.T) {
	_, err := Load(Options{
		Lookup:   envMap(map[string]string{"MIRRORD_AGENT_TTL": "soon", "MIRRORD_REMOTE_DNS": "maybe"}),
		Settings: []Setting{{"--target", "target.path", "pood/x"}},
	})
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{
		"agent.ttl: from environment variable MIRRORD_AGENT_TTL",
		"feature.network.dns.enabled: from environment variable MIRRORD_REMOTE_DNS",
		"target.path: from --target: invalid target \"pood/x\"",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
}

func TestShorthands(t *testing.T) {
	tests := []struct {
		doc   string
		check func(c *Config) bool
	}{
		{`{"feature": {"env": false}}`, func(c *Config) bool { return reflect.DeepEqual([]string(c.Feature.Env.Exclude), []string{"*"}) }},
		{`{"feature": {"env": true}}`, func(c *Config) bool { return c.Feature.Env.Exclude == nil }},
		{`{"feature": {"fs": false}}`, func(c *Config) bool { return c.Feature.FS.Mode == FsLocal }},
		{`{"feature": {"fs": {"mode": "localwithoverrides", "read_only": "^/app"}}}`, func(c *Config) bool {
			return c.Feature.FS.Mode == FsLocalWithOverrides && reflect.DeepEqual([]string(c.Feature.FS.ReadOnly), []string{"^/app"})
		}},
		{`{"feature": {"network": false}}`, func(c *Config) bool {
			n := c.Feature.Network
			return n.Incoming.Mode == IncomingOff && !n.Outgoing.TCP && !n.Outgoing.UDP && !n.DNS.Enabled
		}},
		{`{"feature": {"network": {"incoming": false}}}`, func(c *Config) bool { return c.Feature.Network.Incoming.Mode == IncomingOff }},
		{`{"feature": {"network": {"outgoing": false, "dns": false}}}`, func(c *Config) bool {
			n := c.Feature.Network
			return !n.Outgoing.TCP && !n.Outgoing.UDP && !n.DNS.Enabled && n.Incoming.Mode == IncomingMirror
		}},
		{`{"feature": {"copy_target": {"scale_down": true}}, "target": "deploy/x"}`, func(c *Config) bool {
			return c.Feature.CopyTarget.Enabled && c.Feature.CopyTarget.ScaleDown
		}},
		{`{"target": {"path": {"deployment": "api", "container": "app"}, "namespace": "prod"}}`, func(c *Config) bool {
			return c.Target.Path.String() == "deployment/api/container/app" && *c.Target.Namespace == "prod"
		}},
		{`{"target": {"pod": "bear"}}`, func(c *Config) bool { return c.Target.Path.String() == "pod/bear" }},
		{`{"target": "deployment/meme-app/main"}`, func(c *Config) bool { return c.Target.Path.Container == "main" }},
		{`{"agent": {"image": {"registry": "reg.local/agent", "tag": "v1"}}}`, func(c *Config) bool { return c.Agent.Image == "reg.local/agent:v1" }},
		{`{"agent": {"image": {"tag": "v2"}}}`, func(c *Config) bool { return c.Agent.Image == DefaultAgentRegistry+":v2" }},
		{`{"feature": {"network": {"incoming": {"http_filter": {"ports": 9090}}}}}`, func(c *Config) bool {
			return reflect.DeepEqual(c.Feature.Network.Incoming.HTTPFilter.Ports, PortList{9090})
		}},
		{`{"skip_processes": "ide-debugger"}`, func(c *Config) bool { return reflect.DeepEqual([]string(c.SkipProcesses), []string{"ide-debugger"}) }},
		{`{"agent": {"ttl": null}}`, func(c *Config) bool { return c.Agent.TTL == 1 }},
		{`{"feature": {"network": {"incoming": {"http_filter": {"header_filter": "^x: (?!y)"}}}}}`, func(c *Config) bool {
			return *c.Feature.Network.Incoming.HTTPFilter.HeaderFilter == "^x: (?!y)"
		}},
	}
	for _, tt := range tests {
		tree, err := ParseBytes([]byte(tt.doc), JSON, noEnv)
		if err != nil {
			t.Fatalf("%s: %v", tt.doc, err)
		}
		cfg, err := Decode(tree)
		if err != nil {
			t.Errorf("%s: %v", tt.doc, err)
			continue
		}
		if !tt.check(cfg) {
			t.Errorf("%s: resolved config is not what the shorthand means", tt.doc)
		}
	}
}

// TestFormatsAgree loads the spec's complete example in JSON, TOML and
// YAML and expects the same resolved config.
func TestFormatsAgree(t *testing.T) {
	var outs []string
	for _, f := range []string{"testdata/spec/L2263-2341.json", "testdata/spec/complete.toml", "testdata/spec/complete.yaml"} {
		cfg, err := Load(Options{File: f, Lookup: noEnv})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(b))
	}
	if outs[0] != outs[1] || outs[0] != outs[2] {
		t.Errorf("JSON, TOML and YAML resolve differently:\njson %s\ntoml %s\nyaml %s", outs[0], outs[1], outs[2])
	}
}

func TestTemplate(t *testing.T) {
	env := envMap(map[string]string{"TARGET": "pod/from-env", "TTL": "4"})
	tests := []struct {
		in, want, wantErr string
	}{
		{`{"target": "{{ get_env(name="TARGET", default="pod/fallback") }}"}`, `{"target": "pod/from-env"}`, ""},
		{`{"target": "{{ get_env(name="NOPE", default="pod/fallback") }}"}`, `{"target": "pod/fallback"}`, ""},
		{`{"ttl": {{get_env(name='TTL')}}}`, `{"ttl": 4}`, ""},
		{"a {# comment #}b", "a b", ""},
		{"a   {{- \"x\" -}}   b", "axb", ""},
		{`{"x": "{{ get_env(name="NOPE") }}"}`, "", "NOPE is not set"},
		{`{{ target }}`, "", "variable \"target\" is not defined"},
		// Statements and filters were rejected before templates were
		// rendered by a Jinja engine; TestTemplateTera covers them in full.
		{`{% if x %}set{% else %}unset{% endif %}`, "unset", ""},
		{`{{ now() }}`, "", "function \"now\" is not supported"},
		{`{{ get_env(name="A", fallback="b") }}`, "", "no argument \"fallback\""},
		{`{{ get_env(name="TARGET") | upper }}`, "POD/FROM-ENV", ""},
		{"line1\n{{ get_env(name=\"X\"", "", "template line 2"},
		{`{"a": {"b": 1}}`, `{"a": {"b": 1}}`, ""},
	}
	for _, tt := range tests {
		got, err := render("", tt.in, env)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("render(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("render(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestYAMLAliasBomb: a short YAML document whose aliases repeat a list
// exponentially often (9^9 strings) is refused at once; it took minutes
// and gigabytes.
func TestYAMLAliasBomb(t *testing.T) {
	doc := "a: &a [x, x, x, x, x, x, x, x, x]\n"
	for c := 'b'; c <= 'i'; c++ {
		prev := string(c - 1)
		doc += fmt.Sprintf("%c: &%c [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", c, c, prev, prev, prev, prev, prev, prev, prev, prev, prev)
	}
	start := time.Now()
	_, err := ParseBytes([]byte(doc), YAML, noEnv)
	if err == nil || !strings.Contains(err.Error(), "more than 1000000 values") {
		t.Errorf("ParseBytes of an alias bomb: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusing it took %v", d)
	}
}

func TestUnknownFormat(t *testing.T) {
	p := writeFile(t, "mirrord.ini", "x=1")
	if _, err := Load(Options{File: p, Lookup: noEnv}); err == nil || !strings.Contains(err.Error(), "unknown extension") {
		t.Errorf("want an unknown extension error, got %v", err)
	}
}

func TestWarnings(t *testing.T) {
	for _, tt := range []struct {
		name, config string
		want         []string
	}{
		{"operator and pull secret", `{"operator": true, "agent": {"image_pull_secrets": [{"secret-key": "s"}]}}`,
			[]string{"operator is not available", "image_pull_secrets[0] has no \"name\""}},
		{"namespace with an ephemeral agent", `{"target": "pod/p", "agent": {"ephemeral": true, "namespace": "other"}}`,
			[]string{"agent.namespace is ignored with agent.ephemeral"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tree, err := ParseBytes([]byte(tt.config), JSON, noEnv)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Decode(tree)
			if err != nil {
				t.Fatal(err)
			}
			w := strings.Join(cfg.Warnings(), "\n")
			for _, want := range tt.want {
				if !strings.Contains(w, want) {
					t.Errorf("warnings %q lack %q", w, want)
				}
			}
		})
	}
}

// TestJSONSchemaCoversEveryKey walks the schema and checks that each key
// the decoder knows appears in it, for a few representative paths.
func TestJSONSchema(t *testing.T) {
	s := JSONSchema()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"accept_invalid_certificates"`, `"http_filter"`, `"header_filter"`, `"readonly_file_buffer"`,
		`"localwithoverrides"`, `Environment variable: MIRRORD_AGENT_TCP_STEAL_TRAFFIC`, `"additionalProperties":false`, `"start_idle_timeout"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("schema lacks %s", want)
		}
	}
	props := s["properties"].(map[string]any)
	if len(props) != len(structFields(reflect.TypeFor[Config]()).list) {
		t.Errorf("schema has %d top-level keys, config has %d", len(props), len(structFields(reflect.TypeFor[Config]()).list))
	}
}

// TestAgentResources: the agent's default CPU limit is one CPU (upstream:
// 100m, too little for relaying bulk traffic, see README), the rest as
// upstream; agent.resources in a file replaces the default as a whole.
func TestAgentResources(t *testing.T) {
	want := map[string]any{
		"requests": map[string]any{"cpu": "1m", "memory": "1Mi"},
		"limits":   map[string]any{"cpu": "1", "memory": "100Mi"},
	}
	if got := Default().Agent.Resources; !reflect.DeepEqual(got, want) {
		t.Errorf("default agent.resources = %v, want %v", got, want)
	}
	file := writeFile(t, "m.json", `{"agent": {"resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}}`)
	cfg, err := Load(Options{File: file, Lookup: envMap(nil)})
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]any{"limits": map[string]any{"cpu": "100m", "memory": "64Mi"}}
	if got := cfg.Agent.Resources; !reflect.DeepEqual(got, want) {
		t.Errorf("agent.resources from a file = %v, want %v", got, want)
	}
}
