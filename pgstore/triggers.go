package pgstore

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/pgfallback/pgfallback/repository"
)

// The log's triggers.
//
// The log holds every committed change only while its four triggers fire
// for every writer. A trigger disabled for a bulk load (or by pg_restore
// --disable-triggers), dropped with its table by a restore, or enabled
// only for sessions whose session_replication_role is "origin" (the
// default, and what "ALTER TABLE ... ENABLE TRIGGER ALL" puts back; logical
// replication's apply workers run as "replica") lets changes reach the
// tables and not the log, and a follower would go on serving what it
// cached as current. Migration 00007 enables them ALWAYS.
//
// Every read of the head (headSQL) reads the triggers' catalog rows in
// the same snapshot as the log. While one is missing or not enabled
// ALWAYS, the log is incomplete: ChangeHead and ReadChanges fail with
// repository.ErrChangeLogIncomplete, naming the statement that repairs it,
// and followers keep the AsOf they had. A cursor records the triggers' rows
// as they were (their OIDs, states and the xid that last wrote each, so
// that a DISABLE and ENABLE in one transaction shows too) and their
// functions' (replaced, they may log otherwise): a cursor read before any
// change to them expires, and its follower resyncs.

// logTrigger is one of the triggers that fill the log.
type logTrigger struct{ table, name string }

// logTriggers are the triggers of migration 00003, in name order (the
// order headSQL aggregates them in).
var logTriggers = []logTrigger{
	{"vendors", "pgfallback_vendors_change"},
	{"vendors", "pgfallback_vendors_truncate"},
	{"work_items", "pgfallback_work_items_change"},
	{"work_items", "pgfallback_work_items_truncate"},
}

// logTriggersSQL reads the triggers' catalog rows as
// "name:oid:xmin:tgenabled:function's xmin,…" in name order, "" when there
// are none. The function's row changes when it is replaced.
// to_regclass resolves the tables as the store's own statements do, once
// per read (as subqueries; in the condition it ran for every row of
// pg_trigger). It adds 40-70 µs to a read of the head (pgbench, one
// client, prepared, the head's statement alone: 0.09-0.12 ms without it,
// 0.14-0.20 ms with it; constant regclasses or the function's xmin as a
// subquery measured the same): at the waker's 50 looks a second while
// idle, 200 while writes flow, up to 1.4 % of one core.
var logTriggersSQL = `coalesce((SELECT string_agg(concat_ws(':', t.tgname, t.oid, t.xmin, t.tgenabled, p.xmin), ',' ORDER BY t.tgname)
		FROM pg_catalog.pg_trigger t LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
		WHERE t.tgrelid IN ((SELECT to_regclass('vendors')), (SELECT to_regclass('work_items')))
			AND t.tgname IN (` + logTriggerNames() + `)), '')`

// logTriggerNames is the names of logTriggers as an SQL list.
func logTriggerNames() string {
	names := make([]string, len(logTriggers))
	for i, t := range logTriggers {
		names[i] = "'" + t.name + "'"
	}
	return strings.Join(names, ", ")
}

// triggerRows is logTriggersSQL's text.
type triggerRows string

// fingerprint names the triggers' rows as they are: it changes whenever
// one of them is created, dropped, enabled or disabled, or its function
// replaced.
func (r triggerRows) fingerprint() string {
	h := fnv.New64a()
	h.Write([]byte(r))
	return strconv.FormatUint(h.Sum64(), 16)
}

// incomplete says why a log with these triggers can miss changes, or ""
// when each fires for every writer.
func (r triggerRows) incomplete() string {
	state := map[string]string{}
	for _, row := range strings.Split(string(r), ",") {
		if f := strings.Split(row, ":"); len(f) >= 4 {
			state[f[0]] = f[3]
		}
	}
	var why []string
	for _, t := range logTriggers {
		repair := "ALTER TABLE " + t.table + " ENABLE ALWAYS TRIGGER " + t.name
		switch state[t.name] {
		case "A":
			continue
		case "":
			why = append(why, fmt.Sprintf("trigger %s on %s is missing (apply the migrations with migrations.Up)", t.name, t.table))
		case "D":
			why = append(why, fmt.Sprintf("trigger %s on %s is disabled (%s)", t.name, t.table, repair))
		case "O":
			why = append(why, fmt.Sprintf("trigger %s on %s does not fire for logical replication or session_replication_role=replica "+
				"(apply migration 00007 with migrations.Up, or %s)", t.name, t.table, repair))
		default: // "R": replication only
			why = append(why, fmt.Sprintf("trigger %s on %s fires only for replication (%s)", t.name, t.table, repair))
		}
	}
	return strings.Join(why, "; ")
}

// incompleteError is repository.ErrChangeLogIncomplete for why.
func incompleteError(why string) error {
	return fmt.Errorf("%w: %s; changes to the table can bypass the log, so followers keep their last AsOf "+
		"and resync once it is repaired", repository.ErrChangeLogIncomplete, why)
}
