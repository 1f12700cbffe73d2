package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

func newVendor(name string) repository.Vendor {
	return repository.Vendor{
		Name:             name,
		Status:           repository.VendorOperational,
		ExtractorVersion: "2.3.1",
		Metadata:         map[string]any{"region": "eu", "weights": []any{1.0, 2.5}, "nested": map[string]any{"ok": true}},
		CreatedBy:        "tester",
	}
}

func TestVendorCreateGet(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).Vendors()

	in := newVendor("acme")
	created, err := repo.Create(ctx, in)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if created.ID == uuid.Nil || created.Version != 1 || created.CreatedAt.IsZero() || !created.UpdatedAt.Equal(created.CreatedAt) {
		t.Fatalf("Create returned %+v: want an id, version 1 and timestamps", created)
	}
	got, err := repo.Get(ctx, "acme")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !reflect.DeepEqual(got, created) {
		t.Fatalf("Get = %+v\nwant %+v", got, created)
	}
	if !reflect.DeepEqual(got.Metadata, in.Metadata) {
		t.Fatalf("metadata round trip: got %#v, want %#v", got.Metadata, in.Metadata)
	}

	if _, err := repo.Get(ctx, "nobody"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Get missing: got %v, want ErrNotFound", err)
	}
	if _, err := repo.Create(ctx, newVendor("acme")); !errors.Is(err, repository.ErrAlreadyExists) {
		t.Fatalf("Create duplicate name: got %v, want ErrAlreadyExists", err)
	}
	dupID := newVendor("other")
	dupID.ID = created.ID
	if _, err := repo.Create(ctx, dupID); !errors.Is(err, repository.ErrAlreadyExists) {
		t.Fatalf("Create duplicate id: got %v, want ErrAlreadyExists", err)
	}
}

func TestVendorNilMetadataIsEmptyObject(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).Vendors()
	v := newVendor("plain")
	v.Metadata = nil
	created, err := repo.Create(ctx, v)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if created.Metadata == nil || len(created.Metadata) != 0 {
		t.Fatalf("metadata = %#v, want an empty, non-nil map", created.Metadata)
	}
}

func TestVendorUpdate(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).Vendors()
	created, err := repo.Create(ctx, newVendor("acme"))
	if err != nil {
		t.Fatal(err)
	}

	change := created
	change.Status = repository.VendorBroken
	change.ExtractorVersion = "3.0.0-rc.1"
	change.Metadata = map[string]any{"reason": "html changed"}
	change.CreatedBy = "someone else" // kept from the stored row
	updated, err := repo.Update(ctx, change)
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if updated.Version != 2 || updated.Status != repository.VendorBroken || updated.ExtractorVersion != "3.0.0-rc.1" ||
		updated.CreatedBy != "tester" || !updated.CreatedAt.Equal(created.CreatedAt) || updated.UpdatedAt.Before(created.UpdatedAt) {
		t.Fatalf("Update returned %+v", updated)
	}
	if got, _ := repo.Get(ctx, "acme"); !reflect.DeepEqual(got, updated) {
		t.Fatalf("Get after Update = %+v, want %+v", got, updated)
	}

	// The version the caller read is now stale.
	if _, err := repo.Update(ctx, change); !errors.Is(err, repository.ErrConflict) {
		t.Fatalf("Update with stale version: got %v, want ErrConflict", err)
	}
	missing := newVendor("ghost")
	missing.Version = 1
	if _, err := repo.Update(ctx, missing); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Update missing: got %v, want ErrNotFound", err)
	}
	zero := updated
	zero.Version = 0
	if _, err := repo.Update(ctx, zero); !errors.Is(err, repository.ErrInvalid) || !strings.Contains(err.Error(), "Version") {
		t.Fatalf("Update with version 0: got %v, want ErrInvalid naming Version", err)
	}
}

func TestVendorConcurrentUpdatesExactlyOneWins(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).Vendors()
	created, err := repo.Create(ctx, newVendor("race"))
	if err != nil {
		t.Fatal(err)
	}
	const writers = 16
	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := created
			v.Metadata = map[string]any{"writer": float64(i)}
			<-start
			_, errs[i] = repo.Update(ctx, v)
		}()
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, repository.ErrConflict):
			t.Errorf("writer %d: got %v, want nil or ErrConflict", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers won, want exactly 1", wins)
	}
	if got, _ := repo.Get(ctx, "race"); got.Version != 2 {
		t.Fatalf("version after race = %d, want 2", got.Version)
	}
}

func TestVendorDelete(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).Vendors()
	if _, err := repo.Create(ctx, newVendor("gone")); err != nil {
		t.Fatal(err)
	}
	if err := repo.Delete(ctx, "gone"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := repo.Get(ctx, "gone"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("Get after Delete: got %v, want ErrNotFound", err)
	}
	if err := repo.Delete(ctx, "gone"); !errors.Is(err, repository.ErrNotFound) {
		t.Fatalf("second Delete: got %v, want ErrNotFound", err)
	}
	if err := repo.Delete(ctx, "Bad Name"); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("Delete malformed name: got %v, want ErrInvalid", err)
	}
}

func TestVendorValidationWritesNothing(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).Vendors()
	cases := []struct {
		field  string
		mutate func(*repository.Vendor)
	}{
		{"Name", func(v *repository.Vendor) { v.Name = "" }},
		{"Name", func(v *repository.Vendor) { v.Name = strings.Repeat("a", 101) }},
		{"Name", func(v *repository.Vendor) { v.Name = "Upper" }},
		{"Name", func(v *repository.Vendor) { v.Name = "-leading-dash" }},
		{"Name", func(v *repository.Vendor) { v.Name = "sp ace" }},
		{"Status", func(v *repository.Vendor) { v.Status = "" }},
		{"Status", func(v *repository.Vendor) { v.Status = "sleeping" }},
		{"ExtractorVersion", func(v *repository.Vendor) { v.ExtractorVersion = "v2" }},
		{"ExtractorVersion", func(v *repository.Vendor) { v.ExtractorVersion = "01.2.3" }},
		{"Metadata", func(v *repository.Vendor) { v.Metadata = map[string]any{"ch": make(chan int)} }},
		{"Metadata", func(v *repository.Vendor) { v.Metadata = map[string]any{"nul": "a\x00b"} }},
		{"CreatedBy", func(v *repository.Vendor) { v.CreatedBy = strings.Repeat("x", 101) }},
		{"CreatedBy", func(v *repository.Vendor) { v.CreatedBy = "bad\xffutf8" }},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%s/%d", tc.field, i), func(t *testing.T) {
			v := newVendor(fmt.Sprintf("valid-%d", i))
			tc.mutate(&v)
			_, err := repo.Create(ctx, v)
			var ve *repository.ValidationError
			if !errors.Is(err, repository.ErrInvalid) || !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("Create: got %v, want ErrInvalid for field %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("message %q does not name the field %s", err, tc.field)
			}
		})
	}
	if all, err := repo.List(ctx, repository.VendorFilter{}); err != nil || len(all) != 0 {
		t.Fatalf("after invalid creates: List = %d vendors, %v; want none written", len(all), err)
	}
}

func TestVendorList(t *testing.T) {
	ctx := context.Background()
	repo := openStore(t).Vendors()
	names := []string{"delta", "alpha", "echo", "charlie", "bravo"}
	for i, n := range names {
		v := newVendor(n)
		if i%2 == 1 {
			v.Status = repository.VendorBroken
		}
		if _, err := repo.Create(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	listNames := func(f repository.VendorFilter) []string {
		t.Helper()
		vs, err := repo.List(ctx, f)
		if err != nil {
			t.Fatalf("List(%+v): %v", f, err)
		}
		out := []string{}
		for _, v := range vs {
			out = append(out, v.Name)
		}
		return out
	}
	broken := repository.VendorBroken
	for _, tc := range []struct {
		f    repository.VendorFilter
		want []string
	}{
		{repository.VendorFilter{}, []string{"alpha", "bravo", "charlie", "delta", "echo"}},
		{repository.VendorFilter{Limit: 2}, []string{"alpha", "bravo"}},
		{repository.VendorFilter{Limit: 2, Offset: 2}, []string{"charlie", "delta"}},
		{repository.VendorFilter{Offset: 4}, []string{"echo"}},
		{repository.VendorFilter{Offset: 9}, []string{}},
		{repository.VendorFilter{Status: &broken}, []string{"alpha", "charlie"}},
	} {
		if got := listNames(tc.f); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("List(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	bad := repository.VendorStatus("nope")
	for _, f := range []repository.VendorFilter{{Limit: -1}, {Offset: -1}, {Status: &bad}} {
		if _, err := repo.List(ctx, f); !errors.Is(err, repository.ErrInvalid) {
			t.Errorf("List(%+v): got %v, want ErrInvalid", f, err)
		}
	}
}
