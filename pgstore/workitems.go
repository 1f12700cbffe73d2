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
	w, err := scanWorkItem(r.pool.QueryRow(ctx, `SELECT `+workItemColumns+` FROM work_items WHERE id = $1`, id))
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
	rows, err := r.pool.Query(ctx, q.String(), args...)
	if err != nil {
		return nil, mapError("list work items", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (repository.WorkItem, error) { return scanWorkItem(row) })
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
	if w.ID == uuid.Nil {
		id, err := uuid.NewV7()
		if err != nil {
			return repository.WorkItem{}, fmt.Errorf("pgstore: create work item: new id: %w", err)
		}
		w.ID = id
	}
	insert := func(ctx context.Context, q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) (repository.WorkItem, error) {
		return scanWorkItem(q.QueryRow(ctx, `
			INSERT INTO work_items (id, version, type, title, status, parent_id, path, depth,
				branch_name, commit_hash, metadata, created_by)
			VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			RETURNING `+workItemColumns,
			w.ID, string(w.Type), w.Title, string(w.Status), w.ParentID, w.Path, w.Depth,
			w.BranchName, w.CommitHash, metadataArg(w.Metadata), w.CreatedBy))
	}
	if w.ParentID == nil {
		out, err := insert(ctx, r.pool)
		return out, mapError("create work item", appliedIfUnreadable(err))
	}
	var out repository.WorkItem
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		place, err := lockParent(ctx, tx, *w.ParentID)
		if err != nil {
			return err
		}
		if place.depth > repository.MaxDepth {
			return repository.Invalid("ParentID", "item would be at depth %d, the limit is %d", place.depth, repository.MaxDepth)
		}
		w.Path, w.Depth = place.path, place.depth
		out, err = insert(ctx, tx)
		return err
	})
	return out, mapError("create work item", err)
}

func (r workItemRepo) Update(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	if err := w.ValidateUpdate(); err != nil {
		return repository.WorkItem{}, fmt.Errorf("pgstore: update work item: %w", err)
	}
	// The common case, an update that keeps the parent, is one statement.
	out, err := scanWorkItem(r.pool.QueryRow(ctx, `
		UPDATE work_items
		SET type = $4, title = $5, status = $6, branch_name = $7, commit_hash = $8, metadata = $9,
			version = version + 1, updated_at = now()
		WHERE id = $1 AND version = $2 AND deleted_at IS NULL AND parent_id IS NOT DISTINCT FROM $3
		RETURNING `+workItemColumns,
		w.ID, w.Version, w.ParentID, string(w.Type), w.Title, string(w.Status), w.BranchName, w.CommitHash,
		metadataArg(w.Metadata)))
	if !errors.Is(err, pgx.ErrNoRows) {
		return out, mapError("update work item", appliedIfUnreadable(err))
	}
	// No row matched: missing, deleted, stale, or a move to another parent.
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		cur, err := scanWorkItem(tx.QueryRow(ctx, `SELECT `+workItemColumns+` FROM work_items WHERE id = $1 FOR UPDATE`, w.ID))
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("work item %s: %w", w.ID, repository.ErrNotFound)
		case err != nil:
			return err
		case cur.DeletedAt != nil:
			return fmt.Errorf("work item %s is deleted: %w", w.ID, repository.ErrNotFound)
		case cur.Version != w.Version:
			return fmt.Errorf("work item %s: version %d is not current (%d): %w", w.ID, w.Version, cur.Version, repository.ErrConflict)
		}
		out, err = r.move(ctx, tx, cur, w)
		return err
	})
	if err != nil {
		return repository.WorkItem{}, mapError("update work item", err)
	}
	return out, nil
}

// move applies w to cur when w has another parent than cur, carrying the
// subtree along: descendants get the new path prefix and depth, and a bumped
// version so that caches holding them see the change.
func (r workItemRepo) move(ctx context.Context, tx pgx.Tx, cur, w repository.WorkItem) (repository.WorkItem, error) {
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

func (r workItemRepo) Delete(ctx context.Context, id uuid.UUID) error {
	err := pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
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
	return mapError("delete work item", err)
}
