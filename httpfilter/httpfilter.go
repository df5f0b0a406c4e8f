package httpfilter

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/dlclark/regexp2"
)

// matchTimeout bounds one regex match: a pathological pattern must not
// stall the agent's request path.
const matchTimeout = 100 * time.Millisecond

// Regex is a compiled filter pattern.
type Regex struct {
	re *regexp2.Regexp
}

// Compile compiles a filter pattern. Matching is case-insensitive and, as in
// upstream mirrord, unanchored: "api" matches "/v1/api/x".
func Compile(pattern string) (*Regex, error) {
	re, err := regexp2.Compile(pattern, regexp2.IgnoreCase|regexp2.RE2)
	if err != nil {
		// RE2 mode rejects a few Perl-only constructs; retry without it
		// before giving up so that any pattern upstream accepts works here.
		var err2 error
		re, err2 = regexp2.Compile(pattern, regexp2.IgnoreCase)
		if err2 != nil {
			return nil, fmt.Errorf("invalid regex %q: %w", pattern, err2)
		}
	}
	re.MatchTimeout = matchTimeout
	return &Regex{re: re}, nil
}

// MatchString reports whether s contains a match. A match that times out
// counts as no match.
func (r *Regex) MatchString(s string) bool {
	ok, err := r.re.MatchString(s)
	return err == nil && ok
}

func (r *Regex) String() string { return r.re.String() }

// Request is what a filter sees of an HTTP request.
type Request struct {
	Method string
	Path   string // the request target: path and query, as sent
	Header http.Header
}

// Filter selects requests.
type Filter interface {
	Match(r *Request) bool
	String() string
}

type headerFilter struct{ re *Regex }

// Header returns a filter that matches when one header line, written as
// "Name: value", matches pattern.
func Header(pattern string) (Filter, error) {
	re, err := Compile(pattern)
	if err != nil {
		return nil, err
	}
	return headerFilter{re}, nil
}

func (f headerFilter) Match(r *Request) bool {
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range r.Header[name] {
			if f.re.MatchString(name + ": " + v) {
				return true
			}
		}
	}
	return false
}

func (f headerFilter) String() string { return "header=" + f.re.String() }

// ExceptKubeProbes matches every request but kubelet's probes (their
// User-Agent starts with "kube-probe/"), for an unfiltered steal of a port
// the pod is probed on: the probes keep reaching the pod's own app.
func ExceptKubeProbes() Filter { return exceptKubeProbes{} }

type exceptKubeProbes struct{}

func (exceptKubeProbes) Match(r *Request) bool {
	return !strings.HasPrefix(r.Header.Get("User-Agent"), "kube-probe/")
}

func (exceptKubeProbes) String() string { return "all but kube-probe" }

type pathFilter struct{ re *Regex }

// Path returns a filter that matches when the request path matches pattern.
func Path(pattern string) (Filter, error) {
	re, err := Compile(pattern)
	if err != nil {
		return nil, err
	}
	return pathFilter{re}, nil
}

func (f pathFilter) Match(r *Request) bool { return f.re.MatchString(r.Path) }
func (f pathFilter) String() string        { return "path=" + f.re.String() }

type methodFilter string

// Method returns a filter that matches one HTTP method, case-insensitively.
// A method is a token (RFC 9110, section 5.6.2): ASCII letters, digits and
// !#$%&'*+-.^_`|~, so that its case folds as a request's does (fuzzing
// found "ı", which upper-cases to "I" and then no longer matches itself).
func Method(m string) (Filter, error) {
	m = strings.TrimSpace(m)
	if m == "" || strings.IndexFunc(m, func(r rune) bool { return !isTokenChar(r) }) >= 0 {
		return nil, fmt.Errorf("invalid HTTP method %q: a method is a token of ASCII letters, digits and !#$%%&'*+-.^_`|~", m)
	}
	return methodFilter(strings.ToUpper(m)), nil
}

// isTokenChar says whether r may be part of an HTTP token.
func isTokenChar(r rune) bool {
	return r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r))
}

func (f methodFilter) Match(r *Request) bool { return strings.EqualFold(r.Method, string(f)) }
func (f methodFilter) String() string        { return "method=" + string(f) }

type allOf []Filter

// AllOf matches when every filter matches. It needs at least one filter.
func AllOf(fs ...Filter) (Filter, error) {
	if len(fs) == 0 {
		return nil, fmt.Errorf("all_of needs at least one filter")
	}
	return allOf(fs), nil
}

func (f allOf) Match(r *Request) bool {
	for _, x := range f {
		if !x.Match(r) {
			return false
		}
	}
	return true
}

func (f allOf) String() string { return "all_of(" + join(f) + ")" }

type anyOf []Filter

// AnyOf matches when at least one filter matches. It needs at least one filter.
func AnyOf(fs ...Filter) (Filter, error) {
	if len(fs) == 0 {
		return nil, fmt.Errorf("any_of needs at least one filter")
	}
	return anyOf(fs), nil
}

func (f anyOf) Match(r *Request) bool {
	for _, x := range f {
		if x.Match(r) {
			return true
		}
	}
	return false
}

func (f anyOf) String() string { return "any_of(" + join(f) + ")" }

func join(fs []Filter) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = f.String()
	}
	return strings.Join(s, ", ")
}

// Spec is the serialisable form of a filter, as the config and the
// protocol carry it: exactly one field is set.
type Spec struct {
	Header string `json:"header,omitempty"`
	Path   string `json:"path,omitempty"`
	Method string `json:"method,omitempty"`
	AllOf  []Spec `json:"all_of,omitempty"`
	AnyOf  []Spec `json:"any_of,omitempty"`
}

// Build compiles a Spec.
func Build(s Spec) (Filter, error) {
	n := 0
	for _, set := range []bool{s.Header != "", s.Path != "", s.Method != "", s.AllOf != nil, s.AnyOf != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("a filter needs exactly one of header, path, method, all_of, any_of (got %d)", n)
	}
	build := func(list []Spec) ([]Filter, error) {
		out := make([]Filter, len(list))
		for i, x := range list {
			f, err := Build(x)
			if err != nil {
				return nil, err
			}
			out[i] = f
		}
		return out, nil
	}
	switch {
	case s.Header != "":
		return Header(s.Header)
	case s.Path != "":
		return Path(s.Path)
	case s.Method != "":
		return Method(s.Method)
	case s.AllOf != nil:
		fs, err := build(s.AllOf)
		if err != nil {
			return nil, err
		}
		return AllOf(fs...)
	default:
		fs, err := build(s.AnyOf)
		if err != nil {
			return nil, err
		}
		return AnyOf(fs...)
	}
}
