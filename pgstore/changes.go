package pgstore

import (
	"context"
	"errors"
	"fmt"
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

// ChangeChannel is the LISTEN/NOTIFY channel the change log's triggers
// notify, with the entity ("vendor" or "work_item") as the payload.
const ChangeChannel = "pgfallback_changes"

// ChangePruneLockKey is the advisory lock PruneChanges takes
// (pg_try_advisory_xact_lock) so that one instance prunes at a time: a
// session that holds it keeps pruning off. "pgfchlog" in ASCII; goose's
// migration lock is another key.
const ChangePruneLockKey int64 = 0x7067_6663_686c_6f67

const (
	// maxReadLimit bounds one read's memory; a larger limit reads this many
	// and says More, which the contract allows.
	maxReadLimit = 100_000
	// pruneBatch rows are looked at per transaction, so that pruning a
	// large backlog neither holds one long transaction nor bloats one
	// statement.
	pruneBatch = 10_000

	watchMinBackoff = 50 * time.Millisecond
	// A listener is cheap to retry, and a follower without notifications
	// falls back to its poll: reconnecting within a second keeps a healed
	// connection's catch-up well within the 2 s the feed promises.
	watchMaxBackoff = time.Second
	// watchIdleCheck: after this long without a notification the listener
	// pings, so that a connection a network silently dropped is noticed in
	// seconds rather than when TCP keepalive gives up.
	watchIdleCheck   = 30 * time.Second
	watchPingTimeout = 5 * time.Second
	watchAppName     = "pgfallback-feed"
)

// ChangeHead returns a cursor at the end of the change log.
func (s *Store) ChangeHead(ctx context.Context) (string, error) {
	// One statement sees one snapshot, even in READ COMMITTED: the snapshot
	// it reports and the seq it reads are consistent without a transaction.
	h, err := readHead(ctx, s.pool)
	if err != nil {
		return "", feedError("change head", err)
	}
	return cursor{system: h.system, db: h.db, seq: h.maxSeq, snap: h.snap}.String(), nil
}

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

	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return repository.ChangeBatch{}, feedError("read changes", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // read only: a no-op after Commit, nothing to undo before

	// The first statement of a REPEATABLE READ transaction fixes its
	// snapshot Q: the head it reports is the snapshot the rows below are
	// read in.
	h, err := readHead(ctx, tx)
	if err != nil {
		return repository.ChangeBatch{}, feedError("read changes", err)
	}
	if why := c.expiredBy(h); why != "" {
		return repository.ChangeBatch{}, fmt.Errorf("pgstore: read changes: %w: %s; resync and start again from ChangeHead",
			repository.ErrCursorExpired, why)
	}

	// "Not visible in P" is "xid >= xmax(P) OR xid in xip(P)" for a
	// committed row: index probes on xid, where "xid >= xmin(P)" would scan
	// everything written since the oldest transaction open at P (an
	// idle-in-transaction session can hold xmin back for hours). A
	// transaction from xmax(P) on took its seq after P, so above S: that
	// half only guards against a sequence given a cache, which would break
	// seq's order in time. Each half of the OR has its own branch so that
	// each uses its index; the second leaves seq > S to the first.
	// QueryExecModeExec: planned with the values every time, since a cached
	// generic plan walks the whole primary key instead.
	rows, err := tx.Query(ctx, `
		(SELECT seq, entity, key, op, version, changed_at FROM pgfallback_changes
		 WHERE seq > $1 ORDER BY seq LIMIT $4)
		UNION ALL
		(SELECT seq, entity, key, op, version, changed_at FROM pgfallback_changes
		 WHERE seq <= $1 AND (xid >= $2::xid8 OR xid = ANY ($3::xid8[])))
		ORDER BY seq LIMIT $4`,
		pgx.QueryExecModeExec, c.seq, strconv.FormatUint(c.snap.xmax, 10), c.snap.xipArray(), limit+1)
	if err != nil {
		return repository.ChangeBatch{}, feedError("read changes", err)
	}
	changes, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (repository.Change, error) {
		var ch repository.Change
		var entity, op string
		err := row.Scan(&ch.Seq, &entity, &ch.Key, &op, &ch.Version, &ch.At)
		ch.Entity, ch.Op, ch.At = repository.Entity(entity), repository.ChangeOp(op), ch.At.UTC()
		return ch, err
	})
	if err != nil {
		return repository.ChangeBatch{}, feedError("read changes", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return repository.ChangeBatch{}, feedError("read changes", err)
	}

	next := cursor{system: h.system, db: h.db, seq: c.seq, snap: h.snap}
	batch := repository.ChangeBatch{}
	if len(changes) > limit {
		// Cut inside the page: the rows past the last one delivered are read
		// again from there, even those with seq <= S (delivered before, now
		// repeated: harmless), so that none in between is lost.
		changes = changes[:limit]
		batch.More = true
		next.seq = changes[limit-1].Seq
	} else {
		if n := len(changes); n > 0 {
			next.seq = max(next.seq, changes[n-1].Seq)
		}
		batch.AsOf = h.asOf
	}
	batch.Changes = changes
	batch.Next = next.String()
	return batch, nil
}

// WatchChanges listens for change notifications on a dedicated connection
// until ctx ends. See repository.ChangeFeed.
func (s *Store) WatchChanges(ctx context.Context, wake func(reconnected bool)) error {
	if wake == nil {
		return fmt.Errorf("pgstore: watch changes: %w", repository.Invalid("wake", "must not be nil"))
	}
	backoff := watchMinBackoff
	for {
		listened := s.listen(ctx, wake)
		if err := ctx.Err(); err != nil {
			return err
		}
		if listened {
			backoff = watchMinBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, watchMaxBackoff)
	}
}

// listen runs one connection: connect, LISTEN, wake(true), then wake(false)
// per notification until the connection fails or ctx ends. It reports
// whether it got as far as listening. Its errors are not returned: the
// caller reconnects whatever they were, and a follower that needs to know
// the database is unreachable learns it from ReadChanges.
func (s *Store) listen(ctx context.Context, wake func(bool)) (listened bool) {
	pc := s.pool.Config()
	cfg := pc.ConnConfig.Copy()
	if s.listenConfig != nil {
		cfg = s.listenConfig.Copy()
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = watchAppName
	}
	// The pool's hooks may supply what a connection needs (a rotated
	// password in BeforeConnect, a role or type registrations in
	// AfterConnect): this connection gets them too.
	if pc.BeforeConnect != nil {
		if err := pc.BeforeConnect(ctx, cfg); err != nil {
			return false
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false
	}
	defer func() {
		// Close tells the server goodbye, so the backend ends now rather
		// than when it notices the socket; bounded, since the server may be
		// the thing that is gone.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(cctx) // the socket is closed whatever this returns
	}()
	if pc.AfterConnect != nil {
		if err := pc.AfterConnect(ctx, conn); err != nil {
			return false
		}
	}
	if _, err := conn.Exec(ctx, "LISTEN "+ChangeChannel); err != nil {
		return false
	}
	wake(true)
	for {
		wctx, cancel := context.WithTimeout(ctx, watchIdleCheck)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			wake(false)
		case ctx.Err() != nil:
			return true
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			// Only our idle timer: a timeout leaves the connection usable.
			pctx, cancel := context.WithTimeout(ctx, watchPingTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return true
			}
		default:
			return true
		}
	}
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
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1), now() - $2::bigint * interval '1 microsecond'`,
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

// head is the state of the log in one snapshot.
type head struct {
	snap      snapshot // the statement's snapshot
	asOf      time.Time
	system    uint64 // the cluster's system identifier
	db        uint32 // the database's oid
	maxSeq    int64  // the largest seq the log ever showed: max(seq), or more if pruning removed it
	prunedSeq int64
	prunedXid uint64
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func readHead(ctx context.Context, q queryRower) (head, error) {
	var h head
	var snap, prunedXid string
	var system int64
	err := q.QueryRow(ctx, `
		SELECT pg_current_snapshot()::text, statement_timestamp(),
			(SELECT system_identifier FROM pg_control_system()),
			(SELECT oid FROM pg_database WHERE datname = current_database()),
			greatest((SELECT max(seq) FROM pgfallback_changes), l.pruned_seq, 0),
			coalesce(l.pruned_seq, 0), coalesce(l.pruned_xid, '0')::text
		FROM (SELECT) AS one LEFT JOIN pgfallback_change_log l ON true`).
		Scan(&snap, &h.asOf, &system, &h.db, &h.maxSeq, &h.prunedSeq, &prunedXid)
	if err != nil {
		return head{}, err
	}
	h.system, h.asOf = uint64(system), h.asOf.UTC()
	if h.snap, err = parseSnapshot(snap); err != nil {
		return head{}, fmt.Errorf("the server's snapshot %q: %w", snap, err)
	}
	if h.prunedXid, err = strconv.ParseUint(prunedXid, 10, 64); err != nil {
		return head{}, fmt.Errorf("pgfallback_change_log.pruned_xid %q: %w", prunedXid, err)
	}
	return h, nil
}

// feedError is mapError, except that a missing change log is ErrNotFound:
// the store answered, its schema is not migrated.
func feedError(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return fmt.Errorf("pgstore: %s: the database has no change log (apply migration 00003 with migrations.Up): %w: %w",
			op, repository.ErrNotFound, err)
	}
	return mapError(op, err)
}

// cursor is the parsed form of a change cursor:
//
//	c1:<system identifier>:<database oid>:<seq>:<pg_snapshot>
//
// where a pg_snapshot's text is itself xmin:xmax:xip,xip,…. The system
// identifier and the database oid tell a cursor from another database: its
// seq and snapshot would mean nothing here.
type cursor struct {
	system uint64
	db     uint32
	seq    int64
	snap   snapshot
}

const cursorVersion = "c1"

func (c cursor) String() string {
	return cursorVersion + ":" + strconv.FormatUint(c.system, 10) + ":" + strconv.FormatUint(uint64(c.db), 10) +
		":" + strconv.FormatInt(c.seq, 10) + ":" + c.snap.String()
}

func parseCursor(s string) (cursor, error) {
	bad := func(format string, args ...any) (cursor, error) {
		return cursor{}, repository.Invalid("cursor", "not a change cursor (%s)", fmt.Sprintf(format, args...))
	}
	parts := strings.SplitN(s, ":", 5)
	if len(parts) != 5 || parts[0] != cursorVersion {
		return bad("want %s:…, as ChangeHead and ReadChanges return", cursorVersion)
	}
	var c cursor
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

// expiredBy says why the log as h shows it can no longer serve every change
// after c, or "" when it can.
func (c cursor) expiredBy(h head) string {
	switch {
	case c.system != h.system || c.db != h.db:
		return "the cursor comes from another database"
	case c.seq > h.maxSeq || c.snap.xmax > h.snap.xmax:
		// Both only grow in one database: a cursor ahead of them was made
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
