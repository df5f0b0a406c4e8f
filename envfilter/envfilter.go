package envfilter

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/dlclark/regexp2"
	"github.com/joho/godotenv"
)

// DefaultExcludes are never taken from the target unless an include
// pattern names them exactly: they describe the remote machine's tool
// locations and would break local programs (PATH, HOME, JAVA_HOME, ...).
var DefaultExcludes = []string{
	"BUNDLER_ORIG_BUNDLER_ORIG_MANPATH", "BUNDLER_ORIG_BUNDLER_VERSION", "BUNDLER_ORIG_BUNDLE_BIN_PATH",
	"BUNDLER_ORIG_BUNDLE_GEMFILE", "BUNDLER_ORIG_GEM_HOME", "BUNDLER_ORIG_MANPATH", "BUNDLER_ORIG_PATH",
	"BUNDLER_ORIG_RB_USER_INSTALL", "BUNDLER_ORIG_RUBYLIB", "BUNDLER_ORIG_RUBYOPT", "BUNDLER_VERSION",
	"BUNDLE_APP_CONFIG", "BUNDLE_BIN_PATH", "BUNDLE_FORCE_RUBY_PLATFORM", "BUNDLE_GEMFILE", "BUNDLE_GEM_PATH",
	"BUNDLE_PATH", "BUNDLE_WITHOUT", "CATALINA_HOME", "CLASSPATH", "DOTNET_EnableDiagnostics", "DOTNET_STARTUP_HOOKS",
	"GEM_HOME", "GEM_PATH", "GOPATH", "GOMODCACHE", "HOME", "HOMEPATH", "JAVA_EXE", "JAVA_HOME", "JAVA_TOOL_OPTIONS",
	"PATH", "PWD", "PYTHONPATH", "RUBYLIB", "RUBYOPT", "MIRRORD_LOG", "RUST_LOG", "_JAVA_OPTIONS",
}

// Patterns splits config values into patterns: each value may itself be a
// ';'-separated list ("DB_*;API_KEY"). Empty pieces are dropped.
func Patterns(values []string) []string {
	var out []string
	for _, v := range values {
		for _, p := range strings.Split(v, ";") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// Match reports whether name matches pattern as a whole, where '*' matches
// any run of characters (also none) and '?' exactly one. Matching is
// case-sensitive, as environment variable names are.
func Match(pattern, name string) bool {
	// Iterative wildcard matching with backtracking to the last '*'.
	p, n := []rune(pattern), []rune(name)
	pi, ni, star, mark := 0, 0, -1, 0
	for ni < len(n) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == n[ni]):
			pi++
			ni++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ni
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ni = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if Match(p, name) {
			return true
		}
	}
	return false
}

// Filter selects remote variables.
type Filter struct {
	Include []string // empty: everything
	Exclude []string
}

// Selects reports whether the remote variable name is taken.
func (f Filter) Selects(name string) bool {
	include, exclude := Patterns(f.Include), Patterns(f.Exclude)
	if len(include) > 0 && !matchAny(include, name) {
		return false
	}
	if matchAny(exclude, name) {
		return false
	}
	if slices.Contains(DefaultExcludes, name) && !slices.Contains(include, name) {
		return false
	}
	return true
}

// Select returns the remote variables f takes.
func (f Filter) Select(remote map[string]string) map[string]string {
	out := make(map[string]string, len(remote))
	for k, v := range remote {
		if f.Selects(k) {
			out[k] = v
		}
	}
	return out
}

// Spec is the feature.env configuration, apart from the selection filter.
type Spec struct {
	Filter Filter
	// EnvFile holds the variables read from feature.env.env_file; they win
	// over the target's.
	EnvFile map[string]string
	// Mapping replaces the value of every variable whose name matches a
	// regex key with the key's value. Keys are tried in sorted order;
	// the first match wins.
	Mapping map[string]string
	// Override sets variables last, whatever the target has.
	Override map[string]string
	// Unset removes names (case-insensitively) from the final environment.
	Unset []string
}

// Remote computes the variables the local process takes from the target:
// selected remote variables, then the env file, then mappings, then
// overrides.
func (s Spec) Remote(remote map[string]string) (map[string]string, error) {
	out := s.Filter.Select(remote)
	for k, v := range s.EnvFile {
		out[k] = v
	}
	if len(s.Mapping) > 0 {
		keys := make([]string, 0, len(s.Mapping))
		for k := range s.Mapping {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		res := make([]*regexp2.Regexp, len(keys))
		for i, k := range keys {
			re, err := regexp2.Compile(k, regexp2.None)
			if err != nil {
				return nil, fmt.Errorf("feature.env.mapping: invalid regex %q: %w", k, err)
			}
			res[i] = re
		}
		for name := range out {
			for i, re := range res {
				if ok, _ := re.MatchString(name); ok {
					out[name] = s.Mapping[keys[i]]
					break
				}
			}
		}
	}
	for k, v := range s.Override {
		out[k] = v
	}
	return out, nil
}

// Merge lays remote over the local environment (KEY=VALUE entries, as from
// os.Environ), removes the unset names, and returns a sorted environment.
func Merge(local []string, remote map[string]string, unset []string) []string {
	env := make(map[string]string, len(local)+len(remote))
	for _, kv := range local {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	for k, v := range remote {
		env[k] = v
	}
	for k := range env {
		for _, u := range Patterns(unset) {
			if strings.EqualFold(k, u) {
				delete(env, k)
			}
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// ReadEnvFile reads a .env file (feature.env.env_file): KEY=VALUE lines,
// comments, quoting and `export` prefixes as dotenv tools accept them.
func ReadEnvFile(path string) (map[string]string, error) {
	vars, err := godotenv.Read(path)
	if err != nil {
		return nil, fmt.Errorf("feature.env.env_file: cannot read %s: %w", path, err)
	}
	return vars, nil
}
