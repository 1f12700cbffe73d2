package pgstore

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/repository"
)

// ApplyWrites is the replay's batch: many writes, one commit. Without it a
// queue of 10,000 writes pays 10,000 commits (each a WAL flush) and four
// round trips per write. With it, a batch of the common writes — vendor
// writes, work item updates that keep their parent, root creates — is one
// pipeline: every statement sent at once, one round trip. A batch that
// holds another write, or meets anything unexpected (a write already
// applied, a conflict, an error from the server), is rolled back and
// applied statement by statement instead, as ApplyWrite applies each.
//
// There is no savepoint per write. Each savepoint that writes is a
// subtransaction with its own xid, and a transaction with more than 64 of
// them overflows its backend's subtransaction cache: while it is open,
// every other session's snapshot checks must consult pg_subtrans, an
// instance-wide slowdown. Rejections are rare (a conflict, a key taken), so
// a batch that meets one is rolled back whole and its prefix applied again,
// which costs the prefix's round trips once instead.

var _ repository.BatchWriteApplier = (*Store)(nil)

// ApplyWrites applies ws in order in one transaction: see
// repository.BatchWriteApplier. Each write is applied as ApplyWrite applies
// it; an already applied write whose row cannot be decoded now counts as
// applied, without its row.
func (s *Store) ApplyWrites(ctx context.Context, ws []repository.Write) ([]repository.AppliedWrite, error) {
	prepared := make([]repository.Write, 0, len(ws))
	idGiven := make([]bool, 0, len(ws))
	var rejection error // of ws[len(prepared)], once a write is refused
	for _, w := range ws {
		p, given, err := prepareWrite(w)
		if err != nil {
			rejection = err
			break
		}
		prepared, idGiven = append(prepared, p), append(idGiven, given)
	}
	if len(prepared) > 0 {
		out, err := s.pipelined(ctx, prepared)
		switch {
		case err == nil:
			return out, rejection
		case !errors.Is(err, errCareful):
			return nil, err
		}
	}
	for len(prepared) > 0 {
		out, at, err := s.applyBatch(ctx, prepared, idGiven)
		switch {
		case at >= 0: // rolled back: commit what was before it
			prepared, rejection = prepared[:at], err
		case err != nil:
			return nil, err
		default:
			return out, rejection
		}
	}
	return nil, rejection
}

// errCareful: the batch is not for the pipeline; it was rolled back.
var errCareful = errors.New("pgstore: apply writes: the batch needs the careful path")

// pipelined applies ws, each recorded, with every statement sent at once
// in one transaction: one statement records every ID, then each write's own
// statement runs whether or not its record was new; so any write that did
// not go exactly as a new write goes (a record already there, no row
// returned, an error) rolls everything back: errCareful. A failure to
// reach the server or to finish in time is returned as it is.
func (s *Store) pipelined(ctx context.Context, ws []repository.Write) ([]repository.AppliedWrite, error) {
	b := &pgx.Batch{}
	ids, entities, keys, ops := make([]string, len(ws)), make([]string, len(ws)), make([]string, len(ws)), make([]string, len(ws))
	for i, w := range ws {
		ids[i], entities[i], keys[i], ops[i] = w.ID.String(), string(w.Entity), w.Key(), string(w.Op)
	}
	b.Queue(recordWritesSQL, ids, entities, keys, ops)
	for _, w := range ws {
		q, args, ok := oneStatement(w)
		if !ok {
			return nil, errCareful
		}
		b.Queue(q, args...)
	}
	var out []repository.AppliedWrite
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		tag, err := br.Exec()
		if err != nil {
			return err
		}
		if tag.RowsAffected() != int64(len(ws)) {
			return errCareful // one was applied before: its statement must not count
		}
		out = make([]repository.AppliedWrite, len(ws))
		for i, w := range ws {
			switch {
			case w.Op == repository.WriteDelete:
				_, err = br.Exec()
			case w.Entity == repository.EntityVendor:
				var v repository.Vendor
				v, err = scanVendor(br.QueryRow())
				out[i].Vendor = &v
			default:
				var item repository.WorkItem
				item, err = scanWorkItem(br.QueryRow())
				out[i].WorkItem = &item
			}
			if err != nil {
				return err
			}
		}
		return br.Close()
	})
	if err == nil {
		return out, nil
	}
	var pgErr *pgconn.PgError
	if errors.Is(err, errCareful) || errors.Is(err, pgx.ErrNoRows) || errors.Is(err, repository.ErrUnreadable) || errors.As(err, &pgErr) {
		// The server's answer about one write: the careful path finds
		// which, and words it as ApplyWrite does.
		return nil, errCareful
	}
	return nil, err
}

// recordWritesSQL records many writes' IDs in one statement; it inserts
// nothing for an ID recorded already.
const recordWritesSQL = `
	INSERT INTO pgfallback_applied_writes (id, entity, key, op)
	SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
	ON CONFLICT (id) DO NOTHING`

// oneStatement is w's own statement when it is one that needs no answer
// from the server first: ok is false for a work item delete, a work item
// created under a parent, and a work item update's move (found by its
// statement returning no row).
func oneStatement(w repository.Write) (q string, args []any, ok bool) {
	switch {
	case w.Entity == repository.EntityVendor && w.Op == repository.WriteCreate && w.Vendor.ID != uuid.Nil:
		q, args = createVendorSQL(w.Vendor)
	case w.Entity == repository.EntityVendor && w.Op == repository.WriteUpdate:
		q, args = updateVendorSQL(w.Vendor, w.BaseVersion)
	case w.Entity == repository.EntityVendor && w.Op == repository.WriteDelete:
		q, args = deleteVendorSQL, []any{w.Vendor.Name}
	case w.Entity == repository.EntityWorkItem && w.Op == repository.WriteCreate && w.WorkItem.ParentID == nil:
		q, args = createWorkItemSQL(w.WorkItem)
	case w.Entity == repository.EntityWorkItem && w.Op == repository.WriteUpdate:
		q, args = updateWorkItemSQL(w.WorkItem, w.BaseVersion)
	default:
		return "", nil, false
	}
	return q, args, true
}

// applyBatch applies ws in one transaction, statement by statement. It
// commits them all (out), or rolls back and returns the index of the first
// write rejected and its error, or (at = -1) the raw error that stopped it.
// A plan PostgreSQL refuses after a schema change (replanned) rolls the
// whole transaction back, which is then run again.
func (s *Store) applyBatch(ctx context.Context, ws []repository.Write, idGiven []bool) (out []repository.AppliedWrite, at int, err error) {
	type result struct {
		out []repository.AppliedWrite
		at  int
	}
	r, err := replanned(ctx, s.pool, func() (r result, err error) {
		r.at = -1
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			r.out = make([]repository.AppliedWrite, 0, len(ws))
			for i, w := range ws {
				a, err := applyRecorded(ctx, tx, w, idGiven[i])
				if err != nil && a.AlreadyApplied && errors.Is(err, repository.ErrUnreadable) {
					// Applied earlier; only reading it back failed, and a scan
					// error leaves the transaction usable.
					a, err = repository.AppliedWrite{AlreadyApplied: true}, nil
				}
				if err != nil {
					err = applyError(w, a.AlreadyApplied, err)
					if repository.IsAnswer(err) {
						r.at = i
					}
					return err
				}
				r.out = append(r.out, a)
			}
			return nil
		})
		return r, err
	})
	if err != nil {
		return nil, r.at, err
	}
	return r.out, -1, nil
}
