package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

func feedCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// describe reduces changes to what a follower acts on, in order.
func describeChanges(cs []repository.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = fmt.Sprintf("%s %s %s %d", c.Entity, c.Key, c.Op, c.Version)
	}
	return out
}

func changeHead(t *testing.T, ctx context.Context, s *pgstore.Store) string {
	t.Helper()
	cur, err := s.ChangeHead(ctx)
	if err != nil {
		t.Fatalf("ChangeHead: %v", err)
	}
	return cur
}

// readAll reads from cur until More is false, checking that each page is
// in seq order and holds at most limit changes.
func readAllChanges(t *testing.T, ctx context.Context, s *pgstore.Store, cur string, limit int) (all []repository.Change, next string, more []bool) {
	t.Helper()
	for page := 0; ; page++ {
		if page == 10_000 {
			t.Fatal("ReadChanges says More for ever")
		}
		b, err := s.ReadChanges(ctx, cur, limit)
		if err != nil {
			t.Fatalf("ReadChanges page %d: %v", page, err)
		}
		if len(b.Changes) > limit {
			t.Fatalf("page %d: %d changes, limit %d", page, len(b.Changes), limit)
		}
		for i := 1; i < len(b.Changes); i++ {
			if b.Changes[i].Seq <= b.Changes[i-1].Seq {
				t.Fatalf("page %d out of seq order: %d after %d", page, b.Changes[i].Seq, b.Changes[i-1].Seq)
			}
		}
		if b.More != b.AsOf.IsZero() {
			t.Fatalf("page %d: More %v with AsOf %v: AsOf is set exactly when More is false", page, b.More, b.AsOf)
		}
		all, cur = append(all, b.Changes...), b.Next
		more = append(more, b.More)
		if !b.More {
			return all, cur, more
		}
	}
}

// dedupe drops changes delivered again (same Seq), keeping the first.
func dedupeChanges(cs []repository.Change) []repository.Change {
	seen := map[int64]bool{}
	var out []repository.Change
	for _, c := range cs {
		if !seen[c.Seq] {
			seen[c.Seq] = true
			out = append(out, c)
		}
	}
	return out
}

func feedExec(t *testing.T, ctx context.Context, s *pgstore.Store, sql string, args ...any) {
	t.Helper()
	if _, err := s.Pool().Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// connect opens a connection of its own, outside the store's pool.
func ownConn(t *testing.T, ctx context.Context, s *pgstore.Store) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(ctx, s.Pool().Config().ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// waitSettled waits until every logged change's transaction is below the
// xmin of a new snapshot: what PruneChanges requires before it removes a row.
func waitChangesSettled(t *testing.T, ctx context.Context, s *pgstore.Store) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pending int
		err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM pgfallback_changes
			WHERE xid >= pg_snapshot_xmin(pg_current_snapshot())`).Scan(&pending)
		if err != nil {
			t.Fatal(err)
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d logged changes still at or above xmin after 30 s", pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestChangesThroughStore(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	h := changeHead(t, ctx, s)

	v, err := s.Vendors().Create(ctx, newVendor("acme"))
	if err != nil {
		t.Fatal(err)
	}
	stale := v
	v.Status = repository.VendorBroken
	if v, err = s.Vendors().Update(ctx, v); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Vendors().Update(ctx, stale); !errors.Is(err, repository.ErrConflict) {
		t.Fatalf("stale Update: %v", err) // and it logs nothing: see want
	}
	if err := s.Vendors().Delete(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	root, err := s.WorkItems().Create(ctx, newItem("root", nil))
	if err != nil {
		t.Fatal(err)
	}
	child, err := s.WorkItems().Create(ctx, newItem("child", &root))
	if err != nil {
		t.Fatal(err)
	}
	child.Title = "renamed child"
	if child, err = s.WorkItems().Update(ctx, child); err != nil {
		t.Fatal(err)
	}
	if err := s.WorkItems().Delete(ctx, root.ID); err != nil { // a soft delete of the subtree: updates
		t.Fatal(err)
	}

	got, _, _ := readAllChanges(t, ctx, s, h, 100)
	want := []string{
		"vendor acme insert 1",
		"vendor acme update 2",
		"vendor acme delete 2",
		"work_item " + root.ID.String() + " insert 1",
		"work_item " + child.ID.String() + " insert 1",
		"work_item " + child.ID.String() + " update 2",
	}
	// The soft delete is one statement over both rows: their order within
	// it is the database's.
	tail := []string{
		"work_item " + root.ID.String() + " update 2",
		"work_item " + child.ID.String() + " update 3",
	}
	d := describeChanges(got)
	if len(d) == len(want)+len(tail) {
		slices.Sort(d[len(want):])
		slices.Sort(tail)
	}
	if want = append(want, tail...); !reflect.DeepEqual(d, want) {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(d, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range got {
		if age := time.Since(c.At); c.At.IsZero() || age > time.Minute || age < -time.Minute {
			t.Errorf("change %d At = %v, want about now", c.Seq, c.At)
		}
	}
}

func TestChangesThroughSQL(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	listener := ownConn(t, ctx, s)
	if _, err := listener.Exec(ctx, "LISTEN "+pgstore.ChangeChannel); err != nil {
		t.Fatal(err)
	}
	h := changeHead(t, ctx, s)

	item := uuid.New()
	for _, sql := range []string{
		`INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'sql-a', 'operational'), (gen_random_uuid(), 'sql-b', 'operational')`,
		`UPDATE vendors SET status = 'broken', version = version + 1 WHERE name = 'sql-a'`,
		`UPDATE vendors SET name = 'sql-c', version = version + 1 WHERE name = 'sql-b'`, // a rename
		`UPDATE vendors SET id = gen_random_uuid() WHERE name = 'sql-a'`,                // a new id: the cached row is another, so a delete and an insert
		`UPDATE vendors SET status = 'broken' WHERE false`,                              // nothing
		`INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'sql-a', 'operational')
			ON CONFLICT (name) DO UPDATE SET version = vendors.version + 1`,
		`DELETE FROM vendors WHERE name = 'sql-c'`,
		`INSERT INTO work_items (id, type, title, status) VALUES ('` + item.String() + `', 'project', 'p', 'active')`,
		`UPDATE work_items SET title = 'q', version = version + 1`,
		`DELETE FROM work_items`,
		`TRUNCATE vendors`,
		`TRUNCATE work_items`,
	} {
		feedExec(t, ctx, s, sql)
	}

	got, _, _ := readAllChanges(t, ctx, s, h, 100)
	want := []string{
		"vendor sql-a insert 1",
		"vendor sql-b insert 1",
		"vendor sql-a update 2",
		"vendor sql-b delete 1",
		"vendor sql-c insert 2",
		"vendor sql-a delete 2",
		"vendor sql-a insert 2",
		"vendor sql-a update 3",
		"vendor sql-c delete 2",
		"work_item " + item.String() + " insert 1",
		"work_item " + item.String() + " update 2",
		"work_item " + item.String() + " delete 2",
		"vendor  truncate 0",
		"work_item  truncate 0",
	}
	d := describeChanges(got)
	if len(d) > 1 {
		slices.Sort(d[:2]) // one statement, two rows
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(d, "\n"), strings.Join(want, "\n"))
	}

	// Writers never notify (a NOTIFY serializes every commit of the
	// instance): notifications arrive in commit order, so the first one the
	// listener gets after all those writes must be the marker sent after
	// them.
	feedExec(t, ctx, s, `SELECT pg_notify($1, 'marker')`, pgstore.ChangeChannel)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(wctx)
	if err != nil {
		t.Fatalf("no notification on %s: %v", pgstore.ChangeChannel, err)
	}
	if n.Payload != "marker" {
		t.Fatalf("a writer's transaction notified %s %q", n.Channel, n.Payload)
	}
}

// A follower that applies the log in seq order (insert and update set the
// key's version, delete removes the key, truncate empties the entity) ends
// with exactly the tables' keys and versions, whatever the writes were.
func TestChangesReplayMatchesTables(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	h := changeHead(t, ctx, s)
	root, err := s.WorkItems().Create(ctx, newItem("root", nil))
	if err != nil {
		t.Fatal(err)
	}
	child, err := s.WorkItems().Create(ctx, newItem("child", &root))
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.WorkItems().Create(ctx, newItem("other", nil))
	if err != nil {
		t.Fatal(err)
	}
	child.ParentID = &other.ID // a move: the item and its subtree
	if _, err := s.WorkItems().Update(ctx, child); err != nil {
		t.Fatal(err)
	}
	if err := s.WorkItems().Delete(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`INSERT INTO vendors (id, name, status) SELECT gen_random_uuid(), 'v' || g, 'operational' FROM generate_series(1, 50) g`,
		`UPDATE vendors SET name = name || '-renamed', version = version + 1 WHERE name LIKE 'v1%'`,
		`DELETE FROM vendors WHERE name LIKE 'v3%'`,
		`TRUNCATE vendors`,
		`INSERT INTO vendors (id, name, status) SELECT gen_random_uuid(), 'w' || g, 'operational' FROM generate_series(1, 20) g`,
		`UPDATE vendors SET version = version + 1`,
		`UPDATE vendors SET name = 'x' || name, version = version + 1 WHERE name LIKE 'w1%'`,
		`UPDATE vendors SET id = gen_random_uuid() WHERE name LIKE 'w2%'`,
		`DELETE FROM vendors WHERE name = 'w3'; INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'w3', 'broken')`,
	} {
		feedExec(t, ctx, s, sql)
	}

	got := map[string]int64{}
	changes, _, _ := readAllChanges(t, ctx, s, h, 7)
	for _, c := range dedupeChanges(changes) {
		switch c.Op {
		case repository.ChangeInsert, repository.ChangeUpdate:
			got[string(c.Entity)+" "+c.Key] = c.Version
		case repository.ChangeDelete:
			delete(got, string(c.Entity)+" "+c.Key)
		case repository.ChangeTruncate:
			for k := range got {
				if strings.HasPrefix(k, string(c.Entity)+" ") {
					delete(got, k)
				}
			}
		}
	}
	rows, _ := s.Pool().Query(ctx, `SELECT 'vendor ' || name, version FROM vendors
		UNION ALL SELECT 'work_item ' || id, version FROM work_items`)
	want := map[string]int64{}
	for rows.Next() {
		var k string
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("replaying %d changes gives %d keys, the tables hold %d:\nreplayed %v\ntables   %v",
			len(changes), len(got), len(want), got, want)
	}
}

// A transaction that wrote before another but commits after it: its
// change has the lower seq, and a reader that already passed the higher
// one must still get it.
func TestChangesOutOfOrderCommit(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	for _, name := range []string{"a", "b"} {
		if _, err := s.Vendors().Create(ctx, newVendor(name)); err != nil {
			t.Fatal(err)
		}
	}
	h := changeHead(t, ctx, s)

	txA, err := ownConn(t, ctx, s).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(ctx)
	if _, err := txA.Exec(ctx, `UPDATE vendors SET version = version + 1 WHERE name = 'a'`); err != nil {
		t.Fatal(err)
	}
	b, err := s.Vendors().Get(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Vendors().Update(ctx, b); err != nil {
		t.Fatal(err)
	}

	first, err := s.ReadChanges(ctx, h, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := describeChanges(first.Changes); !reflect.DeepEqual(got, []string{"vendor b update 2"}) {
		t.Fatalf("before A commits: %v, want only b's update", got)
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := s.ReadChanges(ctx, first.Next, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got := describeChanges(second.Changes); !reflect.DeepEqual(got, []string{"vendor a update 2"}) {
		t.Fatalf("after A commits: %v, want a's update, committed after the cursor but with a lower seq", got)
	}
	if second.Changes[0].Seq >= first.Changes[0].Seq {
		t.Fatalf("the test did not commit out of order: a's seq %d, b's %d", second.Changes[0].Seq, first.Changes[0].Seq)
	}
	third, err := s.ReadChanges(ctx, second.Next, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(third.Changes) != 0 {
		t.Fatalf("third read: %v, want nothing", describeChanges(third.Changes))
	}
}

func TestChangesPaging(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	h := changeHead(t, ctx, s)
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'v' || g, 'operational' FROM generate_series(1, 2500) g`)

	got, _, more := readAllChanges(t, ctx, s, h, 1000)
	if !reflect.DeepEqual(more, []bool{true, true, false}) {
		t.Fatalf("More per page: %v, want [true true false]", more)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("out of order across pages: %d after %d", got[i].Seq, got[i-1].Seq)
		}
	}
	rows, _ := s.Pool().Query(ctx, `SELECT seq FROM pgfallback_changes ORDER BY seq`)
	logged, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	seqs := make([]int64, len(got))
	for i, c := range got {
		seqs[i] = c.Seq
	}
	if !reflect.DeepEqual(seqs, logged) {
		t.Fatalf("delivered %d changes, the log holds %d (or other ones)", len(seqs), len(logged))
	}
}

// A page cut among late rows (seq below the cursor's) must resume from the
// cut, not from the cursor's seq: the rest would be skipped otherwise.
func TestChangesPagingInsideLateRows(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	h := changeHead(t, ctx, s)

	txA, err := ownConn(t, ctx, s).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(ctx)
	if _, err := txA.Exec(ctx, `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'late' || g, 'operational' FROM generate_series(1, 5) g`); err != nil {
		t.Fatal(err)
	}
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'early' || g, 'operational' FROM generate_series(1, 3) g`)
	first, next, _ := readAllChanges(t, ctx, s, h, 100)
	if len(first) != 3 {
		t.Fatalf("before the late commit: %v, want the 3 early inserts", describeChanges(first))
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	got, _, more := readAllChanges(t, ctx, s, next, 2)
	if len(more) < 3 {
		t.Fatalf("pages: %v, want the 5 late rows over at least 3 pages", more)
	}
	var late []string
	for _, c := range dedupeChanges(got) {
		if strings.HasPrefix(c.Key, "late") {
			late = append(late, c.Key)
		}
	}
	slices.Sort(late)
	if want := []string{"late1", "late2", "late3", "late4", "late5"}; !reflect.DeepEqual(late, want) {
		t.Fatalf("late rows delivered: %v, want %v", late, want)
	}
}

func TestChangesReadIsIdempotent(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	h := changeHead(t, ctx, s)
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'v' || g, 'operational' FROM generate_series(1, 30) g`)
	feedExec(t, ctx, s, `UPDATE vendors SET version = version + 1 WHERE name LIKE 'v1%'`)
	for _, limit := range []int{7, 1000} {
		a, err := s.ReadChanges(ctx, h, limit)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.ReadChanges(ctx, h, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Changes) == 0 || !reflect.DeepEqual(a.Changes, b.Changes) || a.More != b.More {
			t.Fatalf("limit %d: two reads from one cursor differ:\n%v (More %v)\n%v (More %v)",
				limit, describeChanges(a.Changes), a.More, describeChanges(b.Changes), b.More)
		}
	}
}

func TestChangesCursorExpiresWhenPruned(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	old := changeHead(t, ctx, s)
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'v' || g, 'operational' FROM generate_series(1, 5) g`)
	waitChangesSettled(t, ctx, s)

	if n, err := s.PruneChanges(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("PruneChanges(1h) of fresh changes: %d, %v; want 0, nil", n, err)
	}
	if _, err := s.ReadChanges(ctx, old, 10); err != nil {
		t.Fatalf("ReadChanges before pruning: %v", err)
	}
	// A cursor in the middle of a catch-up: its snapshot saw every pruned
	// row committed, but it has delivered only the first two.
	mid, err := s.ReadChanges(ctx, old, 2)
	if err != nil || !mid.More {
		t.Fatalf("ReadChanges(limit 2): More %v, %v; want More", mid.More, err)
	}
	n, err := s.PruneChanges(ctx, 0)
	if err != nil || n != 5 {
		t.Fatalf("PruneChanges(0): %d, %v; want 5, nil", n, err)
	}
	if _, err := s.ReadChanges(ctx, old, 10); !errors.Is(err, repository.ErrCursorExpired) {
		t.Fatalf("ReadChanges from before the pruned changes: %v, want ErrCursorExpired", err)
	}
	if _, err := s.ReadChanges(ctx, mid.Next, 10); !errors.Is(err, repository.ErrCursorExpired) {
		t.Fatalf("ReadChanges from the middle of the pruned changes: %v, want ErrCursorExpired", err)
	}

	h := changeHead(t, ctx, s)
	b, err := s.ReadChanges(ctx, h, 10)
	if err != nil || len(b.Changes) != 0 {
		t.Fatalf("ReadChanges from the head after pruning: %v, %v; want nothing, nil", describeChanges(b.Changes), err)
	}
	feedExec(t, ctx, s, `UPDATE vendors SET version = version + 1 WHERE name = 'v1'`)
	got, _, _ := readAllChanges(t, ctx, s, b.Next, 10)
	if d := describeChanges(got); !reflect.DeepEqual(d, []string{"vendor v1 update 2"}) {
		t.Fatalf("after pruning: %v", d)
	}
	if n, err := s.PruneChanges(ctx, -time.Second); !errors.Is(err, repository.ErrInvalid) || n != 0 {
		t.Fatalf("PruneChanges(-1s): %d, %v; want ErrInvalid", n, err)
	}
}

// Pruning a row of a transaction that committed after a cursor's snapshot
// expires the cursor even when the row's seq is below the cursor's and the
// row is older than the cursor: the cursor had yet to deliver it. Neither
// "seq < pruned seq" nor "cursor older than the pruning cutoff" says so.
func TestChangesPruningLateRowExpiresCursor(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	for _, name := range []string{"a", "b"} {
		if _, err := s.Vendors().Create(ctx, newVendor(name)); err != nil {
			t.Fatal(err)
		}
	}
	h := changeHead(t, ctx, s)
	txA, err := ownConn(t, ctx, s).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer txA.Rollback(ctx)
	if _, err := txA.Exec(ctx, `UPDATE vendors SET version = version + 1 WHERE name = 'a'`); err != nil {
		t.Fatal(err)
	}
	feedExec(t, ctx, s, `UPDATE vendors SET version = version + 1 WHERE name = 'b'`)
	first, err := s.ReadChanges(ctx, h, 100)
	if err != nil || len(first.Changes) != 1 {
		t.Fatalf("first read: %v, %v; want b's update", describeChanges(first.Changes), err)
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// a's update, written before the cursor was made, is now an hour old;
	// everything else is new.
	feedExec(t, ctx, s, `UPDATE pgfallback_changes SET changed_at = changed_at - interval '1 hour'
		WHERE key = 'a' AND op = 'update'`)
	waitChangesSettled(t, ctx, s)
	if n, err := s.PruneChanges(ctx, 30*time.Minute); err != nil || n != 1 {
		t.Fatalf("PruneChanges(30m): %d, %v; want 1 (a's update), nil", n, err)
	}
	if b, err := s.ReadChanges(ctx, first.Next, 100); !errors.Is(err, repository.ErrCursorExpired) {
		t.Fatalf("ReadChanges after a's undelivered update was pruned: %v, %v; want ErrCursorExpired", describeChanges(b.Changes), err)
	}
}

// A row committed while an older transaction is still open stays: a
// reader's snapshot may not have seen it committed yet.
func TestChangesPruneSparesRowsAboveXmin(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	holder, err := ownConn(t, ctx, s).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil { // takes an xid: xmin stays here
		t.Fatal(err)
	}
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'v' || g, 'operational' FROM generate_series(1, 3) g`)
	if n, err := s.PruneChanges(ctx, 0); err != nil || n != 0 {
		t.Fatalf("PruneChanges with an older transaction open: %d, %v; want 0, nil", n, err)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitChangesSettled(t, ctx, s)
	if n, err := s.PruneChanges(ctx, 0); err != nil || n != 3 {
		t.Fatalf("PruneChanges once it ended: %d, %v; want 3, nil", n, err)
	}
}

func TestChangesPruneIsExclusive(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'v' || g, 'operational' FROM generate_series(1, 3) g`)
	waitChangesSettled(t, ctx, s)

	holder, err := ownConn(t, ctx, s).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, pgstore.ChangePruneLockKey); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := s.PruneChanges(pctx, 0)
	if err != nil || n != 0 {
		t.Fatalf("PruneChanges while another holds the lock: %d, %v; want 0, nil without waiting", n, err)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneChanges(ctx, 0); err != nil || n != 3 {
		t.Fatalf("PruneChanges once the lock is free: %d, %v; want 3, nil", n, err)
	}
}

func TestChangesPruneInBatches(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	old := changeHead(t, ctx, s)
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'v' || g, 'operational' FROM generate_series(1, 25000) g`)
	waitChangesSettled(t, ctx, s)
	if n, err := s.PruneChanges(ctx, 0); err != nil || n != 25000 {
		t.Fatalf("PruneChanges: %d, %v; want 25000, nil", n, err)
	}
	var left int
	var prunedSeq, maxSeq int64
	if err := s.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM pgfallback_changes),
		(SELECT pruned_seq FROM pgfallback_change_log), (SELECT last_value FROM pgfallback_changes_seq_seq)`).
		Scan(&left, &prunedSeq, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if left != 0 || prunedSeq != maxSeq {
		t.Fatalf("after pruning: %d rows left, pruned_seq %d, want 0 and %d", left, prunedSeq, maxSeq)
	}
	if _, err := s.ReadChanges(ctx, old, 10); !errors.Is(err, repository.ErrCursorExpired) {
		t.Fatalf("ReadChanges from before: %v, want ErrCursorExpired", err)
	}
}

// cursorField replaces field i (0: version, 3: seq, 5: snapshot xmax) of a
// cursor.
func withCursorField(t *testing.T, cur string, i int, f func(string) string) string {
	t.Helper()
	parts := strings.Split(cur, ":")
	if len(parts) < 10 {
		t.Fatalf("cursor %q has %d fields", cur, len(parts))
	}
	parts[i] = f(parts[i])
	return strings.Join(parts, ":")
}

func plusN(n uint64) func(string) string {
	return func(s string) string {
		v, _ := strconv.ParseUint(s, 10, 64)
		return strconv.FormatUint(v+n, 10)
	}
}

func TestChangesErrors(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	h := changeHead(t, ctx, s)
	feedExec(t, ctx, s, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'a', 'operational')`)

	var verr *repository.ValidationError
	if _, err := s.ReadChanges(ctx, h, 0); !errors.As(err, &verr) || verr.Field != "limit" {
		t.Fatalf("limit 0: %v, want ErrInvalid naming limit", err)
	}
	for _, bad := range []string{
		"", "garbage", "c1", "c1:1:2:3", "c9" + h[2:], "c2:1:2:3", "c3:1:2:3",
		withCursorField(t, h, 1, func(string) string { return "x" }),
		withCursorField(t, h, 2, func(string) string { return "99999999999" }),
		withCursorField(t, h, 3, func(string) string { return "-1" }),                // timeline
		withCursorField(t, h, 4, func(string) string { return "not-a-uuid" }),        // log id
		withCursorField(t, h, 5, func(string) string { return "triggers" }),          // not hex
		withCursorField(t, h, 5, func(string) string { return "10000000000000000" }), // 17 digits
		withCursorField(t, h, 6, func(string) string { return "-1" }),
		withCursorField(t, h, 7, func(string) string { return "0" }),
		withCursorField(t, h, 8, func(string) string { return "1" }), // xmax below xmin
		"c3:1:1:1:::1:5:9:7,6", // xip out of order
		"c2:1:1:1::1:5:9:7,6",  // the same in a c2 cursor
		"c2:1:1:1::1:5:9:9",    // xip at xmax
		"c2:1:1:1::1:5:9:3",    // xip below xmin
		"c2:1:1:1::1:5:9:6:7",  // a field too many
		"c1:1:1:1:5:9:7,6",     // an old cursor, ill-formed
	} {
		_, err := s.ReadChanges(ctx, bad, 10)
		if !errors.As(err, &verr) || verr.Field != "cursor" {
			t.Errorf("cursor %q: %v, want ErrInvalid naming cursor", bad, err)
		}
	}
	if _, err := s.ReadChanges(ctx, "c2:1:1:1::1:5:9:5,5,7", 10); errors.Is(err, repository.ErrInvalid) {
		t.Errorf("a well-formed cursor (repeated xip, as pg_snapshot accepts) refused: %v", err)
	}

	other := openStore(t)
	for name, cur := range map[string]string{
		"another database":           changeHead(t, ctx, other),
		"another cluster":            withCursorField(t, h, 1, plusN(1)),
		"another timeline":           withCursorField(t, h, 3, plusN(1)),
		"another log":                withCursorField(t, h, 4, func(string) string { return "00000000-0000-0000-0000-000000000000" }),
		"altered triggers":           withCursorField(t, h, 5, func(string) string { return "1" }),
		"a seq ahead of the log":     withCursorField(t, h, 6, plusN(1000)),
		"a snapshot from the future": withCursorField(t, withCursorField(t, h, 8, plusN(1_000_000)), 7, plusN(1_000_000)),
		"an earlier release":         "c1:" + strings.Join(strings.Split(h, ":")[1:3], ":") + ":" + strings.Join(strings.Split(h, ":")[6:], ":"),
	} {
		if _, err := s.ReadChanges(ctx, cur, 10); !errors.Is(err, repository.ErrCursorExpired) {
			t.Errorf("a cursor from %s: %v, want ErrCursorExpired", name, err)
		}
	}
	if b, err := s.ReadChanges(ctx, h, 10); err != nil || len(b.Changes) != 1 {
		t.Fatalf("the real cursor: %v, %v", describeChanges(b.Changes), err)
	}
	// The release before fingerprinted no triggers: its c2 cursor reads on.
	f := strings.Split(h, ":")
	c2 := "c2:" + strings.Join(f[1:5], ":") + ":" + strings.Join(f[6:], ":")
	if b, err := s.ReadChanges(ctx, c2, 10); err != nil || len(b.Changes) != 1 || !strings.HasPrefix(b.Next, "c3:") {
		t.Fatalf("a c2 cursor: %v, next %q, %v", describeChanges(b.Changes), b.Next, err)
	}
}

func TestChangesNotMigrated(t *testing.T) {
	ctx := feedCtx(t)
	s := storeWithout(t, ctx, 3) // the change log (00003) and every later one
	if _, err := s.ChangeHead(ctx); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("ChangeHead: %v, want ErrNotFound", err)
	}
	if _, err := s.ReadChanges(ctx, "c2:1:1:1::1:5:9:", 10); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("ReadChanges: %v, want ErrNotFound", err)
	}
	if _, err := s.PruneChanges(ctx, 0); !errors.Is(err, repository.ErrNotFound) {
		t.Errorf("PruneChanges: %v, want ErrNotFound", err)
	}
}

func TestChangesDeadServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	s := pgstore.New(pool)
	defer s.Close()
	var connErr *pgconn.ConnectError
	if _, err := s.ChangeHead(ctx); !errors.As(err, &connErr) || errors.Is(err, repository.ErrNotFound) {
		t.Errorf("ChangeHead: %v, want the wrapped *pgconn.ConnectError", err)
	}
	if _, err := s.ReadChanges(ctx, "c2:1:1:1::1:5:9:", 10); !errors.As(err, &connErr) {
		t.Errorf("ReadChanges: %v, want the wrapped *pgconn.ConnectError", err)
	}
	if _, err := s.PruneChanges(ctx, 0); !errors.As(err, &connErr) {
		t.Errorf("PruneChanges: %v, want the wrapped *pgconn.ConnectError", err)
	}
}

// feedWakes records WatchChanges's calls.
type feedWakes struct {
	mu       sync.Mutex
	connects int
	notified int
}

func (w *feedWakes) wake(reconnected bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if reconnected {
		w.connects++
	} else {
		w.notified++
	}
}

func (w *feedWakes) counts() (connects, notified int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.connects, w.notified
}

func feedEventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func feedListeners(t *testing.T, ctx context.Context, s *pgstore.Store) []int32 {
	t.Helper()
	rows, _ := s.Pool().Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'pgfallback-feed'`)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// wakerPIDs lists the backends holding the waker's lock.
func wakerPIDs(t *testing.T, ctx context.Context, s *pgstore.Store) []int32 {
	t.Helper()
	rows, _ := s.Pool().Query(ctx, `SELECT pid FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND ((classid::bigint << 32) | objid::bigint) = $1`, pgstore.ChangeWakerLockKey)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// watch runs WatchChanges until the test ends, and checks that it returns
// when its context does.
func watch(t *testing.T, ctx context.Context, s *pgstore.Store) *feedWakes {
	t.Helper()
	var w feedWakes
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.WatchChanges(wctx, w.wake) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("WatchChanges returned %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("WatchChanges did not return within 5 s of its context ending")
		}
	})
	return &w
}

func TestWatchChanges(t *testing.T) {
	ctx := feedCtx(t)
	s := openStore(t)
	if err := s.Ping(ctx); err != nil { // the pool's connections and goroutines exist before the baseline
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()

	t.Run("watch", func(t *testing.T) {
		w := watch(t, ctx, s)
		feedEventually(t, 10*time.Second, "wake(true) after connecting", func() bool { c, _ := w.counts(); return c == 1 })
		if _, err := s.Vendors().Create(ctx, newVendor("acme")); err != nil {
			t.Fatal(err)
		}
		feedEventually(t, 10*time.Second, "wake(false) after a commit", func() bool { _, n := w.counts(); return n >= 1 })

		pids := feedListeners(t, ctx, s)
		if len(pids) != 1 {
			t.Fatalf("listening backends: %v, want one", pids)
		}
		// The only follower is the waker: it woke itself.
		if wakers := wakerPIDs(t, ctx, s); !reflect.DeepEqual(wakers, pids) {
			t.Fatalf("waker backends %v, want the listener %v", wakers, pids)
		}
		feedExec(t, ctx, s, `SELECT pg_terminate_backend($1)`, pids[0])
		feedEventually(t, 10*time.Second, "wake(true) after the connection was killed", func() bool { c, _ := w.counts(); return c == 2 })
		_, before := w.counts()
		if _, err := s.Vendors().Create(ctx, newVendor("other")); err != nil {
			t.Fatal(err)
		}
		feedEventually(t, 10*time.Second, "wake(false) on the new connection", func() bool { _, n := w.counts(); return n > before })
	})
	feedEventually(t, 10*time.Second, "no listening backend left", func() bool { return len(feedListeners(t, ctx, s)) == 0 })
	feedEventually(t, 10*time.Second, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= baseline })
}

// Several followers elect one waker; when its session ends another takes
// over within about a second, and every follower keeps waking on commits.
func TestWatchChangesElectsOneWaker(t *testing.T) {
	ctx := feedCtx(t)
	dsn := pgtest.NewDatabase(t)
	stores := make([]*pgstore.Store, 3)
	wakes := make([]*feedWakes, 3)
	for i := range stores {
		var err error
		if stores[i], err = pgstore.Open(ctx, dsn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stores[i].Close)
	}
	for i, s := range stores {
		wakes[i] = watch(t, ctx, s)
	}
	s := stores[0]
	feedEventually(t, 10*time.Second, "three listeners", func() bool { return len(feedListeners(t, ctx, s)) == 3 })
	feedEventually(t, 10*time.Second, "one waker", func() bool { return len(wakerPIDs(t, ctx, s)) == 1 })

	commitWakesAll := func(name string) {
		t.Helper()
		before := make([]int, len(wakes))
		for i, w := range wakes {
			_, before[i] = w.counts()
		}
		if _, err := s.Vendors().Create(ctx, newVendor(name)); err != nil {
			t.Fatal(err)
		}
		for i, w := range wakes {
			feedEventually(t, 10*time.Second, fmt.Sprintf("follower %d woken by the commit of %s", i, name),
				func() bool { _, n := w.counts(); return n > before[i] })
		}
	}
	commitWakesAll("first")

	old := wakerPIDs(t, ctx, s)[0]
	feedExec(t, ctx, s, `SELECT pg_terminate_backend($1)`, old)
	start := time.Now()
	feedEventually(t, 10*time.Second, "another waker", func() bool {
		p := wakerPIDs(t, ctx, s)
		return len(p) == 1 && p[0] != old
	})
	t.Logf("a new waker took over %v after the old one's session ended", time.Since(start).Round(time.Millisecond))
	commitWakesAll("second")
	if p := wakerPIDs(t, ctx, s); len(p) != 1 {
		t.Fatalf("waker backends %v, want one", p)
	}
}

// WatchChanges keeps trying while the server is away, and returns when its
// context ends even then.
func TestWatchChangesUnreachable(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	s := pgstore.New(pool)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var w feedWakes
	start := time.Now()
	if err := s.WatchChanges(ctx, w.wake); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WatchChanges: %v, want its context's error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("WatchChanges returned %v after its context ended", d)
	}
	if c, n := w.counts(); c != 0 || n != 0 {
		t.Fatalf("wake called %d/%d times without a connection", c, n)
	}
	if err := s.WatchChanges(context.Background(), nil); !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("WatchChanges(nil wake): %v, want ErrInvalid", err)
	}
}
