package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
)

// SQLiteFS holds the SQLite cache schema migrations (sqlite/*.sql), applied
// by UpSQLite. It is exported so tools can list or print them.
//
//go:embed sqlite/*.sql
var SQLiteFS embed.FS

// UpSQLite applies every pending SQLite cache migration to db with goose's
// Provider. It is idempotent: an up-to-date database is left alone. The
// caller owns db; for a WAL database it should be the single writer
// connection so the migration does not wait on itself.
//
// Errors: the wrapped goose or database error when a migration fails (the
// failing migration's transaction is rolled back).
func UpSQLite(ctx context.Context, db *sql.DB) error {
	sub, err := fs.Sub(SQLiteFS, "sqlite")
	if err != nil {
		return fmt.Errorf("migrations: sqlite: %w", err)
	}
	// The global registry is disabled so Go migrations registered for
	// Postgres elsewhere in this package can never run against the cache.
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrations: sqlite: new provider: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrations: sqlite: up: %w", err)
	}
	return nil
}
