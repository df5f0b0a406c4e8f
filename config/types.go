package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// StringList is a list of strings that a config file may also write as a
// single string ("skip_processes": "ide-debugger"). In environment variables
// it is ';'-separated.
type StringList []string

func (l *StringList) decodeConfig(d *decoder, p Path, v any) {
	if s, ok := decodeStringOrList(d, p, v); ok {
		*l = s
	}
}

func (l *StringList) decodeEnv(d *decoder, p Path, s string) {
	*l = splitList(s)
}

// splitList splits a ';'-separated list, dropping empty pieces.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ";") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func (StringList) jsonSchema() map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"type": "string"},
		map[string]any{"type": "array", "items": map[string]any{"type": "string"}},
	}}
}

// enum is the set of values a string-valued key accepts.
type enum []string

func (e enum) check(d *decoder, p Path, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		d.errs.add(p, "expected one of %s, got %s", e.list(), describe(v))
		return "", false
	}
	if !slices.Contains(e, s) {
		d.errs.add(p, "invalid value %q%s; expected one of %s", s, didYouMean(s, e), e.list())
		return "", false
	}
	return s, true
}

func (e enum) list() string {
	q := make([]string, len(e))
	for i, s := range e {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func (e enum) schema() map[string]any {
	vals := make([]any, len(e))
	for i, s := range e {
		vals[i] = s
	}
	return map[string]any{"type": "string", "enum": vals}
}

// FsMode is the default behaviour of file operations.
type FsMode string

const (
	FsLocal              FsMode = "local"
	FsLocalWithOverrides FsMode = "localwithoverrides"
	FsRead               FsMode = "read"
	FsWrite              FsMode = "write"
)

var fsModes = enum{"local", "localwithoverrides", "read", "write"}

func (m *FsMode) decodeConfig(d *decoder, p Path, v any) {
	if s, ok := fsModes.check(d, p, v); ok {
		*m = FsMode(s)
	}
}

func (FsMode) jsonSchema() map[string]any { return fsModes.schema() }

// Engine is how mirrord reaches into the program: the C preload library
// (dynamically linked programs) or the netstack sandbox (Go and static
// programs, which make system calls without libc).
type Engine string

const (
	EngineAuto     Engine = "auto"
	EnginePreload  Engine = "preload"
	EngineNetstack Engine = "netstack"
)

var engines = enum{"auto", "preload", "netstack"}

func (e *Engine) decodeConfig(d *decoder, p Path, v any) {
	if s, ok := engines.check(d, p, v); ok {
		*e = Engine(s)
	}
}

func (Engine) jsonSchema() map[string]any { return engines.schema() }

// IncomingMode says what happens to the target's incoming traffic.
type IncomingMode string

const (
	IncomingMirror IncomingMode = "mirror"
	IncomingSteal  IncomingMode = "steal"
	IncomingOff    IncomingMode = "off"
)

var incomingModes = enum{"mirror", "steal", "off"}

func (m *IncomingMode) decodeConfig(d *decoder, p Path, v any) {
	if s, ok := incomingModes.check(d, p, v); ok {
		*m = IncomingMode(s)
	}
}

// decodeEnv reads MIRRORD_AGENT_TCP_STEAL_TRAFFIC, which historically is a
// boolean (true = steal, false = the default, mirror) and also takes a mode.
func (m *IncomingMode) decodeEnv(d *decoder, p Path, s string) {
	switch strings.ToLower(s) {
	case "true":
		*m = IncomingSteal
	case "false":
		*m = IncomingMirror
	default:
		m.decodeConfig(d, p, s)
	}
}

func (IncomingMode) jsonSchema() map[string]any { return incomingModes.schema() }

// ConcurrentSteal says what to do when another session already steals
// the same port (an operator feature).
type ConcurrentSteal string

var concurrentSteals = enum{"abort", "continue", "override"}

func (c *ConcurrentSteal) decodeConfig(d *decoder, p Path, v any) {
	if s, ok := concurrentSteals.check(d, p, v); ok {
		*c = ConcurrentSteal(s)
	}
}

func (ConcurrentSteal) jsonSchema() map[string]any { return concurrentSteals.schema() }

// Capability is a Linux capability the agent may be denied.
type Capability string

var capabilities = enum{"SYS_ADMIN", "SYS_PTRACE", "NET_RAW", "NET_ADMIN"}

func (c *Capability) decodeConfig(d *decoder, p Path, v any) {
	if s, ok := capabilities.check(d, p, v); ok {
		*c = Capability(s)
	}
}

func (Capability) jsonSchema() map[string]any { return capabilities.schema() }

// TLSProtocol is how stolen traffic is delivered to the local app.
type TLSProtocol string

var tlsProtocols = enum{"tcp", "tls"}

func (t *TLSProtocol) decodeConfig(d *decoder, p Path, v any) {
	if s, ok := tlsProtocols.check(d, p, v); ok {
		*t = TLSProtocol(s)
	}
}

func (TLSProtocol) jsonSchema() map[string]any { return tlsProtocols.schema() }

// PortPair is a [from, to] pair of ports, as in port_mapping and listen_ports.
type PortPair [2]uint16

func (pp *PortPair) decodeConfig(d *decoder, p Path, v any) {
	list, ok := v.([]any)
	if !ok || len(list) != 2 {
		d.errs.add(p, "expected a pair of ports such as [7777, 8888], got %s", describeLen(v))
		return
	}
	for i := range 2 {
		d.decode(p.Index(i), list[i], reflect.ValueOf(&pp[i]).Elem())
	}
}

func describeLen(v any) string {
	if l, ok := v.([]any); ok {
		return fmt.Sprintf("a list of %d elements", len(l))
	}
	return describe(v)
}

func (PortPair) jsonSchema() map[string]any {
	port := map[string]any{"type": "integer", "minimum": 0, "maximum": 65535}
	return map[string]any{"type": "array", "items": port, "minItems": 2, "maxItems": 2}
}

// isBool decodes the bool shorthand of toggleable sections.
func isBool(v any) (bool, bool) {
	b, ok := v.(bool)
	return b, ok
}
