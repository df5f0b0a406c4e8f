package container

import (
	"bufio"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Runtimes are the container runtimes whose `run` mirrord understands:
// their CLIs share docker's flags and image inspection.
var Runtimes = []string{"docker", "podman", "nerdctl"}

// RunArgs is a `RUNTIME run [OPTIONS] IMAGE [COMMAND] [ARG...]` command
// line, split where mirrord adds its own options and replaces the
// entrypoint.
type RunArgs struct {
	// Runtime is argv[0] as given (a name or a path).
	Runtime string
	// Verb is "run" or "container run".
	Verb []string
	// Options are the user's options, in order, before the image.
	Options []string
	Image   string
	// Command is what follows the image (the image's CMD when empty).
	Command []string
	// Entrypoint is the user's --entrypoint, if given.
	Entrypoint *string
	// Detach is set by -d/--detach: the runtime returns once the container
	// started, and mirrord keeps the session until it stops.
	Detach bool
	// CIDFile is the user's --cidfile, if given.
	CIDFile string
	// User is the user's -u/--user, if given.
	User string
}

// RuntimeName is the runtime's base name (docker, podman, nerdctl).
func (r *RunArgs) RuntimeName() string { return filepath.Base(r.Runtime) }

// ErrNotRun means the command is not a container runtime's run.
var ErrNotRun = errors.New("the command must be a container runtime's run: `mirrord container [-t TARGET] -- docker run [OPTIONS] IMAGE [COMMAND...]` (also podman, nerdctl)")

// flagRE matches an option line of a runtime's `run --help` (cobra/pflag
// layout: "  -p, --publish list   Publish ..."; a type word after the name
// means the option takes a value). The word is any token: podman's are
// also "<number>[<unit>]", "DEVICE_NAME:WEIGHT" and "[a-Z]".
var flagRE = regexp.MustCompile(`^\s{2,}(?:-([A-Za-z0-9]), )?--([A-Za-z0-9][A-Za-z0-9-]*)(?: (\S+))?(?:\s{2,}|$)`)

// RunFlags are a runtime's run options: for each, by long name and by
// short letter, whether it takes a value.
type RunFlags struct {
	long  map[string]bool
	short map[byte]string // letter -> long name
}

// ParseHelp reads the options from a runtime's `run --help` output. The
// runtime's own help is the authority on which of its options take a
// value, so that mirrord finds the image in any version's command line.
func ParseHelp(help string) (*RunFlags, error) {
	f := &RunFlags{long: map[string]bool{}, short: map[byte]string{}}
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		m := flagRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		f.long[m[2]] = m[3] != ""
		if m[1] != "" {
			f.short[m[1][0]] = m[2]
		}
	}
	if len(f.long) < 10 {
		return nil, fmt.Errorf("found %d options in the help text, expected dozens", len(f.long))
	}
	return f, nil
}

// ParseRun splits argv (`RUNTIME run ...` or `RUNTIME container run ...`)
// with the runtime's options.
func ParseRun(argv []string, flags *RunFlags) (*RunArgs, error) {
	if len(argv) < 2 || !slices.Contains(Runtimes, filepath.Base(argv[0])) {
		return nil, ErrNotRun
	}
	r := &RunArgs{Runtime: argv[0]}
	rest := argv[1:]
	switch {
	case rest[0] == "run":
		r.Verb, rest = rest[:1], rest[1:]
	case len(rest) > 1 && rest[0] == "container" && rest[1] == "run":
		r.Verb, rest = rest[:2], rest[2:]
	default:
		return nil, fmt.Errorf("%w; got %q", ErrNotRun, strings.Join(argv[:min(len(argv), 3)], " "))
	}
	seen := func(name, value string, hasValue bool) {
		switch name {
		case "entrypoint":
			v := value
			r.Entrypoint = &v
		case "detach":
			r.Detach = !hasValue || value == "true"
		case "cidfile":
			r.CIDFile = value
		case "user":
			r.User = value
		}
	}
	i := 0
	for i < len(rest) {
		a := rest[i]
		switch {
		case a == "--":
			i++
			if i >= len(rest) {
				return nil, fmt.Errorf("%s run: no image given", r.RuntimeName())
			}
			r.Options = rest[:i-1]
			r.Image, r.Command = rest[i], rest[i+1:]
			return r, nil
		case strings.HasPrefix(a, "--"):
			name, value, hasValue := strings.Cut(a[2:], "=")
			takes, ok := flags.long[name]
			if !ok {
				return nil, fmt.Errorf("%s run: unknown option --%s (see `%s run --help`)", r.RuntimeName(), name, r.RuntimeName())
			}
			if takes && !hasValue {
				if i+1 >= len(rest) {
					return nil, fmt.Errorf("%s run: option --%s needs a value", r.RuntimeName(), name)
				}
				i++
				value, hasValue = rest[i], true
			}
			seen(name, value, hasValue)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			// A cluster of short options (-it, -dp 80:80, -p80:80).
			for j := 1; j < len(a); j++ {
				name, ok := flags.short[a[j]]
				if !ok {
					return nil, fmt.Errorf("%s run: unknown option -%c in %q (see `%s run --help`)", r.RuntimeName(), a[j], a, r.RuntimeName())
				}
				if !flags.long[name] {
					seen(name, "", false)
					continue
				}
				value := a[j+1:]
				if value == "" {
					if i+1 >= len(rest) {
						return nil, fmt.Errorf("%s run: option -%c needs a value", r.RuntimeName(), a[j])
					}
					i++
					value = rest[i]
				}
				seen(name, strings.TrimPrefix(value, "="), true)
				break
			}
		default:
			r.Options = rest[:i]
			r.Image, r.Command = a, rest[i+1:]
			return r, nil
		}
		i++
	}
	return nil, fmt.Errorf("%s run: no image given", r.RuntimeName())
}
