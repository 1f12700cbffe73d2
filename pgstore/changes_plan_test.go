package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/pgtest"
)

// The log is read hundreds of times a second; its reads of transactions a
// snapshot did not see must be index probes on xid even when the log has
// no column statistics (see "Index probes only" in changes.go). Without
// them, the planner's defaults made the waker's look a sequential scan of
// the whole log and ReadChanges a scan of every seq <= S.
func TestLogReadsProbeTheXidIndexWithoutStatistics(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := s.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// A log that autovacuum never analyzes, of 40 transactions' rows.
	exec(`ALTER TABLE pgfallback_changes SET (autovacuum_enabled = false)`)
	for range 40 {
		exec(`INSERT INTO pgfallback_changes (entity, key, op, version)
			SELECT 'vendor', 'v' || g, 'update', 1 FROM generate_series(1, 1000) g`)
	}
	exec(`VACUUM pgfallback_changes`) // the table's size, no column statistics
	var stats int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stats WHERE tablename = 'pgfallback_changes'`).Scan(&stats); err != nil {
		t.Fatal(err)
	}
	if stats != 0 {
		t.Fatalf("the log has %d column statistics: the test needs none", stats)
	}
	var head int64
	var snapText string
	if err := conn.QueryRow(ctx, `SELECT max(seq), pg_current_snapshot()::text FROM pgfallback_changes`).Scan(&head, &snapText); err != nil {
		t.Fatal(err)
	}
	snap, err := parseSnapshot(snapText)
	if err != nil {
		t.Fatal(err)
	}
	// As with 64 writers in flight: the snapshot's in-progress list.
	snap.xmin = snap.xmax - 100
	snap.xip = nil
	for x := snap.xmin; x < snap.xmin+64; x++ {
		snap.xip = append(snap.xip, x)
	}
	xmin, xmax := strconv.FormatUint(snap.xmin, 10), strconv.FormatUint(snap.xmax, 10)
	exec(`SET plan_cache_mode = force_custom_plan`)

	for _, q := range []struct {
		name string
		sql  string
		args []any
	}{
		{"ReadChanges", readChangesSQL, []any{head - 100, xmax, snap.xipArray(), xmin, 1001}},
		{"the waker's read", readChangesSQL, []any{head, xmax, snap.xipArray(), xmin, broadcastMaxChanges + 1}},
	} {
		var plan string
		args := append([]any{pgx.QueryExecModeExec}, q.args...)
		if err := conn.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+q.sql, args...).Scan(&plan); err != nil {
			t.Fatalf("%s: explain: %v", q.name, err)
		}
		for _, scan := range logScans(t, plan) {
			if scan.Type == "Seq Scan" || scan.Index == "pgfallback_changes_pkey" && strings.Contains(scan.Cond, "<=") {
				t.Errorf("%s reads the whole log without statistics (%s on %s %s), plan:\n%s", q.name, scan.Type, scan.Index, scan.Cond, plan)
			}
		}
	}
}

type logScan struct{ Type, Index, Cond string }

// logScans lists the plan's nodes that read pgfallback_changes or its indexes.
func logScans(t *testing.T, plan string) []logScan {
	t.Helper()
	var doc []struct{ Plan map[string]any }
	if err := json.Unmarshal([]byte(plan), &doc); err != nil || len(doc) != 1 {
		t.Fatalf("plan: %v\n%s", err, plan)
	}
	var out []logScan
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		rel, _ := n["Relation Name"].(string)
		idx, _ := n["Index Name"].(string)
		if rel == "pgfallback_changes" || strings.HasPrefix(idx, "pgfallback_changes") {
			out = append(out, logScan{Type: fmt.Sprint(n["Node Type"]), Index: idx, Cond: fmt.Sprint(n["Index Cond"])})
		}
		kids, _ := n["Plans"].([]any)
		for _, k := range kids {
			if m, ok := k.(map[string]any); ok {
				walk(m)
			}
		}
	}
	walk(doc[0].Plan)
	if len(out) == 0 {
		t.Fatalf("no scan of the log in the plan:\n%s", plan)
	}
	return out
}
