package sqlitecache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// Queued writes are promises made to the application: a cache file
// deleted or replaced under the running process must not take them along.
// The old file stays readable through the open connections until the
// reopen closes them, so the queue is carried into the new file.
func TestQueueSurvivesTheLossOfItsFile(t *testing.T) {
	for _, how := range []string{"deleted", "replaced"} {
		t.Run(how, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cache.db")
			c, logs := openWatched(t, path)
			v := testVendor("a", 1) // cached by openWatched
			v.Status = repository.VendorBroken
			after := v
			after.Version = 2
			upd := repository.Write{ID: uuid.Must(uuid.NewV7()), Op: repository.WriteUpdate, Entity: repository.EntityVendor, Vendor: v, BaseVersion: 1}
			if _, err := c.Enqueue(bg, upd, Row{Vendor: &after}, 0); err != nil {
				t.Fatal(err)
			}
			del := repository.Write{ID: uuid.Must(uuid.NewV7()), Op: repository.WriteDelete, Entity: repository.EntityVendor, Vendor: repository.Vendor{Name: "b"}}
			if _, err := c.Enqueue(bg, del, Row{}, 0); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if how == "replaced" {
				other, err := Open(path, WithCleanupInterval(0), WithFileCheckInterval(0), WithLogger(nil))
				if err != nil {
					t.Fatal(err)
				}
				other.Close()
			}
			if !c.checkFile() {
				t.Fatalf("%s file not detected", how)
			}
			qs, err := c.PendingWrites(bg, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(qs) != 2 || qs[0].Write.ID != upd.ID || qs[1].Write.ID != del.ID {
				t.Fatalf("pending after the loss: %+v, want both writes in order", qs)
			}
			got, e, err := c.GetVendor(bg, "a")
			if err != nil || !e.Pending || got.Version != 2 {
				t.Fatalf("pending entry after the loss: %+v pending=%v %v", got, e.Pending, err)
			}
			if _, e, err := c.GetVendor(bg, "b"); !errors.Is(err, ErrPendingDelete) || !e.Pending {
				t.Fatalf("tombstone after the loss: %v pending=%v", err, e.Pending)
			}
			if _, _, err := c.GetVendor(bg, "c"); !errors.Is(err, repository.ErrNotFound) {
				t.Fatalf("an ordinary entry came along: %v (only the queue is carried)", err)
			}
			if !strings.Contains(logs.String(), "carried") {
				t.Fatalf("the carry-over was not logged:\n%s", logs)
			}
		})
	}
}

// CompleteWrites is the replay's group commit: in order, in one
// transaction, skipping what another process removed first, each key
// settled only when its last pending write is done.
func TestCompleteWritesInOneTransaction(t *testing.T) {
	c, _ := openTest(t)
	a, b := testVendor("acme", 1), testVendor("beta", 1)
	for _, v := range []repository.Vendor{a, b} {
		if err := c.SetVendor(bg, v); err != nil {
			t.Fatal(err)
		}
	}
	w1, after1 := vendorUpdate(a, 1)
	q1 := mustEnqueue(t, c, w1, after1)
	a2 := *after1.Vendor
	w2, after2 := vendorUpdate(a2, 2)
	q2 := mustEnqueue(t, c, w2, after2)
	w3, after3 := vendorUpdate(b, 1)
	q3 := mustEnqueue(t, c, w3, after3)
	if err := c.CompleteWrite(bg, q3, after3); err != nil { // another process was first
		t.Fatal(err)
	}
	removed, err := c.CompleteWrites(bg, []Completed{{q1, after1}, {q3, after3}})
	if err != nil {
		t.Fatal(err)
	}
	if !removed[0] || removed[1] {
		t.Fatalf("removed %v, want [true false]", removed)
	}
	wantVendor(t, c, "acme", 3, true) // the second write is still pending: its state stays
	if removed, err = c.CompleteWrites(bg, []Completed{{q2, after2}}); err != nil || !removed[0] {
		t.Fatalf("completing the last write: %v %v", removed, err)
	}
	wantVendor(t, c, "acme", 3, false)
	if n := pendingCount(t, c); n != 0 {
		t.Fatalf("%d pending", n)
	}
	// A failed transaction removes nothing.
	c.Close()
	if _, err := c.CompleteWrites(bg, []Completed{{q1, after1}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("on a closed cache: %v", err)
	}
}

// SentAt keeps the first time a replay handed a write to PostgreSQL (the
// record's age is counted from then), and a retry clears it.
func TestMarkSentKeepsTheFirstTime(t *testing.T) {
	c, clk := openTest(t)
	w := repository.Write{ID: uuid.New(), Op: repository.WriteDelete, Entity: repository.EntityVendor, Vendor: repository.Vendor{Name: "acme"}}
	mustEnqueue(t, c, w, Row{})
	qs, _ := c.PendingWrites(bg, 0)
	if !qs[0].SentAt.IsZero() {
		t.Fatalf("a new write has SentAt %v", qs[0].SentAt)
	}
	first := clk.Now()
	if err := c.MarkSent(bg, qs); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	qs, _ = c.PendingWrites(bg, 0)
	if err := c.MarkSent(bg, qs); err != nil {
		t.Fatal(err)
	}
	qs, _ = c.PendingWrites(bg, 0)
	if !qs[0].SentAt.Equal(first) {
		t.Fatalf("SentAt %v, want the first time %v", qs[0].SentAt, first)
	}
	if _, err := c.DeadLetter(bg, qs[0], "old", Row{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RetryWrite(bg, w.ID); err != nil {
		t.Fatal(err)
	}
	if qs, _ = c.PendingWrites(bg, 0); !qs[0].SentAt.IsZero() {
		t.Fatalf("a retried write keeps SentAt %v", qs[0].SentAt)
	}
}
