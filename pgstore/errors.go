package pgstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/repository"
)

// constraintField names the Go field behind each CHECK or FK constraint of
// the schema, so an ErrInvalid from the database names the field just as
// Validate would.
var constraintField = map[string]string{
	"vendors_name_check":              "Name",
	"vendors_status_check":            "Status",
	"vendors_version_check":           "Version",
	"vendors_extractor_version_check": "ExtractorVersion",
	"vendors_metadata_check":          "Metadata",
	"vendors_created_by_check":        "CreatedBy",
	"work_items_version_check":        "Version",
	"work_items_type_check":           "Type",
	"work_items_title_check":          "Title",
	"work_items_status_check":         "Status",
	"work_items_depth_check":          "Depth",
	"work_items_parent_check":         "ParentID",
	"work_items_parent_id_fkey":       "ParentID",
	"work_items_root_check":           "ParentID",
	"work_items_branch_name_check":    "BranchName",
	"work_items_commit_hash_check":    "CommitHash",
	"work_items_metadata_check":       "Metadata",
	"work_items_created_by_check":     "CreatedBy",
}

// mapError turns a database answer into the repository's vocabulary and
// leaves everything else (connection failures, timeouts, cancellations)
// wrapped but unchanged in kind, for the caller to classify.
func mapError(op string, err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505": // unique_violation
			return fmt.Errorf("pgstore: %s: %w: %w", op, repository.ErrAlreadyExists, err)
		case pgErr.Code == "23514", pgErr.Code == "23503", pgErr.Code == "23502": // check, foreign key, not null
			field := constraintField[pgErr.ConstraintName]
			if field == "" {
				field = pgErr.ColumnName
			}
			return fmt.Errorf("pgstore: %s: %w: %w", op,
				&repository.ValidationError{Field: field, Reason: pgErr.Message}, err)
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "22": // data exception: bad encoding, too long, ...
			return fmt.Errorf("pgstore: %s: %w: %w", op,
				&repository.ValidationError{Field: pgErr.ColumnName, Reason: pgErr.Message}, err)
		case pgErr.Code == "42P01": // undefined_table: the schema was never migrated here
			return fmt.Errorf("pgstore: %s: %s (run migrations.Up, or `pgfallback migrate up`, against this database first; "+
				"if it installed in another schema than public, put that schema in this role's search_path): %w",
				op, pgErr.Message, err)
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "54": // program limit exceeded: a value too complex or too large
			return fmt.Errorf("pgstore: %s: %w: %w", op,
				&repository.ValidationError{Field: pgErr.ColumnName, Reason: "exceeds a PostgreSQL limit: " + pgErr.Message}, err)
		}
	}
	return fmt.Errorf("pgstore: %s: %w", op, err)
}

// unreadable marks a failure to decode a row the server sent as
// repository.ErrUnreadable, naming the row's key when the columns before
// the failing one gave it. Such a row is an answer about itself: left as a
// bare scan error, the fallback layer would count it as an outage, and one
// row written around validation would trip the breaker for every caller.
func unreadable(err error, kind, key string) error {
	var scanErr pgx.ScanArgError
	if !errors.As(err, &scanErr) {
		return err
	}
	if strings.Contains(scanErr.Err.Error(), "date/time value") {
		// pgx reads text results (exec, simple_protocol) only in ISO style.
		err = fmt.Errorf("%w (the session's DateStyle is not ISO: build the pool from pgstore.ParseConfig, "+
			"or add DateStyle=ISO to the DSN; docs/poolers.md)", err)
	}
	if key == "" || key == "00000000-0000-0000-0000-000000000000" {
		return fmt.Errorf("%w: a %s row: %w", repository.ErrUnreadable, kind, err)
	}
	return fmt.Errorf("%w: %s %q: %w", repository.ErrUnreadable, kind, key, err)
}

// appliedIfUnreadable words an unreadable RETURNING row of a one-statement
// write: the statement had committed by the time its row failed to decode,
// so the caller must not think the write undone.
func appliedIfUnreadable(err error) error {
	if errors.Is(err, repository.ErrUnreadable) {
		return fmt.Errorf("the write was applied, but its result cannot be read back: %w", err)
	}
	return err
}
