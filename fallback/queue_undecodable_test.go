package fallback_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// A queued write whose stored bytes no longer decode (damaged in the file)
// never blocks the queue: it becomes a dead letter that says why, keeps its
// bytes for an operator, and its key shows PostgreSQL's row again; every
// other write, ahead of it and behind it, replays.
func TestUndecodableQueuedWriteIsDeadLetteredAndTheRestReplays(t *testing.T) {
	f := newQueueFixture(t, queueConfig())
	ctx := context.Background()
	names := seed(t, f.s, 3) // a, b, c
	f.down(t)
	queueUpdates(t, f.s.layer, names)
	d := repository.Vendor{Name: "vendor-new", Status: repository.VendorOperational}
	if _, err := f.s.layer.Vendors().Create(fallback.WithWriteQueue(ctx), d); err != nil {
		t.Fatal(err)
	}
	f.s.close()

	db, err := sql.Open("sqlite3", "file:"+f.cachePath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.Exec(`UPDATE queued_writes SET data = x'deadbeef' WHERE key = ?`, names[1])
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("damaging b's queued write: %d rows, %v", n, err)
	}
	db.Close()

	if err := f.proxy.Up(); err != nil {
		t.Fatal(err)
	}
	cfg := queueConfig()
	cfg.OnConflict = f.conflicts.add
	f.s = openStack(t, f.proxied, f.cachePath, cfg)
	f.waitReplayed(t)

	for i, name := range names {
		got, err := f.pgVendor(t, name)
		want := int64(2)
		if i == 1 {
			want = 1
		}
		if err != nil || got.Version != want {
			t.Fatalf("PostgreSQL %s: version %d (%v), want %d", name, got.Version, err, want)
		}
	}
	if _, err := f.pgVendor(t, d.Name); err != nil {
		t.Fatalf("the create behind the damaged write: %v", err)
	}
	dead, err := f.s.layer.DeadLetters(ctx)
	if err != nil || len(dead) != 1 || dead[0].Key != names[1] || !strings.Contains(dead[0].Err, "does not decode") {
		t.Fatalf("dead letters %+v, %v; want b's write, saying it does not decode", dead, err)
	}
	if seen := f.conflicts.all(); len(seen) != 1 || !errors.Is(seen[0].err, sqlitecache.ErrCorruptEntry) {
		t.Fatalf("OnConflict: %+v, want one ErrCorruptEntry", seen)
	}
	st := f.s.layer.Stats().Queued
	if st.DeadLettered != 1 || st.Stalled || st.Pending != 0 {
		t.Fatalf("queue stats %+v", st)
	}
	// The cache shows PostgreSQL's b again, not the write that cannot be
	// replayed.
	rctx, prov := fallback.WithProvenance(ctx)
	if v, err := f.s.layer.Vendors().Get(rctx, names[1]); err != nil || v.Version != 1 || prov.Origin().Pending {
		t.Fatalf("b after the dead letter: %+v, %v, pending %v; want PostgreSQL's version 1", v, err, prov.Origin().Pending)
	}
	f.s.layer.Close()
	if got, e, err := f.s.cache.GetVendor(ctx, names[1]); err != nil || got.Version != 1 || e.Pending {
		t.Fatalf("cached b: %+v %+v, %v; want version 1, not pending", got, e, err)
	}

	// The raw bytes are kept; retry refuses, discard removes.
	ds, err := f.s.cache.DeadLetters(ctx)
	if err != nil || len(ds) != 1 || !bytes.Equal(ds[0].Raw, []byte{0xde, 0xad, 0xbe, 0xef}) || ds[0].Undecodable == "" {
		t.Fatalf("dead letters in the file: %+v, %v; want the raw bytes", ds, err)
	}
	if _, err := f.s.cache.RetryWrite(ctx, ds[0].Write.ID); !errors.Is(err, repository.ErrInvalid) || !strings.Contains(err.Error(), "does not decode") {
		t.Fatalf("RetryWrite: %v, want ErrInvalid saying it does not decode", err)
	}
	if _, err := f.s.cache.DiscardWrite(ctx, ds[0].Write.ID); err != nil {
		t.Fatalf("DiscardWrite: %v", err)
	}
	if s, err := f.s.cache.QueueStats(ctx); err != nil || s.DeadLetters != 0 || s.Pending != 0 {
		t.Fatalf("after discard: %+v, %v", s, err)
	}
}
