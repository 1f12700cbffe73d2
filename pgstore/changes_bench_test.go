package pgstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
)

// benchStore is openStore for benchmarks.
func benchStore(b *testing.B) *pgstore.Store {
	b.Helper()
	s, err := pgstore.Open(context.Background(), pgtest.NewDatabase(b))
	if err != nil {
		b.Fatalf("open store: %v", err)
	}
	b.Cleanup(s.Close)
	return s
}

func benchExec(b *testing.B, s *pgstore.Store, sql string) {
	b.Helper()
	if _, err := s.Pool().Exec(context.Background(), sql); err != nil {
		b.Fatalf("%s: %v", sql, err)
	}
}

// statementTriggers replaces the vendors' row-level trigger with the
// statement-level design migration 00003 does not use, for comparison:
// one INSERT per statement from the transition tables, old and new rows
// matched by id to tell a rename from an update.
const statementTriggers = `
DROP TRIGGER pgfallback_vendors_change ON vendors;
CREATE FUNCTION pgfallback_log_vendors_statement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pgfallback_changes (entity, key, op, version)
        SELECT 'vendor', n.name, 'insert', n.version FROM pgfallback_new n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pgfallback_changes (entity, key, op, version)
        SELECT 'vendor', c.key, c.op, c.version
        FROM pgfallback_old o
        FULL JOIN pgfallback_new n ON n.id = o.id
        CROSS JOIN LATERAL (VALUES
            (0, 'delete', o.name, o.version),
            (1, CASE WHEN o.name = n.name THEN 'update' ELSE 'insert' END, n.name, n.version)
        ) AS c (rank, op, key, version)
        WHERE c.key IS NOT NULL AND (c.rank = 1 OR n.name IS DISTINCT FROM o.name)
        ORDER BY c.rank;
    ELSE
        INSERT INTO pgfallback_changes (entity, key, op, version)
        SELECT 'vendor', o.name, 'delete', o.version FROM pgfallback_old o;
    END IF;
    IF FOUND THEN
        PERFORM pg_notify('pgfallback_changes', 'vendor');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER pgfallback_vendors_insert AFTER INSERT ON vendors REFERENCING NEW TABLE AS pgfallback_new
    FOR EACH STATEMENT EXECUTE FUNCTION pgfallback_log_vendors_statement();
CREATE TRIGGER pgfallback_vendors_update AFTER UPDATE ON vendors
    REFERENCING OLD TABLE AS pgfallback_old NEW TABLE AS pgfallback_new
    FOR EACH STATEMENT EXECUTE FUNCTION pgfallback_log_vendors_statement();
CREATE TRIGGER pgfallback_vendors_delete AFTER DELETE ON vendors REFERENCING OLD TABLE AS pgfallback_old
    FOR EACH STATEMENT EXECUTE FUNCTION pgfallback_log_vendors_statement();
`

// What the change log costs a write: Vendors().Update of one vendor on a
// database with the triggers (triggers=with), on one without
// (triggers=without), and on one with statement-level triggers instead
// (triggers=statement), side by side.
//
//	go test -run '^$' -bench 'Trigger|CatchUp' -benchmem -count 6 ./pgstore/ | tee bench.txt
//	benchstat -col /triggers bench.txt
func BenchmarkUpdateTriggers(b *testing.B) {
	ctx := context.Background()
	with := benchStore(b)
	without := benchStore(b)
	statement := benchStore(b)
	benchExec(b, statement, statementTriggers)
	benchExec(b, without, `
		DROP TRIGGER pgfallback_vendors_change ON vendors;
		DROP TRIGGER pgfallback_vendors_truncate ON vendors;
		DROP TRIGGER pgfallback_work_items_change ON work_items;
		DROP TRIGGER pgfallback_work_items_truncate ON work_items`)
	for _, c := range []struct {
		name string
		s    *pgstore.Store
	}{{"triggers=with", with}, {"triggers=without", without}, {"triggers=statement", statement}} {
		b.Run(c.name, func(b *testing.B) {
			v, err := c.s.Vendors().Create(ctx, newVendor("bench"))
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if v, err = c.s.Vendors().Update(ctx, v); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if err := c.s.Vendors().Delete(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// A follower catching up on 10,000 committed changes (100 transactions of
// 100 rows) from a cursor taken before them, 1,000 per read.
func BenchmarkCatchUp10k(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	start, err := s.ChangeHead(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 100 {
		benchExec(b, s, fmt.Sprintf(`INSERT INTO vendors (id, name, status)
			SELECT gen_random_uuid(), 'v%d-' || g, 'operational' FROM generate_series(1, 100) g`, i))
	}
	for b.Loop() {
		cur, n := start, 0
		for {
			batch, err := s.ReadChanges(ctx, cur, 1000)
			if err != nil {
				b.Fatal(err)
			}
			n += len(batch.Changes)
			cur = batch.Next
			if !batch.More {
				break
			}
		}
		if n != 10_000 {
			b.Fatalf("caught up on %d changes, want 10000", n)
		}
	}
}

// A follower keeping up (one change per read) with a log of 500,000 older
// changes: a read must cost what is new, not what the log holds.
func BenchmarkReadChangesBigLog(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b)
	benchExec(b, s, `INSERT INTO pgfallback_changes (entity, key, op, version)
		SELECT 'vendor', 'old' || g, 'update', 1 FROM generate_series(1, 500000) g`)
	benchExec(b, s, `ANALYZE pgfallback_changes`)
	v, err := s.Vendors().Create(ctx, newVendor("acme"))
	if err != nil {
		b.Fatal(err)
	}
	cur, err := s.ChangeHead(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		b.StopTimer()
		if v, err = s.Vendors().Update(ctx, v); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		batch, err := s.ReadChanges(ctx, cur, 1000)
		if err != nil {
			b.Fatal(err)
		}
		if len(batch.Changes) != 1 {
			b.Fatalf("read %d changes, want 1", len(batch.Changes))
		}
		cur = batch.Next
	}
}
