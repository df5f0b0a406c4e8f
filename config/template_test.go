package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestTemplateTera renders each Tera form a mirrord config may use and
// compares the whole output, so a form that renders differently fails.
func TestTemplateTera(t *testing.T) {
	env := envMap(map[string]string{
		"TARGET": "pod/from-env", "TTL": "4", "APP_ENV": "prod", "EMPTY": "",
		"PORTS": "80, 443 ,8080", "HEX": "0x1F", "NAME": "  Mirrord Dev  ",
	})
	tests := []struct{ name, in, want string }{
		// get_env
		{"get_env set", `{{ get_env(name="TARGET") }}`, "pod/from-env"},
		{"get_env set wins over default", `{{ get_env(name="TARGET", default="x") }}`, "pod/from-env"},
		{"get_env default", `{{ get_env(name="NOPE", default="pod/fallback") }}`, "pod/fallback"},
		{"get_env empty is set", `[{{ get_env(name="EMPTY", default="x") }}]`, "[]"},
		{"get_env default of any type", `{{ get_env(name="NOPE", default=3) + 1 }} {{ get_env(name="NOPE", default=true) }}`, "4 true"},
		{"get_env single quotes", `{{ get_env(name='TTL') }}`, "4"},
		{"get_env backticks", "{{ get_env(name=`NOPE`, default=`a \"b\"`) }}", `a "b"`},

		// if / elif / else
		{"if", `{% if get_env(name="APP_ENV", default="") == "prod" %}P{% elif get_env(name="APP_ENV", default="") == "staging" %}S{% else %}O{% endif %}`, "P"},
		{"elif", `{% if 1 > 2 %}a{% elif "x" in "xy" %}b{% else %}c{% endif %}`, "b"},
		{"else", `{% if false %}a{% elif 0 %}b{% else %}c{% endif %}`, "c"},
		{"if and or not", `{% if true and not (false or 0) %}y{% endif %}`, "y"},
		{"undefined variable is false in if", `{% if nope %}a{% else %}b{% endif %}{% if not nope and true %}c{% endif %}`, "bc"},

		// for
		{"for builds a JSON list", `[{% for p in ["a", "b", "c"] %}"{{ p }}"{% if not loop.last %}, {% endif %}{% endfor %}]`, `["a", "b", "c"]`},
		{"for loop variables", `{% for x in ["a", "b"] %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{% endfor %}`, "10true21false"},
		{"for else", `{% for x in [] %}{{ x }}{% else %}empty{% endfor %}`, "empty"},
		{"for break continue", `{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}`, "13"},
		{"for over range", `{% for i in range(end=3) %}{{ i }}{% endfor %}|{% for i in range(start=2, end=9, step_by=3) %}{{ i }}{% endfor %}`, "012|258"},
		{"range near the largest int", `{{ range(end=9223372036854775807, step_by=4611686018427387904) | join(sep=",") }}|{{ range(end=5, step_by=9223372036854775807) | length }}`,
			"0,4611686018427387904|1"},
		{"for over split", `{% for p in get_env(name="PORTS") | split(pat=",") %}{{ p | trim | int }};{% endfor %}`, "80;443;8080;"},
		{"for over reversed", `{% for x in [1, 2, 3] | reverse %}{{ x }}{% endfor %}`, "321"},

		// set, set_global
		{"set", `{% set t = get_env(name="TARGET") %}{{ t }}`, "pod/from-env"},
		{"set in for is per iteration", `{% set a = 1 %}{% for x in [2, 3] %}{% set a = x %}{% endfor %}{{ a }}`, "1"},
		{"set_global in for", `{% set_global a = 1 %}{% for x in [2, 3] %}{% set_global a = a + x %}{% endfor %}{{ a }}`, "6"},
		{"set in if is global", `{% if true %}{% set a = "in" %}{% endif %}{{ a }}`, "in"},

		// filters, with Tera's keyword arguments
		{"lower upper", `{{ "MiXed" | lower }} {{ "MiXed" | upper }}`, "mixed MIXED"},
		{"default on undefined", `{{ nope | default(value="d") }}`, "d"},
		{"default keeps a defined empty value", `[{{ "" | default(value="d") }}]`, "[]"},
		{"default positional", `{{ nope | default("d") }}`, "d"},
		{"replace", `{{ "pod/a-b" | replace(from="-", to="_") }}`, "pod/a_b"},
		{"replace positional", `{{ "aXa" | replace("a", "b") }}`, "bXb"},
		{"trim family", `[{{ get_env(name="NAME") | trim }}][{{ "  x " | trim_start }}][{{ " x  " | trim_end }}]`, "[Mirrord Dev][x ][ x]"},
		{"trim matches", `{{ "//a/b//" | trim_start_matches(pat="/") }} {{ "//a/b//" | trim_end_matches(pat="//") }}`, "a/b// //a/b"},
		{"capitalize title", `{{ "hELLO wORLD" | capitalize }} / {{ "it's a mirrord-test" | title }}`, "Hello world / It's A Mirrord-Test"},
		{"split join", `{{ "a,b,c" | split(pat=",") | join(sep=" + ") }}`, "a + b + c"},
		{"first last nth", `{{ [1, 2, 3] | first }}{{ [1, 2, 3] | last }}{{ [1, 2, 3] | nth(n=1) }}[{{ [] | first }}]`, "132[]"},
		{"length", `{{ "日本語" | length }} {{ [1, 2] | length }}`, "3 2"},
		{"int float", `{{ get_env(name="TTL") | int * 2 }} {{ get_env(name="HEX") | int(base=16) }} {{ "x" | int(default=7) }} {{ "2.5" | float * 2 }}`, "8 31 7 5"},
		{"round", `{{ 2.5 | round }} {{ 3.14159 | round(method="floor", precision=2) }} {{ 1.2 | round(method="ceil") }}`, "3 3.14 2"},
		{"truncate", `{{ "abcdef" | truncate(length=3) }} {{ "abcdef" | truncate(length=3, end="") }} {{ "ab" | truncate(length=3) }}`, "abc… abc ab"},
		{"json_encode", `{{ ["a", 1, true] | json_encode }}`, `["a",1,true]`},
		{"as_str", `{{ [1, "a"] | as_str | length }}`, "6"},
		{"indent", `{{ "a:\n  b: 1\n\nc: 2" | indent(prefix="  ") }}`, "a:\n    b: 1\n\n  c: 2"},
		{"slice concat sort unique", `{{ [1, 2, 3, 4] | slice(start=1, end=-1) }} {{ [1] | concat(with=[2, 3]) | concat(with=4) }} {{ ["b", "a", "c"] | sort }} {{ ["a", "A", "b"] | unique }}`, "[2, 3] [1, 2, 3, 4] [a, b, c] [a, b]"},
		{"abs pluralize", `{{ -3 | abs }} item{{ 1 | pluralize }} item{{ 2 | pluralize }}`, "3 item items"},
		{"urlencode escape", `{{ "a b/c?" | urlencode }} {{ "a/b" | urlencode_strict }} {{ "<a>" | escape }}`, "a%20b/c%3F a%2Fb &lt;a&gt;"},
		{"addslashes", `{{ "it's" | addslashes }}`, `it\'s`},
		{"filter section", `{% filter upper %}a{{ get_env(name="TTL") }}b{% endfilter %}`, "A4B"},

		// tests
		{"tests", `{{ nope is defined }}{{ nope is undefined }} {{ "pod/x" is starting_with("pod/") }}{{ "abc" is ending_with("bc") }} {{ "abc" is containing("b") }}{{ [1, 2] is containing(3) }} {{ "v1.2" is matching("^v[0-9]") }} {{ 3 is odd }}{{ 3 is even }}{{ 9 is divisibleby(3) }} {{ "x" is string }}{{ 1 is number }}`, "falsetrue truetrue truefalse true truefalsetrue truetrue"},

		// printing, literals, operators
		{"values print the Tera way", `{{ true }} {{ false }} {{ [1, "a", [true]] }} {{ 10 / 4 }} {{ 10 / 2 }} {{ 1.0 }} {{ 7 % 3 }}`, "true false [1, a, [true]] 2.5 5 1 1"},
		{"concatenation", "{{ \"a\" ~ 'b' ~ `c` ~ 1 }}", "abc1"},
		{"in", `{{ "b" in ["a", "b"] }} {{ "z" not in "abc" }}`, "true true"},

		// comments, whitespace control, raw, text
		{"comment", "a {# a comment #}b", "a b"},
		{"whitespace control", "a  {{- \"x\" -}}  b  {%- if true -%}  c  {%- endif -%}  d {#- c -#} e", "axbcde"},
		{"raw", "{% raw %}{{ get_env(name=`X`) }}{% endraw %}", "{{ get_env(name=`X`) }}"},
		{"text is kept", "{\"a\": {\"b\": {\"c\": [1]}}}\n", "{\"a\": {\"b\": {\"c\": [1]}}}\n"},
		{"backticks outside tags are text", "`a` {{ `b` }}", "`a` b"},
		{"trailing newline kept", "x\n", "x\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := render("mirrord.json", tt.in, env)
			if err != nil || got != tt.want {
				t.Errorf("render(%q)\n = %q, %v\nwant %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestTemplateErrors checks that a render error says it is the config
// template, names the file and the line, and gives the cause in a config
// author's words.
func TestTemplateErrors(t *testing.T) {
	env := envMap(map[string]string{"SET": "1"})
	tests := []struct{ name, in, want string }{
		{"unset variable without default", "{\n  \"target\": \"{{ get_env(name=\"NOPE\") }}\"\n}",
			"config template dir/mirrord.json line 2: environment variable NOPE is not set and get_env has no default"},
		{"get_env error is not swallowed by default", `{{ get_env(name="NOPE") | default(value="x") }}`,
			"line 1: environment variable NOPE is not set"},
		{"get_env error is not swallowed by a test", "\n{% if get_env(name=\"NOPE\") is defined %}x{% endif %}",
			"line 2: environment variable NOPE is not set"},
		{"get_env without name", `{{ get_env(default="x") }}`, "get_env needs a name argument"},
		{"get_env unknown argument", `{{ get_env(name="A", fallback="b") }}`, `get_env has no argument "fallback"`},
		{"undefined variable", "a\nb\n{{ target }}", `line 3: variable "target" is not defined`},
		{"undefined in comparison", `{% if nope == 1 %}x{% endif %}`, `line 1: variable "nope" is not defined`},
		{"innermost line", "{% for x in [1] %}\n{% if true %}\n\n{{ x.nope }}\n{% endif %}{% endfor %}", "line 4: "},
		{"syntax error", "{\n  \"ttl\": {{ 1 + }}\n}", `config template dir/mirrord.json line 2: expected either a number, string, keyword or identifier (near "}}")`},
		{"unclosed expression", "{\n\n  \"a\": \"{{ get_env(name=\"X\" }\n}", `dir/mirrord.json line 3: expected either a number, string, keyword or identifier: Unbalanced delimiters, expected ")", got "}"`},
		{"unclosed if", "a\n{% if true %}\nb", "line 2: {% if %} is not closed: unexpected EOF, expected tag elif or else or endif"},
		{"bad for", "\n\n{% for %}{% endfor %}", "line 3: Expected an key identifier"},
		{"unclosed for in if", "{% if true %}\n{% for x in [1] %}\n", "line 2: {% for %} is not closed"},
		{"unclosed string", "{\n\"a\": \"{{ 'x }}\"\n}", "line 2: "},
		{"unknown statement", "\n{% include \"/etc/hostname\" %}", "line 2: unknown statement {% include %}"},
		{"unknown filter", `{{ "x" | nofilter }}`, "line 1: filter 'nofilter' not found"},
		{"unknown function", `{{ now() }}`, `function "now" is not supported`},
		{"filter missing argument", `{{ "x" | replace(from="a") }}`, `invalid call to filter 'replace': missing argument "to"`},
		{"filter unknown argument", `{{ "x" | join(separator=",") }}`, `has no argument "separator" (it takes sep)`},
		{"filter wrong input", `{{ 1 | upper }}`, "expects a string, got a number 1"},
		{"throw", "\n{% if get_env(name=\"SET\") == \"1\" %}{{ throw(message=\"SET must not be 1\") }}{% endif %}", "line 2: SET must not be 1"},
		// A template's work is bounded: these ran for minutes, or for
		// ever, taking memory all the while.
		{"huge range", "\n{% for i in range(end=1000000000) %}{% endfor %}", "line 2: the template runs more than 100000 loop iterations"},
		{"nested loops", "{% for a in [1,2,3,4,5,6,7,8,9,10] %}{% for b in [1,2,3,4,5,6,7,8,9,10] %}{% for c in [1,2,3,4,5,6,7,8,9,10] %}" +
			"{% for d in [1,2,3,4,5,6,7,8,9,10] %}{% for e in [1,2,3,4,5,6,7,8,9,10] %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
			"the template runs more than 100000 loop iterations"},
		{"loop in a set block", "{% set x %}{% for a in range(end=400) %}{% for b in range(end=400) %}{% endfor %}{% endfor %}{% endset %}",
			"the template runs more than 100000 loop iterations"},
		{"huge output", `{{ "x" * 20000000 }}`, "the template renders more than 16 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := render("dir/mirrord.json", tt.in, env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("render(%q) = %q, %v\nwant an error containing %q", tt.in, got, err, tt.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "config template dir/mirrord.json") {
				t.Errorf("error %q does not begin with the config template and its file", err)
			}
		})
	}
}

// TestTemplateConfig loads config files whose templates choose the target
// and build a list, and one whose template is broken.
func TestTemplateConfig(t *testing.T) {
	file := `{
  {# the production cluster has its own deployment #}
  {% if get_env(name="APP_ENV", default="") == "prod" %}
  "target": "deployment/api",
  {% elif get_env(name="APP_ENV", default="") == "staging" %}
  "target": "deployment/api-staging",
  {% else %}
  "target": "pod/{{ get_env(name="USER", default="dev") | lower }}",
  {% endif %}
  "feature": {"network": {"incoming": {
    "ignore_ports": [{% for p in get_env(name="IGNORE", default="") | split(pat=",") %}{% if p %}{{ p | int }}{% if not loop.last %}, {% endif %}{% endif %}{% endfor %}]
  }}}
}`
	p := writeFile(t, "mirrord.json", file)
	tests := []struct {
		env    map[string]string
		target string
		ports  []uint16
	}{
		{map[string]string{"APP_ENV": "prod", "IGNORE": "9000,9001"}, "deployment/api", []uint16{9000, 9001}},
		{map[string]string{"APP_ENV": "staging"}, "deployment/api-staging", nil},
		{map[string]string{"USER": "Alice", "IGNORE": "22"}, "pod/alice", []uint16{22}},
	}
	for _, tt := range tests {
		cfg, err := Load(Options{File: p, Lookup: envMap(tt.env)})
		if err != nil {
			t.Fatalf("env %v: %v", tt.env, err)
		}
		if got := cfg.Target.Path.String(); got != tt.target {
			t.Errorf("env %v: target %q, want %q", tt.env, got, tt.target)
		}
		if got := cfg.Feature.Network.Incoming.IgnorePorts; len(got)+len(tt.ports) > 0 && !reflect.DeepEqual(got, tt.ports) {
			t.Errorf("env %v: ignore_ports %v, want %v", tt.env, got, tt.ports)
		}
	}

	bad := writeFile(t, "mirrord.yaml", "target: pod/a\nfeature:\n  fs: {{ get_env(name=\"FS\") }}\n")
	_, err := Load(Options{File: bad, Lookup: noEnv})
	want := "config template " + bad + " line 3: environment variable FS is not set"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load of a broken template: %v\nwant an error beginning %q", err, want)
	}
}
