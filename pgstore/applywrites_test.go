package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// The batch's contract (repository.BatchWriteApplier): the longest prefix
// is committed, the first rejected write's error is returned, and nothing
// after it is applied — in the pipeline and on the careful path alike.

func TestApplyWritesCommitsAllInOrder(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	a := mustApply(t, s, vendorWrite(repository.WriteCreate, newVendor("a"), 0)).Vendor
	upd := *a
	upd.Status = repository.VendorBroken
	again := upd
	again.Status = repository.VendorOperational
	ws := []repository.Write{
		vendorWrite(repository.WriteUpdate, upd, 1),
		vendorWrite(repository.WriteUpdate, again, 2), // built on the one before, in the same batch
		vendorWrite(repository.WriteCreate, newVendor("b"), 0),
		vendorWrite(repository.WriteDelete, newVendor("never-was"), 0),
		itemWrite(repository.WriteCreate, newItem("root", nil), 0),
	}
	out, err := s.ApplyWrites(ctx, ws)
	if err != nil || len(out) != len(ws) {
		t.Fatalf("ApplyWrites: %d applied, %v; want all %d", len(out), err, len(ws))
	}
	if out[1].Vendor == nil || out[1].Vendor.Version != 3 || out[1].Vendor.Status != repository.VendorOperational {
		t.Fatalf("second update: %+v, want version 3, operational", out[1].Vendor)
	}
	if out[2].Vendor == nil || out[2].Vendor.Name != "b" || out[3].Vendor != nil || out[4].WorkItem == nil {
		t.Fatalf("results %+v", out)
	}
	for i, w := range ws {
		if record(t, s, w.ID) == "" {
			t.Fatalf("write %d not recorded", i)
		}
	}
	// The same batch again: every write found applied, nothing done twice.
	out, err = s.ApplyWrites(ctx, ws)
	if err != nil || len(out) != len(ws) {
		t.Fatalf("replayed batch: %d applied, %v", len(out), err)
	}
	for i, a := range out {
		if !a.AlreadyApplied {
			t.Fatalf("replayed write %d: %+v, want AlreadyApplied", i, a)
		}
	}
	if out[1].Vendor == nil || out[1].Vendor.Version != 3 {
		t.Fatalf("replayed update answers %+v, want the current row at version 3", out[1].Vendor)
	}
	if n := count(t, s, `SELECT count(*) FROM pgfallback_applied_writes`); n != len(ws)+1 {
		t.Fatalf("%d records, want %d", n, len(ws)+1)
	}
}

func TestApplyWritesStopsAtTheFirstRejection(t *testing.T) {
	ctx := context.Background()
	for _, careful := range []bool{false, true} {
		t.Run(fmt.Sprintf("careful=%v", careful), func(t *testing.T) {
			s := openStore(t)
			x := mustApply(t, s, vendorWrite(repository.WriteCreate, newVendor("x"), 0)).Vendor
			y := mustApply(t, s, vendorWrite(repository.WriteCreate, newVendor("y"), 0)).Vendor
			root := mustApply(t, s, itemWrite(repository.WriteCreate, newItem("root", nil), 0)).WorkItem
			ok1 := *x
			ok1.Status = repository.VendorBroken
			stale := *y
			stale.Status = repository.VendorBroken
			after := *y
			after.ExtractorVersion = "9.9.9"
			ws := []repository.Write{
				vendorWrite(repository.WriteUpdate, ok1, 1),
				vendorWrite(repository.WriteCreate, newVendor("z"), 0),
				vendorWrite(repository.WriteUpdate, stale, 7), // y is at 1: a conflict
				vendorWrite(repository.WriteCreate, newVendor("w"), 0),
				vendorWrite(repository.WriteUpdate, after, 1), // would apply, but it is behind the rejection
			}
			if careful {
				// A work item delete has no one-statement form: the whole
				// batch goes statement by statement.
				ws = append([]repository.Write{itemWrite(repository.WriteDelete, *root, 0)}, ws...)
			}
			k := len(ws) - 3
			out, err := s.ApplyWrites(ctx, ws)
			var ce *repository.ConflictError
			if len(out) != k || !errors.As(err, &ce) || ce.Vendor == nil || ce.Vendor.Version != 1 {
				t.Fatalf("ApplyWrites: %d applied, %v; want %d and the conflict with y's row", len(out), err, k)
			}
			for i, w := range ws {
				if got := record(t, s, w.ID) != ""; got != (i < k) {
					t.Fatalf("write %d recorded: %v, want %v", i, got, i < k)
				}
			}
			if n := count(t, s, `SELECT count(*) FROM vendors WHERE name IN ('z', 'w')`); n != 1 {
				t.Fatalf("%d of z, w exist; want z only", n)
			}
			if n := count(t, s, `SELECT version FROM vendors WHERE name = 'y'`); n != 1 {
				t.Fatalf("y at version %d, want 1: nothing after the rejection applies", n)
			}
			if n := count(t, s, `SELECT version FROM vendors WHERE name = 'x'`); n != 2 {
				t.Fatalf("x at version %d, want 2", n)
			}
		})
	}
}

func TestApplyWritesRejectionsAsApplyWrite(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	mustApply(t, s, vendorWrite(repository.WriteCreate, newVendor("taken"), 0))
	bad := newVendor("bad")
	bad.Status = "nonsense"
	cases := []struct {
		name string
		w    repository.Write
		want error
	}{
		{"taken key", vendorWrite(repository.WriteCreate, newVendor("taken"), 0), repository.ErrAlreadyExists},
		{"invalid", vendorWrite(repository.WriteCreate, bad, 0), repository.ErrInvalid},
		{"missing row", vendorWrite(repository.WriteUpdate, newVendor("nobody"), 1), repository.ErrNotFound},
		{"nil ID", repository.Write{Op: repository.WriteCreate, Entity: repository.EntityVendor, Vendor: newVendor("v")}, repository.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			first := vendorWrite(repository.WriteCreate, newVendor("first-"+uuid.NewString()[:8]), 0)
			out, err := s.ApplyWrites(ctx, []repository.Write{first, c.w})
			if len(out) != 1 || !errors.Is(err, c.want) {
				t.Fatalf("ApplyWrites: %d applied, %v; want 1 and %v", len(out), err, c.want)
			}
			wantNotRecorded(t, s, c.w)
			if record(t, s, first.ID) == "" {
				t.Fatal("the write before the rejection was not committed")
			}
		})
	}
}

func TestApplyWritesFailureCommitsNothing(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := vendorWrite(repository.WriteCreate, newVendor("never"), 0)
	out, err := s.ApplyWrites(ctx, []repository.Write{w})
	if out != nil || !errors.Is(err, context.Canceled) || repository.IsAnswer(err) {
		t.Fatalf("ApplyWrites with a canceled context: %+v, %v; want nothing and the raw error", out, err)
	}
	wantNotRecorded(t, s, w)
}

// A replayed delete's statement would succeed again: the pipeline must
// notice the record and not let it remove a vendor created since.
func TestApplyWritesReplayedDeleteSparesANewRow(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	mustApply(t, s, vendorWrite(repository.WriteCreate, newVendor("c"), 0))
	del := vendorWrite(repository.WriteDelete, newVendor("c"), 0)
	if out, err := s.ApplyWrites(ctx, []repository.Write{del}); err != nil || len(out) != 1 || out[0].AlreadyApplied {
		t.Fatalf("first delete: %+v, %v", out, err)
	}
	mustApply(t, s, vendorWrite(repository.WriteCreate, newVendor("c"), 0)) // c again, by someone else
	out, err := s.ApplyWrites(ctx, []repository.Write{del})
	if err != nil || len(out) != 1 || !out[0].AlreadyApplied {
		t.Fatalf("replayed delete: %+v, %v; want AlreadyApplied", out, err)
	}
	if n := count(t, s, `SELECT count(*) FROM vendors WHERE name = 'c'`); n != 1 {
		t.Fatal("the replayed delete removed the vendor created after it")
	}
}
