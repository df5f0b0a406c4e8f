package session

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// debuggerPorts are the ports of a program's debugger, which stay on this
// machine: never subscribed, so never mirrored or stolen. The IDE plugins
// name them in the program's environment:
//
//	MIRRORD_IGNORE_DEBUGGER_PORTS  "45000-65535", "5678", or a comma list
//	MIRRORD_DETECT_DEBUGGER_PORT   debugpy, javaagent or nodeinspector: read
//	                               the port from the program's command line
type debuggerPorts struct {
	ranges [][2]uint16
}

func (d debuggerPorts) has(port uint16) bool {
	for _, r := range d.ranges {
		if port >= r[0] && port <= r[1] {
			return true
		}
	}
	return false
}

// newDebuggerPorts reads the rules from a program's environment and argv.
func newDebuggerPorts(env, argv []string) debuggerPorts {
	var d debuggerPorts
	get := func(key string) string {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, key+"="); ok {
				return v
			}
		}
		return ""
	}
	for _, part := range strings.Split(get("MIRRORD_IGNORE_DEBUGGER_PORTS"), ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil || b < a {
				continue
			}
		}
		d.ranges = append(d.ranges, [2]uint16{uint16(a), uint16(b)})
	}
	for _, kind := range strings.Split(get("MIRRORD_DETECT_DEBUGGER_PORT"), ",") {
		if p, ok := detectDebuggerPort(strings.TrimSpace(kind), argv); ok {
			d.ranges = append(d.ranges, [2]uint16{p, p})
		}
	}
	return d
}

var (
	// debugpy's launcher and adapter: `--connect HOST:PORT`, `--listen
	// HOST:PORT`, `--port PORT`, or the launcher's older positional port
	// (`.../debugpy/launcher PORT -- prog`).
	debugpyFlag       = regexp.MustCompile(`^--(?:connect|listen|port)(?:=(.*))?$`)
	debugpyLauncherRe = regexp.MustCompile(`debugpy[/\\](?:launcher|adapter)$`)
	// -agentlib:jdwp=transport=dt_socket,server=y,address=[HOST:]PORT
	// (also -Xrunjdwp: and a -javaagent whose options carry address=).
	jdwpAddr = regexp.MustCompile(`^-(?:agentlib:jdwp=|Xrunjdwp:|javaagent:).*\baddress=(?:[^,:]*:)?(\d+)`)
	// node --inspect[-brk|-wait][=[HOST:]PORT]; 9229 when no port is given.
	nodeInspect = regexp.MustCompile(`^--inspect(?:-brk|-wait)?(?:=(?:.*:)?(\d+))?$`)
)

// detectDebuggerPort finds the debugger's port of kind in argv.
func detectDebuggerPort(kind string, argv []string) (uint16, bool) {
	port := func(s string) (uint16, bool) {
		if i := strings.LastIndexByte(s, ':'); i >= 0 {
			s = s[i+1:]
		}
		p, err := strconv.ParseUint(s, 10, 16)
		return uint16(p), err == nil && p != 0
	}
	switch kind {
	case "debugpy":
		for i, a := range argv {
			if m := debugpyFlag.FindStringSubmatch(a); m != nil {
				if m[1] != "" {
					return port(m[1])
				}
				if i+1 < len(argv) {
					return port(argv[i+1])
				}
			}
			if debugpyLauncherRe.MatchString(strings.TrimRight(a, "/\\")) && i+1 < len(argv) {
				if p, ok := port(argv[i+1]); ok {
					return p, true
				}
			}
		}
	case "javaagent":
		for _, a := range argv {
			if m := jdwpAddr.FindStringSubmatch(a); m != nil {
				return port(m[1])
			}
		}
	case "nodeinspector":
		for _, a := range argv {
			if m := nodeInspect.FindStringSubmatch(a); m != nil {
				if m[1] == "" {
					return 9229, true
				}
				return port(m[1])
			}
		}
	}
	return 0, false
}

// debuggerPort reports whether port, which the process pid listens on, is
// its debugger's (the rules come from its command line and environment).
func debuggerPort(pid int, port uint16) bool {
	if pid <= 0 {
		return false
	}
	environ, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	split := func(b []byte) []string {
		var out []string
		for _, f := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
			out = append(out, string(f))
		}
		return out
	}
	return newDebuggerPorts(split(environ), split(cmdline)).has(port)
}
