package fsfilter

import (
	"strings"
	"testing"
)

var host = Host{Home: "/home/dev", Cwd: "/work/app", Executable: "/work/app/bin/server", TempDir: "/tmp"}

func TestClassify(t *testing.T) {
	user := Spec{
		ReadWrite: []string{`.+\.json$`},
		ReadOnly:  []string{`.+\.yaml$`, `.+important-file\.txt$`},
		Local:     []string{`.+\.js$`, `.+\.mjs$`, `^/data/cache`},
		NotFound:  []string{`^/secrets/local-only`},
		Mapping:   map[string]string{`^/remote-home/(?P<user>[^/]+)`: "/home/$user", `^/old/`: "/new/"},
	}
	tests := []struct {
		name  string
		mode  Mode
		path  string
		write bool
		want  Action
		to    string // expected path after mapping, if different
	}{
		// Modes with no user lists involved.
		{"read mode reads remote", ModeRead, "/app/config.toml", false, Remote, ""},
		{"read mode writes local", ModeRead, "/app/out.log", true, Local, ""},
		{"write mode writes remote", ModeWrite, "/app/out.log", true, Remote, ""},
		{"local mode is local", ModeLocal, "/app/config.json", false, Local, ""},
		{"localwithoverrides falls back local", ModeLocalWithOverrides, "/app/config.toml", false, Local, ""},
		{"localwithoverrides honours read_write", ModeLocalWithOverrides, "/app/config.json", true, Remote, ""},

		// User lists, in precedence order.
		{"read_write beats mode read for writes", ModeRead, "/app/state.json", true, Remote, ""},
		{"read_only reads remote", ModeWrite, "/app/values.yaml", false, Remote, ""},
		{"read_only writes local", ModeWrite, "/app/values.YAML", true, Local, ""},
		{"local list", ModeWrite, "/srv/index.js", false, Local, ""},
		{"local list beats default remote", ModeRead, "/data/cache/x", false, Local, ""},
		{"not_found beats read_write", ModeRead, "/secrets/local-only/a.json", false, NotFound, ""},
		{"patterns are case-insensitive", ModeRead, "/SRV/INDEX.JS", false, Local, ""},

		// Defaults.
		{"/etc is local", ModeRead, "/etc/passwd", false, Local, ""},
		{"/etc/resolv.conf is remote", ModeRead, "/etc/resolv.conf", false, Remote, ""},
		{"/etc/hosts is never written remotely", ModeWrite, "/etc/hosts", true, Local, ""},
		{"python files are local", ModeRead, "/srv/app/main.py", false, Local, ""},
		{"shared libraries are local", ModeRead, "/opt/x/libfoo.so", false, Local, ""},
		{"kube credentials are not found", ModeRead, "/home/dev/.kube/config", false, NotFound, ""},
		{"aws credentials are not found", ModeRead, "/home/dev/.aws/credentials", false, NotFound, ""},
		{"home hidden files are local", ModeRead, "/home/dev/.bashrc", false, Local, ""},
		{"working directory is local", ModeRead, "/work/app/templates/index.html", false, Local, ""},
		{"executable is local", ModeRead, "/work/app/bin/server", false, Local, ""},
		{"root dir itself is local", ModeRead, "/", false, Local, ""},
		{"service account token is remote", ModeRead, "/var/run/secrets/kubernetes.io/serviceaccount/token", false, Remote, ""},
		{"relative paths are local", ModeWrite, "data/x.json", false, Local, ""},

		// Mapping happens first, then classification uses the new path.
		{"mapping with named group", ModeRead, "/remote-home/alice/notes", false, Local, "/home/alice/notes"},
		{"mapping plain", ModeRead, "/old/config.toml", false, Remote, "/new/config.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := user
			spec.Mode = tt.mode
			f, err := New(spec, host)
			if err != nil {
				t.Fatal(err)
			}
			got, path := f.Classify(tt.path, tt.write)
			if got != tt.want {
				t.Errorf("Classify(%q, write=%v) = %v, want %v", tt.path, tt.write, got, tt.want)
			}
			want := tt.to
			if want == "" {
				want = tt.path
			}
			if path != want {
				t.Errorf("Classify(%q) path = %q, want %q", tt.path, path, want)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		spec Spec
		want string
	}{
		{Spec{ReadOnly: []string{"ok", "(bad"}}, "feature.fs.read_only[1]"},
		{Spec{NotFound: []string{"*x"}}, "feature.fs.not_found[0]"},
		{Spec{Mapping: map[string]string{"(": "x"}}, "feature.fs.mapping"},
	}
	for _, tt := range tests {
		_, err := New(tt.spec, host)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) error = %v, want one naming %s", tt.spec, err, tt.want)
		}
	}
}
