package httpfilter

import (
	"net/http"
	"strings"
	"testing"
)

func TestRegex(t *testing.T) {
	tests := []struct {
		pattern string
		in      string
		want    bool
	}{
		{`^(?!/health).*`, "/api/users", true},
		{`^(?!/health).*`, "/health", false},
		{`^(?!/health).*`, "/HEALTH/live", false}, // case-insensitive
		{`(?<=/v1/)users`, "/v1/users", true},
		{`(?<=/v1/)users`, "/v2/users", false},
		{`api`, "/v1/API/x", true}, // unanchored
		{`^/api/v\d+$`, "/api/v12", true},
		{`^/api/v\d+$`, "/api/v12/x", false},
		{`x-user: (?:alice|bob)`, "X-User: Bob", true},
	}
	for _, tt := range tests {
		re, err := Compile(tt.pattern)
		if err != nil {
			t.Fatalf("Compile(%q): %v", tt.pattern, err)
		}
		if got := re.MatchString(tt.in); got != tt.want {
			t.Errorf("%q.MatchString(%q) = %v, want %v", tt.pattern, tt.in, got, tt.want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, p := range []string{`(`, `[a-`, `(?<name`, `*x`, `a{2,1}`} {
		if _, err := Compile(p); err == nil || !strings.Contains(err.Error(), "invalid regex") {
			t.Errorf("Compile(%q) error = %v, want an invalid regex error", p, err)
		}
	}
}

func TestFilters(t *testing.T) {
	req := &Request{
		Method: "POST",
		Path:   "/api/orders?id=7",
		Header: http.Header{"X-User": {"alice"}, "Content-Type": {"application/json"}},
	}
	must := func(f Filter, err error) Filter {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	tests := []struct {
		name string
		f    Filter
		want bool
	}{
		{"header matches name and value", must(Header(`^x-user: alice$`)), true},
		{"header value only", must(Header(`alice`)), true},
		{"header miss", must(Header(`x-user: bob`)), false},
		{"path", must(Path(`^/api/orders`)), true},
		{"path with query", must(Path(`id=7$`)), true},
		{"method", must(Method("post")), true},
		{"method miss", must(Method("GET")), false},
		{"all_of true", must(AllOf(must(Method("POST")), must(Path("orders")))), true},
		{"all_of false", must(AllOf(must(Method("POST")), must(Path("users")))), false},
		{"any_of true", must(AnyOf(must(Method("GET")), must(Header("alice")))), true},
		{"any_of false", must(AnyOf(must(Method("GET")), must(Header("bob")))), false},
	}
	for _, tt := range tests {
		if got := tt.f.Match(req); got != tt.want {
			t.Errorf("%s: %s.Match = %v, want %v", tt.name, tt.f, got, tt.want)
		}
	}
	if _, err := AllOf(); err == nil {
		t.Error("AllOf() with no filters should fail")
	}
	if _, err := AnyOf(); err == nil {
		t.Error("AnyOf() with no filters should fail")
	}
	for _, m := range []string{"GE T", "ı", "GET/1", "Ü", "a:b", ""} {
		if _, err := Method(m); err == nil {
			t.Errorf("Method(%q) should fail: not a token", m)
		}
	}
	for _, m := range []string{"get", "M-SEARCH", "PROPFIND", "x~!"} {
		if _, err := Method(m); err != nil {
			t.Errorf("Method(%q): %v", m, err)
		}
	}
}
