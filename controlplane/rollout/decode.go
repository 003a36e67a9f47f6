package rollout

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// MaxSpecBytes bounds a rollout spec's encoding.
const MaxSpecBytes = 256 << 10

// maxNodes bounds the number of YAML nodes a spec may hold, so a small
// document cannot make the decoder walk a huge tree.
const maxNodes = 20000

// ErrInvalidSpec is wrapped by every error Parse returns.
var ErrInvalidSpec = errors.New("invalid rollout spec")

// decodeStrict decodes a YAML (or JSON, a subset) document into v, a
// pointer to a struct whose fields carry yaml tags. Unlike yaml.Unmarshal
// it names the field of every problem by its path ("gates.error_rate.max")
// and line, and refuses unknown fields, duplicate keys, aliases, several
// documents and values of the wrong type.
func decodeStrict(data []byte, v any) error {
	if len(data) > MaxSpecBytes {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidSpec, len(data), MaxSpecBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalidSpec, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return fmt.Errorf("%w: more than one document", ErrInvalidSpec)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) != 1 {
			return fmt.Errorf("%w: empty document", ErrInvalidSpec)
		}
		root = root.Content[0]
	}
	d := &decoder{}
	return d.value(root, reflect.ValueOf(v).Elem(), "")
}

type decoder struct{ nodes int }

var durationType = reflect.TypeOf(time.Duration(0))

func fieldErr(n *yaml.Node, path, format string, args ...any) error {
	if path == "" {
		path = "the document"
	}
	return fmt.Errorf("%w: %s (line %d): %s", ErrInvalidSpec, path, n.Line, fmt.Sprintf(format, args...))
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		s := n.Value
		if len(s) > 40 {
			s = s[:40] + "…"
		}
		return strconv.Quote(s)
	}
	return "something else"
}

func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) error {
	d.nodes++
	if d.nodes > maxNodes {
		return fmt.Errorf("%w: more than %d values", ErrInvalidSpec, maxNodes)
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return fieldErr(n, path, "anchors and aliases are not allowed")
	}
	if v.Kind() == reflect.Pointer {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return fieldErr(n, path, "must not be null")
		}
		p := reflect.New(v.Type().Elem())
		if err := d.value(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			return fieldErr(n, path, "want a duration such as \"90s\" or \"1h30m\", got %s", describe(n))
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			return fieldErr(n, path, "want a duration such as \"90s\" or \"1h30m\", got %s", describe(n))
		}
		v.SetInt(int64(dur))
		return nil
	case v.Kind() == reflect.Struct:
		return d.object(n, v, path)
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fieldErr(n, path, "want a list, got %s", describe(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := d.value(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case v.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return fieldErr(n, path, "want a mapping, got %s", describe(n))
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, c := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return fieldErr(k, path, "keys must be plain strings")
			}
			kv := reflect.ValueOf(k.Value)
			if m.MapIndex(kv).IsValid() {
				return fieldErr(k, join(path, k.Value), "duplicate key")
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			if err := d.value(c, ev, join(path, k.Value)); err != nil {
				return err
			}
			m.SetMapIndex(kv, ev)
		}
		v.Set(m)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fieldErr(n, path, "want %s, got %s", kindName(v.Kind()), describe(n))
	}
	switch v.Kind() {
	case reflect.String:
		if n.Tag != "!!str" {
			return fieldErr(n, path, "want a string, got %s (quote it)", describe(n))
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Tag != "!!bool" {
			return fieldErr(n, path, "want true or false, got %s", describe(n))
		}
		v.SetBool(n.Value == "true" || n.Value == "True" || n.Value == "TRUE")
	case reflect.Int, reflect.Int64:
		x, err := strconv.ParseInt(n.Value, 10, 64)
		if n.Tag != "!!int" || err != nil {
			return fieldErr(n, path, "want a whole number, got %s", describe(n))
		}
		v.SetInt(x)
	case reflect.Uint64, reflect.Uint32, reflect.Uint:
		x, err := strconv.ParseUint(n.Value, 10, 64)
		if n.Tag != "!!int" || err != nil || v.OverflowUint(x) {
			return fieldErr(n, path, "want a whole number ≥ 0, got %s", describe(n))
		}
		v.SetUint(x)
	case reflect.Float64:
		x, err := strconv.ParseFloat(n.Value, 64)
		if (n.Tag != "!!int" && n.Tag != "!!float") || err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return fieldErr(n, path, "want a finite number, got %s", describe(n))
		}
		v.SetFloat(x)
	default:
		return fieldErr(n, path, "cannot be decoded (a bug: %s)", v.Kind())
	}
	return nil
}

func kindName(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float64:
		return "a number"
	}
	return "a whole number"
}

func (d *decoder) object(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return fieldErr(n, path, "want a mapping, got %s", describe(n))
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			fields[name] = i
			names = append(names, name)
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, c := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return fieldErr(k, path, "keys must be plain strings")
		}
		fp := join(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			return fieldErr(k, fp, "unknown field (known: %s)", strings.Join(names, ", "))
		}
		if seen[k.Value] {
			return fieldErr(k, fp, "duplicate key")
		}
		seen[k.Value] = true
		if err := d.value(c, v.Field(idx), fp); err != nil {
			return err
		}
	}
	return nil
}
