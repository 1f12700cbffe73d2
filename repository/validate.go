package repository

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"unicode/utf8"
)

// validateText checks a free-text field: valid UTF-8, no NUL byte (PostgreSQL
// text cannot hold one) and a length in characters within [min, max].
func validateText(field, s string, min, max int) error {
	if !utf8.ValidString(s) {
		return Invalid(field, "is not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return Invalid(field, "must not contain a NUL byte")
	}
	if n := utf8.RuneCountInString(s); n < min || n > max {
		if min == 0 {
			return Invalid(field, "must be at most %d characters, got %d", max, n)
		}
		return Invalid(field, "must be %d-%d characters, got %d", min, max, n)
	}
	return nil
}

// validateReadVersion checks the Version an Update carries: the one the
// caller read, so at least 1.
func validateReadVersion(version int64) error {
	if version < 1 {
		return Invalid("Version", "must be the version you read (>= 1), got %d", version)
	}
	return nil
}

// validateMetadata checks that m encodes as a JSON object within the size
// and nesting limits, without NUL characters (PostgreSQL's jsonb cannot
// store them). Values that JSON cannot carry (channels, functions, NaN) are
// rejected here, before a store half-writes them.
//
// Metadata normally holds JSON's own data model (what encoding/json decodes
// into: maps, slices, strings, float64, bool, nil). Those are checked by a
// walk that bounds the encoded size from above without encoding; anything
// else, or a bound over the limit, is settled by encoding it. The walk keeps
// validation off the profile of bulk cache writes, where encoding 1 KB of
// metadata cost a third of the time.
//
// Every path refuses nesting past MaxMetadataDepth before it goes deeper,
// so an input cannot make validation recurse, allocate or run for longer
// than its own size allows: a million nested arrays are refused at level
// MaxMetadataDepth+1, not handed to encoding/json (whose recursion would
// overflow the stack).
func validateMetadata(m map[string]any) error {
	if m == nil {
		return nil
	}
	size, sure, err := metadataBound(m, 1)
	if err != nil {
		return err
	}
	if sure && size <= MaxMetadataBytes {
		return nil
	}
	b, jerr := json.Marshal(m)
	if jerr != nil {
		return Invalid("Metadata", "is not representable as JSON: %v", jerr)
	}
	if len(b) > MaxMetadataBytes {
		return Invalid("Metadata", "is %d bytes of JSON, the limit is %d", len(b), MaxMetadataBytes)
	}
	// A json.Marshaler (json.RawMessage, say) chooses its own nesting.
	if d := jsonDepth(b); d > MaxMetadataDepth {
		return tooDeep()
	}
	if strings.Contains(string(b), `\u0000`) {
		return Invalid("Metadata", "must not contain a NUL character (PostgreSQL jsonb cannot store it)")
	}
	return nil
}

func tooDeep() error {
	return Invalid("Metadata", "nests objects and arrays more than %d levels deep", MaxMetadataDepth)
}

// metadataBound returns an upper bound of v's JSON size; depth is the
// nesting level of v's container (the metadata object is level 1). sure is
// false when v holds a type the walk does not know: the caller encodes it,
// after checkDepth has made sure encoding cannot recurse without bound.
func metadataBound(v any, depth int) (size int, sure bool, err error) {
	switch x := v.(type) {
	case nil:
		return 4, true, nil
	case bool:
		return 5, true, nil
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return 0, true, Invalid("Metadata", "must not contain a NUL character (PostgreSQL jsonb cannot store it)")
		}
		return 6*len(x) + 2, true, nil // every byte escaped as \u00XX at worst
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, true, Invalid("Metadata", "is not representable as JSON: unsupported value %v", x)
		}
		return 25, true, nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return 21, true, nil
	case json.Number:
		return len(x), true, nil
	case []any:
		if depth > MaxMetadataDepth {
			return 0, true, tooDeep()
		}
		n, allSure := 2, true
		for _, e := range x {
			k, sure, err := metadataBound(e, depth+1)
			if err != nil {
				return 0, true, err
			}
			n, allSure = n+k+1, allSure && sure
		}
		return n, allSure, nil
	case map[string]any:
		if depth > MaxMetadataDepth {
			return 0, true, tooDeep()
		}
		n, allSure := 2, true
		for key, e := range x {
			if strings.IndexByte(key, 0) >= 0 {
				return 0, true, Invalid("Metadata", "must not contain a NUL character (PostgreSQL jsonb cannot store it)")
			}
			k, sure, err := metadataBound(e, depth+1)
			if err != nil {
				return 0, true, err
			}
			n, allSure = n+6*len(key)+4+k, allSure && sure
		}
		return n, allSure, nil
	}
	return 0, false, checkDepth(reflect.ValueOf(v), depth)
}

// checkDepth refuses a value of a type outside JSON's data model (a
// struct, a typed slice or map, pointers) whose nesting exceeds the limit,
// so that encoding it cannot recurse without bound. Pointers and
// interfaces count as levels too: a cycle of them ends at the limit.
func checkDepth(v reflect.Value, depth int) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Struct, reflect.Map, reflect.Slice, reflect.Array:
		if depth > MaxMetadataDepth {
			return tooDeep()
		}
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return checkDepth(v.Elem(), depth+1)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				if err := checkDepth(v.Field(i), depth+1); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if err := checkDepth(it.Value(), depth+1); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return nil // encoded as a base64 string
		}
		for i := range v.Len() {
			if err := checkDepth(v.Index(i), depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// jsonDepth returns the deepest nesting of objects and arrays in valid JSON
// text, in one pass without recursion.
func jsonDepth(b []byte) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}
