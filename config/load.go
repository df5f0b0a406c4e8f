package config

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/mirrord-go/mirrord/version"
)

// Default returns the configuration used when nothing is set. The values
// are those of the upstream documentation, except agent.image and
// container.cli_image, which name this implementation's images.
func Default() *Config {
	proxy := ProxyConfig{StartIdleTimeout: 60, IdleTimeout: 5, LogLevel: "mirrord=info,warn", JSONLog: true}
	return &Config{
		SkipBuildTools: true,
		Engine:         EngineAuto,
		SkipSIP:        StringList{"git"},
		Telemetry:      true,
		UseProxy:       true,
		Agent: AgentConfig{
			LogLevel:         "info",
			Image:            AgentImage(DefaultAgentImage()),
			ImagePullPolicy:  "IfNotPresent",
			TTL:              1,
			StartupTimeout:   60,
			ReconnectTimeout: 60,
			FlushConnections: true,
			Tolerations:      []map[string]any{{"operator": "Exists"}},
			// Upstream limits the agent to 100m CPU. This agent relays
			// port-forward and outgoing traffic through yamux, and at
			// 100m it is throttled to about half of kubectl
			// port-forward's throughput (make bench); the request stays
			// tiny, so scheduling does not change.
			Resources: map[string]any{
				"requests": map[string]any{"cpu": "1m", "memory": "1Mi"},
				"limits":   map[string]any{"cpu": "1", "memory": "100Mi"},
			},
			CheckOutOfPods: true,
		},
		Container: ContainerConfig{
			CLIImage:        "ghcr.io/mirrord-go/mirrord-cli:" + version.Version,
			CLIImageLibPath: "/opt/mirrord/lib/libmirrord_layer.so",
		},
		Feature: FeatureConfig{
			FS: FSConfig{Mode: FsRead, ReadonlyFileBuffer: 128000},
			Network: NetworkConfig{
				Incoming: IncomingConfig{
					Mode:              IncomingMirror,
					HTTPFilter:        HTTPFilterConfig{Ports: PortList{80, 8080}},
					OnConcurrentSteal: "abort",
					HTTPSDelivery:     TLSDeliveryConfig{Protocol: "tls"},
				},
				Outgoing: OutgoingConfig{TCP: true, UDP: true},
				DNS:      DNSConfig{Enabled: true},
			},
			Hostname: true,
		},
		InternalProxy: proxy,
		ExternalProxy: proxy,
		Experimental: Experimental{
			TCPPing4Mock:                   true,
			EnableExecHooksLinux:           true,
			UseDevNull:                     true,
			IdleLocalHTTPConnectionTimeout: 3000,
		},
	}
}

// Setting is one value set from outside the config file, normally a
// command-line flag: Key is the config key it sets and Source names the
// flag for error messages.
type Setting struct {
	Source string // e.g. "--target"
	Key    string // e.g. "target.path"
	Value  any    // a generic value, as a config file would hold it
}

// Options says where a configuration comes from.
type Options struct {
	// File is the config file. Empty means $MIRRORD_CONFIG_FILE, and no
	// file if that is unset too.
	File string
	// Lookup reads environment variables; nil means os.LookupEnv.
	Lookup func(string) (string, bool)
	// Settings are applied last, so they win over everything else.
	Settings []Setting
}

// Load resolves a configuration: defaults, then the config file, then
// MIRRORD_* environment variables, then Settings; and validates the
// result. Problems with keys are returned together as Errors.
func Load(opts Options) (*Config, error) {
	lookup := opts.Lookup
	if lookup == nil {
		lookup = os.LookupEnv
	}
	cfg := Default()
	file := opts.File
	if file == "" {
		file, _ = lookup("MIRRORD_CONFIG_FILE")
	}
	var d decoder
	if file != "" {
		tree, err := ReadFile(file, lookup)
		if err != nil {
			return nil, err
		}
		d.decode("", tree, reflect.ValueOf(cfg).Elem())
	}
	d.applyEnv("", reflect.ValueOf(cfg).Elem(), lookup)
	for _, s := range opts.Settings {
		d.applySetting(cfg, s)
	}
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// ReadFile reads, renders and parses a config file into a generic tree.
func ReadFile(name string, lookup func(string) (string, bool)) (map[string]any, error) {
	format, err := FormatOf(name)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("cannot read config file: %w", err)
	}
	return parseBytes(name, data, format, lookup)
}

// ParseBytes renders and parses a config document.
func ParseBytes(data []byte, format Format, lookup func(string) (string, bool)) (map[string]any, error) {
	return parseBytes("", data, format, lookup)
}

// parseBytes renders and parses the document of the config file named file
// (empty when it came from elsewhere); render errors name the file.
func parseBytes(file string, data []byte, format Format, lookup func(string) (string, bool)) (map[string]any, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	rendered, err := render(file, string(data), lookup)
	if err != nil {
		// render's errors already begin "config template <file> line N:".
		return nil, err
	}
	tree, err := parse([]byte(rendered), format)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return tree, nil
}

// Decode decodes a parsed document over the defaults, without environment
// variables, and validates it.
func Decode(tree map[string]any) (*Config, error) {
	cfg := Default()
	var d decoder
	d.decode("", tree, reflect.ValueOf(cfg).Elem())
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Warnings are problems that do not stop mirrord, such as keys for
// features this implementation does not have.
func (c *Config) Warnings() []string { return c.warnings }

// envDecoder is implemented by types whose environment variable syntax is
// not simply their config syntax applied to a string.
type envDecoder interface {
	decodeEnv(d *decoder, p Path, s string)
}

var envDecoderType = reflect.TypeFor[envDecoder]()

// applyEnv overrides every field that names an environment variable in its
// `env` tag and whose variable is set.
func (d *decoder) applyEnv(p Path, v reflect.Value, lookup func(string) (string, bool)) {
	for _, f := range structFields(v.Type()).list {
		fv := v.FieldByIndex(f.index)
		fp := p.Key(f.name)
		if f.env != "" {
			if s, ok := lookup(f.env); ok {
				sub := decoder{}
				sub.decodeEnvString(fp, s, fv)
				for _, e := range sub.errs {
					e.Msg = "from environment variable " + f.env + ": " + e.Msg
					d.errs = append(d.errs, e)
				}
			}
		}
		if fv.Kind() == reflect.Struct {
			d.applyEnv(fp, fv, lookup)
		}
	}
}

func (d *decoder) decodeEnvString(p Path, s string, dst reflect.Value) {
	if dst.CanAddr() && dst.Addr().Type().Implements(envDecoderType) {
		dst.Addr().Interface().(envDecoder).decodeEnv(d, p, s)
		return
	}
	if dst.CanAddr() && dst.Addr().Type().Implements(shorthandType) {
		d.decode(p, s, dst)
		return
	}
	switch dst.Kind() {
	case reflect.Pointer:
		if dst.IsNil() {
			dst.Set(reflect.New(dst.Type().Elem()))
		}
		d.decodeEnvString(p, s, dst.Elem())
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			d.errs.add(p, "expected true or false, got %q", s)
			return
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		d.decode(p, jsonNumber(s), dst)
	case reflect.String:
		dst.SetString(s)
	case reflect.Slice:
		var list []any
		for _, part := range splitList(s) {
			list = append(list, part)
		}
		d.decode(p, list, dst)
	default:
		d.errs.add(p, "cannot be set from an environment variable")
	}
}

// applySetting decodes one Setting at its key path.
func (d *decoder) applySetting(cfg *Config, s Setting) {
	v := reflect.ValueOf(cfg).Elem()
	p := Path("")
	for _, k := range strings.Split(s.Key, ".") {
		if v.Kind() != reflect.Struct {
			panic(fmt.Sprintf("config: setting %s: %s is not a section", s.Source, p))
		}
		f, ok := structFields(v.Type()).byName[k]
		if !ok {
			panic(fmt.Sprintf("config: setting %s: unknown key %s", s.Source, s.Key))
		}
		v = v.FieldByIndex(f.index)
		p = p.Key(f.name)
	}
	sub := decoder{}
	if str, ok := s.Value.(string); ok {
		sub.decodeEnvString(p, str, v)
	} else {
		sub.decode(p, s.Value, v)
	}
	for _, e := range sub.errs {
		e.Msg = "from " + s.Source + ": " + e.Msg
		d.errs = append(d.errs, e)
	}
}
