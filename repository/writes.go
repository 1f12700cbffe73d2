package repository

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// WriteOp is what a write does.
type WriteOp string

const (
	WriteCreate WriteOp = "create"
	WriteUpdate WriteOp = "update"
	WriteDelete WriteOp = "delete"
)

// Write is one write identified by its ID, to be applied exactly once: a
// write that was kept while the store could not take it (the fallback
// layer's durable write queue), replayed later — perhaps again after a
// crash or a lost reply.
type Write struct {
	ID     uuid.UUID
	Op     WriteOp
	Entity Entity
	// The entity as the caller wrote it: Vendor for EntityVendor (its Name
	// is the key), WorkItem for EntityWorkItem (its ID is the key). For an
	// update, its Version is ignored: BaseVersion is the one that counts.
	Vendor   Vendor
	WorkItem WorkItem
	// BaseVersion is, for an update, the version the write was built on:
	// it is applied only if the row still has it.
	BaseVersion int64
}

// Key is the write's key: the vendor's Name or the work item's ID.
func (w Write) Key() string {
	if w.Entity == EntityWorkItem {
		return w.WorkItem.ID.String()
	}
	return w.Vendor.Name
}

// AppliedWrite is what applying a Write did.
type AppliedWrite struct {
	// The row as stored after the write; nil after a delete, or when the
	// row is gone.
	Vendor   *Vendor
	WorkItem *WorkItem
	// AlreadyApplied: the write's ID was recorded by an earlier apply
	// (a replay after a crash or a lost reply); nothing was done again.
	// The row is the current one.
	AlreadyApplied bool
}

// WriteApplier applies writes exactly once. *pgstore.Store implements it.
type WriteApplier interface {
	// ApplyWrite applies w in one transaction that also records w.ID, so
	// that applying it again does nothing (AlreadyApplied, with the row as
	// it is now, looked up by the recorded key). A delete of a row that is
	// already gone succeeds. A delete carries no base version: it removes
	// what is there at replay. Records are pruned by age; a write replayed
	// after its record was pruned is applied again.
	// Errors: ErrInvalid (nothing written; also for an ID recorded for a
	// different write), ErrConflict for an update whose BaseVersion is no
	// longer current (a *ConflictError carries the current row, unless it
	// cannot be decoded: then ErrUnreadable too), ErrAlreadyExists for a
	// create whose key is taken, ErrNotFound for an update of a row that
	// does not exist, ErrUnreadable for a row that cannot be decoded, or a
	// raw error — a connection failure, or the schema lacking the
	// applied-writes table — that the fallback layer classifies: then
	// nothing was recorded, unless the reply was lost, which a retry
	// resolves. A queue must keep the write on a raw error.
	ApplyWrite(ctx context.Context, w Write) (AppliedWrite, error)
}

// ConflictError is an ErrConflict that carries the row as it is now, so
// that the caller can show or cache it.
type ConflictError struct {
	Key      string
	Base     int64 // the version the write was built on
	Vendor   *Vendor
	WorkItem *WorkItem
}

func (e *ConflictError) Error() string {
	cur := int64(0)
	switch {
	case e.Vendor != nil:
		cur = e.Vendor.Version
	case e.WorkItem != nil:
		cur = e.WorkItem.Version
	}
	return fmt.Sprintf("version conflict on %s: built on version %d, now %d", e.Key, e.Base, cur)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// BatchWriteApplier is a WriteApplier that applies several writes in one
// transaction: a queue's replay pays one commit, and one round trip per
// statement, for a whole batch. *pgstore.Store implements it.
type BatchWriteApplier interface {
	WriteApplier
	// ApplyWrites applies ws in order, as ApplyWrite applies each (every
	// ID recorded, a replayed ID AlreadyApplied), in one transaction, and
	// returns what it did for the writes it committed: applied[i] for
	// ws[i]. It commits the longest prefix it can: when ws[k] is rejected,
	// applied has k entries (ws[:k] are committed) and the error is ws[k]'s,
	// as ApplyWrite would return it; ws[k+1:] are not applied, whatever
	// their keys, so that the caller decides what the rejection means for
	// them.
	// Errors: ApplyWrite's answers (IsAnswer), for ws[len(applied)]; or a
	// raw error (a connection failure, a timeout) with applied nil: nothing
	// is known to be committed — unless the reply to the commit was lost,
	// which a retry resolves, as for ApplyWrite.
	ApplyWrites(ctx context.Context, ws []Write) (applied []AppliedWrite, err error)
}
