package repository

import (
	"encoding/json"
	"math"
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

// validateMetadata checks that m encodes as a JSON object within the size
// limit, without NUL characters (PostgreSQL's jsonb cannot store them).
// Values that JSON cannot carry (channels, functions, NaN) are rejected here,
// before a store half-writes them.
//
// Metadata normally holds JSON's own data model (what encoding/json decodes
// into: maps, slices, strings, float64, bool, nil). Those are checked by a
// walk that bounds the encoded size from above without encoding; anything
// else, or a bound over the limit, is settled by encoding it. The walk keeps
// validation off the profile of bulk cache writes, where encoding 1 KB of
// metadata cost a third of the time.
func validateMetadata(m map[string]any) error {
	if m == nil {
		return nil
	}
	size, sure, err := metadataBound(m, 0)
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
	if strings.Contains(string(b), `\u0000`) {
		return Invalid("Metadata", "must not contain a NUL character (PostgreSQL jsonb cannot store it)")
	}
	return nil
}

// maxWalkDepth stops the walk on absurdly deep (or cyclic) values, which
// encoding/json then judges.
const maxWalkDepth = 100

// metadataBound returns an upper bound of v's JSON size. sure is false when
// v holds a type the walk does not know, or is too deep: the caller encodes.
func metadataBound(v any, depth int) (size int, sure bool, err error) {
	if depth > maxWalkDepth {
		return 0, false, nil
	}
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
		n := 2
		for _, e := range x {
			k, sure, err := metadataBound(e, depth+1)
			if err != nil || !sure {
				return 0, sure, err
			}
			n += k + 1
		}
		return n, true, nil
	case map[string]any:
		n := 2
		for key, e := range x {
			if strings.IndexByte(key, 0) >= 0 {
				return 0, true, Invalid("Metadata", "must not contain a NUL character (PostgreSQL jsonb cannot store it)")
			}
			k, sure, err := metadataBound(e, depth+1)
			if err != nil || !sure {
				return 0, sure, err
			}
			n += 6*len(key) + 4 + k
		}
		return n, true, nil
	}
	return 0, false, nil
}
