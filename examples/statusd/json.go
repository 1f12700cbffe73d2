package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/pgfallback/pgfallback/repository"
)

// maxBody bounds a request body: metadata may be up to 1 MiB of JSON, the
// rest of an entity is small. Without a bound a client could make the
// process buffer any amount before validation runs.
const maxBody = repository.MaxMetadataBytes + 64<<10

// decodeJSON reads one JSON object from the request body into dst.
//
// A body that cannot be read as the resource's shape — not JSON, not one
// object, a field the resource does not have — is 400: the client sent
// something other than what the API documents. Well-formed JSON with a
// value of the wrong type is 422 naming the field, like any other invalid
// value (see errors.go).
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(r.Body)
	// Unknown fields are refused so that a typo ("extractorVersion") is
	// an error instead of a field silently left empty by a PUT.
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return bodyError(err)
	}
	if err := dec.Decode(&json.RawMessage{}); !errors.Is(err, io.EOF) {
		if err != nil {
			return bodyError(err)
		}
		return &apiError{status: http.StatusBadRequest, code: "malformed_json", message: "the body must hold a single JSON object"}
	}
	return nil
}

func bodyError(err error) error {
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return &apiError{status: http.StatusRequestEntityTooLarge, code: "body_too_large",
			message: fmt.Sprintf("the body must be at most %d bytes", tooBig.Limit)}
	case errors.Is(err, io.EOF):
		return &apiError{status: http.StatusBadRequest, code: "malformed_json", message: "the body is empty: want a JSON object"}
	case errors.As(err, &syntax):
		return &apiError{status: http.StatusBadRequest, code: "malformed_json",
			message: fmt.Sprintf("the body is not valid JSON (at byte %d): %v", syntax.Offset, syntax)}
	case errors.As(err, &typ) && typ.Field == "":
		return &apiError{status: http.StatusBadRequest, code: "malformed_json",
			message: fmt.Sprintf("the body must be a JSON object, not a JSON %s", typ.Value)}
	case errors.As(err, &typ):
		return &apiError{status: http.StatusUnprocessableEntity, code: "invalid", field: typ.Field,
			message: fmt.Sprintf("%s must be %s, not a JSON %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for it; the field is quoted.
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &apiError{status: http.StatusBadRequest, code: "unknown_field", field: field,
			message: fmt.Sprintf("the resource has no field %q", field)}
	}
	// io.ErrUnexpectedEOF (a truncated body) and the rest: encoding/json's
	// messages describe the input, never this process.
	return &apiError{status: http.StatusBadRequest, code: "malformed_json", message: "the body is not valid JSON: " + err.Error()}
}

// jsonKind names a Go kind the way a JSON client thinks of it.
func jsonKind(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "a number"
	case kind == "string":
		return "a string"
	case kind == "bool":
		return "true or false"
	case kind == "map", kind == "struct":
		return "an object"
	case kind == "slice", kind == "array":
		return "an array"
	}
	return "another type"
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the status is sent; a failed write means the client left
}
