// Package repository is pgfallback's domain: the entities, the repository
// interfaces that applications depend on, and the errors every implementation
// returns. It depends on nothing but the standard library and
// github.com/google/uuid, so application code can import it without pulling
// in a database driver.
//
// Implementations: pgstore (PostgreSQL, the source of truth), sqlitecache (the
// persistent cache) and fallback (Postgres with the cache behind it).
//
// Every error an implementation returns matches one of ErrNotFound,
// ErrAlreadyExists, ErrConflict, ErrInvalid, ErrUnavailable, ErrUnreadable
// (a stored row that cannot be decoded) or (writes only) ErrOutcomeUnknown
// with errors.Is, or is the caller's own context error, or
// is an infrastructure error wrapped with its cause (a connection failure,
// say) that a decorator such as the fallback layer classifies. "ErrUnavailable"
// below stands for either of those last two kinds: pgstore returns the raw
// infrastructure error, the fallback layer returns ErrUnavailable.
package repository

import (
	"context"

	"github.com/google/uuid"
)

// VendorRepository stores vendors, keyed by Name.
type VendorRepository interface {
	// Get returns the vendor with the given name.
	// Errors: ErrInvalid for a malformed name, ErrNotFound when there is no
	// such vendor, ErrUnreadable when its stored row cannot be decoded,
	// ErrUnavailable when the store cannot answer.
	Get(ctx context.Context, name string) (Vendor, error)

	// List returns the vendors that match f, ordered by Name, paged by
	// f.Limit and f.Offset. An empty result is an empty slice and no error.
	// Errors: ErrInvalid for a bad filter, ErrUnreadable when a matching row
	// cannot be decoded, ErrUnavailable.
	List(ctx context.Context, f VendorFilter) ([]Vendor, error)

	// Create stores a new vendor and returns it as stored: ID assigned when
	// zero, Version 1, CreatedAt and UpdatedAt set; v.Version is ignored.
	// Errors: ErrInvalid (nothing written; the message names the field),
	// ErrAlreadyExists when the name or ID is taken, ErrUnavailable, ErrOutcomeUnknown.
	Create(ctx context.Context, v Vendor) (Vendor, error)

	// Update replaces the vendor named v.Name with v, provided v.Version is
	// the current version (the one the caller read), and returns it as
	// stored with Version incremented and UpdatedAt set. ID, CreatedAt and
	// CreatedBy are kept from the stored row.
	// Errors: ErrInvalid (also for Version < 1), ErrNotFound when there is
	// no such vendor, ErrConflict when v.Version is not current,
	// ErrUnavailable,
	// ErrOutcomeUnknown.
	Update(ctx context.Context, v Vendor) (Vendor, error)

	// Delete removes the vendor with the given name.
	// Errors: ErrInvalid for a malformed name, ErrNotFound, ErrUnavailable, ErrOutcomeUnknown.
	Delete(ctx context.Context, name string) error
}

// WorkItemRepository stores work items, keyed by ID.
type WorkItemRepository interface {
	// Get returns the work item with the given id, including a soft-deleted
	// one (DeletedAt set).
	// Errors: ErrNotFound, ErrUnreadable, ErrUnavailable.
	Get(ctx context.Context, id uuid.UUID) (WorkItem, error)

	// List returns the work items that match f, ordered by CreatedAt then
	// ID, paged by f.Limit and f.Offset; soft-deleted items only when
	// f.IncludeDeleted. An empty result is an empty slice and no error.
	// Errors: ErrInvalid for a bad filter, ErrUnreadable, ErrUnavailable.
	List(ctx context.Context, f WorkItemFilter) ([]WorkItem, error)

	// Create stores a new work item and returns it as stored: ID assigned
	// when zero, Version 1, Path and Depth computed from the parent,
	// timestamps set; w.Version, w.Path, w.Depth and w.DeletedAt are ignored.
	// Errors: ErrInvalid (also for a parent that does not exist, is deleted,
	// or would put the item deeper than MaxDepth), ErrAlreadyExists when the
	// ID is taken, ErrUnavailable, ErrOutcomeUnknown.
	Create(ctx context.Context, w WorkItem) (WorkItem, error)

	// Update replaces the live work item w.ID with w, provided w.Version is
	// current, and returns it as stored. Changing ParentID moves the whole
	// subtree: descendants get new Path and Depth and their Version bumped.
	// Errors: ErrInvalid (also for a move that would create a cycle or
	// exceed MaxDepth anywhere in the subtree), ErrNotFound when there is no
	// such item or it is deleted, ErrConflict when w.Version is not current,
	// ErrUnavailable,
	// ErrOutcomeUnknown.
	Update(ctx context.Context, w WorkItem) (WorkItem, error)

	// Delete soft-deletes the work item and its live descendants (DeletedAt
	// set, Version bumped). Deleting an item that is already deleted is a
	// no-op and returns nil, so a retried Delete is safe.
	// Errors: ErrNotFound when there is no such item, ErrUnavailable, ErrOutcomeUnknown.
	Delete(ctx context.Context, id uuid.UUID) error
}
