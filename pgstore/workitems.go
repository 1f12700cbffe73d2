package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/repository"
)

type workItemRepo struct{ pool *pgxpool.Pool }

const workItemColumns = `id, version, type, title, status, parent_id, path, depth, branch_name, commit_hash,
	metadata, created_at, updated_at, deleted_at, created_by`

func scanWorkItem(row pgx.Row) (repository.WorkItem, error) {
	var w repository.WorkItem
	err := row.Scan(&w.ID, &w.Version, &w.Type, &w.Title, &w.Status, &w.ParentID, &w.Path, &w.Depth,
		&w.BranchName, &w.CommitHash, &w.Metadata, &w.CreatedAt, &w.UpdatedAt, &w.DeletedAt, &w.CreatedBy)
	w.CreatedAt, w.UpdatedAt = w.CreatedAt.UTC(), w.UpdatedAt.UTC()
	if w.DeletedAt != nil {
		t := w.DeletedAt.UTC()
		w.DeletedAt = &t
	}
	return w, unreadable(err, "work item", w.ID.String())
}

// subtreeCond matches the strict descendants of an item whose ChildPath is
// the parameter $n.
func subtreeCond(n int) string {
	p := "$" + strconv.Itoa(n)
	return `(path = ` + p + ` OR path LIKE ` + p + ` || '/%')`
}

func (r workItemRepo) Get(ctx context.Context, id uuid.UUID) (repository.WorkItem, error) {
	w, err := replanned(ctx, r.pool, func() (repository.WorkItem, error) {
		return scanWorkItem(r.pool.QueryRow(ctx, `SELECT `+workItemColumns+` FROM work_items WHERE id = $1`, id))
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return repository.WorkItem{}, fmt.Errorf("pgstore: get work item %s: %w", id, repository.ErrNotFound)
	}
	return w, mapError("get work item", err)
}

func (r workItemRepo) List(ctx context.Context, f repository.WorkItemFilter) ([]repository.WorkItem, error) {
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("pgstore: list work items: %w", err)
	}
	var where []string
	var args []any
	add := func(cond string, arg any) {
		args = append(args, arg)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.Type != nil {
		add(`type = ?`, string(*f.Type))
	}
	if f.Status != nil {
		add(`status = ?`, string(*f.Status))
	}
	if f.ParentID != nil {
		add(`parent_id = ?`, *f.ParentID)
	}
	if !f.IncludeDeleted {
		where = append(where, `deleted_at IS NULL`)
	}
	var q strings.Builder
	q.WriteString(`SELECT ` + workItemColumns + ` FROM work_items`)
	if len(where) > 0 {
		q.WriteString(` WHERE ` + strings.Join(where, ` AND `))
	}
	q.WriteString(` ORDER BY created_at, id`)
	writePage(&q, &args, f.Limit, f.Offset)
	out, err := collect(ctx, r.pool, scanWorkItem, q.String(), args...)
	if err != nil {
		return nil, mapError("list work items", err)
	}
	return out, nil
}

// parentPlacement is where a child of a parent goes in the tree.
type parentPlacement struct {
	path  string
	depth int
}

// lockParent reads the prospective parent under a share lock, so it cannot
// be deleted or moved until the child's transaction ends, and returns the
// child's Path and Depth.
func lockParent(ctx context.Context, tx pgx.Tx, parentID uuid.UUID) (parentPlacement, error) {
	var parent repository.WorkItem
	var deletedAt *time.Time
	err := tx.QueryRow(ctx, `SELECT id, path, depth, deleted_at FROM work_items WHERE id = $1 FOR SHARE`, parentID).
		Scan(&parent.ID, &parent.Path, &parent.Depth, &deletedAt)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return parentPlacement{}, repository.Invalid("ParentID", "parent %s does not exist", parentID)
	case err != nil:
		return parentPlacement{}, err
	case deletedAt != nil:
		return parentPlacement{}, repository.Invalid("ParentID", "parent %s is deleted", parentID)
	}
	return parentPlacement{path: parent.ChildPath(), depth: parent.Depth + 1}, nil
}

func (r workItemRepo) Create(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	w.Depth, w.Path, w.DeletedAt = 0, "", nil // maintained by the store
	if err := w.Validate(); err != nil {
		return repository.WorkItem{}, fmt.Errorf("pgstore: create work item: %w", err)
	}
	out, err := replanned(ctx, r.pool, func() (repository.WorkItem, error) { return createWorkItem(ctx, r.pool, w) })
	return out, mapError("create work item", err)
}

func (r workItemRepo) Update(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	if err := w.ValidateUpdate(); err != nil {
		return repository.WorkItem{}, fmt.Errorf("pgstore: update work item: %w", err)
	}
	out, err := replanned(ctx, r.pool, func() (repository.WorkItem, error) { return updateWorkItem(ctx, r.pool, w, w.Version) })
	return out, mapError("update work item", err)
}

func (r workItemRepo) Delete(ctx context.Context, id uuid.UUID) error {
	_, err := replanned(ctx, r.pool, func() (struct{}, error) { return struct{}{}, deleteWorkItem(ctx, r.pool, id) })
	return mapError("delete work item", err)
}

// dbtx is where a write runs: the pool, for the repositories' calls, whose
// common cases are one statement each (no BEGIN, no COMMIT), or the
// transaction of an ApplyWrite, which must hold the whole write.
// *pgxpool.Pool and pgx.Tx both are one.
type dbtx interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

// inTx runs f in a transaction: db itself when it is one, so that an
// ApplyWrite's write is not split off into a savepoint, or a new one.
func inTx(ctx context.Context, db dbtx, f func(pgx.Tx) error) error {
	if tx, ok := db.(pgx.Tx); ok {
		return f(tx)
	}
	return pgx.BeginFunc(ctx, db, f)
}

// autocommitted words an unreadable RETURNING row: on the pool its
// statement had committed by then; in a transaction the error rolls the
// write back, and the caller says so.
func autocommitted(db dbtx, err error) error {
	if _, ok := db.(pgx.Tx); ok {
		return err
	}
	return appliedIfUnreadable(err)
}

// The work item writes below run on the pool or in an ApplyWrite's
// transaction (see dbtx). They take w validated and return errors unmapped.

// createWorkItem inserts w at version 1, with its ID or, when zero, a new
// one, placed under its parent.
func createWorkItem(ctx context.Context, db dbtx, w repository.WorkItem) (repository.WorkItem, error) {
	if w.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return repository.WorkItem{}, fmt.Errorf("new id: %w", err)
		}
		w.ID = id
	}
	insert := func(db dbtx) (repository.WorkItem, error) {
		q, args := createWorkItemSQL(w)
		out, err := scanWorkItem(db.QueryRow(ctx, q, args...))
		return out, autocommitted(db, err)
	}
	if w.ParentID == nil {
		return insert(db)
	}
	var out repository.WorkItem
	err := inTx(ctx, db, func(tx pgx.Tx) error {
		place, err := lockParent(ctx, tx, *w.ParentID)
		if err != nil {
			return err
		}
		if place.depth > repository.MaxDepth {
			return repository.Invalid("ParentID", "item would be at depth %d, the limit is %d", place.depth, repository.MaxDepth)
		}
		w.Path, w.Depth = place.path, place.depth
		out, err = insert(tx)
		return err
	})
	return out, err
}

// createWorkItemSQL is the statement that inserts w, whose ID, Path and
// Depth are set.
func createWorkItemSQL(w repository.WorkItem) (string, []any) {
	return `
		INSERT INTO work_items (id, version, type, title, status, parent_id, path, depth,
			branch_name, commit_hash, metadata, created_by)
		VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		RETURNING ` + workItemColumns,
		[]any{w.ID, string(w.Type), w.Title, string(w.Status), w.ParentID, w.Path, w.Depth,
			w.BranchName, w.CommitHash, metadataArg(w.Metadata), w.CreatedBy}
}

// updateWorkItemSQL is the statement that writes w over the live item w.ID
// if it is at version base and keeps its parent; it returns no row
// otherwise (missing, deleted, stale, or a move).
func updateWorkItemSQL(w repository.WorkItem, base int64) (string, []any) {
	return `
		UPDATE work_items
		SET type = $4, title = $5, status = $6, branch_name = $7, commit_hash = $8, metadata = $9,
			version = version + 1, updated_at = now()
		WHERE id = $1 AND version = $2 AND deleted_at IS NULL AND parent_id IS NOT DISTINCT FROM $3
		RETURNING ` + workItemColumns,
		[]any{w.ID, base, w.ParentID, string(w.Type), w.Title, string(w.Status), w.BranchName, w.CommitHash,
			metadataArg(w.Metadata)}
}

// updateWorkItem writes w over the live item w.ID provided it is still at
// version base, moving its subtree when w has another parent. w.Version is
// not used.
// Errors: ErrNotFound (also for a deleted item), ErrInvalid for a move the
// tree refuses, or a *repository.ConflictError with the current row.
func updateWorkItem(ctx context.Context, db dbtx, w repository.WorkItem, base int64) (repository.WorkItem, error) {
	// The common case, an update that keeps the parent, is one statement.
	q, args := updateWorkItemSQL(w, base)
	out, err := scanWorkItem(db.QueryRow(ctx, q, args...))
	if !errors.Is(err, pgx.ErrNoRows) {
		return out, autocommitted(db, err)
	}
	// No row matched: missing, deleted, stale, or a move to another parent.
	err = inTx(ctx, db, func(tx pgx.Tx) error {
		cur, err := scanWorkItem(tx.QueryRow(ctx, `SELECT `+workItemColumns+` FROM work_items WHERE id = $1 FOR UPDATE`, w.ID))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("work item %s: %w", w.ID, repository.ErrNotFound)
		case err != nil:
			return err
		case cur.DeletedAt != nil:
			return fmt.Errorf("work item %s is deleted: %w", w.ID, repository.ErrNotFound)
		case cur.Version != base:
			return &repository.ConflictError{Key: w.ID.String(), Base: base, WorkItem: &cur}
		}
		out, err = moveWorkItem(ctx, tx, cur, w)
		return err
	})
	if err != nil {
		return repository.WorkItem{}, err
	}
	return out, nil
}

// moveWorkItem applies w to cur when w has another parent than cur,
// carrying the subtree along: descendants get the new path prefix and
// depth, and a bumped version so that caches holding them see the change.
func moveWorkItem(ctx context.Context, tx pgx.Tx, cur, w repository.WorkItem) (repository.WorkItem, error) {
	place := parentPlacement{}
	if w.ParentID != nil {
		var err error
		if place, err = lockParent(ctx, tx, *w.ParentID); err != nil {
			return repository.WorkItem{}, err
		}
		// The new parent lies inside the subtree being moved: a cycle.
		if strings.Contains(place.path, w.ID.String()) {
			return repository.WorkItem{}, repository.Invalid("ParentID", "moving %s under its descendant %s would create a cycle", w.ID, *w.ParentID)
		}
	}
	oldPrefix := cur.ChildPath()
	var deepest *int
	if err := tx.QueryRow(ctx, `SELECT max(depth) FROM work_items WHERE `+subtreeCond(1), oldPrefix).Scan(&deepest); err != nil {
		return repository.WorkItem{}, err
	}
	shift := place.depth - cur.Depth
	bottom := place.depth
	if deepest != nil {
		bottom = max(bottom, *deepest+shift)
	}
	if bottom > repository.MaxDepth {
		return repository.WorkItem{}, repository.Invalid("ParentID", "the move would put an item at depth %d, the limit is %d", bottom, repository.MaxDepth)
	}
	out, err := scanWorkItem(tx.QueryRow(ctx, `
		UPDATE work_items
		SET type = $2, title = $3, status = $4, branch_name = $5, commit_hash = $6, metadata = $7,
			parent_id = $8, path = $9, depth = $10, version = version + 1, updated_at = now()
		WHERE id = $1
		RETURNING `+workItemColumns,
		w.ID, string(w.Type), w.Title, string(w.Status), w.BranchName, w.CommitHash, metadataArg(w.Metadata),
		w.ParentID, place.path, place.depth))
	if err != nil {
		return repository.WorkItem{}, err
	}
	_, err = tx.Exec(ctx, `
		UPDATE work_items
		SET path = $2 || substr(path, char_length($1) + 1), depth = depth + $3,
			version = version + 1, updated_at = now()
		WHERE `+subtreeCond(1),
		oldPrefix, out.ChildPath(), shift)
	return out, err
}

// deleteWorkItem soft-deletes the item and its live descendants. An item
// already deleted is left as it is.
// Errors: ErrNotFound when there is no such item.
func deleteWorkItem(ctx context.Context, db dbtx, id uuid.UUID) error {
	return inTx(ctx, db, func(tx pgx.Tx) error {
		cur, err := scanWorkItem(tx.QueryRow(ctx, `SELECT `+workItemColumns+` FROM work_items WHERE id = $1 FOR UPDATE`, id))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("work item %s: %w", id, repository.ErrNotFound)
		case err != nil:
			return err
		case cur.DeletedAt != nil:
			return nil // already deleted: a retried Delete succeeds
		}
		_, err = tx.Exec(ctx, `
			UPDATE work_items SET deleted_at = now(), updated_at = now(), version = version + 1
			WHERE deleted_at IS NULL AND (id = $2 OR `+subtreeCond(1)+`)`,
			cur.ChildPath(), id)
		return err
	})
}
