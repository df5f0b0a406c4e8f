package config

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	gonjastmt "github.com/nikolalohinski/gonja/v2/builtins/control_structures"
	gonjaconfig "github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
	"github.com/nikolalohinski/gonja/v2/nodes"
	"github.com/nikolalohinski/gonja/v2/parser"
	"github.com/nikolalohinski/gonja/v2/tokens"
)

// Config files are rendered as Tera templates before they are parsed:
// upstream mirrord renders them with Rust's Tera engine and an empty context,
// so users share files such as
//
//	"target": "{{ get_env(name="TARGET", default="pod/fallback") }}"
//
// and anything else Tera accepts. Go has no Tera engine; Tera's syntax is
// Jinja2's, so the template is rendered with gonja (a maintained Jinja2
// engine) configured and extended to behave like Tera where a mirrord config
// can tell the difference:
//
//   - the context is empty but for Tera's functions get_env, range and throw;
//   - an undefined variable is an error (Tera's rule), except as a bare
//     condition of {% if %}, where Tera reads it as false;
//   - filters are Tera's, with Tera's keyword arguments
//     (default(value=...), replace(from=..., to=...), join(sep=...)), since
//     gonja's Jinja filters take positional arguments and some share a name
//     with a Tera filter but not its meaning (slice, indent, truncate);
//   - values print as Tera prints them: true not True, [a, b] not ['a', 'b'],
//     so that a boolean lands in JSON as a boolean;
//   - `backtick` strings are read like "double-quoted" ones;
//   - {% set_global %} sets a variable outside the current loop;
//   - nothing can read another file ({% include %}, {% import %} and
//     {% extends %} are absent, as in a Tera one-off template).
//
// Errors name the config file and the line, which gonja reports in its
// messages: the cause is taken out of gonja's wrapping so the user sees
// "environment variable X is not set ..." rather than the expression tree.

// render expands the template src of the config file named file (empty when
// the document did not come from a file), reading environment variables with
// lookup.
func render(file, src string, lookup func(string) (string, bool)) (out string, err error) {
	tr := &templateRun{file: file, lookup: lookup}
	src = backtickStrings(src)

	cfg := gonjaconfig.New()
	// Tera: "Trying to access or render a variable that doesn't exist will
	// result in an error."
	cfg.StrictUndefined = true
	// Tera renders the text as written; Jinja drops a final newline.
	cfg.KeepTrailingNewline = true

	env := &exec.Environment{
		Context:           exec.NewContext(map[string]any{"get_env": tr.getEnv, "range": tr.teraRange, "throw": tr.throw}),
		Filters:           exec.NewFilterSet(tr.filters()),
		Tests:             exec.NewTestSet(tr.tests()),
		ControlStructures: tr.controlStructures(),
		// Tera has no methods on values ("abc".upper()).
		Methods: exec.Methods{
			Bool:  exec.NewMethodSet(map[string]exec.Method[bool]{}),
			Int:   exec.NewMethodSet(map[string]exec.Method[int]{}),
			Float: exec.NewMethodSet(map[string]exec.Method[float64]{}),
			Str:   exec.NewMethodSet(map[string]exec.Method[string]{}),
			Dict:  exec.NewMethodSet(map[string]exec.Method[map[string]any]{}),
			List:  exec.NewMethodSet(map[string]exec.Method[[]any]{}),
		},
	}
	tr.globals = env.Context

	// gonja is written for trusted templates and may panic on input it did
	// not expect; a config file is user input, so that becomes an error.
	defer func() {
		if p := recover(); p != nil {
			err = tr.errorf(0, "cannot render: %v", p)
		}
	}()

	loader := oneTemplate(src)
	tpl, err := exec.NewTemplate(templateName, cfg, loader, env)
	if err != nil {
		return "", tr.syntaxError(src, cfg, err)
	}
	teraOutput(tpl.Root().Nodes)

	buf := &limitedOutput{tr: tr}
	// NewRenderer rather than tpl.Execute so that the renderer's root
	// context is env.Context, the one {% set_global %} writes to.
	if err := exec.NewRenderer(env, buf, cfg, loader, tpl).Execute(); err != nil {
		return "", tr.renderError(err)
	}
	if tr.cause != nil {
		// A get_env or throw error that something swallowed: Tera has no
		// way to catch a function's error, so the render still fails.
		return "", tr.errorf(0, "%v", tr.cause)
	}
	return buf.String(), nil
}

const templateName = "config"

// A template's work is bounded, so that a mistake such as range(end=1e9)
// or loops nested too deep fails at once rather than hangs mirrord or
// takes all memory: maxTemplateSteps loop iterations and numbers made by
// range in all, and maxTemplateOutput bytes rendered (a config is a few
// KiB). Tera has no such limits; no config comes near them.
const (
	maxTemplateSteps  = 100_000
	maxTemplateOutput = 16 << 20
)

// step takes n steps of the template's budget.
func (tr *templateRun) step(n int) error {
	tr.steps += n
	if tr.steps > maxTemplateSteps {
		return tr.fail(fmt.Errorf("the template runs more than %d loop iterations and range numbers in all", maxTemplateSteps))
	}
	return nil
}

// limitedOutput is the rendered text, up to maxTemplateOutput bytes.
type limitedOutput struct {
	strings.Builder
	tr *templateRun
}

func (o *limitedOutput) Write(p []byte) (int, error) {
	if o.Len()+len(p) > maxTemplateOutput {
		return 0, o.tr.fail(fmt.Errorf("the template renders more than %d MiB", maxTemplateOutput>>20))
	}
	return o.Builder.Write(p)
}

func (o *limitedOutput) WriteString(s string) (int, error) { return o.Write([]byte(s)) }

// loopStep is put first in the body of every for loop: each iteration
// takes a step of the template's budget.
type loopStep struct {
	at *tokens.Token
	tr *templateRun
}

func (l *loopStep) Position() *tokens.Token { return l.at }
func (l *loopStep) String() string          { return "loop step" }

func (l *loopStep) Execute(*exec.Renderer, *nodes.ControlStructureBlock) error { return l.tr.step(1) }

// countedFor parses a for statement whose iterations count against the
// template's budget.
func (tr *templateRun) countedFor(parse parser.ControlStructureParser) parser.ControlStructureParser {
	return func(p *parser.Parser, args *parser.Parser) (nodes.ControlStructure, error) {
		cs, err := parse(p, args)
		if f, ok := cs.(*gonjastmt.ForControlStructure); ok && err == nil && f.BodyWrapper != nil {
			at := f.BodyWrapper.Location
			step := &nodes.ControlStructureBlock{Location: at, Name: "for", ControlStructure: &loopStep{at: at, tr: tr}}
			f.BodyWrapper.Nodes = append([]nodes.Node{step}, f.BodyWrapper.Nodes...)
		}
		return cs, err
	}
}

// templateRun is the state of one render.
type templateRun struct {
	file   string
	lookup func(string) (string, bool)
	// globals is the root context, where {% set_global %} writes.
	globals *exec.Context
	// cause is the first error raised by get_env or throw. gonja flattens
	// a function's error into text wrapped in the expression tree; keeping it
	// gives the error message its own words, and lets no filter or test
	// swallow it as if it were an undefined variable.
	cause error
	// printErr is the error of the {{ expression }} that failed, as it was
	// before gonja flattened it into "invalid call to filter" text (every
	// expression goes through printFilter).
	printErr error
	// steps is how much of maxTemplateSteps the render has taken.
	steps int
}

// templateError is a render failure of a config file.
type templateError struct {
	file string
	line int
	msg  string
}

func (e *templateError) Error() string {
	var b strings.Builder
	b.WriteString("config template")
	if e.file != "" {
		b.WriteString(" " + e.file)
	}
	if e.line > 0 {
		fmt.Fprintf(&b, " line %d", e.line)
	}
	b.WriteString(": " + e.msg)
	return b.String()
}

func (tr *templateRun) errorf(line int, format string, args ...any) error {
	return &templateError{file: tr.file, line: line, msg: fmt.Sprintf(format, args...)}
}

// getEnv is Tera's get_env(name=..., default=...): the variable's value as a
// string, else the default as given (of any type), else an error naming the
// variable.
func (tr *templateRun) getEnv(args *exec.VarArgs) (*exec.Value, error) {
	if len(args.Args) > 0 {
		return nil, tr.fail(errors.New(`get_env takes keyword arguments, as in get_env(name="VAR", default="value")`))
	}
	for k := range args.KwArgs {
		if k != "name" && k != "default" {
			return nil, tr.fail(fmt.Errorf("get_env has no argument %q (it takes name and default)", k))
		}
	}
	name, ok := args.KwArgs["name"]
	if !ok {
		return nil, tr.fail(errors.New(`get_env needs a name argument: get_env(name="VAR")`))
	}
	if !name.IsString() {
		return nil, tr.fail(fmt.Errorf("get_env received name=%s but name must be a string", teraString(name)))
	}
	if v, ok := tr.lookup(name.String()); ok {
		return exec.AsValue(v), nil
	}
	if def, ok := args.KwArgs["default"]; ok {
		return def, nil
	}
	return nil, tr.fail(fmt.Errorf("environment variable %s is not set and get_env has no default", name.String()))
}

func (tr *templateRun) fail(err error) error {
	if tr.cause == nil {
		tr.cause = err
	}
	return err
}

// teraRange is Tera's range(end=..., start=0, step_by=1).
func (tr *templateRun) teraRange(args *exec.VarArgs) (*exec.Value, error) {
	a, err := bindArgs(args, "end", "start", "step_by")
	if err != nil {
		return nil, err
	}
	if !a.has("end") {
		return nil, errors.New("range needs an end argument: range(end=5)")
	}
	end, err := a.int("end", 0)
	if err != nil {
		return nil, err
	}
	start, err := a.int("start", 0)
	if err != nil {
		return nil, err
	}
	step, err := a.int("step_by", 1)
	if err != nil {
		return nil, err
	}
	if start < 0 || end < 0 || step <= 0 {
		return nil, errors.New("range takes non-negative numbers and a positive step_by")
	}
	if start > end {
		return nil, errors.New("range was called with a start greater than its end")
	}
	// Counted rather than stepped to the end, where i += step could
	// overflow past it.
	n := (end - start) / step
	if (end-start)%step != 0 {
		n++
	}
	if err := tr.step(n); err != nil {
		return nil, err
	}
	list := make([]any, 0, n)
	for k := range n {
		list = append(list, start+k*step)
	}
	return exec.AsValue(list), nil
}

// throw is Tera's throw(message=...): it fails the render with the message.
func (tr *templateRun) throw(args *exec.VarArgs) (*exec.Value, error) {
	m, ok := args.KwArgs["message"]
	if !ok && len(args.Args) > 0 {
		m, ok = args.Args[0], true
	}
	if !ok || !m.IsString() {
		return nil, tr.fail(errors.New(`throw needs a string message: throw(message="...")`))
	}
	return nil, tr.fail(errors.New(m.String()))
}

// controlStructures are Tera's statements: if/elif/else, for (with else,
// break and continue), set, set_global, filter sections and raw. The other
// Jinja statements gonja knows are left out; include, import and extends
// would read other files, which a Tera one-off template cannot.
func (tr *templateRun) controlStructures() *exec.ControlStructureSet {
	set := map[string]parser.ControlStructureParser{
		"set_global": tr.parseSetGlobal,
		"filter":     parseFilterSection,
	}
	for _, name := range []string{"if", "for", "set", "raw", "break", "continue"} {
		p, ok := gonjastmt.All.Get(name)
		if !ok {
			panic("gonja has no " + name + " statement")
		}
		set[name] = p
	}
	set["for"] = tr.countedFor(set["for"])
	for name, p := range set {
		set[name] = located(name, p)
	}
	return exec.NewControlStructureSet(set)
}

// located gives a statement's parse errors the line of the statement when
// gonja's error carries none, or only the line where the file ended because
// the statement was never closed.
func located(name string, parse parser.ControlStructureParser) parser.ControlStructureParser {
	return func(p *parser.Parser, args *parser.Parser) (nodes.ControlStructure, error) {
		at := args.Current()
		if at == nil || at.Line == 0 {
			at = p.Current()
		}
		cs, err := parse(p, args)
		if err == nil || at == nil {
			return cs, err
		}
		var se *parser.SyntaxError
		switch {
		case !errors.As(err, &se):
			err = &parser.SyntaxError{Message: err.Error(), Line: at.Line, Column: at.Col, Raw: at.Val}
		case strings.HasPrefix(se.Message, "Unexpected EOF"):
			err = &parser.SyntaxError{
				Message: fmt.Sprintf("{%% %s %%} is not closed: %s", name, strings.TrimSuffix("u"+se.Message[1:], ".")),
				Line:    at.Line,
			}
		}
		return cs, err
	}
}

// setGlobal is {% set_global name = expression %}: like set, but inside a for
// loop it sets the variable for the rest of the template instead of the
// current iteration.
type setGlobal struct {
	at   *tokens.Token
	name string
	expr nodes.Expression
	tr   *templateRun
}

func (s *setGlobal) Position() *tokens.Token { return s.at }
func (s *setGlobal) String() string          { return "set_global " + s.name }

func (s *setGlobal) Execute(r *exec.Renderer, _ *nodes.ControlStructureBlock) error {
	v := r.Eval(s.expr)
	if v.IsError() {
		return v
	}
	s.tr.globals.Set(s.name, v.Interface())
	return nil
}

func (tr *templateRun) parseSetGlobal(_ *parser.Parser, args *parser.Parser) (nodes.ControlStructure, error) {
	name := args.Match(tokens.Name)
	if name == nil {
		return nil, args.Error("set_global needs a variable name, as in {% set_global x = 1 %}", args.Current())
	}
	if args.Match(tokens.Assign) == nil {
		return nil, args.Error("expected '=' after the variable name of set_global", args.Current())
	}
	expr, err := args.ParseExpression()
	if err != nil {
		return nil, err
	}
	if !args.End() {
		return nil, args.Error("unexpected text after the value of set_global", args.Current())
	}
	return &setGlobal{at: name, name: name.Val, expr: expr, tr: tr}, nil
}

// filterSection is {% filter name(args) %}...{% endfilter %}: the body's
// output goes through the filters. gonja has one, but its body's values would
// print the Jinja way and its body is out of reach of teraOutput.
type filterSection struct {
	at      *tokens.Token
	body    *nodes.Wrapper
	filters []*nodes.FilterCall
}

func (f *filterSection) Position() *tokens.Token { return f.at }
func (f *filterSection) String() string          { return "filter section" }

func (f *filterSection) Execute(r *exec.Renderer, _ *nodes.ControlStructureBlock) error {
	var body strings.Builder
	sub := r.Inherit()
	sub.Output = &body
	if err := sub.ExecuteWrapper(f.body); err != nil {
		return err
	}
	v := exec.AsValue(body.String())
	for _, call := range f.filters {
		v = r.Evaluator().ExecuteFilter(call, v)
		if v.IsError() {
			return v
		}
	}
	_, err := io.WriteString(r.Output, teraString(v))
	return err
}

func parseFilterSection(p *parser.Parser, args *parser.Parser) (nodes.ControlStructure, error) {
	fs := &filterSection{at: args.Current()}
	for !args.End() {
		call, err := args.ParseFilter()
		if err != nil {
			return nil, err
		}
		fs.filters = append(fs.filters, call)
		if args.Match(tokens.Pipe) == nil {
			break
		}
	}
	if len(fs.filters) == 0 || !args.End() {
		return nil, args.Error("expected a filter, as in {% filter upper %}", args.Current())
	}
	body, _, err := p.WrapUntil("endfilter")
	if err != nil {
		return nil, err
	}
	fs.body = body
	return fs, nil
}

// Names of the internal filters teraOutput adds to the parsed template; the
// prefix keeps them apart from the names a template can use.
const (
	printFilter   = "__mirrord_print"
	ifIdentFilter = "__mirrord_if_ident"
)

// teraOutput rewrites the parsed template for the two places where Tera and
// Jinja read the same text differently: every {{ expression }} prints its
// value the Tera way, and a variable standing alone in an if or elif
// condition is false when undefined (Tera's documented test for presence)
// rather than an error.
func teraOutput(list []nodes.Node) {
	for _, n := range list {
		switch n := n.(type) {
		case *nodes.Output:
			n.Expression = withFilter(n.Expression, printFilter)
			if n.Alternative != nil {
				n.Alternative = withFilter(n.Alternative, printFilter)
			}
		case *nodes.Wrapper:
			teraOutput(n.Nodes)
		case *nodes.ControlStructureBlock:
			teraStatement(n.ControlStructure)
		}
	}
}

func teraStatement(cs nodes.ControlStructure) {
	switch cs := cs.(type) {
	case *gonjastmt.IfControlStructure:
		for i, c := range cs.Conditions {
			cs.Conditions[i] = lenientIdents(c)
		}
		for _, w := range cs.Wrappers {
			teraOutput(w.Nodes)
		}
	case *gonjastmt.ForControlStructure:
		if cs.BodyWrapper != nil {
			teraOutput(cs.BodyWrapper.Nodes)
		}
		if cs.EmptyWrapper != nil {
			teraOutput(cs.EmptyWrapper.Nodes)
		}
	case *filterSection:
		teraOutput(cs.body.Nodes)
	}
}

// lenientIdents wraps the variables that stand alone in a condition, also
// under not, and, or, so that an undefined one reads as false.
func lenientIdents(e nodes.Expression) nodes.Expression {
	switch n := e.(type) {
	case *nodes.Name, *nodes.GetAttribute, *nodes.GetItem:
		return withFilter(e, ifIdentFilter)
	case *nodes.Negation:
		n.Term = lenientIdents(n.Term)
	case *nodes.BinaryExpression:
		if op := n.Operator.Token.Val; op == "and" || op == "or" {
			n.Left = lenientIdents(n.Left)
			n.Right = lenientIdents(n.Right)
		}
	}
	return e
}

func withFilter(e nodes.Expression, filter string) nodes.Expression {
	return &nodes.FilteredExpression{
		Expression: e,
		Filters:    []*nodes.FilterCall{{Token: e.Position(), Name: filter, Kwargs: map[string]nodes.Expression{}}},
	}
}

// oneTemplate is a loader that knows only the config file's text, so that no
// statement can read a file from disk.
type oneTemplate string

func (t oneTemplate) Read(path string) (io.Reader, error) {
	if path != templateName {
		return nil, fmt.Errorf("config templates cannot read other files (%q)", path)
	}
	return strings.NewReader(string(t)), nil
}

func (t oneTemplate) Resolve(path string) (string, error) { return path, nil }

func (t oneTemplate) Inherit(string) (loaders.Loader, error) { return t, nil }

var (
	// gonja's runtime errors say "... at line N: ..." once per enclosing
	// statement; the last is the innermost, the most precise.
	atLineRE = regexp.MustCompile(`at line (\d+)`)
	// Known gonja messages, said in terms of a config file.
	undefinedRE   = regexp.MustCompile(`^Unable to evaluate name "([^"]*)"$`)
	notCallRE     = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*) is not callable$`)
	unknownStmtRE = regexp.MustCompile(`^ControlStructure '([^']*)' not found`)
	syntaxNoteRE  = regexp.MustCompile(`\s*\(Line: \d+ Col: \d+, near "(.*)"\)$`)
)

// renderError turns gonja's runtime error into a templateError.
func (tr *templateRun) renderError(err error) error {
	line := 0
	if m := atLineRE.FindAllStringSubmatch(err.Error(), -1); m != nil {
		line, _ = strconv.Atoi(m[len(m)-1][1])
	}
	if tr.cause != nil {
		return tr.errorf(line, "%v", tr.cause)
	}
	cause := rootCause(err)
	if tr.printErr != nil {
		cause = rootCause(tr.printErr)
	}
	msg := cause.Error()
	switch {
	case undefinedRE.MatchString(msg):
		name := undefinedRE.FindStringSubmatch(msg)[1]
		msg = fmt.Sprintf("variable %q is not defined (mirrord renders config templates with an empty context; read environment variables with get_env(name=\"VAR\"))", name)
	case notCallRE.MatchString(msg):
		name := notCallRE.FindStringSubmatch(msg)[1]
		msg = fmt.Sprintf("function %q is not supported (config templates have get_env, range and throw)", name)
	}
	return tr.errorf(line, "%s", msg)
}

// rootCause unwraps gonja's error chain, which passes through its *Value
// (an error that does not implement Unwrap) and pkg/errors' Cause.
func rootCause(err error) error {
	for {
		switch e := err.(type) {
		case *exec.Value:
			if inner, ok := e.Interface().(error); ok {
				err = inner
				continue
			}
		case interface{ Cause() error }:
			if c := e.Cause(); c != nil && c != err {
				err = c
				continue
			}
		case interface{ Unwrap() error }:
			if u := e.Unwrap(); u != nil {
				err = u
				continue
			}
		}
		return err
	}
}

// syntaxError turns gonja's parse error into a templateError with the line.
func (tr *templateRun) syntaxError(src string, cfg *gonjaconfig.Config, err error) error {
	var se *parser.SyntaxError
	if !errors.As(err, &se) {
		return tr.errorf(0, "%v", rootCause(err))
	}
	msg, line := se.Message, se.Line
	if m := unknownStmtRE.FindStringSubmatch(msg); m != nil {
		se.Raw = ""
		msg = fmt.Sprintf("unknown statement {%% %s %%} (config templates have if, for, set, set_global, filter, raw, break and continue)", m[1])
	}
	if line == 0 {
		// The lexer's errors carry an offset but no line.
		line = lexErrorLine(src, cfg)
		msg = fmt.Sprintf("%s: %s", strings.TrimSuffix(se.Message, "."), se.Raw)
	} else if se.Raw != "" {
		msg = fmt.Sprintf("%s (near %q)", strings.TrimSuffix(se.Message, "."), se.Raw)
	}
	msg = syntaxNoteRE.ReplaceAllString(msg, "")
	return tr.errorf(line, "%s", msg)
}

// lexErrorLine finds the line of the first lexing error in src. The error
// token has no line and its offset is where the lexer gave up (the end of the
// file for an unclosed string), so this takes the line of the token before
// it, in the tag that failed.
func lexErrorLine(src string, cfg *gonjaconfig.Config) int {
	s := tokens.LexAll(src, cfg)
	line := 0
	for !s.End() {
		line = s.Current().Line
		s.Next()
	}
	if !s.IsError() {
		return 0
	}
	return line
}

// backtickStrings rewrites Tera's `backtick` string literals, which Jinja
// lacks, to quoted ones inside {{ }} and {% %}; text, comments and raw blocks
// are left alone. Lines are kept, so error lines still match the file.
func backtickStrings(src string) string {
	if !strings.Contains(src, "`") {
		return src
	}
	var out strings.Builder
	rest := src
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 || i+1 >= len(rest) {
			out.WriteString(rest)
			return out.String()
		}
		open := rest[i : i+2]
		var closeTok string
		switch open {
		case "{{":
			closeTok = "}}"
		case "{%":
			closeTok = "%}"
		case "{#":
			closeTok = "#}"
		default:
			out.WriteString(rest[:i+1])
			rest = rest[i+1:]
			continue
		}
		out.WriteString(rest[:i+2])
		rest = rest[i+2:]
		if open == "{#" {
			end := strings.Index(rest, closeTok)
			if end < 0 {
				out.WriteString(rest)
				return out.String()
			}
			out.WriteString(rest[:end+2])
			rest = rest[end+2:]
			continue
		}
		tag, after, closed := tagBody(rest, closeTok)
		out.WriteString(tag)
		rest = after
		if !closed {
			out.WriteString(rest)
			return out.String()
		}
		if open == "{%" && isRawStart(tag) {
			end := rawEndRE.FindStringIndex(rest)
			if end == nil {
				out.WriteString(rest)
				return out.String()
			}
			out.WriteString(rest[:end[0]])
			rest = rest[end[0]:]
		}
	}
}

var (
	rawStartRE = regexp.MustCompile(`^-?\s*raw\s*-?%}$`)
	rawEndRE   = regexp.MustCompile(`\{%-?\s*endraw\s*-?%}`)
)

func isRawStart(tag string) bool { return rawStartRE.MatchString(tag) }

// tagBody copies a tag's text up to and including closeTok, rewriting
// backtick strings; it reports whether the tag was closed.
func tagBody(s, closeTok string) (tag, rest string, closed bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\'':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				b.WriteString(s[i:])
				return b.String(), "", false
			}
			b.WriteString(s[i : i+end+2])
			i += end + 1
		case c == '`':
			end := strings.IndexByte(s[i+1:], '`')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String(), "", false
			}
			b.WriteString(quoteForGonja(s[i+1 : i+1+end]))
			i += end + 1
		case strings.HasPrefix(s[i:], closeTok):
			b.WriteString(closeTok)
			return b.String(), s[i+len(closeTok):], true
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), "", false
}

// quoteForGonja quotes s so that gonja reads back exactly s: it takes
// backslashes literally, as Tera does, except before a quote.
func quoteForGonja(s string) string {
	switch {
	case !strings.Contains(s, `"`):
		return `"` + s + `"`
	case !strings.Contains(s, `'`):
		return `'` + s + `'`
	}
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}
