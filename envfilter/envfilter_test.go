package envfilter

import (
	"os"
	"reflect"
	"sort"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "ANYTHING", true},
		{"*", "", true},
		{"DB_*", "DB_HOST", true},
		{"DB_*", "DB_", true},
		{"DB_*", "XDB_HOST", false},
		{"*_URL", "API_URL", true},
		{"*_URL", "API_URL2", false},
		{"A?C", "ABC", true},
		{"A?C", "AC", false},
		{"A?C", "ABBC", false},
		{"*A*B*", "xxAyyBzz", true},
		{"*A*B*", "xxByyAzz", false},
		{"db_*", "DB_HOST", false}, // case-sensitive
		{"PATH", "PATH", true},
		{"[A]", "A", false}, // no character classes: '[' is literal
		{"[A]", "[A]", true},
	}
	for _, tt := range tests {
		if got := Match(tt.pattern, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestFilterSelect(t *testing.T) {
	remote := map[string]string{
		"DB_HOST": "db", "DB_PASSWORD": "s3cret", "API_URL": "http://api", "PATH": "/remote/bin",
		"HOME": "/root", "JAVA_HOME": "/jvm", "SECRET_ENV": "x", "PUBLIC_ENV": "y",
	}
	tests := []struct {
		name   string
		filter Filter
		want   []string
	}{
		{"defaults drop PATH, HOME, JAVA_HOME", Filter{},
			[]string{"API_URL", "DB_HOST", "DB_PASSWORD", "PUBLIC_ENV", "SECRET_ENV"}},
		{"include with ';' list", Filter{Include: []string{"DB_*;PUBLIC_ENV"}},
			[]string{"DB_HOST", "DB_PASSWORD", "PUBLIC_ENV"}},
		{"include list form", Filter{Include: []string{"DB_*", "PUBLIC_ENV"}},
			[]string{"DB_HOST", "DB_PASSWORD", "PUBLIC_ENV"}},
		{"exclude", Filter{Exclude: []string{"DB_PASSWORD;SECRET_ENV"}},
			[]string{"API_URL", "DB_HOST", "PUBLIC_ENV"}},
		{"include and exclude together", Filter{Include: []string{"DB_*"}, Exclude: []string{"*PASSWORD"}},
			[]string{"DB_HOST"}},
		{"a wildcard does not bring back default excludes", Filter{Include: []string{"*"}},
			[]string{"API_URL", "DB_HOST", "DB_PASSWORD", "PUBLIC_ENV", "SECRET_ENV"}},
		{"an exact include brings back a default exclude", Filter{Include: []string{"PATH;API_URL"}},
			[]string{"API_URL", "PATH"}},
		{"exclude everything (feature.env: false)", Filter{Exclude: []string{"*"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := keys(tt.filter.Select(remote))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Select = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSpecRemote(t *testing.T) {
	remote := map[string]string{
		"CONNECTION_TIMEOUT": "500", "READ_TIMEOUT": "20", "LOG_LEVEL": "info",
		"DATABASE_CONNECTION": "db://prod", "PATH": "/remote",
	}
	tests := []struct {
		name string
		spec Spec
		want map[string]string
	}{
		{"plain", Spec{}, map[string]string{
			"CONNECTION_TIMEOUT": "500", "READ_TIMEOUT": "20", "LOG_LEVEL": "info", "DATABASE_CONNECTION": "db://prod"}},
		{"env file wins over remote and adds", Spec{EnvFile: map[string]string{"LOG_LEVEL": "debug", "NEW": "1"}}, map[string]string{
			"CONNECTION_TIMEOUT": "500", "READ_TIMEOUT": "20", "LOG_LEVEL": "debug", "DATABASE_CONNECTION": "db://prod", "NEW": "1"}},
		{"mapping replaces values of matching names", Spec{Mapping: map[string]string{".+_TIMEOUT": "1000"}}, map[string]string{
			"CONNECTION_TIMEOUT": "1000", "READ_TIMEOUT": "1000", "LOG_LEVEL": "info", "DATABASE_CONNECTION": "db://prod"}},
		{"mapping applies to env file values too", Spec{
			EnvFile: map[string]string{"WRITE_TIMEOUT": "3"}, Mapping: map[string]string{"^WRITE_": "9"}}, map[string]string{
			"CONNECTION_TIMEOUT": "500", "READ_TIMEOUT": "20", "LOG_LEVEL": "info", "DATABASE_CONNECTION": "db://prod", "WRITE_TIMEOUT": "9"}},
		{"override wins over everything", Spec{
			Mapping:  map[string]string{"DATABASE_.*": "mapped"},
			Override: map[string]string{"DATABASE_CONNECTION": "db://localhost:7777/my-db", "LOCAL_BEAR": "panda"}}, map[string]string{
			"CONNECTION_TIMEOUT": "500", "READ_TIMEOUT": "20", "LOG_LEVEL": "info",
			"DATABASE_CONNECTION": "db://localhost:7777/my-db", "LOCAL_BEAR": "panda"}},
		{"filter applies before env file", Spec{Filter: Filter{Include: []string{"LOG_*"}}, EnvFile: map[string]string{"X": "1"}},
			map[string]string{"LOG_LEVEL": "info", "X": "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.spec.Remote(remote)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Remote = %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := (Spec{Mapping: map[string]string{"(": "x"}}).Remote(remote); err == nil {
		t.Error("an invalid mapping regex should fail")
	}
}

func TestMerge(t *testing.T) {
	local := []string{"PATH=/usr/bin", "HOME=/home/me", "AWS_PROFILE=dev", "LOCAL_ONLY=1", "EMPTY="}
	remote := map[string]string{"DB_HOST": "db", "LOCAL_ONLY": "remote"}
	got := Merge(local, remote, []string{"aws_profile;EMPTY"})
	want := []string{"DB_HOST=db", "HOME=/home/me", "LOCAL_ONLY=remote", "PATH=/usr/bin"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Merge = %v, want %v", got, want)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	if out == nil {
		return nil
	}
	sort.Strings(out)
	return out
}

func TestReadEnvFile(t *testing.T) {
	path := t.TempDir() + "/.env"
	content := "# comment\nexport DB_HOST=localhost\nQUOTED=\"a b\"\nEMPTY=\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"DB_HOST": "localhost", "QUOTED": "a b", "EMPTY": ""}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadEnvFile = %v, want %v", got, want)
	}
	if _, err := ReadEnvFile(path + ".missing"); err == nil {
		t.Error("a missing env file should fail")
	}
}
