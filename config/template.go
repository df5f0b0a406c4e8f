package config

import (
	"fmt"
	"strings"
	"unicode"
)

// Config files are rendered as Tera templates before they are parsed
// (upstream mirrord uses the Tera engine, and users share files such as
// "target": "{{ get_env(name="TARGET", default="pod/fallback") }}").
// mirrord puts nothing in the template context, so the only useful thing a
// template can do is call get_env; this renderer implements exactly the
// Tera forms that apply here: {{ expression }} with get_env(name=...,
// default=...) or a literal, whitespace control ({{- and -}}), and {# comments #}.
// Statements ({% ... %}) are rejected with a clear message rather than being
// passed through as text.

// render expands the template in src, reading environment variables with
// lookup.
func render(src string, lookup func(string) (string, bool)) (string, error) {
	var out strings.Builder
	rest := src
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 || i+1 >= len(rest) {
			out.WriteString(rest)
			return out.String(), nil
		}
		open := rest[i : i+2]
		if open != "{{" && open != "{#" && open != "{%" {
			out.WriteString(rest[:i+1])
			rest = rest[i+1:]
			continue
		}
		line := 1 + strings.Count(src[:len(src)-len(rest)+i], "\n")
		text := rest[:i]
		body := rest[i+2:]
		trimLeft := strings.HasPrefix(body, "-")
		if trimLeft {
			body = body[1:]
			text = strings.TrimRightFunc(text, unicode.IsSpace)
		}
		out.WriteString(text)
		var closeTok string
		switch open {
		case "{{":
			closeTok = "}}"
		case "{#":
			closeTok = "#}"
		case "{%":
			return "", fmt.Errorf("template line %d: statements ({%% ... %%}) are not supported; only {{ get_env(name=\"VAR\", default=\"value\") }} expressions and {# comments #}", line)
		}
		end := findClose(body, closeTok)
		if end < 0 {
			return "", fmt.Errorf("template line %d: %q is never closed with %q", line, open, closeTok)
		}
		inner := body[:end]
		rest = body[end+2:]
		if strings.HasSuffix(inner, "-") {
			inner = inner[:len(inner)-1]
			rest = strings.TrimLeftFunc(rest, unicode.IsSpace)
		}
		if open == "{#" {
			continue
		}
		val, err := evalExpr(inner, lookup)
		if err != nil {
			return "", fmt.Errorf("template line %d: %w", line, err)
		}
		out.WriteString(val)
	}
}

// findClose finds tok in s outside of string literals.
func findClose(s, tok string) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case strings.HasPrefix(s[i:], tok):
			return i
		}
	}
	return -1
}

type exprLexer struct {
	s   string
	pos int
}

func (l *exprLexer) skipSpace() {
	for l.pos < len(l.s) && unicode.IsSpace(rune(l.s[l.pos])) {
		l.pos++
	}
}

func (l *exprLexer) ident() string {
	l.skipSpace()
	start := l.pos
	for l.pos < len(l.s) && (l.s[l.pos] == '_' || unicode.IsLetter(rune(l.s[l.pos])) || (l.pos > start && unicode.IsDigit(rune(l.s[l.pos])))) {
		l.pos++
	}
	return l.s[start:l.pos]
}

func (l *exprLexer) peek() byte {
	l.skipSpace()
	if l.pos < len(l.s) {
		return l.s[l.pos]
	}
	return 0
}

// literal reads a string, number or boolean literal and returns it as text.
func (l *exprLexer) literal() (string, error) {
	c := l.peek()
	switch {
	case c == '"' || c == '\'' || c == '`':
		end := strings.IndexByte(l.s[l.pos+1:], c)
		if end < 0 {
			return "", fmt.Errorf("unterminated string in %q", strings.TrimSpace(l.s))
		}
		v := l.s[l.pos+1 : l.pos+1+end]
		l.pos += end + 2
		return v, nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := l.pos
		l.pos++
		for l.pos < len(l.s) && (l.s[l.pos] == '.' || (l.s[l.pos] >= '0' && l.s[l.pos] <= '9')) {
			l.pos++
		}
		return l.s[start:l.pos], nil
	}
	save := l.pos
	switch id := l.ident(); id {
	case "true", "false":
		return id, nil
	}
	l.pos = save
	return "", fmt.Errorf("expected a literal value in %q", strings.TrimSpace(l.s))
}

func evalExpr(expr string, lookup func(string) (string, bool)) (string, error) {
	l := &exprLexer{s: expr}
	if c := l.peek(); c == '"' || c == '\'' || c == '`' || c == '-' || (c >= '0' && c <= '9') {
		v, err := l.literal()
		if err != nil {
			return "", err
		}
		return v, l.end()
	}
	name := l.ident()
	if name == "" {
		return "", fmt.Errorf("cannot read expression %q", strings.TrimSpace(expr))
	}
	if l.peek() != '(' {
		return "", fmt.Errorf("variable %q is not defined (mirrord renders config templates with an empty context; use get_env(name=\"VAR\"))", name)
	}
	if name != "get_env" {
		return "", fmt.Errorf("function %q is not supported; only get_env(name=..., default=...) is", name)
	}
	l.pos++ // (
	args := map[string]string{}
	for l.peek() != ')' {
		key := l.ident()
		if key == "" || l.peek() != '=' {
			return "", fmt.Errorf("get_env takes keyword arguments, as in get_env(name=\"VAR\", default=\"value\"): %q", strings.TrimSpace(expr))
		}
		l.pos++ // =
		v, err := l.literal()
		if err != nil {
			return "", err
		}
		if key != "name" && key != "default" {
			return "", fmt.Errorf("get_env has no argument %q (it takes name and default)", key)
		}
		args[key] = v
		if l.peek() == ',' {
			l.pos++
		}
		if l.pos >= len(l.s) {
			return "", fmt.Errorf("get_env call is missing ')': %q", strings.TrimSpace(expr))
		}
	}
	l.pos++ // )
	if err := l.end(); err != nil {
		return "", err
	}
	name, ok := args["name"]
	if !ok {
		return "", fmt.Errorf("get_env needs a name argument: get_env(name=\"VAR\")")
	}
	if v, ok := lookup(name); ok {
		return v, nil
	}
	if def, ok := args["default"]; ok {
		return def, nil
	}
	return "", fmt.Errorf("environment variable %s is not set and get_env has no default", name)
}

func (l *exprLexer) end() error {
	if l.peek() == '|' {
		return fmt.Errorf("template filters are not supported: %q", strings.TrimSpace(l.s))
	}
	if l.pos < len(l.s) {
		return fmt.Errorf("unexpected %q in expression %q", l.s[l.pos:], strings.TrimSpace(l.s))
	}
	return nil
}
