package container

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func loadFlags(t *testing.T, file string) *RunFlags {
	t.Helper()
	help, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ParseHelp(string(help))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// helpFiles are the runtimes' `run --help` texts the parser is checked
// against.
var helpFiles = []string{"docker-28.2-run-help.txt", "docker-20.10-run-help.txt", "podman-4.3-run-help.txt"}

func TestParseHelp(t *testing.T) {
	for _, file := range helpFiles {
		f := loadFlags(t, file)
		// Every option line is read: an option missed here would be
		// refused as unknown in the user's command line.
		help, _ := os.ReadFile("testdata/" + file)
		lines := len(regexp.MustCompile(`(?m)^ +(-[A-Za-z0-9], )?--[A-Za-z0-9]`).FindAll(help, -1))
		if len(f.long) != lines {
			t.Errorf("%s: %d options read from %d option lines", file, len(f.long), lines)
		}
		for name, takes := range map[string]bool{"env": true, "publish": true, "entrypoint": true, "rm": false,
			"detach": false, "interactive": false, "tty": false, "sig-proxy": false, "network": true, "volume": true} {
			if got, ok := f.long[name]; !ok || got != takes {
				t.Errorf("%s: --%s takes a value: %v (known %v), want %v", file, name, got, ok, takes)
			}
		}
		for short, long := range map[byte]string{'e': "env", 'p': "publish", 'd': "detach", 'i': "interactive", 't': "tty", 'v': "volume", 'u': "user"} {
			if f.short[short] != long {
				t.Errorf("%s: -%c is --%s, want --%s", file, short, f.short[short], long)
			}
		}
	}
	// podman's value words that are not type names.
	f := loadFlags(t, "podman-4.3-run-help.txt")
	for _, name := range []string{"memory", "shm-size", "blkio-weight-device", "detach-keys", "entrypoint", "cidfile"} {
		if !f.long[name] {
			t.Errorf("podman: --%s takes a value: %v", name, f.long[name])
		}
	}
	if f.short['m'] != "memory" {
		t.Errorf("podman: -m is --%s, want --memory", f.short['m'])
	}
	if _, err := ParseHelp("Usage: nothing here\n"); err == nil {
		t.Error("a help text without options was accepted")
	}
}

func TestParseRun(t *testing.T) {
	f := loadFlags(t, "docker-28.2-run-help.txt")
	str := func(s string) *string { return &s }
	for _, tt := range []struct {
		args    string
		opts    []string
		image   string
		command []string
		entry   *string
		detach  bool
		user    string
	}{
		{args: "docker run nginx", image: "nginx"},
		{args: "docker run --rm -it -e A=b -p 80:80 --name x img:1 sh -c true", opts: strings.Fields("--rm -it -e A=b -p 80:80 --name x"), image: "img:1", command: []string{"sh", "-c", "true"}},
		{args: "docker container run -dp8080:80 img", opts: []string{"-dp8080:80"}, image: "img", detach: true},
		{args: "docker run --detach=false --entrypoint=/bin/x img a", opts: []string{"--detach=false", "--entrypoint=/bin/x"}, image: "img", command: []string{"a"}, entry: str("/bin/x")},
		{args: "docker run --entrypoint  img", opts: []string{"--entrypoint", ""}, image: "img", entry: str("")},
		{args: "/usr/bin/docker run -u 1000:1000 -e=X=1 -- img --rm", opts: strings.Fields("-u 1000:1000 -e=X=1"), image: "img", command: []string{"--rm"}, user: "1000:1000"},
		{args: "podman run -i img -d", opts: []string{"-i"}, image: "img", command: []string{"-d"}},
	} {
		argv := strings.Fields(tt.args)
		if strings.Contains(tt.args, "--entrypoint  img") {
			argv = []string{"docker", "run", "--entrypoint", "", "img"}
		}
		r, err := ParseRun(argv, f)
		if err != nil {
			t.Errorf("%s: %v", tt.args, err)
			continue
		}
		if !slices.Equal(r.Options, tt.opts) || r.Image != tt.image || !slices.Equal(r.Command, tt.command) ||
			r.Detach != tt.detach || r.User != tt.user || (r.Entrypoint == nil) != (tt.entry == nil) ||
			(r.Entrypoint != nil && *r.Entrypoint != *tt.entry) {
			t.Errorf("%s: options %q image %q command %q detach %v user %q entrypoint %v", tt.args, r.Options, r.Image, r.Command, r.Detach, r.User, r.Entrypoint)
		}
	}
	for _, tt := range []struct{ args, want string }{
		{"ls -l", "container runtime's run"},
		{"docker ps", "container runtime's run"},
		{"docker run", "no image"},
		{"docker run --rm -e", "needs a value"},
		{"docker run --no-such-flag img", "unknown option --no-such-flag"},
		{"docker run -Z img", "unknown option -Z"},
	} {
		_, err := ParseRun(strings.Fields(tt.args), f)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error with %q", tt.args, err, tt.want)
		}
	}
	// podman's own options, with its value words.
	pf := loadFlags(t, "podman-4.3-run-help.txt")
	argv := strings.Fields("podman run -m 512m --shm-size 1g --detach-keys ctrl-x --blkio-weight-device /dev/sda:10 -d img serve")
	if r, err := ParseRun(argv, pf); err != nil || r.Image != "img" || !r.Detach || !slices.Equal(r.Command, []string{"serve"}) {
		t.Errorf("%q: %+v, %v", argv, r, err)
	}
	if _, err := ParseRun([]string{"kubectl", "run", "x"}, f); !errors.Is(err, ErrNotRun) {
		t.Errorf("kubectl run: %v", err)
	}
}

func TestProgramArgv(t *testing.T) {
	img := &imageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"serve", "--x"}}
	empty := ""
	other := "/bin/sh"
	for _, tt := range []struct {
		entry   *string
		command []string
		want    []string
	}{
		{nil, nil, []string{"/entry", "serve", "--x"}},
		{nil, []string{"get", "u"}, []string{"/entry", "get", "u"}},
		{&other, nil, []string{"/bin/sh"}},
		{&other, []string{"-c", "true"}, []string{"/bin/sh", "-c", "true"}},
		{&empty, []string{"python3"}, []string{"python3"}},
		{&empty, nil, nil},
	} {
		got := programArgv(&RunArgs{Runtime: "docker", Entrypoint: tt.entry, Command: tt.command}, img)
		if !slices.Equal(got, tt.want) {
			t.Errorf("entrypoint %v command %q: %q, want %q", tt.entry, tt.command, got, tt.want)
		}
	}
	// podman's --entrypoint may be a JSON array (docker's is a path).
	for _, tt := range []struct {
		runtime, entry string
		want           []string
	}{
		{"/usr/bin/podman", `["/bin/sh","-c"]`, []string{"/bin/sh", "-c", "true"}},
		{"podman", `[]`, []string{"true"}},
		{"podman", `/bin/sh`, []string{"/bin/sh", "true"}},
		{"docker", `["/bin/sh","-c"]`, []string{`["/bin/sh","-c"]`, "true"}},
	} {
		got := programArgv(&RunArgs{Runtime: tt.runtime, Entrypoint: &tt.entry, Command: []string{"true"}}, img)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s --entrypoint %s: %q, want %q", tt.runtime, tt.entry, got, tt.want)
		}
	}
}

func TestCheckUser(t *testing.T) {
	for _, tt := range []struct {
		flag, image string
		ok          bool
	}{
		{"", "", true},
		{"root", "", true},
		{"0:0", "nobody", true},
		{"", "root", true},
		{"1234:1234", "", os.Geteuid() == 1234},
		{"", "nobody", false},
		{"nobody", "", false},
	} {
		err := checkUser(&RunArgs{User: tt.flag}, &imageConfig{User: tt.image})
		if (err == nil) != tt.ok {
			t.Errorf("--user %q, image USER %q: %v", tt.flag, tt.image, err)
		}
	}
}
