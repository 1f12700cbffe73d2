package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/repository"
)

// The change feed reads pgfallback_changes, which the triggers of migration
// 00003 fill on every write to vendors and work_items.
//
// A cursor is (S, P): a seq and the pg_snapshot of the read that made it.
// Its invariant: every committed row that P sees with seq <= S has been
// delivered. Sequence values are taken at write time and transactions
// commit in any order, so "seq > S" alone would skip a row written before
// the last read but committed after it; such a row's transaction is one P
// does not see, which is what the second half of the read's condition asks.

var _ repository.ChangeFeed = (*Store)(nil)

// DefaultChangeRetention is how long a change stays in the log before
// PruneChanges may remove it: a follower that was away for longer resyncs.
const DefaultChangeRetention = 7 * 24 * time.Hour

// ChangePruneLockKey is the advisory lock PruneChanges takes
// (pg_try_advisory_xact_lock) so that one instance prunes at a time: a
// session that holds it keeps pruning off. "pgfchlog" in ASCII; goose's
// migration lock is another key. Another installation's than schema
// public's has its log's OID xor'ed into the low bits (installation.go).
const ChangePruneLockKey int64 = 0x7067_6663_686c_6f67

const (
	// maxReadLimit bounds one read's memory; a larger limit reads this many
	// and says More, which the contract allows.
	maxReadLimit = 100_000
	// pruneBatch rows are looked at per transaction, so that pruning a
	// large backlog neither holds one long transaction nor bloats one
	// statement.
	pruneBatch = 10_000
)

// ChangeHead returns a cursor at the end of the change log.
func (s *Store) ChangeHead(ctx context.Context) (string, error) {
	// One statement sees one snapshot, even in READ COMMITTED: the snapshot
	// it reports and the seq it reads are consistent without a transaction.
	h, err := readHead(ctx, s.pool)
	if err == nil && h.logID == "" {
		// A crash, or a promoted standby, empties the unlogged log and its
		// one-row table. A cursor taken without a log_id expires as soon
		// as the waker or pruning writes one, and the follower resyncs a
		// second time: give the log its id now, if this role may
		// (docs/privileges.md), and read the head again.
		if _, ierr := s.pool.Exec(ctx, insertLogIDSQL); ierr == nil {
			h, err = readHead(ctx, s.pool)
		}
	}
	if err != nil {
		return "", feedError("change head", err)
	}
	s.heard.learn(h.logID)
	return h.cursor(h.maxSeq).String(), nil
}

// insertLogIDSQL gives the log a new log_id if it has none (after a crash).
const insertLogIDSQL = `INSERT INTO pgfallback_change_log DEFAULT VALUES ON CONFLICT DO NOTHING`

// ReadChanges returns up to limit changes committed after cursor.
func (s *Store) ReadChanges(ctx context.Context, cursorText string, limit int) (repository.ChangeBatch, error) {
	if limit < 1 {
		return repository.ChangeBatch{}, fmt.Errorf("pgstore: read changes: %w",
			repository.Invalid("limit", "must be at least 1, got %d", limit))
	}
	limit = min(limit, maxReadLimit)
	c, err := parseCursor(cursorText)
	if err != nil {
		return repository.ChangeBatch{}, fmt.Errorf("pgstore: read changes: %w", err)
	}

	r, err := readChanges(ctx, s.pool, c, limit)
	if err != nil {
		return repository.ChangeBatch{}, err
	}
	s.heard.learn(r.next.logID)
	return r.batch(), nil
}

// batchSender is a *pgxpool.Pool or a *pgx.Conn (the waker's).
type batchSender interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// logRead is one read of the log from a cursor.
type logRead struct {
	changes []repository.Change // in seq order
	next    cursor
	more    bool      // cut at the limit: read again from next at once
	asOf    time.Time // when !more (see repository.ChangeBatch)
}

func (r logRead) batch() repository.ChangeBatch {
	b := repository.ChangeBatch{Changes: r.changes, Next: r.next.String(), More: r.more}
	if !r.more {
		b.AsOf = r.asOf
	}
	return b
}

// readChanges is ReadChanges from a parsed cursor, on the pool or on a
// connection. Its errors are ReadChanges's.
func readChanges(ctx context.Context, q batchSender, c cursor, limit int) (logRead, error) {
	// One round trip: the transaction's statements are pipelined. The
	// first statement of a REPEATABLE READ transaction fixes its snapshot
	// Q, so the head it reports is the snapshot the rows are read in.
	// Expiry is decided on that head; the rows of an expired cursor are
	// dropped unread.
	//
	// "Not visible in P" is "xid >= xmax(P) OR xid in xip(P)" for a
	// committed row: index probes on xid, where "xid >= xmin(P)" would scan
	// everything written since the oldest transaction open at P (an
	// idle-in-transaction session can hold xmin back for hours). A
	// transaction from xmax(P) on took its seq after P, so above S: that
	// half only guards against a sequence given a cache, which would break
	// seq's order in time. Each half has its own branch, written as
	// "Index probes only" (below) says; both leave seq > S to the first.
	// force_custom_plan: planned with the values every time, since a
	// generic plan of the prepared statement walks the whole primary key.
	var read pgx.Batch
	read.Queue("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
	read.Queue("SET LOCAL plan_cache_mode = force_custom_plan")
	var hr headRow
	read.Queue(headSQL).QueryRow(func(row pgx.Row) error { return row.Scan(hr.dest()...) })
	var changes []repository.Change
	read.Queue(readChangesSQL,
		c.seq, strconv.FormatUint(c.snap.xmax, 10), c.snap.xipArray(), strconv.FormatUint(c.snap.xmin, 10), limit+1).
		Query(func(rows pgx.Rows) error {
			var err error
			changes, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (repository.Change, error) {
				var ch repository.Change
				var entity, op string
				err := row.Scan(&ch.Seq, &entity, &ch.Key, &op, &ch.Version, &ch.At)
				ch.Entity, ch.Op, ch.At = repository.Entity(entity), repository.ChangeOp(op), ch.At.UTC()
				return ch, err
			})
			return err
		})
	read.Queue("COMMIT")
	if err := q.SendBatch(ctx, &read).Close(); err != nil {
		return logRead{}, feedError("read changes", err)
	}
	h, err := hr.head()
	if err != nil {
		return logRead{}, feedError("read changes", err)
	}
	if why := c.expiredBy(h); why != "" {
		return logRead{}, fmt.Errorf("pgstore: read changes: %w: %s; resync and start again from ChangeHead",
			repository.ErrCursorExpired, why)
	}

	r := logRead{next: h.cursor(c.seq)}
	if len(changes) > limit {
		// Cut inside the page: the rows past the last one delivered are read
		// again from there, even those with seq <= S (delivered before, now
		// repeated: harmless), so that none in between is lost.
		changes = changes[:limit]
		r.more = true
		r.next.seq = changes[limit-1].Seq
	} else {
		if n := len(changes); n > 0 {
			r.next.seq = max(r.next.seq, changes[n-1].Seq)
		}
		r.asOf = h.asOf
	}
	r.changes = changes
	return r, nil
}

// PruneChanges removes changes older than olderThan (by the database's
// clock) and returns how many it removed. Followers whose cursors had yet
// to deliver a removed change get repository.ErrCursorExpired and resync.
// When another instance is pruning it returns 0 at once. It removes only
// changes of transactions that ended before every transaction still open
// began, so that a cursor taken after the pruning is never expired by it.
// Errors: ErrInvalid for a negative olderThan, ErrNotFound when the schema
// has no change log, connection failures wrapped.
func (s *Store) PruneChanges(ctx context.Context, olderThan time.Duration) (removed int64, err error) {
	if olderThan < 0 {
		return 0, fmt.Errorf("pgstore: prune changes: %w", repository.Invalid("olderThan", "must not be negative, got %v", olderThan))
	}
	// The cutoff is fixed by the first batch, so that later ones do not
	// creep forward; each batch resumes after the window the last one read.
	p := pruneState{olderThan: olderThan}
	for {
		n, more, err := s.pruneBatch(ctx, &p)
		if err != nil {
			return removed, feedError("prune changes", err)
		}
		removed += n
		if !more {
			return removed, nil
		}
	}
}

type pruneState struct {
	olderThan time.Duration
	cutoff    time.Time // zero until the first batch sets it
	after     int64     // the last seq a batch looked at
}

// pruneBatch looks at the next pruneBatch rows in seq order and removes the
// ones old enough, in one transaction, the one that records them in
// pgfallback_change_log: a reader never sees rows gone without the record
// that expires the cursors that needed them. There is no index on
// changed_at (see migration 00003); seq follows time closely enough that
// the oldest rows come first, and a window that reaches a row younger than
// the cutoff is the last. more reports whether to go on.
func (s *Store) pruneBatch(ctx context.Context, p *pruneState) (n int64, more bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var locked bool
		var at time.Time
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1 # `+installationSQL+`), now() - $2::bigint * interval '1 microsecond'`,
			ChangePruneLockKey, p.olderThan.Microseconds()).Scan(&locked, &at); err != nil || !locked {
			return err // not locked: another instance is pruning, and more stays false
		}
		if p.cutoff.IsZero() {
			p.cutoff = at
		}
		// xid below the xmin of this statement's snapshot: every snapshot
		// taken from now on has its xmin above what is recorded as pruned,
		// so no cursor made after this commit counts as expired (an old
		// transaction left open would otherwise expire every new cursor).
		var seen int64
		var last *int64
		var reached *bool
		err := tx.QueryRow(ctx, `
			WITH window_ AS (
				SELECT seq, xid, changed_at FROM pgfallback_changes
				WHERE seq > $3 ORDER BY seq LIMIT $2
			), gone AS (
				DELETE FROM pgfallback_changes c USING window_ w
				WHERE c.seq = w.seq AND w.changed_at < $1 AND w.xid < pg_snapshot_xmin(pg_current_snapshot())
				RETURNING c.seq, c.xid
			), summary AS (
				SELECT count(*) AS n, max(seq) AS seq, max(xid) AS xid FROM gone
			), recorded AS (
				INSERT INTO pgfallback_change_log AS l (id, pruned_seq, pruned_xid, pruned_before)
				SELECT true, seq, xid, $1 FROM summary WHERE n > 0
				ON CONFLICT (id) DO UPDATE SET
					pruned_seq    = greatest(l.pruned_seq, excluded.pruned_seq),
					pruned_xid    = greatest(l.pruned_xid, excluded.pruned_xid),
					pruned_before = greatest(l.pruned_before, excluded.pruned_before)
			)
			SELECT (SELECT n FROM summary), count(*), max(seq), bool_or(changed_at >= $1) FROM window_`,
			pgx.QueryExecModeExec, p.cutoff, pruneBatch, p.after).Scan(&n, &seen, &last, &reached)
		if err != nil {
			return err
		}
		if last != nil {
			p.after = *last
		}
		more = n > 0 && seen == pruneBatch && (reached == nil || !*reached)
		return nil
	})
	return n, more, err
}

// Index probes only. The log's reads of "rows of transactions the last
// snapshot did not see" (ReadChanges' last two branches; the waker's look
// is a ReadChanges) find no row almost every time, and must cost a few
// index probes on xid whatever the log's statistics say: any other plan
// reads the whole log, which grows by a row per write and is read hundreds
// of times a second. Without column statistics (until autovacuum first
// analyzes the log: after the migration, with autovacuum off, after
// pg_upgrade) the planner took "xid >= X OR xid = ANY (xip)" to match a
// third of the rows. It then read "seq <= S" through the primary key, or,
// under the EXISTS of the waker's look as it was, chose a sequential scan
// expected to stop within a few rows: on a 40,000-row log, 6 ms per look
// instead of 0.1 ms, and under pgbench the followers cost writers half
// their throughput. So each condition on xid is a range with both ends
// (xmin <= xid < xmax for the in-progress list, xmax <= xid < the reader's
// own xmax after it), which the planner estimates at 0.5 % of the rows
// without statistics and from the histogram with them; and "seq + 0",
// which no index serves, keeps the primary key out of those branches.
// (enable_seqscan off would do it too, but a plan it cannot avoid a scan
// in then costs more than jit_above_cost: every read was JIT-compiled,
// which cost more than the scans.)

// The two conditions of "Index probes only", on ReadChanges' parameters:
// the rows at or below seq $1 of transactions that a snapshot with xmax
// $2, in-progress list $3 and xmin $4 did not see, those in progress and
// those begun after it.
const (
	unseenInProgress = `xid = ANY ($3::xid8[]) AND xid >= $4::xid8 AND xid < $2::xid8 AND seq + 0 <= $1`
	unseenLater      = `xid >= $2::xid8 AND xid < pg_snapshot_xmax(pg_current_snapshot()) AND seq + 0 <= $1`
)

// readChangesSQL reads the changes after a cursor (seq $1, snapshot with
// xmin $4, xmax $2 and in-progress list $3), up to $5 of them: those above
// seq, and those the snapshot did not see committed.
const readChangesSQL = `
		(SELECT seq, entity, key, op, version, changed_at FROM pgfallback_changes
		 WHERE seq > $1 ORDER BY seq LIMIT $5)
		UNION ALL
		(SELECT seq, entity, key, op, version, changed_at FROM pgfallback_changes WHERE ` + unseenInProgress + `)
		UNION ALL
		(SELECT seq, entity, key, op, version, changed_at FROM pgfallback_changes WHERE ` + unseenLater + `)
		ORDER BY seq LIMIT $5`

// head is the state of the log in one snapshot.
type head struct {
	snap      snapshot // the statement's snapshot
	asOf      time.Time
	system    uint64 // the cluster's system identifier
	db        uint32 // the database's oid
	timeline  uint32 // the history the server is on; a promoted standby starts a new one
	logID     string // pgfallback_change_log.log_id; "" when the row is gone
	triggers  string // the fingerprint of the log's triggers (triggers.go)
	maxSeq    int64  // the largest seq the log ever showed: max(seq), or more if pruning removed it
	prunedSeq int64
	prunedXid uint64
}

// cursor is a cursor at seq in h's snapshot and history.
func (h head) cursor(seq int64) cursor {
	return cursor{system: h.system, db: h.db, timeline: h.timeline, logID: h.logID, triggers: h.triggers, seq: seq, snap: h.snap}
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// headSQL reads the head in one row.
//
// The timeline of a primary is the one it writes WAL on, which
// pg_walfile_name shows as its first 8 hex digits: it changes the moment a
// promoted standby accepts writes (the last checkpoint's, in
// pg_control_checkpoint, lags until the next checkpoint). A standby cannot
// call pg_current_wal_lsn; its replay position's timeline is its last
// restartpoint's.
//
// The head's asOf is when the transaction began, not when the statement
// did: in the extended protocol PostgreSQL takes the snapshot at Bind and
// sets statement_timestamp() again at Execute, so a commit in between was
// missing from the snapshot yet before the statement's time (seen under
// load: an AsOf 0.4 ms past a trigger's disabling that the read did not
// see). transaction_timestamp() is set when the transaction starts, before
// any snapshot is taken in it.
var headSQL = `
		SELECT pg_current_snapshot()::text, transaction_timestamp(),
			(SELECT system_identifier FROM pg_control_system()),
			(SELECT oid FROM pg_database WHERE datname = current_database()),
			CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())
				ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
			coalesce(l.log_id::text, ''),
			greatest((SELECT max(seq) FROM pgfallback_changes), l.pruned_seq, 0),
			coalesce(l.pruned_seq, 0), coalesce(l.pruned_xid, '0')::text,
			` + logTriggersSQL + `
		FROM (SELECT) AS one LEFT JOIN pgfallback_change_log l ON true`

// headRow holds headSQL's columns as scanned.
type headRow struct {
	h                         head
	snap, prunedXid, triggers string
	system, timeline          int64
}

func (r *headRow) dest() []any {
	return []any{&r.snap, &r.h.asOf, &r.system, &r.h.db, &r.timeline, &r.h.logID, &r.h.maxSeq, &r.h.prunedSeq, &r.prunedXid,
		&r.triggers}
}

// head is the row's head; ErrChangeLogIncomplete when the log's triggers
// let changes bypass it (triggers.go).
func (r *headRow) head() (head, error) {
	if why := triggerRows(r.triggers).incomplete(); why != "" {
		return head{}, incompleteError(why)
	}
	h := r.h
	h.system, h.timeline, h.asOf = uint64(r.system), uint32(r.timeline), h.asOf.UTC()
	h.triggers = triggerRows(r.triggers).fingerprint()
	var err error
	if h.snap, err = parseSnapshot(r.snap); err != nil {
		return head{}, fmt.Errorf("the server's snapshot %q: %w", r.snap, err)
	}
	if h.prunedXid, err = strconv.ParseUint(r.prunedXid, 10, 64); err != nil {
		return head{}, fmt.Errorf("pgfallback_change_log.pruned_xid %q: %w", r.prunedXid, err)
	}
	return h, nil
}

func readHead(ctx context.Context, q queryRower) (head, error) {
	var r headRow
	if err := q.QueryRow(ctx, headSQL).Scan(r.dest()...); err != nil {
		return head{}, err
	}
	return r.head()
}

// feedError is mapError, except that a missing change log is ErrNotFound:
// the store answered, its schema is not migrated.
func feedError(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("pgstore: %s: the database has no change log (apply migration 00003 with migrations.Up): %w: %w",
			op, repository.ErrNotFound, err)
	}
	if errors.As(err, &pgErr) && pgErr.Code == "42703" && strings.Contains(pgErr.Message, "log_id") { // undefined_column
		return fmt.Errorf("pgstore: %s: the change log predates migration 00005 (apply it with migrations.Up): %w: %w",
			op, repository.ErrNotFound, err)
	}
	return mapError(op, err)
}

// cursor is the parsed form of a change cursor:
//
//	c3:<system identifier>:<database oid>:<timeline>:<log id>:<triggers>:<seq>:<pg_snapshot>
//
// where a pg_snapshot's text is itself xmin:xmax:xip,xip,…. The system
// identifier and the database oid tell a cursor from another database, the
// timeline one from another history of this database (a standby promoted
// after asynchronous replication lost transactions), the log id one from
// another log (dropped and re-created), the triggers' fingerprint one read
// before the log's triggers were altered (triggers.go): in each, its seq
// and snapshot would mean nothing here, or changes may have bypassed the
// log since.
type cursor struct {
	system   uint64
	db       uint32
	timeline uint32
	logID    string
	triggers string // "" in a c2 cursor, made before triggers were fingerprinted
	seq      int64
	snap     snapshot
	legacy   bool // a c1 cursor, made before timelines and log ids were recorded
}

const cursorVersion = "c3"

// c2CursorVersion cursors have no triggers' fingerprint; they parse, and
// take the log's triggers as they find them.
const c2CursorVersion = "c2"

// legacyCursorVersion cursors (system:db:seq:snapshot) parse, and expire:
// they cannot tell which history they were read on.
const legacyCursorVersion = "c1"

func (c cursor) String() string {
	return cursorVersion + ":" + strconv.FormatUint(c.system, 10) + ":" + strconv.FormatUint(uint64(c.db), 10) +
		":" + strconv.FormatUint(uint64(c.timeline), 10) + ":" + c.logID + ":" + c.triggers +
		":" + strconv.FormatInt(c.seq, 10) + ":" + c.snap.String()
}

func parseCursor(s string) (cursor, error) {
	bad := func(format string, args ...any) (cursor, error) {
		return cursor{}, repository.Invalid("cursor", "not a change cursor (%s)", fmt.Sprintf(format, args...))
	}
	var c cursor
	parts := strings.SplitN(s, ":", 8)
	if c2 := strings.SplitN(s, ":", 7); len(c2) == 7 && c2[0] == c2CursorVersion {
		// No triggers' field: read it as a c3 cursor with an empty one.
		parts = slices.Insert(c2, 5, "")
	}
	switch {
	case len(parts) == 8 && (parts[0] == cursorVersion || parts[0] == c2CursorVersion):
		tl, err := strconv.ParseUint(parts[3], 10, 32)
		if err != nil {
			return bad("timeline %q", parts[3])
		}
		c.timeline, c.logID, c.triggers = uint32(tl), parts[4], parts[5]
		if c.logID != "" && !isUUID(c.logID) {
			return bad("log id %q", c.logID)
		}
		if _, err := strconv.ParseUint(c.triggers, 16, 64); c.triggers != "" && (err != nil || len(c.triggers) > 16) {
			return bad("triggers %q", c.triggers)
		}
		parts = []string{parts[0], parts[1], parts[2], parts[6], parts[7]}
	case strings.HasPrefix(s, legacyCursorVersion+":"):
		parts = strings.SplitN(s, ":", 5)
		if len(parts) != 5 {
			return bad("want %s:…, as ChangeHead and ReadChanges return", cursorVersion)
		}
		c.legacy = true
	default:
		return bad("want %s:…, as ChangeHead and ReadChanges return", cursorVersion)
	}
	var err error
	if c.system, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return bad("system identifier %q", parts[1])
	}
	db, err := strconv.ParseUint(parts[2], 10, 32)
	if err != nil {
		return bad("database %q", parts[2])
	}
	c.db = uint32(db)
	if c.seq, err = strconv.ParseInt(parts[3], 10, 64); err != nil || c.seq < 0 {
		return bad("seq %q", parts[3])
	}
	if c.snap, err = parseSnapshot(parts[4]); err != nil {
		return bad("snapshot %q: %v", parts[4], err)
	}
	return c, nil
}

// isUUID reports whether s is a UUID in PostgreSQL's text form.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if r != '-' {
				return false
			}
		case !('0' <= r && r <= '9' || 'a' <= r && r <= 'f'):
			return false
		}
	}
	return true
}

// expiredBy says why the log as h shows it can no longer serve every change
// after c, or "" when it can. Expiry is answered by an authoritative
// resync (every cached row replaced by the primary's, whatever its
// version): after a new timeline or a reset log, rows the cache holds may
// come from a history that no longer exists.
func (c cursor) expiredBy(h head) string {
	switch {
	case c.system != h.system || c.db != h.db:
		return "the cursor comes from another database"
	case c.legacy:
		return "the cursor predates timelines and log ids (a pgfallback release before migration 00005)"
	case c.timeline != h.timeline:
		// Sequences and xids of the old history may be issued again on the
		// new one, and what the old primary committed after the standby's
		// last replay is gone.
		return fmt.Sprintf("the cursor was read on timeline %d, the server is on timeline %d (a standby was promoted)",
			c.timeline, h.timeline)
	case c.logID != h.logID:
		return "the change log was reset (its log id changed)"
	case c.triggers != "" && c.triggers != h.triggers:
		return "the change log's triggers were altered since the cursor was read (disabled, dropped or re-enabled): " +
			"changes may have bypassed the log"
	case c.seq > h.maxSeq || c.snap.xmax > h.snap.xmax:
		// Both only grow in one history: a cursor ahead of them was made
		// elsewhere, or the log was emptied by hand.
		return fmt.Sprintf("the cursor (seq %d, snapshot %s) is ahead of this log (seq %d, snapshot %s)",
			c.seq, c.snap, h.maxSeq, h.snap)
	case c.seq < h.prunedSeq:
		return fmt.Sprintf("changes up to seq %d were pruned, the cursor is at seq %d", h.prunedSeq, c.seq)
	case h.prunedXid >= c.snap.xmin:
		// Pruning removed a row of a transaction that may have committed
		// after the cursor's snapshot: one the cursor had yet to deliver,
		// whatever its seq and age. Every pruned row of a transaction older
		// than the snapshot's xmin was visible to it, so was delivered.
		return fmt.Sprintf("pruning removed changes of transaction %d, which the cursor's snapshot %s may not have seen committed",
			h.prunedXid, c.snap)
	}
	return ""
}

// snapshot is a pg_snapshot: transactions below xmin are over, those from
// xmax on had not started, and those in xip were in progress.
type snapshot struct {
	xmin, xmax uint64
	xip        []uint64
}

func (p snapshot) String() string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(p.xmin, 10))
	b.WriteByte(':')
	b.WriteString(strconv.FormatUint(p.xmax, 10))
	b.WriteByte(':')
	xip := p.xipArray()
	b.WriteString(xip[1 : len(xip)-1])
	return b.String()
}

// xipArray is xip as an array literal, for $n::xid8[].
func (p snapshot) xipArray() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, x := range p.xip {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(x, 10))
	}
	b.WriteByte('}')
	return b.String()
}

// parseSnapshot accepts what pg_snapshot's input accepts, so that a
// cursor that parses here is never refused by the server.
func parseSnapshot(s string) (snapshot, error) {
	fields := strings.Split(s, ":")
	if len(fields) != 3 {
		return snapshot{}, errors.New("want xmin:xmax:xip")
	}
	var p snapshot
	var err error
	if p.xmin, err = strconv.ParseUint(fields[0], 10, 64); err != nil || p.xmin == 0 {
		return snapshot{}, fmt.Errorf("xmin %q", fields[0])
	}
	if p.xmax, err = strconv.ParseUint(fields[1], 10, 64); err != nil || p.xmax < p.xmin {
		return snapshot{}, fmt.Errorf("xmax %q", fields[1])
	}
	if fields[2] == "" {
		return p, nil
	}
	for _, f := range strings.Split(fields[2], ",") {
		x, err := strconv.ParseUint(f, 10, 64)
		if err != nil || x < p.xmin || x >= p.xmax || (len(p.xip) > 0 && x < p.xip[len(p.xip)-1]) {
			return snapshot{}, fmt.Errorf("in-progress transaction %q", f)
		}
		if len(p.xip) == 0 || x != p.xip[len(p.xip)-1] {
			p.xip = append(p.xip, x)
		}
	}
	return p, nil
}
