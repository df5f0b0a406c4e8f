package config

import (
	"reflect"
	"strings"
)

// schemaProvider is implemented by types whose JSON Schema is not their Go
// shape (shorthand strings, enums, image references).
type schemaProvider interface{ jsonSchema() map[string]any }

// alternativesProvider is implemented by sections that also accept
// shorthand forms besides their object form.
type alternativesProvider interface {
	jsonSchemaAlternatives() []map[string]any
}

var (
	schemaProviderType = reflect.TypeFor[schemaProvider]()
	altProviderType    = reflect.TypeFor[alternativesProvider]()
)

// JSONSchema returns a JSON Schema (draft 2020-12) of the config file,
// generated from the same structs the loader decodes into, so the two
// cannot drift apart. Editors use it for completion and validation.
func JSONSchema() map[string]any {
	s := schemaOf(reflect.TypeFor[Config]())
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["title"] = "mirrord configuration"
	return s
}

func schemaOf(t reflect.Type) map[string]any {
	if t.Kind() != reflect.Pointer && t.Implements(schemaProviderType) {
		return reflect.Zero(t).Interface().(schemaProvider).jsonSchema()
	}
	switch t.Kind() {
	case reflect.Pointer:
		return schemaOf(t.Elem())
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s := map[string]any{"type": "integer", "minimum": 0}
		if t.Bits() < 64 {
			s["maximum"] = uint64(1)<<t.Bits() - 1
		}
		return s
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		props := map[string]any{}
		for _, f := range structFields(t).list {
			sf := t.FieldByIndex(f.index)
			fs := schemaOf(sf.Type)
			if doc := sf.Tag.Get("doc"); doc != "" {
				fs["description"] = doc
			}
			if f.env != "" {
				desc, _ := fs["description"].(string)
				fs["description"] = strings.TrimSpace(desc + " Environment variable: " + f.env + ".")
			}
			props[f.name] = fs
		}
		obj := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if reflect.PointerTo(t).Implements(altProviderType) {
			alts := reflect.Zero(t).Interface().(alternativesProvider).jsonSchemaAlternatives()
			anyOf := []any{obj}
			for _, a := range alts {
				anyOf = append(anyOf, a)
			}
			return map[string]any{"anyOf": anyOf}
		}
		return obj
	}
	return map[string]any{}
}
