package session

import (
	"bytes"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// debuggerPorts are the ports of a program's debugger, which stay on this
// machine: never subscribed, so never mirrored or stolen. The IDE plugins
// say how to find the port in the program's environment:
// MIRRORD_DETECT_DEBUGGER_PORT names the debugger (debugpy, pydevd,
// resharper, javaagent, nodeinspector), whose port is then read from the
// command line (and NODE_OPTIONS for node).
//
// MIRRORD_IGNORE_DEBUGGER_PORTS (the plugins set 45000-65535 or
// 35000-65535) needs no rule here: upstream applies it to loopback
// addresses only, and a server on loopback is never subscribed by this
// mirrord, nor is a connection to loopback ever sent to the target. A
// detected debugger port stays local whatever address it is bound to
// (`--listen 0.0.0.0:5678`, `address=*:5005`).
type debuggerPorts struct {
	ports []uint16
}

func (d debuggerPorts) has(port uint16) bool { return slices.Contains(d.ports, port) }

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
	for _, kind := range strings.Split(get("MIRRORD_DETECT_DEBUGGER_PORT"), ",") {
		kind = strings.TrimSpace(kind)
		args := argv
		if kind == "nodeinspector" {
			args = append(slices.Clone(argv), strings.Fields(get("NODE_OPTIONS"))...)
		}
		if p, ok := detectDebuggerPort(kind, args); ok {
			d.ports = append(d.ports, p)
		}
	}
	return d
}

var (
	// debugpy (its launcher, adapter or `-m debugpy`): `--connect
	// HOST:PORT`, `--listen HOST:PORT`, or the launcher's older positional
	// port (`.../debugpy/launcher PORT -- prog`); pydevd: `--port PORT`.
	// Only the debugger's own arguments count, from its name to the
	// program's: a program's `--port 8080` is the program's.
	debugpyFlag = regexp.MustCompile(`^--(?:connect|listen)(?:=(.*))?$`)
	pydevdFlag  = regexp.MustCompile(`^--port(?:=(.*))?$`)
	// Rider's debugger: --frontend-port=PORT.
	resharperFlag     = regexp.MustCompile(`^--frontend-port=(\d+)$`)
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
	case "debugpy", "pydevd":
		flag := debugpyFlag
		if kind == "pydevd" {
			flag = pydevdFlag
		}
		start := slices.IndexFunc(argv, func(a string) bool { return strings.Contains(a, kind) })
		if start < 0 {
			return 0, false
		}
		for i := start; i < len(argv); i++ {
			a := argv[i]
			if a == "--" || a == "--file" {
				break
			}
			if m := flag.FindStringSubmatch(a); m != nil {
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
	case "resharper":
		for _, a := range argv {
			if m := resharperFlag.FindStringSubmatch(a); m != nil {
				return port(m[1])
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
