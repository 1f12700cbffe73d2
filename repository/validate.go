package repository

import (
	"encoding/json"
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
// limit. Encoding here catches values that JSON cannot carry (channels,
// functions, NaN) before a store half-writes them.
func validateMetadata(m map[string]any) error {
	if m == nil {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return Invalid("Metadata", "is not representable as JSON: %v", err)
	}
	if len(b) > MaxMetadataBytes {
		return Invalid("Metadata", "is %d bytes of JSON, the limit is %d", len(b), MaxMetadataBytes)
	}
	if strings.Contains(string(b), `\u0000`) {
		return Invalid("Metadata", "must not contain a NUL character (PostgreSQL jsonb cannot store it)")
	}
	return nil
}
