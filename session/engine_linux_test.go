package session

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mirrord-go/mirrord/config"
)

func TestChooseEngine(t *testing.T) {
	self, err := os.Executable() // a Go test binary
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755)
	goScript := filepath.Join(dir, "goscript")
	os.WriteFile(goScript, []byte("#!"+self+" -flag\n"), 0o755)
	text := filepath.Join(dir, "text")
	os.WriteFile(text, []byte("just text\n"), 0o644)
	tests := []struct {
		name string
		want config.Engine
		path string
		eng  config.Engine
	}{
		{"dynamic ELF", config.EnginePreload, "/bin/sh", config.EngineAuto},
		{"Go binary", config.EngineNetstack, self, config.EngineAuto},
		{"script with a dynamic interpreter", config.EnginePreload, script, config.EngineAuto},
		{"script with a Go interpreter", config.EngineNetstack, goScript, config.EngineAuto},
		{"not a program", config.EnginePreload, text, config.EngineAuto},
		{"missing file", config.EnginePreload, filepath.Join(dir, "nope"), config.EngineAuto},
		{"forced netstack", config.EngineNetstack, "/bin/sh", config.EngineNetstack},
		{"forced preload", config.EnginePreload, self, config.EnginePreload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := chooseEngine(tt.eng, tt.path); got != tt.want {
				t.Errorf("chooseEngine(%s, %s) = %s, want %s", tt.eng, tt.path, got, tt.want)
			}
		})
	}
}

func TestWithLayerEnv(t *testing.T) {
	// Left over from earlier runs (ours and upstream's): old layer
	// libraries, MIRRORD_LAYER_* and MIRRORD_RESOLVED_CONFIG go.
	env := []string{"PATH=/bin", "LD_PRELOAD=/tmp/mirrord/1-libmirrord_layer.so:/other.so /root/.cache/mirrord/libmirrord_layer-0a.so",
		"MIRRORD_LAYER_SOCK=stale", "MIRRORD_LAYER_HOLD=1", "MIRRORD_RESOLVED_CONFIG=e30=", "HOME=/root"}
	got := withLayerEnv(env, map[string]string{"MIRRORD_LAYER_SOCK": "@s"}, "/lib.so")
	slices.Sort(got)
	want := []string{"HOME=/root", "LD_PRELOAD=/lib.so:/other.so", "MIRRORD_LAYER_SOCK=@s", "PATH=/bin"}
	if !slices.Equal(got, want) {
		t.Errorf("withLayerEnv = %v, want %v", got, want)
	}
}

func TestSkipList(t *testing.T) {
	cfg := config.Default()
	cfg.SkipProcesses = config.StringList{"ide-debugger"}
	cfg.SkipExtraBuildTools = config.StringList{"bazel"}
	got := skipList(cfg)
	for _, name := range []string{"ide-debugger", "go", "compile", "link", "bazel"} {
		if !slices.Contains(strings.Split(got, ";"), name) {
			t.Errorf("skipList lacks %s: %s", name, got)
		}
	}
	cfg.SkipBuildTools = false
	if got := skipList(cfg); got != "ide-debugger" {
		t.Errorf("without skip_build_tools: %q", got)
	}
}
