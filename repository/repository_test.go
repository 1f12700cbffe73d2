package repository_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

func validVendor() repository.Vendor {
	return repository.Vendor{Name: "acme.io_2-x", Status: repository.VendorOperational, ExtractorVersion: "1.0.0-beta.2+build.5"}
}

func validItem() repository.WorkItem {
	return repository.WorkItem{Type: repository.WorkItemProject, Title: "Ship it", Status: repository.WorkItemActive}
}

func TestValidAcceptsGoodEntities(t *testing.T) {
	if err := validVendor().Validate(); err != nil {
		t.Fatalf("vendor: %v", err)
	}
	v := validVendor()
	v.Name = strings.Repeat("a", 100)
	v.ExtractorVersion = ""
	v.Metadata = map[string]any{"k": []any{1, "two", nil}}
	if err := v.Validate(); err != nil {
		t.Fatalf("vendor at limits: %v", err)
	}
	w := validItem()
	parent := uuid.New()
	w.ParentID, w.Depth, w.CommitHash = &parent, 5, strings.Repeat("0f", 20)
	w.Title = strings.Repeat("é", 200) // characters, not bytes
	if err := w.Validate(); err != nil {
		t.Fatalf("work item at limits: %v", err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	id := uuid.New()
	vendorCases := map[string]func(*repository.Vendor){
		"Name":             func(v *repository.Vendor) { v.Name = "a/b" },
		"Status":           func(v *repository.Vendor) { v.Status = "OPERATIONAL" },
		"Version":          func(v *repository.Vendor) { v.Version = -1 },
		"ExtractorVersion": func(v *repository.Vendor) { v.ExtractorVersion = "1.2" },
		"Metadata":         func(v *repository.Vendor) { v.Metadata = map[string]any{"x": math.NaN()} },
		"CreatedBy":        func(v *repository.Vendor) { v.CreatedBy = "nul\x00" },
	}
	for field, mutate := range vendorCases {
		v := validVendor()
		mutate(&v)
		checkInvalid(t, "vendor", field, v.Validate())
	}
	itemCases := map[string]func(*repository.WorkItem){
		"Type":       func(w *repository.WorkItem) { w.Type = "Project" },
		"Title":      func(w *repository.WorkItem) { w.Title = "\t\n" },
		"Status":     func(w *repository.WorkItem) { w.Status = "" },
		"Version":    func(w *repository.WorkItem) { w.Version = -5 },
		"ParentID":   func(w *repository.WorkItem) { w.ID, w.ParentID = id, &id },
		"Depth":      func(w *repository.WorkItem) { w.Depth = 6 },
		"BranchName": func(w *repository.WorkItem) { w.BranchName = "\xfe" },
		"CommitHash": func(w *repository.WorkItem) { w.CommitHash = strings.Repeat("g", 40) },
		"Metadata": func(w *repository.WorkItem) {
			w.Metadata = map[string]any{"big": strings.Repeat("x", repository.MaxMetadataBytes)}
		},
		"CreatedBy": func(w *repository.WorkItem) { w.CreatedBy = strings.Repeat("c", 101) },
	}
	for field, mutate := range itemCases {
		w := validItem()
		mutate(&w)
		checkInvalid(t, "work item", field, w.Validate())
	}
	bad := repository.VendorStatus("x")
	checkInvalid(t, "vendor filter", "Status", repository.VendorFilter{Status: &bad}.Validate())
	checkInvalid(t, "vendor filter", "Limit", repository.VendorFilter{Limit: -1}.Validate())
	checkInvalid(t, "work item filter", "Offset", repository.WorkItemFilter{Offset: -1}.Validate())
}

func checkInvalid(t *testing.T, what, field string, err error) {
	t.Helper()
	var ve *repository.ValidationError
	if !errors.Is(err, repository.ErrInvalid) || !errors.As(err, &ve) || ve.Field != field || !strings.Contains(err.Error(), field) {
		t.Errorf("%s with bad %s: got %v, want ErrInvalid naming %s", what, field, err, field)
	}
}

func TestValidationErrorWrapsAsInvalid(t *testing.T) {
	err := fmt.Errorf("outer: %w", repository.Invalid("Name", "too %s", "long"))
	if !errors.Is(err, repository.ErrInvalid) || errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("errors.Is mismatch for %v", err)
	}
	if got := err.Error(); got != "outer: invalid Name: too long" {
		t.Fatalf("message = %q", got)
	}
	if got := (&repository.ValidationError{Reason: "no equivalent in LATIN1"}).Error(); got != "invalid value: no equivalent in LATIN1" {
		t.Fatalf("message without a field = %q", got)
	}
}

func TestChildPath(t *testing.T) {
	root := repository.WorkItem{ID: uuid.New()}
	child := repository.WorkItem{ID: uuid.New(), Path: root.ChildPath()}
	if root.ChildPath() != root.ID.String() {
		t.Fatalf("root child path %q", root.ChildPath())
	}
	if want := root.ID.String() + "/" + child.ID.String(); child.ChildPath() != want {
		t.Fatalf("child path %q, want %q", child.ChildPath(), want)
	}
}

// The metadata walk must agree with encoding the metadata: the same values
// pass, the same fail, whatever the path that decides.
func TestMetadataValidationAgreesWithEncoding(t *testing.T) {
	type point struct{ X, Y int }
	deep := nestedObjects(repository.MaxMetadataDepth) // as deep as allowed
	ok := []map[string]any{
		{},
		{"s": "text", "n": 1.5, "b": true, "z": nil, "l": []any{1.0, "x", []any{}}, "m": map[string]any{"k": "v"}},
		{"i": 42, "u": uint8(7), "num": json.Number("12.5")},
		{"struct": point{1, 2}, "f32": float32(1.5)},
		{"bad utf8 is replaced by encoding/json": "\xff"},
		{"near the limit": strings.Repeat("x", repository.MaxMetadataBytes-100)},
		deep,
	}
	bad := map[string]map[string]any{
		"NaN":             {"x": math.NaN()},
		"nested Inf":      {"l": []any{1.0, math.Inf(1)}},
		"float32 NaN":     {"x": float32(math.NaN())},
		"NUL in value":    {"s": "a\x00b"},
		"NUL in key":      {"a\x00": 1.0},
		"NUL deep":        {"m": map[string]any{"l": []any{"\x00"}}},
		"over the limit":  {"s": strings.Repeat("x", repository.MaxMetadataBytes)},
		"escapes over it": {"s": strings.Repeat("\x01", repository.MaxMetadataBytes/5)},
		"channel":         {"c": make(chan int)},
		"func in a slice": {"l": []any{func() {}}},
		"too deep":        nestedObjects(repository.MaxMetadataDepth + 1),
	}
	for i, m := range ok {
		v := validVendor()
		v.Metadata = m
		if err := v.Validate(); err != nil {
			t.Errorf("ok[%d]: %v", i, err)
		}
	}
	for name, m := range bad {
		v := validVendor()
		v.Metadata = m
		checkInvalid(t, "metadata "+name, "Metadata", v.Validate())
	}
}

func BenchmarkValidateMetadata1K(b *testing.B) {
	v := validVendor()
	v.Metadata = map[string]any{
		"region": "eu-west-1", "tags": []any{"retail", "daily", "priority"},
		"endpoint": "https://example.com/api/v2/vendors/17", "notes": strings.Repeat("lorem ipsum dolor sit amet ", 30),
		"limits": map[string]any{"rps": 50.0, "burst": 200.0, "enabled": true},
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

// IsAnswer is the one line between "the store said no" and "the store was
// not heard": a queue dead-letters on one and keeps the write on the other.
func TestIsAnswer(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("get acme: %w", repository.ErrNotFound), true},
		{fmt.Errorf("create: %w", repository.ErrAlreadyExists), true},
		{&repository.ConflictError{Key: "acme", Base: 1}, true},
		{repository.Invalid("Name", "must not be empty"), true},
		{fmt.Errorf("row acme: %w", repository.ErrUnreadable), true},
		{fmt.Errorf("update: %w: dial tcp: refused", repository.ErrUnavailable), false},
		{fmt.Errorf("update: %w", repository.ErrOutcomeUnknown), false},
		{fmt.Errorf("update: %w", context.DeadlineExceeded), false},
		{errors.New("relation \"pgfallback_applied_writes\" does not exist"), false},
	} {
		if got := repository.IsAnswer(tc.err); got != tc.want {
			t.Errorf("IsAnswer(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
