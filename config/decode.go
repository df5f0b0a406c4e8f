package config

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// A document is decoded in two steps: each file format is parsed into a
// generic tree (map[string]any, []any, string, bool, json.Number, nil), and
// that tree is decoded into the typed structs here. Doing the second step by
// hand, instead of with each format library's own unmarshaler, gives one set
// of rules and one style of error (with the full key path) for JSON, TOML and
// YAML alike, and lets types accept the shorthand forms mirrord allows
// ("fs": "read", "incoming": "steal", "target": "pod/x", ...).

// shorthand is implemented by config types that accept more than one shape,
// for example a bool or an object. decodeConfig is called with the generic
// value found at p; it reports problems through d.
type shorthand interface {
	decodeConfig(d *decoder, p Path, v any)
}

var shorthandType = reflect.TypeFor[shorthand]()

type decoder struct {
	errs Errors
}

// decode decodes v into the value pointed to by dst, merging into what is
// already there: a key that is absent keeps its current (default) value.
func (d *decoder) decode(p Path, v any, dst reflect.Value) {
	if v == nil {
		// null means "not set": the default stays, as for a missing key.
		return
	}
	if dst.CanAddr() && dst.Addr().Type().Implements(shorthandType) {
		dst.Addr().Interface().(shorthand).decodeConfig(d, p, v)
		return
	}
	switch dst.Kind() {
	case reflect.Pointer:
		if dst.IsNil() {
			dst.Set(reflect.New(dst.Type().Elem()))
		}
		d.decode(p, v, dst.Elem())
	case reflect.Struct:
		d.decodeStruct(p, v, dst)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			d.errs.add(p, "expected a boolean (true or false), got %s", describe(v))
			return
		}
		dst.SetBool(b)
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			d.errs.add(p, "expected a string, got %s", describe(v))
			return
		}
		dst.SetString(s)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := d.integer(p, v)
		if !ok {
			return
		}
		if dst.OverflowInt(n) {
			d.errs.add(p, "%d is out of range", n)
			return
		}
		dst.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := d.integer(p, v)
		if !ok {
			return
		}
		if n < 0 || dst.OverflowUint(uint64(n)) {
			d.errs.add(p, "%d is out of range (0 to %d)", n, uint64(1)<<dst.Type().Bits()-1)
			return
		}
		dst.SetUint(uint64(n))
	case reflect.Float32, reflect.Float64:
		num, ok := v.(json.Number)
		if !ok {
			d.errs.add(p, "expected a number, got %s", describe(v))
			return
		}
		f, err := num.Float64()
		if err != nil {
			d.errs.add(p, "expected a number, got %s", num)
			return
		}
		dst.SetFloat(f)
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			d.errs.add(p, "expected a list, got %s", describe(v))
			return
		}
		out := reflect.MakeSlice(dst.Type(), len(list), len(list))
		for i, e := range list {
			d.decode(p.Index(i), e, out.Index(i))
		}
		dst.Set(out)
	case reflect.Array:
		list, ok := v.([]any)
		if !ok || len(list) != dst.Len() {
			d.errs.add(p, "expected a list of %d elements, got %s", dst.Len(), describe(v))
			return
		}
		for i, e := range list {
			d.decode(p.Index(i), e, dst.Index(i))
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			d.errs.add(p, "expected an object, got %s", describe(v))
			return
		}
		out := reflect.MakeMapWithSize(dst.Type(), len(obj))
		for _, k := range sortedKeys(obj) {
			ev := reflect.New(dst.Type().Elem()).Elem()
			d.decode(p.Key(k), obj[k], ev)
			out.SetMapIndex(reflect.ValueOf(k).Convert(dst.Type().Key()), ev)
		}
		dst.Set(out)
	case reflect.Interface:
		// Free-form values (Kubernetes objects such as tolerations) are
		// kept as generic trees and checked by whoever uses them.
		dst.Set(reflect.ValueOf(v))
	default:
		panic(fmt.Sprintf("config: cannot decode into %s at %s", dst.Type(), p))
	}
}

func (d *decoder) integer(p Path, v any) (int64, bool) {
	num, ok := v.(json.Number)
	if !ok {
		d.errs.add(p, "expected an integer, got %s", describe(v))
		return 0, false
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		f, ferr := num.Float64()
		if ferr == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int64(f), true
		}
		d.errs.add(p, "expected an integer, got %s", num)
		return 0, false
	}
	return n, true
}

// decodeStruct decodes an object into a struct whose fields are named by
// their json tags. A field may also list older names in an `alias` tag
// (comma-separated) so that configs written for earlier mirrord versions load.
func (d *decoder) decodeStruct(p Path, v any, dst reflect.Value) {
	obj, ok := v.(map[string]any)
	if !ok {
		d.errs.add(p, "expected an object, got %s", describe(v))
		return
	}
	fields := structFields(dst.Type())
	for _, k := range sortedKeys(obj) {
		f, ok := fields.byName[k]
		if !ok {
			d.errs.add(p.Key(k), "unknown key%s (expected one of: %s)", didYouMean(k, fields.names), strings.Join(fields.names, ", "))
			continue
		}
		d.decode(p.Key(f.name), obj[k], dst.FieldByIndex(f.index))
	}
}

func didYouMean(k string, names []string) string {
	if s := suggest(k, names); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

type fieldInfo struct {
	name  string
	index []int
	env   string
}

type fieldSet struct {
	byName map[string]fieldInfo // canonical names and aliases
	names  []string             // canonical names, in declaration order
	list   []fieldInfo
}

func structFields(t reflect.Type) fieldSet {
	fs := fieldSet{byName: map[string]fieldInfo{}}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		fi := fieldInfo{name: name, index: sf.Index, env: sf.Tag.Get("env")}
		fs.byName[name] = fi
		fs.names = append(fs.names, name)
		fs.list = append(fs.list, fi)
		if a := sf.Tag.Get("alias"); a != "" {
			for _, alias := range strings.Split(a, ",") {
				fs.byName[alias] = fi
			}
		}
	}
	return fs
}

// describe names the kind of a generic value for error messages.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("the boolean %t", v)
	case string:
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		return fmt.Sprintf("the string %q", v)
	case json.Number:
		return "the number " + string(v)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// stringOrList accepts "a" or ["a", "b"], the form upstream calls
// VecOrSingle. It is decoded into *[]string.
func decodeStringOrList(d *decoder, p Path, v any) ([]string, bool) {
	switch v := v.(type) {
	case string:
		return []string{v}, true
	case []any:
		out := make([]string, 0, len(v))
		ok := true
		for i, e := range v {
			s, isStr := e.(string)
			if !isStr {
				d.errs.add(p.Index(i), "expected a string, got %s", describe(e))
				ok = false
				continue
			}
			out = append(out, s)
		}
		return out, ok
	default:
		d.errs.add(p, "expected a string or a list of strings, got %s", describe(v))
		return nil, false
	}
}
