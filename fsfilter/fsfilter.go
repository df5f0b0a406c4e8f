package fsfilter

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Action is where a file operation goes.
type Action int

const (
	Local    Action = iota // the local file system
	Remote                 // the target's file system
	NotFound               // fail with ENOENT
)

func (a Action) String() string {
	switch a {
	case Remote:
		return "remote"
	case NotFound:
		return "not_found"
	}
	return "local"
}

// Mode is feature.fs.mode.
type Mode string

const (
	ModeLocal              Mode = "local"
	ModeLocalWithOverrides Mode = "localwithoverrides"
	ModeRead               Mode = "read"
	ModeWrite              Mode = "write"
)

// Spec is the feature.fs configuration.
type Spec struct {
	Mode      Mode
	ReadWrite []string
	ReadOnly  []string
	Local     []string
	NotFound  []string
	Mapping   map[string]string
}

// Host describes the local machine, for the default patterns that depend
// on it.
type Host struct {
	Home       string // $HOME; hidden files under it stay local, cloud credentials are not found
	Cwd        string // the working directory stays local
	Executable string // the program's own binary stays local
	TempDir    string
}

// Default pattern lists. All are matched case-insensitively and anywhere in
// the path unless anchored.
var (
	// defaultLocal: system directories, interpreters' own files and
	// package-manager state, which must come from the local machine for the
	// program to run at all.
	defaultLocal = []string{
		`.\.so$`, `.\.sh$`, `.\.rb$`, `.\.d$`, `.\.pyc$`, `.\.py$`, `.\.jar$`, `.\.class$`, `.\.js$`,
		`.\.pth$`, `.\.plist$`, `venv\.cfg$`,
		`^/proc(/|$)`, `^/sys(/|$)`, `^/lib(/|$)`, `^/etc(/|$)`, `^/usr(/|$)`, `^/home(/|$)`, `^/bin(/|$)`,
		`^/sbin(/|$)`, `^/dev(/|$)`, `^/opt(/|$)`, `^/tmp(/|$)`, `^/var/tmp(/|$)`, `^/var/db/timezone/zoneinfo(/|$)`,
		`^/snap(/|$)`, `^/run(/|$)`, `^/selinux(/|$)`, `^/nix(/|$)`,
		`.+\.asdf/.+`, `^/home/iojs(/|$)`, `^/home/runner(/|$)`,
		`clr-.*-pipe-`, `\.pdb$`, `\.dll$`, `.*(^|/)jvm\.cfg$`,
		`/package\.json$`, `/\.yarnrc$`, `/\.yarnrc.yml$`, `/\.yarnrc.json$`, `/node_modules`,
		`.*/\.tool-versions$`, `^/$`,
	}
	// defaultRemote: files that describe the pod's identity and network,
	// read from the target even though /etc is otherwise local.
	defaultRemote = []string{`^/etc/resolv.conf$`, `^/etc/hosts$`, `^/etc/hostname$`, `^/etc/ssl/certs(/|$)`}
	// defaultNotFound (under $HOME): local cloud credentials, so that a
	// program uses the pod's identity rather than the developer's.
	defaultNotFound = []string{`\.aws`, `\.config/gcloud`, `\.kube`, `\.azure`}
)

type mapping struct {
	re   *regexp.Regexp
	repl string
}

// Filter is a compiled Spec.
type Filter struct {
	mode                                 Mode
	readWrite, readOnly, local, notFound *set
	defLocal, defRemote, defNotFound     *set
	mappings                             []mapping
}

type set struct{ res []*regexp.Regexp }

func (s *set) match(path string) bool {
	for _, re := range s.res {
		if re.MatchString(path) {
			return true
		}
	}
	return false
}

func compileSet(key string, patterns []string) (*set, error) {
	s := &set{}
	for i, p := range patterns {
		re, err := regexp.Compile("(?i)" + p)
		if err != nil {
			return nil, fmt.Errorf("feature.fs.%s[%d]: invalid regex %q: %w", key, i, p, err)
		}
		s.res = append(s.res, re)
	}
	return s, nil
}

// New compiles a Spec for the given host.
func New(spec Spec, host Host) (*Filter, error) {
	f := &Filter{mode: spec.Mode}
	if f.mode == "" {
		f.mode = ModeRead
	}
	var err error
	for _, x := range []struct {
		dst  **set
		key  string
		pats []string
	}{
		{&f.readWrite, "read_write", spec.ReadWrite},
		{&f.readOnly, "read_only", spec.ReadOnly},
		{&f.local, "local", spec.Local},
		{&f.notFound, "not_found", spec.NotFound},
		{&f.defLocal, "(default local)", defaultLocalFor(host)},
		{&f.defRemote, "(default remote)", defaultRemote},
		{&f.defNotFound, "(default not_found)", defaultNotFoundFor(host)},
	} {
		if *x.dst, err = compileSet(x.key, x.pats); err != nil {
			return nil, err
		}
	}
	keys := make([]string, 0, len(spec.Mapping))
	for k := range spec.Mapping {
		keys = append(keys, k)
	}
	sort.Strings(keys) // map order is random; make "first match" stable
	for _, k := range keys {
		re, err := regexp.Compile("(?i)" + k)
		if err != nil {
			return nil, fmt.Errorf("feature.fs.mapping: invalid regex %q: %w", k, err)
		}
		f.mappings = append(f.mappings, mapping{re: re, repl: spec.Mapping[k]})
	}
	return f, nil
}

func defaultLocalFor(h Host) []string {
	out := append([]string(nil), defaultLocal...)
	if h.TempDir != "" {
		out = append(out, "^"+regexp.QuoteMeta(strings.TrimSuffix(h.TempDir, "/"))+"(/|$)")
	}
	if h.Cwd != "" && h.Cwd != "/" {
		out = append(out, "^"+regexp.QuoteMeta(strings.TrimSuffix(h.Cwd, "/"))+"(/|$)")
	}
	if h.Executable != "" {
		out = append(out, regexp.QuoteMeta(h.Executable)+"$")
	}
	if h.Home != "" {
		out = append(out, "^"+regexp.QuoteMeta(strings.TrimSuffix(h.Home, "/"))+`/\.`)
	}
	return out
}

func defaultNotFoundFor(h Host) []string {
	if h.Home == "" {
		return nil
	}
	prefix := "^" + regexp.QuoteMeta(strings.TrimSuffix(h.Home, "/")) + "/"
	out := make([]string, len(defaultNotFound))
	for i, p := range defaultNotFound {
		out[i] = prefix + p
	}
	return out
}

// Map applies the first feature.fs.mapping rule that matches an absolute
// path (rules are tried in sorted order of their patterns). The
// replacement may use $1, $name and ${name}. Only the first match in the
// path is replaced.
func (f *Filter) Map(path string) string {
	if !strings.HasPrefix(path, "/") {
		return path
	}
	for _, m := range f.mappings {
		loc := m.re.FindStringSubmatchIndex(path)
		if loc == nil {
			continue
		}
		var dst []byte
		dst = m.re.ExpandString(dst, m.repl, path, loc)
		return path[:loc[0]] + string(dst) + path[loc[1]:]
	}
	return path
}

// Classify decides where an operation on path goes. write is true when the
// file is opened for writing (or created, truncated, removed, ...). The
// returned path is the one to use, after feature.fs.mapping.
func (f *Filter) Classify(path string, write bool) (Action, string) {
	if !strings.HasPrefix(path, "/") {
		// Relative paths are relative to the local working directory.
		if f.notFound.match(path) || f.defNotFound.match(path) {
			return NotFound, path
		}
		return Local, path
	}
	path = f.Map(path)
	switch {
	case f.mode == ModeLocal:
		return Local, path
	case f.notFound.match(path):
		return NotFound, path
	case f.readWrite.match(path):
		return Remote, path
	case f.readOnly.match(path):
		if write {
			return Local, path
		}
		return Remote, path
	case f.local.match(path):
		return Local, path
	case f.defNotFound.match(path):
		return NotFound, path
	case f.defRemote.match(path) && !write:
		return Remote, path
	case f.defLocal.match(path):
		return Local, path
	}
	switch f.mode {
	case ModeWrite:
		return Remote, path
	case ModeRead:
		if write {
			return Local, path
		}
		return Remote, path
	}
	return Local, path // localwithoverrides
}
