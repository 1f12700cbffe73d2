package pgstore

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

func TestBroadcastCarriesRowsThatFit(t *testing.T) {
	at := time.UnixMicro(1_700_000_000_500_000).UTC()
	v := repository.Vendor{ID: uuid.New(), Name: "acme", Status: "active", Version: 12, Metadata: map[string]any{"n": 1.5, "s": "x\ny"},
		CreatedAt: at.Add(-time.Hour), UpdatedAt: at, CreatedBy: "me"}
	del := at
	w := repository.WorkItem{ID: uuid.New(), Version: 3, Type: "task", Title: "t", Status: "open", Path: "", CreatedAt: at, UpdatedAt: at, DeletedAt: &del}
	b := broadcast{from: testCursor(10, 100, 105, 101, 103), next: testCursor(12, 103, 107, 103), asOf: at,
		changes: []repository.Change{testChange(11, "acme"), testChange(12, "gone")},
		rows: []repository.ChangedRow{
			{Entity: repository.EntityVendor, Key: "acme", Vendor: &v, At: at},
			{Entity: repository.EntityVendor, Key: "gone", At: at},
			{Entity: repository.EntityWorkItem, Key: w.ID.String(), WorkItem: &w, At: at},
		}}
	p, ok := encodeBroadcast(b)
	if !ok {
		t.Fatal("encodeBroadcast refused")
	}
	got, err := decodeBroadcast(p, testLogID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("decoded %+v\nwant %+v", got, b)
	}

	// A row too large for the payload is left out, the others kept.
	huge := v
	huge.Name = "huge"
	huge.Metadata = map[string]any{"blob": string(make([]byte, 7000))}
	b.rows = append(b.rows, repository.ChangedRow{Entity: repository.EntityVendor, Key: "huge", Vendor: &huge, At: at})
	b.changes = append(b.changes, testChange(13, "huge"))
	if p, ok = encodeBroadcast(b); !ok || len(p) >= 8000 {
		t.Fatalf("with a row too large: ok %v, %d bytes", ok, len(p))
	}
	if got, err = decodeBroadcast(p, testLogID); err != nil || len(got.rows) != 3 || len(got.changes) != 3 {
		t.Fatalf("decoded %d rows, %d changes (%v); want the 3 that fit and every change", len(got.rows), len(got.changes), err)
	}
}

// A row is current only if the last broadcast that changed its key carried
// it: a later change whose row did not fit leaves the key to be read.
func TestHeardRowsOfALaterChangeWin(t *testing.T) {
	t0 := time.UnixMicro(1_700_000_000_000_000).UTC()
	t1 := t0.Add(time.Millisecond)
	v1 := &repository.Vendor{Name: "a", Version: 1}
	v2 := &repository.Vendor{Name: "b", Version: 1}
	var h heardRows
	h.add(&broadcast{asOf: t0, changes: []repository.Change{testChange(1, "a"), testChange(2, "b")},
		rows: []repository.ChangedRow{{Entity: repository.EntityVendor, Key: "a", Vendor: v1, At: t0},
			{Entity: repository.EntityVendor, Key: "b", Vendor: v2, At: t0}}})
	h.add(&broadcast{asOf: t1, changes: []repository.Change{testChange(3, "a")}}) // a's new row did not fit
	got := h.current()
	if len(got) != 1 || got[0].Key != "b" {
		t.Fatalf("current rows %+v, want b's only: a changed after its row was read", got)
	}
}

// The waker reads the changed rows once and the broadcast carries them; a
// table under row-level security never has its rows broadcast, since the
// rows one role may read are not another's.
func TestBroadcastRowsAreTheTablesRows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, follower, _ := broadcastStores(t, ctx)
	cur := headOf(t, ctx, follower)
	insertVendor(t, ctx, waker, "first")
	b := readHeard(t, ctx, follower, cur)
	want, err := follower.Vendors().Get(ctx, "first")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Rows) != 1 || b.Rows[0].Vendor == nil || !reflect.DeepEqual(*b.Rows[0].Vendor, want) {
		t.Fatalf("heard rows %+v, want first as the table holds it: %+v", b.Rows, want)
	}
	if _, err := waker.pool.Exec(ctx, `DELETE FROM vendors WHERE name = 'first'`); err != nil {
		t.Fatal(err)
	}
	b = readHeard(t, ctx, follower, b.Next)
	if len(b.Rows) != 1 || b.Rows[0].Key != "first" || b.Rows[0].Vendor != nil {
		t.Fatalf("after the delete, heard rows %+v; want first with no row", b.Rows)
	}
	item, err := waker.WorkItems().Create(ctx, repository.WorkItem{Type: repository.WorkItemTask, Title: "task",
		Status: repository.WorkItemActive, Metadata: map[string]any{"n": 1.0}, CreatedBy: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	b = readHeard(t, ctx, follower, b.Next)
	if len(b.Rows) != 1 || b.Rows[0].WorkItem == nil || !reflect.DeepEqual(*b.Rows[0].WorkItem, item) {
		t.Fatalf("heard rows %+v, want the work item as created: %+v", b.Rows, item)
	}

	if _, err := waker.pool.Exec(ctx, `ALTER TABLE vendors ENABLE ROW LEVEL SECURITY`); err != nil {
		t.Fatal(err)
	}
	insertVendor(t, ctx, waker, "secured")
	b = readHeard(t, ctx, follower, b.Next)
	if len(b.Changes) != 1 || len(b.Rows) != 0 {
		t.Fatalf("under row security: %d changes, rows %+v; want the change and no row", len(b.Changes), b.Rows)
	}
}
