package httpfilter

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fuzzRequest builds the request a filter sees from fuzzed parts: headers
// are "Name: value" lines.
func fuzzRequest(method, path, headers string) *Request {
	r := &Request{Method: method, Path: path, Header: http.Header{}}
	for line := range strings.SplitSeq(headers, "\n") {
		name, value, _ := strings.Cut(line, ":")
		r.Header[name] = append(r.Header[name], strings.TrimSpace(value))
	}
	return r
}

// matchBound is how long one Match of a fuzzed filter may take: each regex
// match gives up after matchTimeout, and a fuzzed filter has few of them.
const matchBound = 2 * time.Second

// FuzzFilter: a filter built from an arbitrary pattern, as each kind of
// filter and nested in all_of/any_of, matches an arbitrary request
// without panicking, within a bounded time, and as its definition says.
func FuzzFilter(f *testing.F) {
	f.Add(`^x-user: alice$`, "GET", "/api", "X-User: alice\nHost: app")
	f.Add(`^(?!/health).*`, "POST", "/health/live", "User-Agent: kube-probe/1.33")
	f.Add(`(?<=/v1/)users`, "get", "/v1/users?x=1", "")
	f.Add(`(a+)+$`, "PUT", strings.Repeat("a", 40)+"!", "X-A: "+strings.Repeat("a", 40)+"!")
	f.Add(`\p{Lu}\b[[:alpha:]]{2,}(?i:ß)`, "DELETE", "/Ä/ſ", "K: \u212a")
	f.Fuzz(func(t *testing.T, pattern, method, path, headers string) {
		r := fuzzRequest(method, path, headers)
		re, err := Compile(pattern)
		if err != nil {
			for _, build := range []func(string) (Filter, error){Header, Path} {
				if _, err := build(pattern); err == nil {
					t.Fatalf("Compile(%q) fails but a filter of it builds", pattern)
				}
			}
			return
		}
		_ = re.String()
		start := time.Now()
		// A match that times out counts as none; the same match may
		// finish another time, so a timeout leaves nothing to compare.
		timedOut := false
		match := func(s string) bool {
			ok, err := re.re.MatchString(s)
			timedOut = timedOut || err != nil
			return ok
		}
		pathMatch := match(path)
		headerMatch := false
		for name, values := range r.Header {
			for _, v := range values {
				headerMatch = match(name+": "+v) || headerMatch
			}
		}
		if timedOut {
			return
		}
		hf, _ := Header(pattern)
		pf, _ := Path(pattern)
		if got := pf.Match(r); got != pathMatch {
			t.Errorf("path filter %q on %q: %v, its regex says %v", pattern, path, got, pathMatch)
		}
		if got := hf.Match(r); got != headerMatch {
			t.Errorf("header filter %q: %v, its regex says %v on some header line", pattern, got, headerMatch)
		}
		filters := []Filter{hf, pf, ExceptKubeProbes()}
		if mf, err := Method(method); err == nil {
			if method == strings.TrimSpace(method) && !mf.Match(r) {
				t.Errorf("method filter %q does not match its own method", method)
			}
			filters = append(filters, mf)
		}
		all, _ := AllOf(filters...)
		anyf, _ := AnyOf(filters...)
		wantAll, wantAny := true, false
		for _, x := range filters {
			m := x.Match(r)
			wantAll, wantAny = wantAll && m, wantAny || m
			_ = x.String()
		}
		if all.Match(r) != wantAll || anyf.Match(r) != wantAny {
			t.Errorf("all_of/any_of of %s: %v/%v, want %v/%v", all, all.Match(r), anyf.Match(r), wantAll, wantAny)
		}
		if d := time.Since(start); d > 4*matchBound {
			t.Errorf("matching %q took %v", pattern, d)
		}
	})
}

// FuzzBuild: any JSON filter spec (as a session sends it to the agent in
// its Subscribe) builds into a filter or an error, never a panic, and the
// filter matches a request within a bounded time.
func FuzzBuild(f *testing.F) {
	f.Add(`{"header":"^x-user: alice$"}`, "GET", "/", "X-User: alice")
	f.Add(`{"any_of":[{"path":"^/api"},{"all_of":[{"method":"post"},{"header":"(?i)^content-type: .*json"}]}]}`, "POST", "/x", "Content-Type: application/json")
	f.Add(`{"all_of":[]}`, "GET", "/", "")
	f.Add(`{"any_of":[{"any_of":[{"any_of":[{"method":"GET"}]}]}]}`, "GET", "/", "")
	f.Add(`{"path":"(","method":"GET"}`, "GET", "/", "")
	f.Fuzz(func(t *testing.T, spec, method, path, headers string) {
		var s Spec
		if json.Unmarshal([]byte(spec), &s) != nil {
			return
		}
		fl, err := Build(s)
		if err != nil {
			return
		}
		_ = fl.String()
		start := time.Now()
		fl.Match(fuzzRequest(method, path, headers))
		// A deep nesting can hold many regexes; bound it loosely.
		if d := time.Since(start); d > 10*matchBound {
			t.Errorf("matching %s took %v", spec, d)
		}
	})
}
