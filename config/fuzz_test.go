package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzFormats are the config syntaxes, picked by a fuzzed byte.
var fuzzFormats = []Format{JSON, TOML, YAML}

// fuzzEnv is the environment of a fuzzed config: a couple of variables for
// get_env, and no MIRRORD_* variable.
func fuzzEnv(name string) (string, bool) {
	switch name {
	case "TARGET":
		return "deployment/api", true
	case "PORTS":
		return "80,8080", true
	}
	return "", false
}

// addConfigSeeds adds the config corpora (the upstream documentation's
// examples and the invalid files) as seeds, each with its format.
func addConfigSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/spec/*")
	invalid, _ := filepath.Glob("testdata/invalid/*")
	for _, file := range append(files, invalid...) {
		format, err := FormatOf(file)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for i, fm := range fuzzFormats {
			if fm == format {
				f.Add(uint8(i), b)
			}
		}
	}
}

// FuzzConfig: any document in any of the formats, rendered as a template
// first, loads or fails with an error, never a panic or a hang. A config
// that loads prints (as verify-config prints it) as JSON that loads back
// into the same config.
func FuzzConfig(f *testing.F) {
	addConfigSeeds(f)
	f.Add(uint8(0), []byte(`{"target": "{{ get_env(name="TARGET", default="pod/x") }}", "feature": {"network": {"incoming": {"mode": "steal", "http_filter": {"header_filter": "^x-user: {{ 'alice' | upper }}$"}}}}}`))
	f.Add(uint8(1), []byte("[feature.network.incoming]\nmode = \"steal\"\nports = [{% for p in get_env(name=\"PORTS\") | split(pat=\",\") %}{{ p }}{% if not loop.last %}, {% endif %}{% endfor %}]\n"))
	f.Add(uint8(2), []byte("target:\n  path: pod/a\nfeature:\n  fs: read\n  env:\n    include: \"A;B\"\n"))
	f.Fuzz(func(t *testing.T, format uint8, doc []byte) {
		fm := fuzzFormats[int(format)%len(fuzzFormats)]
		tree, err := ParseBytes(doc, fm, fuzzEnv)
		if err != nil {
			return
		}
		cfg, err := Decode(tree)
		if err != nil {
			return
		}
		printed, err := json.Marshal(cfg)
		if err != nil {
			t.Fatalf("the loaded config does not print: %v", err)
		}
		if bytes.Contains(printed, []byte("{{")) || bytes.Contains(printed, []byte("{%")) || bytes.Contains(printed, []byte("{#")) {
			return // it would be rendered as a template again
		}
		tree2, err := ParseBytes(printed, JSON, fuzzEnv)
		if err != nil {
			t.Fatalf("the printed config does not parse: %v\n%s", err, printed)
		}
		cfg2, err := Decode(tree2)
		if err != nil {
			t.Fatalf("the printed config does not load: %v\n%s", err, printed)
		}
		printed2, _ := json.Marshal(cfg2)
		if !bytes.Equal(printed, printed2) {
			t.Fatalf("the printed config loads as another:\n%s\n%s", printed, printed2)
		}
	})
}

// FuzzEnvConfig: any value in every MIRRORD_* variable the config reads
// loads or fails with an error, never a panic.
func FuzzEnvConfig(f *testing.F) {
	for _, v := range []string{"", "true", "1", "steal", "deployment/api/container/main", "80,8080", "80:8080;81:8081",
		"^x-user: alice$", "[1, 2]", "{\"a\": 1}", "-1", "99999999999999999999", "1e3", "read;write", " ", "\x00"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, value string) {
		Load(Options{Lookup: func(name string) (string, bool) {
			if strings.HasPrefix(name, "MIRRORD_") && name != "MIRRORD_CONFIG_FILE" {
				return value, true
			}
			return "", false
		}})
	})
}
