package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/repository"
)

// ApplyWrite records each write's ID in pgfallback_applied_writes
// (migration 00004) in the transaction that applies it. The record goes in
// first: a second apply of the same ID, concurrent or later, finds it (or
// waits on the first's uncommitted insert, then finds it) before touching
// the entity, so the entity changes once whatever the interleaving.

var _ repository.WriteApplier = (*Store)(nil)

// DefaultAppliedWriteRetention is how long PruneAppliedWrites should keep a
// record: far longer than a queued write can wait to be replayed again
// after it was applied (a crash, then a long outage). See PruneAppliedWrites.
const DefaultAppliedWriteRetention = 7 * 24 * time.Hour

// appliedPruneBatch records are removed per statement, so that pruning a
// large backlog neither holds one long transaction nor locks much at once.
const appliedPruneBatch = 10_000

// ApplyWrite applies w exactly once: see repository.WriteApplier. It runs
// the write as the repositories' Create, Update and Delete do, in one
// transaction that also records w.ID, except that a delete of a row that is
// gone succeeds (and is recorded), and an update is applied only on
// w.BaseVersion. A work item created without an ID gets one, recorded, so
// that a replay of the same Write returns that item.
//
// A write whose row cannot be decoded (one written around validation) is
// rolled back and returns ErrUnreadable; an already applied one whose row
// cannot be decoded now returns AlreadyApplied together with ErrUnreadable.
func (s *Store) ApplyWrite(ctx context.Context, w repository.Write) (repository.AppliedWrite, error) {
	w, idGiven, err := prepareWrite(w)
	if err != nil {
		return repository.AppliedWrite{}, err
	}
	// A plan PostgreSQL refuses after a schema change (replanned) rolls
	// the transaction back, which is then run again.
	out, err := replanned(ctx, s.pool, func() (out repository.AppliedWrite, err error) {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			out, err = applyRecorded(ctx, tx, w, idGiven)
			return err
		})
		return out, err
	})
	if err == nil {
		return out, nil
	}
	return repository.AppliedWrite{AlreadyApplied: out.AlreadyApplied}, applyError(w, out.AlreadyApplied, err)
}

// prepareWrite checks w and gives a work item created without an ID its
// ID, here rather than in createWorkItem, so that the record holds the key
// the item gets. idGiven is false for such an item.
func prepareWrite(w repository.Write) (_ repository.Write, idGiven bool, err error) {
	if w, err = checkWrite(w); err != nil {
		return w, false, fmt.Errorf("pgstore: apply write: %w", err)
	}
	idGiven = w.Entity != repository.EntityWorkItem || w.WorkItem.ID != uuid.Nil
	if !idGiven {
		if w.WorkItem.ID, err = uuid.NewV7(); err != nil {
			return w, false, fmt.Errorf("pgstore: apply write %s: new id: %w", w.ID, err)
		}
	}
	if w.Entity == repository.EntityVendor && w.Op == repository.WriteCreate && w.Vendor.ID == uuid.Nil {
		// As createVendor would; here, so that the create has its one
		// statement ready for a pipeline. The key is the name.
		if w.Vendor.ID, err = uuid.NewV7(); err != nil {
			return w, false, fmt.Errorf("pgstore: apply write %s: new id: %w", w.ID, err)
		}
	}
	return w, idGiven, nil
}

// applyRecorded records w.ID in tx and applies w, or, when the ID is
// recorded already, answers the row as it is now.
func applyRecorded(ctx context.Context, tx pgx.Tx, w repository.Write, idGiven bool) (repository.AppliedWrite, error) {
	tag, err := tx.Exec(ctx, recordWriteSQL, recordWriteArgs(w)...)
	if err != nil {
		return repository.AppliedWrite{}, err
	}
	if tag.RowsAffected() == 0 {
		return replayed(ctx, tx, w, idGiven)
	}
	return applyWrite(ctx, tx, w)
}

// recordWriteSQL records a write's ID; it inserts nothing when the ID is
// recorded already.
const recordWriteSQL = `
	INSERT INTO pgfallback_applied_writes (id, entity, key, op) VALUES ($1, $2, $3, $4)
	ON CONFLICT (id) DO NOTHING`

func recordWriteArgs(w repository.Write) []any {
	return []any{w.ID, string(w.Entity), w.Key(), string(w.Op)}
}

// applyError words the error of a write's transaction, rolled back.
func applyError(w repository.Write, alreadyApplied bool, err error) error {
	op := fmt.Sprintf("apply write %s (%s %s %q)", w.ID, w.Op, w.Entity, w.Key())
	if errors.Is(err, repository.ErrUnreadable) {
		if alreadyApplied {
			return fmt.Errorf("pgstore: %s: applied earlier, but its row cannot be read now: %w", op, err)
		}
		return fmt.Errorf("pgstore: %s: not applied (rolled back): %w", op, err)
	}
	return appliedWritesError(op, err, false)
}

// checkWrite validates w as the repository call it stands for validates
// its entity, before anything is written, and returns it ready to apply.
func checkWrite(w repository.Write) (repository.Write, error) {
	if w.ID == uuid.Nil {
		return w, repository.Invalid("ID", "must not be the nil UUID: it is what makes a replay safe")
	}
	switch w.Op {
	case repository.WriteCreate, repository.WriteDelete:
	case repository.WriteUpdate:
		if w.BaseVersion < 1 {
			return w, repository.Invalid("BaseVersion", "must be the version the write was built on (>= 1), got %d", w.BaseVersion)
		}
		// The entity's own Version is not the write's: BaseVersion is.
		w.Vendor.Version, w.WorkItem.Version = w.BaseVersion, w.BaseVersion
	default:
		return w, repository.Invalid("Op", "%q is not one of %q, %q, %q", w.Op,
			repository.WriteCreate, repository.WriteUpdate, repository.WriteDelete)
	}
	switch w.Entity {
	case repository.EntityVendor:
		switch w.Op {
		case repository.WriteCreate:
			return w, w.Vendor.Validate()
		case repository.WriteUpdate:
			return w, w.Vendor.ValidateUpdate()
		}
		return w, repository.ValidateVendorName(w.Vendor.Name)
	case repository.EntityWorkItem:
		if w.Op == repository.WriteCreate {
			w.WorkItem.Depth, w.WorkItem.Path, w.WorkItem.DeletedAt = 0, "", nil // maintained by the store
			return w, w.WorkItem.Validate()
		}
		if w.WorkItem.ID == uuid.Nil {
			return w, repository.Invalid("ID", "a work item's %s needs its ID, the key", w.Op)
		}
		if w.Op == repository.WriteUpdate {
			return w, w.WorkItem.ValidateUpdate()
		}
		return w, nil
	}
	return w, repository.Invalid("Entity", "%q is not one of %q, %q", w.Entity, repository.EntityVendor, repository.EntityWorkItem)
}

// applyWrite applies a checked w in tx, whose record of w.ID is new.
func applyWrite(ctx context.Context, tx pgx.Tx, w repository.Write) (repository.AppliedWrite, error) {
	var out repository.AppliedWrite
	var err error
	switch w.Entity {
	case repository.EntityVendor:
		var v repository.Vendor
		switch w.Op {
		case repository.WriteCreate:
			v, err = createVendor(ctx, tx, w.Vendor)
		case repository.WriteUpdate:
			v, err = updateVendor(ctx, tx, w.Vendor, w.BaseVersion)
		case repository.WriteDelete:
			_, err = deleteVendor(ctx, tx, w.Vendor.Name) // a vendor already gone is what the write wanted
			return out, err
		}
		out.Vendor = &v
	case repository.EntityWorkItem:
		var item repository.WorkItem
		switch w.Op {
		case repository.WriteCreate:
			item, err = createWorkItem(ctx, tx, w.WorkItem)
		case repository.WriteUpdate:
			item, err = updateWorkItem(ctx, tx, w.WorkItem, w.BaseVersion)
		case repository.WriteDelete:
			// An item already gone is what the write wanted, and the
			// transaction is still good: ErrNotFound comes from no row,
			// not from a failed statement.
			if err = deleteWorkItem(ctx, tx, w.WorkItem.ID); errors.Is(err, repository.ErrNotFound) {
				err = nil
			}
			return out, err
		}
		out.WorkItem = &item
	}
	return out, err
}

// replayed answers a write whose ID tx found recorded: the record must
// describe this write, and the row is returned as it is now (nil when
// gone). keyKnown is false for a work item created without an ID, whose
// key the earlier apply chose; the record holds it.
func replayed(ctx context.Context, tx pgx.Tx, w repository.Write, keyKnown bool) (repository.AppliedWrite, error) {
	var entity, key, op string
	err := tx.QueryRow(ctx, `SELECT entity, key, op FROM pgfallback_applied_writes WHERE id = $1`, w.ID).
		Scan(&entity, &key, &op)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// Pruned since the insert saw it: the write's own key will do.
		entity, key, op = string(w.Entity), w.Key(), string(w.Op)
	case err != nil:
		return repository.AppliedWrite{}, err
	case entity != string(w.Entity) || op != string(w.Op) || keyKnown && key != w.Key():
		// Taking it as done would drop this write without a word.
		return repository.AppliedWrite{}, repository.Invalid("ID", "%s was already used by a %s of %s %q, not this write",
			w.ID, op, entity, key)
	}
	out := repository.AppliedWrite{AlreadyApplied: true}
	if repository.Entity(entity) == repository.EntityVendor {
		v, err := scanVendor(tx.QueryRow(ctx, `SELECT `+vendorColumns+` FROM vendors WHERE name = $1`, key))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return out, nil
		case err != nil:
			return out, err
		}
		out.Vendor = &v
		return out, nil
	}
	id, err := uuid.Parse(key)
	if err != nil {
		return out, fmt.Errorf("the record of write %s holds the work item key %q: %w", w.ID, key, err)
	}
	item, err := scanWorkItem(tx.QueryRow(ctx, `SELECT `+workItemColumns+` FROM work_items WHERE id = $1`, id))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return out, nil
	case err != nil:
		return out, err
	}
	out.WorkItem = &item
	return out, nil
}

// PruneAppliedWrites removes the records of writes applied more than
// olderThan ago (by the database's clock), in batches, and returns how many
// it removed. Concurrent calls share the work.
//
// A record is what makes a replay of its write do nothing. Once it is gone,
// the write replayed is applied again: an update then conflicts (its
// BaseVersion is stale), but a create of a row deleted since brings it
// back, and a vendor delete removes a vendor created again under that name.
// So a record must outlive any replay of its write that could still be in
// flight: keep it longer than the durable queue can hold a write after
// applying it (the queue's retention: a crash before it forgets the write,
// then an outage before it replays). DefaultAppliedWriteRetention (7 days)
// is meant for that.
// Errors: ErrInvalid for a negative olderThan, ErrNotFound when the schema
// has no applied-writes table, connection failures wrapped.
func (s *Store) PruneAppliedWrites(ctx context.Context, olderThan time.Duration) (removed int64, err error) {
	if olderThan < 0 {
		return 0, fmt.Errorf("pgstore: prune applied writes: %w",
			repository.Invalid("olderThan", "must not be negative, got %v", olderThan))
	}
	// Fixed once, so that later batches do not creep forward.
	var cutoff time.Time
	if err := s.pool.QueryRow(ctx, `SELECT now() - $1::bigint * interval '1 microsecond'`,
		olderThan.Microseconds()).Scan(&cutoff); err != nil {
		return 0, appliedWritesError("prune applied writes", err, true)
	}
	for {
		// SKIP LOCKED: a concurrent pruner's batch is left to it.
		tag, err := s.pool.Exec(ctx, `
			DELETE FROM pgfallback_applied_writes WHERE id IN (
				SELECT id FROM pgfallback_applied_writes WHERE applied_at < $1
				ORDER BY applied_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
			cutoff, appliedPruneBatch)
		if err != nil {
			return removed, appliedWritesError("prune applied writes", err, true)
		}
		removed += tag.RowsAffected()
		if tag.RowsAffected() < appliedPruneBatch {
			return removed, nil
		}
	}
}

// appliedWritesError is mapError, naming the migration when the table is
// missing. Only pruning calls that ErrNotFound (the schema's answer, as for
// the change log): from ApplyWrite it would read as "no such row", and a
// queue would drop the write.
func appliedWritesError(op string, err error, missingIsNotFound bool) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" && strings.Contains(pgErr.Message, "pgfallback_applied_writes") {
		const hint = "the database has no applied-writes table (apply migration 00004 with migrations.Up)"
		if missingIsNotFound {
			return fmt.Errorf("pgstore: %s: %s: %w: %w", op, hint, repository.ErrNotFound, err)
		}
		return fmt.Errorf("pgstore: %s: %s: %w", op, hint, err)
	}
	return mapError(op, err)
}
