package contract

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/domainevents/domainevents/events"
)

// Dialect is the JSON Schema version of the documents [JSONSchemas] writes.
const Dialect = "https://json-schema.org/draft/2020-12/schema"

// Schemer is implemented by a type that describes its own JSON encoding: a
// type with a MarshalJSON of its own that changes its shape (money written
// as a number, a status limited to some values), or one whose values obey
// rules reflection cannot see. JSONSchema returns a JSON Schema (2020-12)
// object, as JSON-encodable values (map[string]any, []any, strings,
// numbers, booleans); it is called on the zero value and must return a new
// map each time. events.Money and events.OrderStatus implement it.
type Schemer interface {
	JSONSchema() map[string]any
}

// The types reflection knows by themselves.
var (
	schemerType = reflect.TypeFor[Schemer]()
	timeType    = reflect.TypeFor[time.Time]()
	rawType     = reflect.TypeFor[json.RawMessage]()
	numberType  = reflect.TypeFor[json.Number]()
	jsonMarsh   = reflect.TypeFor[json.Marshaler]()
	textMarsh   = reflect.TypeFor[encoding.TextMarshaler]()
)

// TimestampPattern is the pattern of the envelope's timestamp in the
// generated schemas: an RFC 3339 time in UTC ("Z"), as [events.Encode]
// writes it (with milliseconds). Consumers written with this library also
// accept an offset; the schema describes what producers send.
const TimestampPattern = `^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$`

// EventSchema returns the JSON Schema (2020-12) of the wire body of the
// event named name whose Go type is t: the envelope ({"name", "id",
// "timestamp", "data"}) with t's JSON encoding under "data". The document
// has "$schema" but no "$id". Errors name the Go field that cannot be
// described and why.
func EventSchema(name string, t reflect.Type) (map[string]any, error) {
	if name == "" {
		return nil, fmt.Errorf("contract: event name is empty")
	}
	if t == nil {
		return nil, fmt.Errorf("contract: event %s: type is nil", name)
	}
	g := generator{active: map[reflect.Type]bool{}}
	data, err := g.schema(t, t.String())
	if err != nil {
		return nil, fmt.Errorf("contract: event %s: %w", name, err)
	}
	return map[string]any{
		"$schema":     Dialect,
		"title":       name,
		"description": "The wire body of the event " + name + ": the envelope, with the event under data.",
		"type":        "object",
		"required":    []any{"name", "id", "timestamp", "data"},
		"properties": map[string]any{
			"name": map[string]any{"type": "string", "const": name, "description": "The event's name; selects the type of data."},
			"id": map[string]any{"type": "string", "minLength": 1, "format": "uuid",
				"description": "A UUID, unique per event and kept across redeliveries: the key consumers deduplicate on."},
			"timestamp": map[string]any{"type": "string", "format": "date-time", "pattern": TimestampPattern,
				"description": "When the event was first published: RFC 3339 in UTC with milliseconds (2026-11-30T10:15:30.123Z)."},
			"data": data,
		},
	}, nil
}

// generator walks Go types as encoding/json encodes them.
type generator struct {
	active map[reflect.Type]bool // the struct types being described: a cycle is an error
}

// schema returns the schema of t's JSON encoding; at names the place in
// the event (for errors).
func (g generator) schema(t reflect.Type, at string) (map[string]any, error) {
	if t.Kind() == reflect.Pointer { // nil is null, whatever the type says of its values
		s, err := g.schema(t.Elem(), at)
		if err != nil {
			return nil, err
		}
		return nullable(s), nil
	}
	if s, ok, err := ownSchema(t); ok || err != nil {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		return s, nil
	}
	switch t {
	case timeType:
		return map[string]any{"type": "string", "format": "date-time"}, nil
	case rawType:
		return map[string]any{}, nil
	case numberType:
		return map[string]any{"type": "number"}, nil
	}
	marshaler := t.Implements(jsonMarsh) || reflect.PointerTo(t).Implements(jsonMarsh)
	if !marshaler && (t.Implements(textMarsh) || reflect.PointerTo(t).Implements(textMarsh)) {
		return map[string]any{"type": "string"}, nil // encoding/json writes MarshalText as a string
	}
	if marshaler && (t.Kind() != reflect.Struct || zeroEncoding(t) == nil) {
		// A struct's MarshalJSON is trusted to keep its fields (as
		// events.OrderCreated's does) only if its zero value encodes to an
		// object, whose keys object then checks.
		return nil, fmt.Errorf("%s: %s has its own MarshalJSON: give it a method JSONSchema() map[string]any (contract.Schemer) saying what it writes", at, t)
	}
	switch t.Kind() {
	case reflect.Bool:
		return map[string]any{"type": "boolean"}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return map[string]any{"type": "integer"}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return map[string]any{"type": "integer", "minimum": 0}, nil
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}, nil
	case reflect.String:
		return map[string]any{"type": "string"}, nil
	case reflect.Interface:
		return map[string]any{}, nil // any JSON value
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && !t.Elem().Implements(jsonMarsh) && !t.Elem().Implements(textMarsh) {
			if t.Kind() == reflect.Slice {
				return map[string]any{"type": "string", "contentEncoding": "base64"}, nil // []byte
			}
		}
		items, err := g.schema(t.Elem(), at+"[]")
		if err != nil {
			return nil, err
		}
		s := map[string]any{"type": "array", "items": items}
		if t.Kind() == reflect.Array {
			s["minItems"], s["maxItems"] = t.Len(), t.Len()
		}
		return s, nil
	case reflect.Map:
		switch k := t.Key(); {
		case k.Kind() == reflect.String, k.Implements(textMarsh):
		case k.Kind() >= reflect.Int && k.Kind() <= reflect.Uintptr:
		default:
			return nil, fmt.Errorf("%s: map key type %s cannot be encoded as JSON", at, k)
		}
		v, err := g.schema(t.Elem(), at+"[key]")
		if err != nil {
			return nil, err
		}
		return map[string]any{"type": "object", "additionalProperties": v}, nil
	case reflect.Struct:
		return g.object(t, at)
	}
	return nil, fmt.Errorf("%s: %s (%s) cannot be encoded as JSON", at, t, t.Kind())
}

// ownSchema returns the schema a Schemer gives, copied so that the caller
// can change it.
func ownSchema(t reflect.Type) (map[string]any, bool, error) {
	var v reflect.Value
	switch {
	case t.Implements(schemerType):
		v = reflect.New(t).Elem()
	case reflect.PointerTo(t).Implements(schemerType):
		v = reflect.New(t)
	default:
		return nil, false, nil
	}
	s := v.Interface().(Schemer).JSONSchema()
	if s == nil {
		return nil, true, fmt.Errorf("%s.JSONSchema returned nil", t)
	}
	c, err := deepCopy(s)
	if err != nil {
		return nil, true, fmt.Errorf("%s.JSONSchema: %w", t, err)
	}
	return c, true, nil
}

// deepCopy copies a JSON value through its encoding, keeping numbers as
// written (json.Number).
func deepCopy(s map[string]any) (map[string]any, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var c map[string]any
	if err := d.Decode(&c); err != nil {
		return nil, err
	}
	return c, nil
}

// nullable returns s that also accepts null.
func nullable(s map[string]any) map[string]any {
	_, hasEnum := s["enum"]
	_, hasConst := s["const"]
	switch typ := s["type"].(type) {
	case string:
		if !hasEnum && !hasConst {
			s["type"] = []any{typ, "null"}
			return s
		}
	case []any:
		if !hasEnum && !hasConst {
			if !slices.Contains(typ, any("null")) {
				s["type"] = append(typ, "null")
			}
			return s
		}
	}
	if len(s) == 0 {
		return s // anything, null included
	}
	return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
}

// field is a struct field as encoding/json sees it.
type field struct {
	name      string
	index     []int
	typ       reflect.Type
	tag       string // the jsonschema tag
	tagged    bool   // named by a json tag
	omitempty bool
	quoted    bool // ,string
}

// object describes a struct: its fields as encoding/json encodes them.
func (g generator) object(t reflect.Type, at string) (map[string]any, error) {
	if g.active[t] {
		return nil, fmt.Errorf("%s: %s contains itself: give it a method JSONSchema() map[string]any (contract.Schemer)", at, t)
	}
	g.active[t] = true
	defer delete(g.active, t)

	fields := jsonFields(t)
	zero := zeroEncoding(t) // nil when the zero value does not encode to an object
	props := map[string]any{}
	var required []any
	for _, f := range fields {
		where := at + "." + f.name
		var s map[string]any
		var err error
		if f.quoted && quotable(f.typ) {
			s = map[string]any{"type": "string"} // ,string: the value as a JSON string
		} else if s, err = g.schema(f.typ, where); err != nil {
			return nil, err
		}
		if zero != nil {
			raw, present := zero[f.name]
			if !present && !f.omitempty && !embeddedNil(t, f.index) {
				return nil, fmt.Errorf("%s: the zero %s encodes no %q: its MarshalJSON changes its shape; give it a method JSONSchema() map[string]any (contract.Schemer)", where, t, f.name)
			}
			if present && bytes.Equal(raw, []byte("null")) && !isNullable(s) {
				s = nullable(s) // e.g. a nil slice, which encoding/json writes as null
			}
		} else if k := f.typ.Kind(); (k == reflect.Slice || k == reflect.Map) && !isNullable(s) {
			s = nullable(s)
		}
		req, err := applyTag(s, f.tag)
		if err != nil {
			return nil, fmt.Errorf("%s: jsonschema tag %q: %w", where, f.tag, err)
		}
		if req {
			required = append(required, f.name)
		}
		props[f.name] = s
	}
	s := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		s["required"] = required
	}
	return s, nil
}

// zeroEncoding returns the keys and values the zero t encodes to, or nil
// when it cannot be encoded as an object (its MarshalJSON fails on it).
func zeroEncoding(t reflect.Type) map[string]json.RawMessage {
	b, err := json.Marshal(reflect.New(t).Elem().Interface())
	if err != nil {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

// embeddedNil reports whether the field at index is reached through an
// embedded pointer, which is nil in the zero value (encoding/json then
// writes none of its fields).
func embeddedNil(t reflect.Type, index []int) bool {
	for _, i := range index[:len(index)-1] {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Pointer {
			return true
		}
		t = f.Type
	}
	return false
}

// isNullable reports whether s already accepts null.
func isNullable(s map[string]any) bool {
	switch typ := s["type"].(type) {
	case string:
		return typ == "null"
	case []any:
		return slices.Contains(typ, any("null"))
	}
	_, any := s["anyOf"]
	return any || len(s) == 0
}

// quotable reports whether ,string applies to t (encoding/json ignores it
// for other kinds).
func quotable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.String, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return false
}

// applyTag applies a field's jsonschema tag to s and reports whether it
// says required. The tag is a comma-separated list: required,
// minLength=N, minimum=N, format=NAME, const=VALUE (a string, or the
// number it spells for a numeric field).
func applyTag(s map[string]any, tag string) (required bool, err error) {
	if tag == "" {
		return false, nil
	}
	for part := range strings.SplitSeq(tag, ",") {
		key, val, hasVal := strings.Cut(part, "=")
		switch {
		case key == "required" && !hasVal:
			required = true
		case key == "minLength" && hasVal:
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return false, fmt.Errorf("minLength %q: want a non-negative integer", val)
			}
			s["minLength"] = n
		case key == "minimum" && hasVal:
			if _, err := strconv.ParseFloat(val, 64); err != nil {
				return false, fmt.Errorf("minimum %q: want a number", val)
			}
			s["minimum"] = json.Number(val)
		case key == "format" && hasVal && val != "":
			s["format"] = val
		case key == "const" && hasVal:
			if typ, _ := s["type"].(string); typ == "number" || typ == "integer" {
				if _, err := strconv.ParseFloat(val, 64); err != nil {
					return false, fmt.Errorf("const %q: want a number", val)
				}
				s["const"] = json.Number(val)
			} else {
				s["const"] = val
			}
		default:
			return false, fmt.Errorf("unknown option %q (known: required, minLength=N, minimum=N, format=NAME, const=VALUE)", part)
		}
	}
	return required, nil
}

// jsonFields lists t's fields as encoding/json encodes them: exported (or
// embedded structs), named by their json tag, embedded structs' fields
// promoted, a name at a shallower depth (or tagged, at the same depth)
// hiding the others, names two fields claim equally dropped.
func jsonFields(t reflect.Type) []field {
	type candidate struct {
		field
		depth int
	}
	var all []candidate
	var walk func(t reflect.Type, index []int, depth int, visited map[reflect.Type]bool)
	walk = func(t reflect.Type, index []int, depth int, visited map[reflect.Type]bool) {
		if visited[t] {
			return
		}
		visited[t] = true
		defer delete(visited, t)
		for i := range t.NumField() {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			ft := sf.Type
			if sf.Anonymous {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if !sf.IsExported() && et.Kind() != reflect.Struct {
					continue
				}
				if name == "" && et.Kind() == reflect.Struct {
					walk(et, append(slices.Clone(index), i), depth+1, visited)
					continue
				}
			} else if !sf.IsExported() {
				continue
			}
			f := field{name: name, index: append(slices.Clone(index), i), typ: ft, tag: sf.Tag.Get("jsonschema"), tagged: name != ""}
			if f.name == "" {
				f.name = sf.Name
			}
			for o := range strings.SplitSeq(opts, ",") {
				switch o {
				case "omitempty", "omitzero":
					f.omitempty = true
				case "string":
					f.quoted = true
				}
			}
			all = append(all, candidate{f, depth})
		}
	}
	walk(t, nil, 0, map[reflect.Type]bool{})

	byName := map[string][]candidate{}
	var order []string
	for _, c := range all {
		if _, seen := byName[c.name]; !seen {
			order = append(order, c.name)
		}
		byName[c.name] = append(byName[c.name], c)
	}
	var out []field
	for _, name := range order {
		cs := byName[name]
		minDepth := cs[0].depth
		for _, c := range cs {
			minDepth = min(minDepth, c.depth)
		}
		var best []candidate
		for _, c := range cs {
			if c.depth == minDepth {
				best = append(best, c)
			}
		}
		if len(best) > 1 {
			var tagged []candidate
			for _, c := range best {
				if c.tagged {
					tagged = append(tagged, c)
				}
			}
			best = tagged
		}
		if len(best) == 1 {
			out = append(out, best[0].field)
		}
	}
	return out
}

// aggregateField returns the JSON name of the top-level string field of t
// that t's AggregateID returns, found by giving each string field its own
// name as value; "" when AggregateID returns something else.
func aggregateField(t reflect.Type) string {
	if t.Kind() != reflect.Struct {
		return ""
	}
	v := reflect.New(t).Elem()
	names := map[string]string{}
	for _, f := range jsonFields(t) {
		if len(f.index) != 1 || f.typ.Kind() != reflect.String {
			continue
		}
		marker := "\x00contract:" + f.name
		fv := v.Field(f.index[0])
		if !fv.CanSet() {
			continue
		}
		fv.SetString(marker)
		names[marker] = f.name
	}
	e, ok := v.Interface().(events.Event)
	if !ok {
		return ""
	}
	return names[safeAggregateID(e)]
}

// safeAggregateID calls e.AggregateID, a panic in it (a method that
// expects a filled-in event) giving "".
func safeAggregateID(e events.Event) (id string) {
	defer func() {
		if recover() != nil {
			id = ""
		}
	}()
	return e.AggregateID()
}
