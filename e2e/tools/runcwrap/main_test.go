package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func writeJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func readJSON(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// A privileged container's spec as dockerd writes it: CAP_SYS_RESOURCE in
// every set, plus an oom score and rlimits. All three must go; the other
// capabilities and settings must stay.
func TestDropsSysResourceFromBundleSpec(t *testing.T) {
	caps := []any{"CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"}
	file := writeJSON(t, map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"args":        []any{"/sbin/init"},
			"oomScoreAdj": -999,
			"rlimits":     []any{map[string]any{"type": "RLIMIT_NOFILE", "hard": 1048576, "soft": 1048576}},
			"capabilities": map[string]any{
				"bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps,
			},
		},
	})
	if err := dropPrivilegedSettings(file); err != nil {
		t.Fatal(err)
	}
	doc := readJSON(t, file)
	proc := doc["process"].(map[string]any)
	for _, k := range []string{"oomScoreAdj", "rlimits"} {
		if _, ok := proc[k]; ok {
			t.Errorf("process.%s is still there", k)
		}
	}
	want := []any{"CAP_CHOWN", "CAP_SYS_ADMIN"}
	for set, v := range proc["capabilities"].(map[string]any) {
		if !reflect.DeepEqual(v, want) {
			t.Errorf("capabilities.%s = %v, want %v", set, v, want)
		}
	}
	if !reflect.DeepEqual(proc["args"], []any{"/sbin/init"}) || doc["ociVersion"] != "1.0.2" {
		t.Errorf("other settings changed: %v", doc)
	}
}

// `runc exec --process FILE` (docker exec, kubectl exec) gets a bare process
// spec: the capabilities sit at the top level.
func TestDropsSysResourceFromProcessSpec(t *testing.T) {
	file := writeJSON(t, map[string]any{
		"args":         []any{"kubeadm", "init"},
		"capabilities": map[string]any{"bounding": []any{"CAP_SYS_RESOURCE", "CAP_NET_ADMIN"}},
	})
	if err := dropPrivilegedSettings(file); err != nil {
		t.Fatal(err)
	}
	got := readJSON(t, file)["capabilities"].(map[string]any)["bounding"]
	if !reflect.DeepEqual(got, []any{"CAP_NET_ADMIN"}) {
		t.Errorf("bounding = %v", got)
	}
}

// A spec with nothing to drop is left byte for byte as it was.
func TestLeavesCleanSpecAlone(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.json")
	orig := []byte(`{"process": {"capabilities": {"bounding": ["CAP_KILL"]}},   "x": 1}`)
	if err := os.WriteFile(file, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := dropPrivilegedSettings(file); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(file)
	if string(got) != string(orig) {
		t.Errorf("file rewritten: %s", got)
	}
}

func TestSpecFile(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--root", "/r", "create", "--bundle", "/b", "id"}, "/b/config.json"},
		{[]string{"--log=/l", "run", "-b=/b", "id"}, "/b/config.json"},
		{[]string{"exec", "--process", "/p.json", "id"}, "/p.json"},
		{[]string{"--root", "/r", "delete", "id"}, ""},
	} {
		if got := specFile(tc.args); got != tc.want {
			t.Errorf("specFile(%v) = %q, want %q", tc.args, got, tc.want)
		}
	}
}
