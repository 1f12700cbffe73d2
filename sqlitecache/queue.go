package sqlitecache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// The durable write queue: writes the fallback layer kept while PostgreSQL
// could not take them (fallback.WithWriteQueue), in the cache file, so that
// one SQLite transaction stores a write together with the cache entry it
// changes, and a restart keeps both. Queue order is the seq column. A
// write leaves the queue when it is applied (CompleteWrite) or becomes a
// dead letter (DeadLetter), which stays for an operator to retry or
// discard.
//
// While a write is pending, the entry it changes is marked pending (see
// migration 00003): reads see the write's result, and write-through,
// eviction and cleanup leave the entry alone, so that PostgreSQL's older
// row cannot replace the caller's write before it is replayed.

// Values of the pending column.
const (
	pendingWrite  = 1 // the entry is what a queued write will make it
	pendingDelete = 2 // a queued write deletes this vendor: a tombstone
)

var (
	// ErrQueueFull is returned by Enqueue when the limit of pending writes
	// is reached. Nothing was written.
	ErrQueueFull = errors.New("sqlitecache: write queue is full")

	// ErrPendingDelete is returned by GetVendor, beside
	// repository.ErrNotFound, for a vendor a queued write deletes: the
	// caller's own delete, not yet replayed. Entry.Pending is set.
	ErrPendingDelete = fmt.Errorf("deleted by a queued write: %w", repository.ErrNotFound)
)

// QueuedWrite is a write in the queue: pending, or a dead letter.
type QueuedWrite struct {
	Seq      int64 // queue order
	Write    repository.Write
	QueuedAt time.Time
	Attempts int    // replays that failed transiently
	Err      string // why the last attempt failed, or why it is a dead letter
	Dead     bool
	DeadAt   time.Time
	// SentAt is when a replay first handed the write to PostgreSQL (zero:
	// never). PostgreSQL's record of it, which makes a second replay do
	// nothing, is pruned by age, counted from about then.
	SentAt time.Time
	// The row PostgreSQL held when the write was dead-lettered (nil: none
	// was known, or it is gone).
	Current Row
	// Undecodable says why the stored write does not decode ("" when it
	// does): its entity's bytes, or its ID, were damaged in the file. Such
	// a write can never be replayed: Write holds only what its columns say
	// (Op, Entity, the key, BaseVersion), and Raw its stored bytes, for an
	// operator. The fallback layer dead-letters it.
	Undecodable string
	Raw         []byte
}

// Row is an entity as the cache should hold it: Vendor or WorkItem, or
// neither (the key is gone).
type Row struct {
	Vendor   *repository.Vendor
	WorkItem *repository.WorkItem
}

// QueueStats summarizes the queue.
type QueueStats struct {
	Pending     int
	Oldest      time.Time // when the oldest pending write was queued; zero when none
	DeadLetters int
}

// Enqueue appends w to the queue and, in the same transaction, makes the
// cache show its result: after (the entity as it will be) replaces the
// cached entry and is marked pending; for a vendor delete, after is empty
// and the entry becomes a tombstone (reads answer ErrPendingDelete). A
// work item delete passes the item with DeletedAt set. An empty after for
// any other write leaves the cache alone. The transaction is committed
// with synchronous=FULL: the write is on stable storage when Enqueue
// returns.
//
// The checks a store would make against the cached state are made in that
// transaction, so that concurrent callers cannot both pass them: an update
// of an entry cached at a version above w.BaseVersion is
// repository.ErrConflict; an update or delete of a vendor a queued write
// deletes, or an update of a deleted work item, is repository.ErrNotFound;
// a create of a key cached live is
// repository.ErrAlreadyExists.
//
// Errors: repository.ErrInvalid for a write without ID, Op, Entity or key,
// or one whose ID is already queued (nothing written); ErrQueueFull when
// limit > 0 writes are already pending; the answers above; ErrClosed,
// ErrReadOnly, or the wrapped SQLite error (nothing written).
func (c *Cache) Enqueue(ctx context.Context, w repository.Write, after Row, limit int) (QueuedWrite, error) {
	if err := c.checkWrite(); err != nil {
		return QueuedWrite{}, err
	}
	if err := checkQueued(w); err != nil {
		return QueuedWrite{}, fmt.Errorf("sqlitecache: enqueue: %w", err)
	}
	data, enc, err := c.encodeWrite(w)
	if err != nil {
		return QueuedWrite{}, fmt.Errorf("sqlitecache: enqueue: %w", err)
	}
	now := c.cfg.clock()
	q := QueuedWrite{Write: w, QueuedAt: now}
	err = c.inDurableTx(ctx, "enqueue", func(tx wtx) error {
		if limit > 0 {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM queued_writes WHERE dead = 0`).Scan(&n); err != nil {
				return err
			}
			if n >= limit {
				return fmt.Errorf("%w: %d writes pending, the limit is %d", ErrQueueFull, n, limit)
			}
		}
		if err := checkAgainstCache(ctx, tx, w); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO queued_writes (id, op, entity, key, base_version, encoding, data, queued_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
			w.ID.String(), string(w.Op), string(w.Entity), w.Key(), w.BaseVersion, enc, data, toSec(now))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return repository.Invalid("ID", "write %s is already queued", w.ID)
		}
		if q.Seq, err = res.LastInsertId(); err != nil {
			return err
		}
		return c.showPending(ctx, tx, w, after, toSec(now))
	})
	if err != nil {
		return QueuedWrite{}, err
	}
	return q, nil
}

// checkQueued is what every queued write must have to be replayed.
func checkQueued(w repository.Write) error {
	switch {
	case w.ID == uuid.Nil:
		return repository.Invalid("ID", "must not be the nil UUID")
	case w.Op != repository.WriteCreate && w.Op != repository.WriteUpdate && w.Op != repository.WriteDelete:
		return repository.Invalid("Op", "%q is not a write", w.Op)
	case w.Entity != repository.EntityVendor && w.Entity != repository.EntityWorkItem:
		return repository.Invalid("Entity", "%q is not an entity", w.Entity)
	case w.Entity == repository.EntityVendor && w.Vendor.Name == "",
		w.Entity == repository.EntityWorkItem && w.WorkItem.ID == uuid.Nil:
		return repository.Invalid("Key", "a queued write needs its key")
	}
	return nil
}

// checkAgainstCache makes Enqueue's checks against the cached entry.
func checkAgainstCache(ctx context.Context, tx wtx, w repository.Write) error {
	table, column := cacheTable(w.Entity)
	var version, pending int64
	var deleted bool
	q := `SELECT version, pending, 0 FROM ` + table + ` WHERE ` + column + ` = ?`
	if w.Entity == repository.EntityWorkItem {
		q = `SELECT version, pending, deleted FROM cached_work_items WHERE id = ?`
	}
	err := tx.QueryRowContext(ctx, q, w.Key()).Scan(&version, &pending, &deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	gone := pending == pendingDelete
	switch w.Op {
	case repository.WriteCreate:
		if !gone {
			return fmt.Errorf("%s %q is cached at version %d: %w", w.Entity, w.Key(), version, repository.ErrAlreadyExists)
		}
	case repository.WriteUpdate:
		switch {
		case gone:
			return fmt.Errorf("%s %q is deleted by a queued write: %w", w.Entity, w.Key(), repository.ErrNotFound)
		case deleted: // a soft-deleted work item: the store refuses updates of it too
			return fmt.Errorf("%s %q is deleted: %w", w.Entity, w.Key(), repository.ErrNotFound)
		case version > w.BaseVersion:
			return fmt.Errorf("%s %q is cached at version %d, the write was built on %d: %w",
				w.Entity, w.Key(), version, w.BaseVersion, repository.ErrConflict)
		}
	case repository.WriteDelete:
		if gone {
			return fmt.Errorf("%s %q is deleted by a queued write: %w", w.Entity, w.Key(), repository.ErrNotFound)
		}
	}
	return nil
}

// showPending makes the cache show a queued write's result (see Enqueue).
func (c *Cache) showPending(ctx context.Context, tx wtx, w repository.Write, after Row, now float64) error {
	switch {
	case after.Vendor != nil:
		return c.forceVendor(ctx, tx, *after.Vendor, now, pendingWrite)
	case after.WorkItem != nil:
		return c.forceWorkItem(ctx, tx, *after.WorkItem, now, pendingWrite)
	case w.Entity == repository.EntityVendor && w.Op == repository.WriteDelete:
		args, err := c.vendorArgs(repository.Vendor{Name: w.Vendor.Name}, now)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, forceVendorSQL+`, pending = excluded.pending`, append(args, pendingDelete)...)
		return err
	}
	return nil
}

// A forced set replaces the entry whatever its version or pending mark: the
// queue's own operations decide what the cache holds for their keys.
const (
	forceVendorSQL = `INSERT INTO cached_vendors (name, data, cached_at, version, encoding, id, status, created_at, rev, pending)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, random() | 1, ?)
ON CONFLICT (name) DO UPDATE SET
    rev = excluded.rev, cached_at = excluded.cached_at`
	forceVendorRowSQL = forceVendorSQL + `, data = excluded.data, version = excluded.version,
    encoding = excluded.encoding, id = excluded.id, status = excluded.status, created_at = excluded.created_at,
    pending = excluded.pending`
	forceWorkItemSQL = `INSERT INTO cached_work_items (id, data, cached_at, version, encoding, type, status, parent_id, path, deleted, created_at, rev, pending)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, random() | 1, ?)
ON CONFLICT (id) DO UPDATE SET
    rev = excluded.rev, data = excluded.data, cached_at = excluded.cached_at, version = excluded.version,
    encoding = excluded.encoding, type = excluded.type, status = excluded.status,
    parent_id = excluded.parent_id, path = excluded.path, deleted = excluded.deleted,
    created_at = excluded.created_at, pending = excluded.pending`
)

func (c *Cache) forceVendor(ctx context.Context, tx wtx, v repository.Vendor, now float64, pending int) error {
	args, err := c.vendorArgs(v, now)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, forceVendorRowSQL, append(args, pending)...)
	return err
}

func (c *Cache) forceWorkItem(ctx context.Context, tx wtx, w repository.WorkItem, now float64, pending int) error {
	args, err := c.workItemArgs(w, now)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, forceWorkItemSQL, append(args, pending)...)
	return err
}

// settleKey makes the cache hold PostgreSQL's row for a key whose queued
// writes are all done (applied or dead-lettered): row, or nothing. A work
// item delete's row is nil (the store returns none); its pending entry,
// already marked deleted, is kept as PostgreSQL's. Nothing changes while
// other writes to the key are still pending: the entry shows the last.
func (c *Cache) settleKey(ctx context.Context, tx wtx, w repository.Write, row Row, now float64) error {
	var more bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM queued_writes WHERE entity = ? AND key = ? AND dead = 0)`,
		string(w.Entity), w.Key()).Scan(&more); err != nil || more {
		return err
	}
	table, column := cacheTable(w.Entity)
	switch {
	case row.Vendor != nil:
		return c.forceVendor(ctx, tx, *row.Vendor, now, 0)
	case row.WorkItem != nil:
		return c.forceWorkItem(ctx, tx, *row.WorkItem, now, 0)
	case w.Entity == repository.EntityWorkItem && w.Op == repository.WriteDelete:
		_, err := tx.ExecContext(ctx, `UPDATE cached_work_items SET pending = 0 WHERE id = ?`, w.Key())
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE `+column+` = ?`, w.Key())
	return err
}

func cacheTable(e repository.Entity) (table, keyColumn string) {
	if e == repository.EntityWorkItem {
		return "cached_work_items", "id"
	}
	return "cached_vendors", "name"
}

// CompleteWrite removes an applied write from the queue and, once no other
// write to its key is pending, caches row: what PostgreSQL holds after it
// (nil after a delete, or when the row is gone).
// Errors: repository.ErrNotFound when seq is not pending (another process
// completed it), ErrClosed, or the wrapped SQLite error.
func (c *Cache) CompleteWrite(ctx context.Context, q QueuedWrite, row Row) error {
	return c.inTx(ctx, "complete queued write", func(tx wtx) error {
		removed, err := c.complete(ctx, tx, Completed{q, row}, toSec(c.cfg.clock()))
		if err == nil && !removed {
			err = fmt.Errorf("queued write %s: %w", q.Write.ID, repository.ErrNotFound)
		}
		return err
	})
}

// Completed is a write PostgreSQL applied, and its row after it.
type Completed struct {
	Write QueuedWrite
	Row   Row
}

// CompleteWrites is CompleteWrite for several writes, in order, in one
// transaction (a replay's group commit). A write another process removed
// first is skipped. It returns which were removed: removed[i] for done[i].
// Errors: ErrClosed or the wrapped SQLite error (nothing removed).
func (c *Cache) CompleteWrites(ctx context.Context, done []Completed) (removed []bool, err error) {
	removed = make([]bool, len(done))
	err = c.inTx(ctx, "complete queued writes", func(tx wtx) error {
		now := toSec(c.cfg.clock())
		for i, d := range done {
			var err error
			if removed[i], err = c.complete(ctx, tx, d, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return make([]bool, len(done)), err
	}
	return removed, nil
}

// complete removes d's write from the queue and settles its key; it
// reports false when the write was no longer pending.
func (c *Cache) complete(ctx context.Context, tx wtx, d Completed, now float64) (bool, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM queued_writes WHERE seq = ? AND dead = 0`, d.Write.Seq)
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	return true, c.settleKey(ctx, tx, d.Write.Write, d.Row, now)
}

// DeadLetter makes a pending write a dead letter with reason and
// PostgreSQL's current row, together with the writes queued behind it for
// the same key (they were built on it), and caches current. It returns
// every write it dead-lettered, in queue order.
// Errors: repository.ErrNotFound when seq is not pending, ErrClosed, or the
// wrapped SQLite error.
func (c *Cache) DeadLetter(ctx context.Context, q QueuedWrite, reason string, current Row) ([]QueuedWrite, error) {
	cur, curEnc, err := c.encodeRow(current)
	if err != nil {
		return nil, fmt.Errorf("sqlitecache: dead letter: %w", err)
	}
	var out []QueuedWrite
	err = c.inTx(ctx, "dead letter", func(tx wtx) error {
		out, err = c.deadLetterTx(ctx, tx, q, reason, current, cur, curEnc)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// deadLetterTx is DeadLetter in tx, with current encoded.
func (c *Cache) deadLetterTx(ctx context.Context, tx wtx, q QueuedWrite, reason string, current Row, cur []byte, curEnc any) ([]QueuedWrite, error) {
	now := c.cfg.clock()
	// The write and those behind it for its key, read before they change,
	// so that exactly these are returned. The key as stored: an
	// undecodable write's may not parse.
	out, err := c.queued(ctx, tx, `WHERE (entity, key) = (SELECT entity, key FROM queued_writes WHERE seq = ?)
		AND dead = 0 AND seq >= ? ORDER BY seq`, q.Seq, q.Seq)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 || out[0].Seq != q.Seq {
		return nil, fmt.Errorf("queued write %s: %w", q.Write.ID, repository.ErrNotFound)
	}
	behind := fmt.Sprintf("behind dead-lettered write %s: %s", q.Write.ID, reason)
	for i := range out {
		why := reason
		if i > 0 {
			why = behind
		}
		if _, err := tx.ExecContext(ctx, `UPDATE queued_writes SET dead = 1, dead_at = ?, err = ?, current_enc = ?, current = ?
			WHERE seq = ?`, toSec(now), why, curEnc, cur, out[i].Seq); err != nil {
			return nil, err
		}
		out[i].Dead, out[i].DeadAt, out[i].Err, out[i].Current = true, fromSec(toSec(now)), why, current
	}
	return out, c.settleKey(ctx, tx, q.Write, current, toSec(now))
}

// MarkSent records that a replay is about to hand these pending writes to
// PostgreSQL, unless an earlier one did (SentAt keeps the first time).
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) MarkSent(ctx context.Context, qs []QueuedWrite) error {
	var seqs []string
	for _, q := range qs {
		if q.SentAt.IsZero() {
			seqs = append(seqs, strconv.FormatInt(q.Seq, 10))
		}
	}
	if len(seqs) == 0 {
		return nil
	}
	return c.inTx(ctx, "mark queued writes sent", func(tx wtx) error {
		// The seqs are integers formatted here: nothing to inject.
		_, err := tx.ExecContext(ctx, `UPDATE queued_writes SET sent_at = ? WHERE sent_at IS NULL AND seq IN (`+
			strings.Join(seqs, ",")+`)`, toSec(c.cfg.clock()))
		return err
	})
}

// DeferWrite records a replay of a pending write that failed transiently:
// one more attempt, and why.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) DeferWrite(ctx context.Context, q QueuedWrite, reason string) error {
	return c.inTx(ctx, "defer queued write", func(tx wtx) error {
		_, err := tx.ExecContext(ctx, `UPDATE queued_writes SET attempts = attempts + 1, err = ? WHERE seq = ? AND dead = 0`, reason, q.Seq)
		return err
	})
}

// PendingWrites returns up to limit pending writes (0: all) in queue order.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) PendingWrites(ctx context.Context, limit int) ([]QueuedWrite, error) {
	return c.PendingWritesAfter(ctx, 0, limit)
}

// PendingWritesAfter returns up to limit pending writes (0: all) queued
// after seq, in queue order: a replay reads on from the last write it
// handled while the writes it applied are still being removed.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) PendingWritesAfter(ctx context.Context, seq int64, limit int) ([]QueuedWrite, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	out, err := c.queued(ctx, c.h.Load().r, `WHERE dead = 0 AND seq > ? ORDER BY seq LIMIT ?`, seq, limit)
	return out, c.wrapErr("pending writes", err)
}

// DeadLetters returns the dead letters in queue order.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) DeadLetters(ctx context.Context) ([]QueuedWrite, error) {
	if err := c.checkOpen(); err != nil {
		return nil, err
	}
	out, err := c.queued(ctx, c.h.Load().r, `WHERE dead = 1 ORDER BY seq`)
	return out, c.wrapErr("dead letters", err)
}

// QueueStats counts the pending writes and the dead letters.
// Errors: ErrClosed or the wrapped SQLite error.
func (c *Cache) QueueStats(ctx context.Context) (QueueStats, error) {
	if err := c.checkOpen(); err != nil {
		return QueueStats{}, err
	}
	var s QueueStats
	var oldest sql.NullFloat64
	err := c.h.Load().r.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM queued_writes WHERE dead = 0),
		(SELECT min(queued_at) FROM queued_writes WHERE dead = 0),
		(SELECT count(*) FROM queued_writes WHERE dead = 1)`).Scan(&s.Pending, &oldest, &s.DeadLetters)
	if oldest.Valid {
		s.Oldest = fromSec(oldest.Float64)
	}
	return s, c.wrapErr("queue stats", err)
}

// RetryWrite puts a dead letter back at the end of the queue, its attempts
// and error cleared, to be replayed as it was written (an update keeps its
// base version: retry it when the reason is gone, e.g. a parent that now
// exists). The cache keeps PostgreSQL's row until the write is applied.
// Errors: repository.ErrNotFound when id is not queued,
// repository.ErrInvalid when it is pending rather than a dead letter,
// ErrClosed, ErrReadOnly, or the wrapped SQLite error.
func (c *Cache) RetryWrite(ctx context.Context, id uuid.UUID) (QueuedWrite, error) {
	var q QueuedWrite
	err := c.inTx(ctx, "retry dead letter", func(tx wtx) error {
		var err error
		if q, err = c.deadLetter(ctx, tx, id); err != nil {
			return err
		}
		if q.Undecodable != "" {
			return fmt.Errorf("write %s cannot be retried, no replay can apply it: %s: %w; save its bytes (queue list --json shows them), then discard it",
				id, q.Undecodable, ErrUndecodable)
		}
		// A new seq puts it behind everything queued since; it keeps its
		// ID, so a replay that did reach PostgreSQL is still found there.
		// SentAt is cleared: retrying is the operator's decision to apply
		// it, whatever PostgreSQL may have pruned.
		data, enc, err := c.encodeWrite(q.Write)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM queued_writes WHERE seq = ?`, q.Seq); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO queued_writes (id, op, entity, key, base_version, encoding, data, queued_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, q.Write.ID.String(), string(q.Write.Op), string(q.Write.Entity), q.Write.Key(),
			q.Write.BaseVersion, enc, data, toSec(q.QueuedAt))
		if err != nil {
			return err
		}
		q.Seq, err = res.LastInsertId()
		q.Attempts, q.Err, q.Dead, q.DeadAt, q.Current, q.SentAt = 0, "", false, time.Time{}, Row{}, time.Time{}
		return err
	})
	return q, err
}

// DiscardWrite removes a dead letter for good. A pending write that does
// not decode (Undecodable), which no replay can apply, may be discarded
// too: the writes queued behind it for its key become dead letters, and
// the cache forgets the key, so that the next read asks PostgreSQL.
// Errors: as RetryWrite.
func (c *Cache) DiscardWrite(ctx context.Context, id uuid.UUID) (QueuedWrite, error) {
	var q QueuedWrite
	err := c.inTx(ctx, "discard dead letter", func(tx wtx) error {
		var err error
		if q, err = c.findQueued(ctx, tx, id); err != nil {
			return err
		}
		if !q.Dead && q.Undecodable == "" {
			return errPendingNotDead(id)
		}
		if !q.Dead {
			if _, err := c.deadLetterTx(ctx, tx, q, "discarded: it does not decode ("+q.Undecodable+")", Row{}, nil, nil); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM queued_writes WHERE seq = ?`, q.Seq)
		return err
	})
	return q, err
}

// deadLetter finds the dead letter id in tx.
func (c *Cache) deadLetter(ctx context.Context, tx wtx, id uuid.UUID) (QueuedWrite, error) {
	q, err := c.findQueued(ctx, tx, id)
	if err == nil && !q.Dead {
		err = errPendingNotDead(id)
	}
	return q, err
}

// findQueued finds the queued write id in tx, pending or dead.
func (c *Cache) findQueued(ctx context.Context, tx wtx, id uuid.UUID) (QueuedWrite, error) {
	qs, err := c.queued(ctx, tx, `WHERE id = ?`, id.String())
	switch {
	case err != nil:
		return QueuedWrite{}, err
	case len(qs) == 0:
		return QueuedWrite{}, fmt.Errorf("no queued write %s: %w", id, repository.ErrNotFound)
	}
	return qs[0], nil
}

func errPendingNotDead(id uuid.UUID) error {
	return fmt.Errorf("write %s is pending, %w", id, ErrPending)
}

const queuedColumns = `seq, id, op, entity, key, base_version, encoding, data, queued_at, attempts, err, dead, dead_at, current_enc, current, sent_at`

// queued reads queued writes: where is the rest of the query.
func (c *Cache) queued(ctx context.Context, db execer, where string, args ...any) ([]QueuedWrite, error) {
	rows, err := db.QueryContext(ctx, `SELECT `+queuedColumns+` FROM queued_writes `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []QueuedWrite
	for rows.Next() {
		var (
			q                   QueuedWrite
			id, op, entity, key string
			enc                 int64
			data, current       []byte
			queuedAt            float64
			deadAt, sentAt      sql.NullFloat64
			curEnc              sql.NullInt64
		)
		if err := rows.Scan(&q.Seq, &id, &op, &entity, &key, &q.Write.BaseVersion, &enc, &data, &queuedAt,
			&q.Attempts, &q.Err, &q.Dead, &deadAt, &curEnc, &current, &sentAt); err != nil {
			return nil, err
		}
		q.Write.Op, q.Write.Entity = repository.WriteOp(op), repository.Entity(entity)
		q.QueuedAt = fromSec(queuedAt)
		if deadAt.Valid {
			q.DeadAt = fromSec(deadAt.Float64)
		}
		if sentAt.Valid {
			q.SentAt = fromSec(sentAt.Float64)
		}
		var derr error
		if q.Write.ID, derr = uuid.Parse(id); derr != nil {
			derr = fmt.Errorf("its ID %q: %w", id, derr)
		} else if derr = decodeInto(q.Write.Entity, enc, data, &q.Write.Vendor, &q.Write.WorkItem); derr != nil {
			derr = fmt.Errorf("its %s (%d bytes, encoding %d): %w", entity, len(data), enc, derr)
		}
		if derr != nil {
			// Never skipped silently, and never in the way of the others:
			// returned, marked, with what the columns say.
			q.Undecodable, q.Raw = derr.Error(), data
			q.Write.Vendor, q.Write.WorkItem = repository.Vendor{}, repository.WorkItem{}
			if q.Write.Entity == repository.EntityWorkItem {
				q.Write.WorkItem.ID, _ = uuid.Parse(key)
			} else {
				q.Write.Vendor.Name = key
			}
		}
		if curEnc.Valid && current != nil {
			if q.Write.Entity == repository.EntityVendor {
				q.Current.Vendor = new(repository.Vendor)
			} else {
				q.Current.WorkItem = new(repository.WorkItem)
			}
			var v repository.Vendor
			var w repository.WorkItem
			if err := decodeInto(q.Write.Entity, curEnc.Int64, current, &v, &w); err == nil {
				if q.Current.Vendor != nil {
					*q.Current.Vendor = v
				} else {
					*q.Current.WorkItem = w
				}
			} else {
				q.Current = Row{}
			}
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

func decodeInto(e repository.Entity, enc int64, data []byte, v *repository.Vendor, w *repository.WorkItem) error {
	var err error
	if e == repository.EntityWorkItem {
		*w, err = decodeWorkItem(enc, data)
	} else {
		*v, err = decodeVendor(enc, data)
	}
	return err
}

// encodeWrite encodes the entity a write carries.
func (c *Cache) encodeWrite(w repository.Write) ([]byte, int, error) {
	var raw []byte
	var err error
	if w.Entity == repository.EntityWorkItem {
		raw, err = encodeWorkItem(w.WorkItem)
	} else {
		raw, err = encodeVendor(w.Vendor)
	}
	if err != nil {
		return nil, 0, err
	}
	data, enc := compress(raw, c.cfg.compressionThreshold)
	return data, enc, nil
}

// encodeRow encodes a dead letter's current row (nil, nil for none).
func (c *Cache) encodeRow(r Row) ([]byte, any, error) {
	var raw []byte
	var err error
	switch {
	case r.Vendor != nil:
		raw, err = encodeVendor(*r.Vendor)
	case r.WorkItem != nil:
		raw, err = encodeWorkItem(*r.WorkItem)
	default:
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	data, enc := compress(raw, c.cfg.compressionThreshold)
	return data, enc, nil
}

// inDurableTx is inTx committed with synchronous=FULL, on the writer
// connection held for the whole time so that no other transaction runs
// between the pragmas: the commit is fsync'd before it returns.
func (c *Cache) inDurableTx(ctx context.Context, op string, fn func(wtx) error) error {
	if err := c.checkWrite(); err != nil {
		return err
	}
	h := c.h.Load()
	conn, err := h.w.Conn(ctx)
	if err != nil {
		return c.wrapErr(op, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = FULL`); err != nil {
		return c.wrapErr(op, err)
	}
	defer func() {
		// Back to the connection's setting; a failure here leaves it FULL,
		// which is only slower.
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA synchronous = NORMAL`)
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return c.wrapErr(op, err)
	}
	if err := fn(wtx{tx, h}); err != nil {
		_ = tx.Rollback()
		if isAnswer(err) {
			return fmt.Errorf("sqlitecache: %s: %w", op, err)
		}
		return c.wrapErr(op, err)
	}
	return c.wrapErr(op, tx.Commit())
}

// isAnswer: an error the queue's checks return, not a failure of SQLite.
func isAnswer(err error) bool {
	return errors.Is(err, ErrQueueFull) || errors.Is(err, repository.ErrInvalid) || errors.Is(err, repository.ErrConflict) ||
		errors.Is(err, repository.ErrNotFound) || errors.Is(err, repository.ErrAlreadyExists)
}

// carried is what carryQueue copies from a lost file into its replacement:
// the queue, and the entries queued writes are pending on.
var carried = []struct{ table, columns, where string }{
	{"queued_writes", `seq, id, op, entity, key, base_version, encoding, data, queued_at, attempts, err, dead, dead_at, current_enc, current, sent_at`, ``},
	{"cached_vendors", `name, data, cached_at, version, encoding, id, status, created_at, rev, pending`, ` WHERE pending > 0`},
	{"cached_work_items", `id, data, cached_at, version, encoding, type, status, parent_id, path, deleted, created_at, rev, pending`, ` WHERE pending > 0`},
}

// carryQueue copies the queued writes (and their pending entries) that
// the connections to a lost file can still read — a deleted or replaced
// file stays readable through them until they close — into the new file,
// so that writes the application was told are kept survive the loss of
// the file. It returns how many queued writes it carried.
func carryQueue(ctx context.Context, from, to *handles) (int, error) {
	var rows [][][]any // per table, per row
	for _, t := range carried {
		// The writer's one connection has been open on the lost file since
		// it was opened; a new reader connection would open the new file.
		r, err := from.w.QueryContext(ctx, `SELECT `+t.columns+` FROM `+t.table+t.where)
		if err != nil {
			return 0, err
		}
		var all [][]any
		n := strings.Count(t.columns, ",") + 1
		for r.Next() {
			vals := make([]any, n)
			ptrs := make([]any, n)
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := r.Scan(ptrs...); err != nil {
				r.Close()
				return 0, err
			}
			all = append(all, vals)
		}
		if err := r.Close(); err != nil {
			return 0, err
		}
		if err := r.Err(); err != nil {
			return 0, err
		}
		rows = append(rows, all)
	}
	if len(rows[0]) == 0 {
		return 0, nil
	}
	tx, err := to.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	for i, t := range carried {
		marks := strings.Repeat("?, ", strings.Count(t.columns, ","))
		q := `INSERT OR REPLACE INTO ` + t.table + ` (` + t.columns + `) VALUES (` + marks + `?)`
		for _, vals := range rows[i] {
			if _, err := tx.ExecContext(ctx, q, vals...); err != nil {
				return 0, err
			}
		}
	}
	return len(rows[0]), tx.Commit()
}
