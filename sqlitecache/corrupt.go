package sqlitecache

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/pgfallback/pgfallback/migrations"
)

var (
	// errNotADatabase marks a file whose header is not SQLite's.
	errNotADatabase = errors.New("file is not a SQLite database")
	// errDamaged marks a database that PRAGMA quick_check finds damaged.
	errDamaged = errors.New("database is damaged")
)

// sqliteMagic starts every SQLite 3 database file.
var sqliteMagic = []byte("SQLite format 3\x00")

func isNotADB(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && se.Code == sqlite3.ErrNotADB
}

// quarantine moves a corrupt database file aside to
// "<path>.corrupt-<timestamp>", keeping it for inspection instead of
// deleting evidence. Its -wal and -shm files move to "<that name>-wal" and
// "-shm" so SQLite, pointed at the quarantined file, still pairs them.
// It returns the new name.
func quarantine(path string, now time.Time) (string, error) {
	dst := path + ".corrupt-" + now.UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(path, dst); err != nil {
		return "", fmt.Errorf("quarantine %s: %w", path, err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Rename(path+suffix, dst+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return dst, fmt.Errorf("quarantine %s: %w", path+suffix, err)
		}
	}
	return dst, nil
}

// quickCheck runs PRAGMA quick_check, which reads every page (O(file
// size)), so it runs only after something already failed: it tells damage
// (quarantine) from a transient failure (retry). It returns nil when the
// file is sound or the check itself could not run for a reason other than
// damage.
func quickCheck(ctx context.Context, db *sql.DB) error {
	var res string
	err := db.QueryRowContext(ctx, `PRAGMA quick_check(1)`).Scan(&res)
	switch {
	case err != nil && isCorrupt(err):
		return fmt.Errorf("%w: quick_check: %w", errDamaged, err)
	case err != nil:
		return nil
	case res != "ok":
		return fmt.Errorf("%w: quick_check: %s", errDamaged, res)
	}
	return nil
}

// schemaVersion reads the goose version of the file's schema (0: no goose
// table, as in files of the original implementation) and touches the root
// page of each cache table. It is the cheap check every Open makes: pages
// destroyed behind an intact first page show here as SQLITE_CORRUPT.
func schemaVersion(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int64, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'goose_db_version'`).Scan(&n)
	if err != nil || n == 0 {
		return 0, err
	}
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version_id) FROM goose_db_version`).Scan(&v); err != nil {
		return 0, err
	}
	for _, t := range []string{"cached_vendors", "cached_work_items"} {
		var x sql.NullInt64
		err := q.QueryRowContext(ctx, `SELECT rowid FROM `+t+` LIMIT 1`).Scan(&x)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return 0, err
		}
	}
	return v.Int64, nil
}

// latestSchema is the version of the newest embedded migration: the schema
// this version of the package reads and writes.
var latestSchema = newestMigration()

func newestMigration() int64 {
	entries, _ := fs.ReadDir(migrations.SQLiteFS, "sqlite")
	var latest int64
	for _, e := range entries {
		num, _, _ := strings.Cut(e.Name(), "_")
		if v, err := strconv.ParseInt(num, 10, 64); err == nil && v > latest {
			latest = v
		}
	}
	return latest
}
