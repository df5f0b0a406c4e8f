package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nikolalohinski/gonja/v2/exec"
)

// Tera's filters and tests, for config templates. gonja's built-in filters
// are Jinja's: they take positional arguments where Tera's take keywords
// (Tera's replace(from="a", to="b") is Jinja's replace("a", "b")), and some
// names mean something else (Jinja's slice splits a list into N lists,
// Tera's cuts a range out of it). A config written for upstream mirrord must
// render the same here, so every filter a template can name is Tera's,
// implemented on plain Go values. Positional arguments are also accepted, in
// the order of Tera's keywords, for those used to Jinja.
//
// Left out: the filters that only make sense on objects from a context,
// which mirrord's templates do not have (get, map, filter, group_by), and
// those that need data Go lacks (date's strftime and time zones, slugify's
// transliteration, filesizeformat's units).

// filterFunc is a Tera filter on a plain Go value (see plain).
type filterFunc func(in any, a filterArgs) (any, error)

type filterDef struct {
	args []string // Tera's keyword arguments, in positional order
	fn   filterFunc
}

func (tr *templateRun) filters() map[string]exec.FilterFunction {
	defs := map[string]filterDef{
		"upper":              {nil, onString(strings.ToUpper)},
		"lower":              {nil, onString(strings.ToLower)},
		"capitalize":         {nil, onString(capitalize)},
		"title":              {nil, onString(title)},
		"trim":               {nil, onString(strings.TrimSpace)},
		"trim_start":         {nil, onString(func(s string) string { return strings.TrimLeftFunc(s, unicode.IsSpace) })},
		"trim_end":           {nil, onString(func(s string) string { return strings.TrimRightFunc(s, unicode.IsSpace) })},
		"trim_start_matches": {[]string{"pat"}, trimMatches(strings.HasPrefix, strings.TrimPrefix)},
		"trim_end_matches":   {[]string{"pat"}, trimMatches(strings.HasSuffix, strings.TrimSuffix)},
		"truncate":           {[]string{"length", "end"}, truncate},
		"wordcount":          {nil, func(in any, _ filterArgs) (any, error) { s, err := str(in); return len(strings.Fields(s)), err }},
		"replace":            {[]string{"from", "to"}, replace},
		"addslashes":         {nil, onString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, `'`, `\'`).Replace)},
		"linebreaksbr":       {nil, onString(strings.NewReplacer("\r\n", "<br>", "\n", "<br>").Replace)},
		"spaceless":          {nil, onString(func(s string) string { return spacelessRE.ReplaceAllString(s, "><") })},
		"striptags":          {nil, onString(func(s string) string { return striptagsRE.ReplaceAllString(s, "") })},
		"indent":             {[]string{"prefix", "first", "blank"}, indent},
		"escape":             {nil, onString(strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#x27;", "/", "&#x2F;").Replace)},
		"escape_xml":         {nil, onString(strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&apos;").Replace)},
		"urlencode":          {nil, onString(func(s string) string { return percentEncode(s, "-._~/%") })},
		"urlencode_strict":   {nil, onString(func(s string) string { return percentEncode(s, "") })},
		"split":              {[]string{"pat"}, split},
		"int":                {[]string{"default", "base"}, toInt},
		"float":              {[]string{"default"}, toFloat},
		"as_str":             {nil, func(in any, _ filterArgs) (any, error) { return teraFormat(in), nil }},
		"json_encode":        {[]string{"pretty"}, jsonEncode},
		"safe":               {nil, func(in any, _ filterArgs) (any, error) { return in, nil }},
		"length":             {nil, length},
		"reverse":            {nil, reverse},
		"first":              {nil, onList(func(l []any) any { return nthOf(l, 0) })},
		"last":               {nil, onList(func(l []any) any { return nthOf(l, len(l)-1) })},
		"nth":                {[]string{"n"}, nth},
		"join":               {[]string{"sep"}, join},
		"sort":               {nil, sortList},
		"unique":             {[]string{"case_sensitive"}, unique},
		"slice":              {[]string{"start", "end"}, slice},
		"concat":             {[]string{"with"}, concat},
		"abs":                {nil, abs},
		"pluralize":          {[]string{"singular", "plural"}, pluralize},
		"round":              {[]string{"method", "precision"}, round},
	}
	out := map[string]exec.FilterFunction{}
	for name, d := range defs {
		out[name] = d.filter()
	}
	out["default"] = tr.defaultFilter
	out[printFilter] = func(_ *exec.Evaluator, in *exec.Value, _ *exec.VarArgs) *exec.Value {
		if in.IsError() {
			tr.printErr = in
			return in
		}
		return exec.AsValue(teraString(in))
	}
	out[ifIdentFilter] = func(_ *exec.Evaluator, in *exec.Value, _ *exec.VarArgs) *exec.Value {
		if in.IsError() && tr.cause == nil {
			return exec.AsValue(false)
		}
		return in
	}
	return out
}

func (d filterDef) filter() exec.FilterFunction {
	return func(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
		if in.IsError() {
			return in
		}
		a, err := bindArgs(params, d.args...)
		if err == nil {
			var out any
			if out, err = d.fn(plain(in), a); err == nil {
				return exec.AsValue(out)
			}
		}
		return exec.AsValue(exec.ErrInvalidCall(err))
	}
}

// defaultFilter is Tera's default(value=...): the value when the variable
// before it is undefined. Defined values are kept even when empty or false,
// as in Tera.
func (tr *templateRun) defaultFilter(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
	a, err := bindArgs(params, "value")
	if err == nil && !a.has("value") {
		err = errors.New(`default needs a value argument: default(value="...")`)
	}
	if err != nil {
		return exec.AsValue(exec.ErrInvalidCall(err))
	}
	if in.IsError() && tr.cause == nil {
		return a["value"]
	}
	return in
}

// filterArgs are a filter's or function's arguments by keyword.
type filterArgs map[string]*exec.Value

// bindArgs names the arguments of a call that takes the keywords names,
// positional arguments standing for the keywords in order.
func bindArgs(params *exec.VarArgs, names ...string) (filterArgs, error) {
	a := filterArgs{}
	if len(params.Args) > len(names) {
		return nil, fmt.Errorf("takes at most %d arguments (%s), got %d", len(names), strings.Join(names, ", "), len(params.Args))
	}
	for i, v := range params.Args {
		a[names[i]] = v
	}
	for k, v := range params.KwArgs {
		known := false
		for _, n := range names {
			known = known || n == k
		}
		switch {
		case !known && len(names) == 0:
			return nil, fmt.Errorf("takes no arguments, got %s", k)
		case !known:
			return nil, fmt.Errorf("has no argument %q (it takes %s)", k, strings.Join(names, ", "))
		case a[k] != nil:
			return nil, fmt.Errorf("argument %q given twice", k)
		}
		a[k] = v
	}
	return a, nil
}

func (a filterArgs) has(name string) bool { return a[name] != nil }

func (a filterArgs) str(name, def string) (string, error) {
	v := a[name]
	if v == nil {
		return def, nil
	}
	if !v.IsString() {
		return "", fmt.Errorf("%s must be a string, got %s", name, teraString(v))
	}
	return v.String(), nil
}

func (a filterArgs) int(name string, def int) (int, error) {
	v := a[name]
	switch {
	case v == nil:
		return def, nil
	case v.IsInteger():
		return v.Integer(), nil
	case v.IsFloat() && v.Float() == math.Trunc(v.Float()):
		return int(v.Float()), nil
	}
	return 0, fmt.Errorf("%s must be an integer, got %s", name, teraString(v))
}

func (a filterArgs) float(name string, def float64) (float64, error) {
	v := a[name]
	switch {
	case v == nil:
		return def, nil
	case v.IsNumber():
		return v.Float(), nil
	}
	return 0, fmt.Errorf("%s must be a number, got %s", name, teraString(v))
}

func (a filterArgs) bool(name string, def bool) (bool, error) {
	v := a[name]
	switch {
	case v == nil:
		return def, nil
	case v.IsBool():
		return v.Bool(), nil
	}
	return false, fmt.Errorf("%s must be true or false, got %s", name, teraString(v))
}

func (a filterArgs) required(names ...string) error {
	for _, n := range names {
		if !a.has(n) {
			return fmt.Errorf("missing argument %q", n)
		}
	}
	return nil
}

// plain is a template value as a plain Go value: nil, bool, int, float64,
// string, []any or map[string]any.
func plain(v *exec.Value) any {
	return v.ToGoSimpleType(false)
}

// teraString is how Tera prints a value.
func teraString(v *exec.Value) string {
	return teraFormat(plain(v))
}

// teraFormat prints a plain value as Tera does: booleans in lower case,
// numbers without a needless fraction, lists as [a, b] with their items
// printed the same way, objects as [object], and nothing for a null.
func teraFormat(x any) string {
	switch x := x.(type) {
	case nil:
		return ""
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case float64:
		switch {
		case math.IsInf(x, 1):
			return "inf"
		case math.IsInf(x, -1):
			return "-inf"
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	case string:
		return x
	case []any:
		items := make([]string, len(x))
		for i, item := range x {
			items[i] = teraFormat(item)
		}
		return "[" + strings.Join(items, ", ") + "]"
	case map[string]any:
		return "[object]"
	case error:
		return x.Error()
	}
	return fmt.Sprint(x)
}

func typeName(x any) string {
	switch x.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case int, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", x)
}

func str(in any) (string, error) {
	s, ok := in.(string)
	if !ok {
		return "", fmt.Errorf("expects a string, got %s %s", typeName(in), teraFormat(in))
	}
	return s, nil
}

func list(in any) ([]any, error) {
	l, ok := in.([]any)
	if !ok {
		return nil, fmt.Errorf("expects an array, got %s %s", typeName(in), teraFormat(in))
	}
	return l, nil
}

func number(in any) (float64, bool) {
	switch n := in.(type) {
	case int:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}

func onString(f func(string) string) filterFunc {
	return func(in any, _ filterArgs) (any, error) {
		s, err := str(in)
		if err != nil {
			return nil, err
		}
		return f(s), nil
	}
}

func onList(f func([]any) any) filterFunc {
	return func(in any, _ filterArgs) (any, error) {
		l, err := list(in)
		if err != nil {
			return nil, err
		}
		return f(l), nil
	}
}

// capitalize upper-cases the first letter and lower-cases the rest.
func capitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + strings.ToLower(s[n:])
}

// title capitalizes each word: a run of letters, digits and underscores,
// which may hold apostrophes (it's, o'neil).
func title(s string) string {
	var b strings.Builder
	inWord := false
	for _, r := range s {
		switch {
		case r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			if inWord {
				b.WriteRune(unicode.ToLower(r))
			} else {
				b.WriteRune(unicode.ToUpper(r))
			}
			inWord = true
		case r == '\'' && inWord:
			b.WriteRune(r)
		default:
			b.WriteRune(r)
			inWord = false
		}
	}
	return b.String()
}

var (
	striptagsRE = regexp.MustCompile(`(<!--.*?-->|<[^>]*>)`)
	spacelessRE = regexp.MustCompile(`>\s+<`)
)

// unescapePattern reads \n and \t in a pattern argument as the characters,
// as Tera does: its string literals have no escapes of their own.
var unescapePattern = strings.NewReplacer(`\n`, "\n", `\t`, "\t").Replace

func trimMatches(has func(s, p string) bool, trim func(s, p string) string) filterFunc {
	return func(in any, a filterArgs) (any, error) {
		s, err := str(in)
		if err != nil {
			return nil, err
		}
		if err := a.required("pat"); err != nil {
			return nil, err
		}
		pat, err := a.str("pat", "")
		if err != nil {
			return nil, err
		}
		pat = unescapePattern(pat)
		for pat != "" && has(s, pat) {
			s = trim(s, pat)
		}
		return s, nil
	}
}

// truncate cuts the string to length characters and appends end if it cut
// anything. (Tera counts grapheme clusters; this counts code points, the
// same for all but combined characters.)
func truncate(in any, a filterArgs) (any, error) {
	s, err := str(in)
	if err != nil {
		return nil, err
	}
	length, err := a.int("length", 255)
	if err != nil {
		return nil, err
	}
	end, err := a.str("end", "…")
	if err != nil {
		return nil, err
	}
	if length < 0 {
		return nil, errors.New("length must not be negative")
	}
	r := []rune(s)
	if length >= len(r) {
		return s, nil
	}
	return string(r[:length]) + end, nil
}

func replace(in any, a filterArgs) (any, error) {
	s, err := str(in)
	if err != nil {
		return nil, err
	}
	if err := a.required("from", "to"); err != nil {
		return nil, err
	}
	from, err := a.str("from", "")
	if err != nil {
		return nil, err
	}
	to, err := a.str("to", "")
	if err != nil {
		return nil, err
	}
	return strings.ReplaceAll(s, from, to), nil
}

// indent puts prefix before every line but the first (unless first) and
// blank ones (unless blank), for text printed into an indented block such as
// YAML.
func indent(in any, a filterArgs) (any, error) {
	s, err := str(in)
	if err != nil {
		return nil, err
	}
	prefix, err := a.str("prefix", "    ")
	if err != nil {
		return nil, err
	}
	first, err := a.bool("first", false)
	if err != nil {
		return nil, err
	}
	blank, err := a.bool("blank", false)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(s, "\n")
	if lines[len(lines)-1] == "" {
		// A final newline ends the last line; it does not start one.
		lines = lines[:len(lines)-1]
	}
	var b strings.Builder
	for i, line := range lines {
		line = strings.TrimSuffix(line, "\r")
		if i > 0 {
			b.WriteByte('\n')
		}
		if (i == 0 && first) || (i > 0 && (blank || strings.TrimSpace(line) != "")) {
			b.WriteString(prefix)
		}
		b.WriteString(line)
	}
	return b.String(), nil
}

// percentEncode escapes every byte but ASCII letters, digits and keep.
func percentEncode(s, keep string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < utf8.RuneSelf && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(keep, c) >= 0) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func split(in any, a filterArgs) (any, error) {
	s, err := str(in)
	if err != nil {
		return nil, err
	}
	if err := a.required("pat"); err != nil {
		return nil, err
	}
	pat, err := a.str("pat", "")
	if err != nil {
		return nil, err
	}
	parts := strings.Split(s, unescapePattern(pat))
	out := make([]any, len(parts))
	for i, p := range parts {
		out[i] = p
	}
	return out, nil
}

// toInt is Tera's int(default=0, base=10): a number truncated, or a string
// parsed in base (with its 0b, 0o or 0x prefix), or default when the string
// is no number.
func toInt(in any, a filterArgs) (any, error) {
	def, err := a.int("default", 0)
	if err != nil {
		return nil, err
	}
	base, err := a.int("base", 10)
	if err != nil {
		return nil, err
	}
	if base < 2 || base > 36 {
		return nil, fmt.Errorf("base must be from 2 to 36, got %d", base)
	}
	switch x := in.(type) {
	case int:
		return x, nil
	case float64:
		return int(x), nil
	case string:
		s := strings.TrimSpace(x)
		if p := map[int]string{2: "0b", 8: "0o", 16: "0x"}[base]; p != "" {
			for strings.HasPrefix(s, p) {
				s = s[len(p):]
			}
		}
		if n, err := strconv.ParseInt(s, base, 64); err == nil {
			return int(n), nil
		}
		if strings.Contains(s, ".") {
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				return int(f), nil
			}
		}
		return def, nil
	}
	return nil, fmt.Errorf("expects a number or a string, got %s", typeName(in))
}

func toFloat(in any, a filterArgs) (any, error) {
	def, err := a.float("default", 0)
	if err != nil {
		return nil, err
	}
	switch x := in.(type) {
	case int:
		return float64(x), nil
	case float64:
		return x, nil
	case string:
		if f, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil {
			return f, nil
		}
		return def, nil
	}
	return nil, fmt.Errorf("expects a number or a string, got %s", typeName(in))
}

// jsonEncode is Tera's json_encode(pretty=false), handy for printing a list
// built in the template into a JSON config.
func jsonEncode(in any, a filterArgs) (any, error) {
	pretty, err := a.bool("pretty", false)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// The output goes into a config file, not HTML.
	enc.SetEscapeHTML(false)
	if pretty {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(in); err != nil {
		return nil, err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

func length(in any, _ filterArgs) (any, error) {
	switch x := in.(type) {
	case string:
		return utf8.RuneCountInString(x), nil
	case []any:
		return len(x), nil
	case map[string]any:
		return len(x), nil
	}
	return nil, fmt.Errorf("expects an array, an object or a string, got %s", typeName(in))
}

func reverse(in any, _ filterArgs) (any, error) {
	switch x := in.(type) {
	case string:
		r := []rune(x)
		for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
		return string(r), nil
	case []any:
		out := make([]any, len(x))
		for i, v := range x {
			out[len(x)-1-i] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("expects an array or a string, got %s", typeName(in))
}

// nthOf is the item at i, or an empty string outside the array (Tera's
// first, last and nth).
func nthOf(l []any, i int) any {
	if i < 0 || i >= len(l) {
		return ""
	}
	return l[i]
}

func nth(in any, a filterArgs) (any, error) {
	l, err := list(in)
	if err != nil {
		return nil, err
	}
	if err := a.required("n"); err != nil {
		return nil, err
	}
	n, err := a.int("n", 0)
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, errors.New("n must not be negative")
	}
	return nthOf(l, n), nil
}

func join(in any, a filterArgs) (any, error) {
	l, err := list(in)
	if err != nil {
		return nil, err
	}
	sep, err := a.str("sep", "")
	if err != nil {
		return nil, err
	}
	items := make([]string, len(l))
	for i, v := range l {
		items[i] = teraFormat(v)
	}
	return strings.Join(items, sep), nil
}

// sortList sorts an array of numbers, strings or booleans (false first);
// like Tera, it refuses a mix.
func sortList(in any, _ filterArgs) (any, error) {
	l, err := list(in)
	if err != nil {
		return nil, err
	}
	out := append([]any(nil), l...)
	for _, v := range out {
		if typeName(v) != typeName(out[0]) {
			return nil, fmt.Errorf("cannot sort %s among %s values", teraFormat(v), strings.TrimPrefix(strings.TrimPrefix(typeName(out[0]), "a "), "an "))
		}
		switch v.(type) {
		case int, float64, string, bool:
		default:
			return nil, fmt.Errorf("cannot sort %s values", typeName(v))
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		switch x := out[i].(type) {
		case string:
			return x < out[j].(string)
		case bool:
			return !x && out[j].(bool)
		}
		a, _ := number(out[i])
		b, _ := number(out[j])
		return a < b
	})
	return out, nil
}

// unique keeps the first of equal items; strings compare ignoring case
// unless case_sensitive=true, as in Tera.
func unique(in any, a filterArgs) (any, error) {
	l, err := list(in)
	if err != nil {
		return nil, err
	}
	cs, err := a.bool("case_sensitive", false)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := []any{}
	for _, v := range l {
		if typeName(v) != typeName(l[0]) {
			return nil, errors.New("cannot compare values of different types")
		}
		var key string
		switch x := v.(type) {
		case string:
			key = x
			if !cs {
				key = strings.ToLower(x)
			}
		case int, float64, bool:
			key = teraFormat(x)
		default:
			return nil, fmt.Errorf("cannot compare %s values", typeName(v))
		}
		if !seen[key] {
			seen[key] = true
			out = append(out, v)
		}
	}
	return out, nil
}

// slice is Tera's slice(start=0, end=length): the items from start up to
// end, either counted from the end when negative.
func slice(in any, a filterArgs) (any, error) {
	l, err := list(in)
	if err != nil {
		return nil, err
	}
	index := func(name string, def int) (int, error) {
		i, err := a.int(name, def)
		if i < 0 {
			i = max(len(l)+i, 0)
		}
		return min(i, len(l)), err
	}
	start, err := index("start", 0)
	if err != nil {
		return nil, err
	}
	end, err := index("end", len(l))
	if err != nil {
		return nil, err
	}
	if start >= end {
		return []any{}, nil
	}
	return append([]any(nil), l[start:end]...), nil
}

func concat(in any, a filterArgs) (any, error) {
	l, err := list(in)
	if err != nil {
		return nil, err
	}
	if err := a.required("with"); err != nil {
		return nil, err
	}
	out := append([]any(nil), l...)
	if more, ok := plain(a["with"]).([]any); ok {
		return append(out, more...), nil
	}
	return append(out, plain(a["with"])), nil
}

func abs(in any, _ filterArgs) (any, error) {
	switch x := in.(type) {
	case int:
		if x < 0 {
			return -x, nil
		}
		return x, nil
	case float64:
		return math.Abs(x), nil
	}
	return nil, fmt.Errorf("expects a number, got %s", typeName(in))
}

func pluralize(in any, a filterArgs) (any, error) {
	n, ok := number(in)
	if !ok {
		return nil, fmt.Errorf("expects a number, got %s", typeName(in))
	}
	singular, err := a.str("singular", "")
	if err != nil {
		return nil, err
	}
	plural, err := a.str("plural", "s")
	if err != nil {
		return nil, err
	}
	if math.Abs(n) == 1 {
		return singular, nil
	}
	return plural, nil
}

// round is Tera's round(method="common", precision=0); common rounds half
// away from zero.
func round(in any, a filterArgs) (any, error) {
	n, ok := number(in)
	if !ok {
		return nil, fmt.Errorf("expects a number, got %s", typeName(in))
	}
	method, err := a.str("method", "common")
	if err != nil {
		return nil, err
	}
	precision, err := a.int("precision", 0)
	if err != nil {
		return nil, err
	}
	m := math.Pow(10, float64(precision))
	switch method {
	case "common":
		return math.Round(n*m) / m, nil
	case "ceil":
		return math.Ceil(n*m) / m, nil
	case "floor":
		return math.Floor(n*m) / m, nil
	}
	return nil, fmt.Errorf("method must be common, ceil or floor, got %q", method)
}

// testFunc is a Tera test ({% if x is odd %}) on a plain value.
type testFunc func(in any, args []*exec.Value) (bool, error)

func (tr *templateRun) tests() map[string]exec.TestFunction {
	defs := map[string]testFunc{
		"odd":    func(in any, _ []*exec.Value) (bool, error) { return parity(in, 1) },
		"even":   func(in any, _ []*exec.Value) (bool, error) { return parity(in, 0) },
		"string": func(in any, _ []*exec.Value) (bool, error) { _, ok := in.(string); return ok, nil },
		"number": func(in any, _ []*exec.Value) (bool, error) { _, ok := number(in); return ok, nil },
		"iterable": func(in any, _ []*exec.Value) (bool, error) {
			return typeName(in) == "an array" || typeName(in) == "an object", nil
		},
		"object":      func(in any, _ []*exec.Value) (bool, error) { _, ok := in.(map[string]any); return ok, nil },
		"divisibleby": divisibleBy,
		"starting_with": stringTest(func(s, arg string) (bool, error) {
			return strings.HasPrefix(s, arg), nil
		}),
		"ending_with": stringTest(func(s, arg string) (bool, error) {
			return strings.HasSuffix(s, arg), nil
		}),
		"matching": stringTest(func(s, arg string) (bool, error) {
			re, err := regexp.Compile(arg)
			if err != nil {
				return false, fmt.Errorf("invalid regex %q: %v", arg, err)
			}
			return re.MatchString(s), nil
		}),
		"containing": func(in any, args []*exec.Value) (bool, error) {
			if len(args) != 1 {
				return false, errors.New("needs one argument")
			}
			return contains(in, plain(args[0]))
		},
		// gonja parses the in operator ("a" in list) as a test.
		"in": func(in any, args []*exec.Value) (bool, error) {
			if len(args) != 1 {
				return false, errors.New("needs one argument")
			}
			return contains(plain(args[0]), in)
		},
	}
	out := map[string]exec.TestFunction{}
	for name, fn := range defs {
		out[name] = func(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) (bool, error) {
			if in.IsError() {
				return false, in
			}
			if len(params.KwArgs) > 0 {
				return false, errors.New("tests take positional arguments, as in starting_with(\"x\")")
			}
			return fn(plain(in), params.Args)
		}
	}
	// An undefined variable is the one error these tests read rather than
	// pass on; a get_env or throw failure still fails the render.
	out["defined"] = func(_ *exec.Evaluator, in *exec.Value, _ *exec.VarArgs) (bool, error) {
		if in.IsError() && tr.cause != nil {
			return false, in
		}
		return !in.IsError(), nil
	}
	out["undefined"] = func(_ *exec.Evaluator, in *exec.Value, _ *exec.VarArgs) (bool, error) {
		if in.IsError() && tr.cause != nil {
			return false, in
		}
		return in.IsError(), nil
	}
	return out
}

func parity(in any, want int) (bool, error) {
	n, ok := number(in)
	if !ok || n != math.Trunc(n) {
		return false, fmt.Errorf("expects an integer, got %s", teraFormat(in))
	}
	return int64(math.Abs(n))%2 == int64(want), nil
}

func divisibleBy(in any, args []*exec.Value) (bool, error) {
	n, ok := number(in)
	if !ok || len(args) != 1 {
		return false, errors.New("divisibleby compares a number with one number, as in divisibleby(3)")
	}
	d, ok := number(plain(args[0]))
	if !ok || d == 0 {
		return false, errors.New("divisibleby needs a non-zero number")
	}
	return math.Mod(n, d) == 0, nil
}

func stringTest(f func(s, arg string) (bool, error)) testFunc {
	return func(in any, args []*exec.Value) (bool, error) {
		s, err := str(in)
		if err != nil {
			return false, err
		}
		if len(args) != 1 || !args[0].IsString() {
			return false, errors.New("needs one string argument")
		}
		return f(s, args[0].String())
	}
}

// contains is true for a substring of a string, an item of an array or a
// key of an object.
func contains(in, arg any) (bool, error) {
	switch x := in.(type) {
	case string:
		s, ok := arg.(string)
		return ok && strings.Contains(x, s), nil
	case []any:
		for _, v := range x {
			if equalPlain(v, arg) {
				return true, nil
			}
		}
		return false, nil
	case map[string]any:
		s, ok := arg.(string)
		_, found := x[s]
		return ok && found, nil
	}
	return false, fmt.Errorf("expects a string, an array or an object, got %s", typeName(in))
}

func equalPlain(a, b any) bool {
	if x, ok := number(a); ok {
		y, ok := number(b)
		return ok && x == y
	}
	return typeName(a) == typeName(b) && teraFormat(a) == teraFormat(b)
}
