package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/pelletier/go-toml/v2"
	"github.com/tailscale/hujson"
)

// Format is a config file syntax.
type Format string

const (
	JSON Format = "json"
	TOML Format = "toml"
	YAML Format = "yaml"
)

// FormatOf picks the syntax of a config file from its extension, as upstream
// mirrord does.
func FormatOf(name string) (Format, error) {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".json", ".jsonc":
		return JSON, nil
	case ".toml":
		return TOML, nil
	case ".yaml", ".yml":
		return YAML, nil
	}
	return "", fmt.Errorf("config file %q: unknown extension %q; use .json, .toml, .yaml or .yml", name, filepath.Ext(name))
}

// parse turns a rendered document into a generic tree.
func parse(data []byte, f Format) (map[string]any, error) {
	var raw any
	switch f {
	case JSON:
		// Comments and trailing commas are accepted (JWCC), as editors
		// write .mirrord/mirrord.json with them and the spec's own full
		// example has a trailing comma.
		std, err := hujson.Standardize(data)
		if err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(std))
		dec.UseNumber()
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
	case TOML:
		if err := toml.Unmarshal(data, &raw); err != nil {
			return nil, fmt.Errorf("invalid TOML: %w", err)
		}
	case YAML:
		if err := yaml.UnmarshalWithOptions(data, &raw, yaml.UseOrderedMap()); err != nil {
			return nil, fmt.Errorf("invalid YAML: %w", err)
		}
	default:
		return nil, fmt.Errorf("unknown config format %q", f)
	}
	values := 0
	tree, err := normalize(raw, &values)
	if err != nil {
		return nil, err
	}
	if tree == nil { // an empty file is an empty config
		return map[string]any{}, nil
	}
	obj, ok := tree.(map[string]any)
	if !ok {
		return nil, Errors{{Path: "", Msg: "a config file must hold an object at the top level, not " + describe(tree)}}
	}
	return obj, nil
}

// maxValues bounds the values of a parsed document (a config has a few
// hundred). YAML's aliases let a document of a few hundred bytes repeat a
// value exponentially often ("billion laughs"): the parser shares the
// repeated value, but the tree built from it would not.
const maxValues = 1_000_000

// normalize maps every format's values onto the small set the decoder
// knows, counting them in *values.
func normalize(v any, values *int) (any, error) {
	if *values++; *values > maxValues {
		return nil, fmt.Errorf("the document holds more than %d values (YAML aliases repeating a value too often?)", maxValues)
	}
	switch v := v.(type) {
	case nil, bool, string, json.Number:
		return v, nil
	case int:
		return json.Number(strconv.Itoa(v)), nil
	case int64:
		return json.Number(strconv.FormatInt(v, 10)), nil
	case uint64:
		return json.Number(strconv.FormatUint(v, 10)), nil
	case float64:
		return json.Number(strconv.FormatFloat(v, 'g', -1, 64)), nil
	case *big.Int:
		return json.Number(v.String()), nil
	case time.Time:
		return v.Format(time.RFC3339Nano), nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			n, err := normalize(e, values)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			n, err := normalize(e, values)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	case yaml.MapSlice:
		out := make(map[string]any, len(v))
		for _, item := range v {
			k, ok := item.Key.(string)
			if !ok {
				k = fmt.Sprint(item.Key)
			}
			n, err := normalize(item.Value, values)
			if err != nil {
				return nil, err
			}
			out[k] = n
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			n, err := normalize(e, values)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = n
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unsupported value %v of type %T", v, v)
	}
}
