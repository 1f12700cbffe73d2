package repository_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/pgfallback/pgfallback/repository"
)

// nestedObjects returns a Metadata object nested levels deep: {"d":{"d":{}}}
// is 3 levels.
func nestedObjects(levels int) map[string]any {
	root := map[string]any{}
	cur := root
	for range levels - 1 {
		next := map[string]any{}
		cur["d"] = next
		cur = next
	}
	return root
}

// nestedArrays returns {"a": [[...[]...]]} with arrays inside the object,
// levels deep in all.
func nestedArrays(levels int) map[string]any {
	var v any = []any{}
	for range levels - 2 {
		v = []any{v}
	}
	return map[string]any{"a": v}
}

// A million nested arrays crashed the process (stack overflow in
// encoding/json); ten thousand and one passed validation but could not be
// read back from PostgreSQL. Both are refused, naming the field.
func TestMetadataNestingIsBounded(t *testing.T) {
	for _, levels := range []int{repository.MaxMetadataDepth + 1, 10_001, 20_000, 1_000_000} {
		v := validVendor()
		v.Metadata = nestedArrays(levels)
		checkInvalid(t, "arrays nested deep", "Metadata", v.Validate())
		w := validItem()
		w.Metadata = nestedObjects(levels)
		checkInvalid(t, "objects nested deep", "Metadata", w.Validate())
	}
	v := validVendor()
	v.Metadata = nestedArrays(repository.MaxMetadataDepth)
	if err := v.Validate(); err != nil {
		t.Fatalf("metadata exactly MaxMetadataDepth deep: %v", err)
	}
}

// Values outside JSON's data model go through encoding/json; they must not
// reach it deeper than the limit either.
func TestMetadataNestingOfOtherTypes(t *testing.T) {
	type node struct{ Next *node }
	chain := &node{}
	for range 100_000 {
		chain = &node{Next: chain}
	}
	cyclic := []any{nil}
	cyclic[0] = cyclic
	typed := [][]int{{1}} // deep only through its typed leaves
	bad := map[string]map[string]any{
		"pointer chain":             {"n": chain},
		"cycle through a slice":     {"c": cyclic},
		"raw JSON deeper than that": {"r": json.RawMessage(strings.Repeat("[", 100) + strings.Repeat("]", 100))},
		"typed slices under arrays": {"a": wrap(typed, repository.MaxMetadataDepth-2)},
	}
	for name, m := range bad {
		v := validVendor()
		v.Metadata = m
		checkInvalid(t, name, "Metadata", v.Validate())
	}
	v := validVendor()
	v.Metadata = map[string]any{"r": json.RawMessage(`{"ok":[1,2,{"three":3}]}`), "n": &node{Next: &node{}}}
	if err := v.Validate(); err != nil {
		t.Fatalf("shallow non-native metadata: %v", err)
	}
}

// wrap puts v inside levels []any arrays.
func wrap(v any, levels int) any {
	for range levels {
		v = []any{v}
	}
	return v
}

// FuzzMetadataNesting builds metadata from a shape string ('[' opens an
// array, '{' an object, ']' and '}' close one, anything else adds a leaf)
// and checks that validation never crashes, that it refuses exactly what
// nests past MaxMetadataDepth, and that what it accepts is JSON that
// encoding/json (and so pgx) reads back.
func FuzzMetadataNesting(f *testing.F) {
	for _, seed := range []string{"", "x", "[[[x]]]", "{[{[x]}]}", strings.Repeat("[", 63), strings.Repeat("[", 64),
		strings.Repeat("{", 200), strings.Repeat("[{", 40) + "x" + strings.Repeat("]}", 40), "[x]{y}[[z]]"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, shape string) {
		if len(shape) > 1<<16 {
			return
		}
		m, depth := buildMetadata(shape)
		v := validVendor()
		v.Metadata = m
		err := v.Validate()
		if depth > repository.MaxMetadataDepth {
			var ve *repository.ValidationError
			if !errors.Is(err, repository.ErrInvalid) || !errors.As(err, &ve) || ve.Field != "Metadata" {
				t.Fatalf("depth %d accepted or refused for another reason: %v", depth, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("depth %d refused: %v", depth, err)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("accepted metadata does not encode: %v", err)
		}
		var back map[string]any
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("accepted metadata does not decode: %v", err)
		}
	})
}

// buildMetadata turns a shape into metadata under one key, and returns the
// nesting depth counting the metadata object as level 1.
func buildMetadata(shape string) (map[string]any, int) {
	root := map[string]any{}
	type frame struct {
		arr *[]any
		obj map[string]any
	}
	stack := []frame{{obj: root}}
	deepest := 1
	add := func(v any) {
		top := stack[len(stack)-1]
		if top.arr != nil {
			*top.arr = append(*top.arr, v)
		} else {
			// Keys as short as their count allows: one that grew with it
			// made a wide shape quadratic, megabytes of keys that stalled
			// the fuzzer for minutes.
			top.obj[strconv.Itoa(len(top.obj))] = v
		}
	}
	for _, c := range shape {
		switch c {
		case '[':
			arr := &[]any{}
			add(arr) // replaced by the slice's value when closed
			stack = append(stack, frame{arr: arr})
		case '{':
			obj := map[string]any{}
			add(obj)
			stack = append(stack, frame{obj: obj})
		case ']', '}':
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
		default:
			add(float64(c)) // a number: the shape tests nesting, not text
		}
		deepest = max(deepest, len(stack))
	}
	return resolve(root).(map[string]any), deepest
}

// resolve replaces the *[]any placeholders with their slices, iteratively
// deep enough for any shape the fuzzer makes (it recurses, but on test
// data bounded by the shape's length).
func resolve(v any) any {
	switch x := v.(type) {
	case *[]any:
		out := make([]any, len(*x))
		for i, e := range *x {
			out[i] = resolve(e)
		}
		return out
	case map[string]any:
		for k, e := range x {
			x[k] = resolve(e)
		}
	}
	return v
}
