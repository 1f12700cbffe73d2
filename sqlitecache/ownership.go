package sqlitecache

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// ApplicationID is stored in the SQLite header (PRAGMA application_id) of
// every cache file Open creates or upgrades: the bytes "pgfb", so `file(1)`
// and a hex dump show whose file it is. It is how Open tells its own files
// from other SQLite databases.
const ApplicationID = 0x70676662 // "pgfb"

// ourTables are the tables a cache file may hold: the schema's, goose's
// bookkeeping, and SQLite's internal ones.
var ourTables = map[string]bool{
	"cached_vendors":    true,
	"cached_work_items": true,
	"cache_metadata":    true,
	"queued_writes":     true,
	"goose_db_version":  true,
	"sqlite_sequence":   true,
}

func isOurTable(name string) bool {
	return ourTables[name] || strings.HasPrefix(name, "sqlite_stat")
}

// fileState is what inspect found at the cache path.
type fileState int

const (
	fileMissing fileState = iota
	fileEmpty             // 0 bytes: SQLite's empty database, or a crashed first Open
	fileOurs              // a cache (stamped, or by an earlier version), or a SQLite database without tables
	fileDamaged           // not readable as a database, but not somebody else's file either
)

// inspect decides, without writing anything, whether the file at path is a
// cache this package may open read-write. A file that is not ours is
// refused with ErrForeignFile.
//
// The rules, and why:
//   - A SQLite database is ours when its application_id is ApplicationID,
//     or when it is 0 (files of earlier versions, which did not stamp) and
//     every table is one of ours, cached_vendors among them. One without
//     any table (what sqlite3 leaves after opening a new name) is adopted.
//     Any other SQLite database belongs to someone else.
//   - A SQLite database whose header is valid but whose schema cannot be
//     read is damaged: the header proves it is a database file at the path
//     configured for the cache, and moving it aside keeps its bytes. A
//     foreign application_id in a readable header still refuses it.
//   - A file without the SQLite header is either a cache whose first page
//     was destroyed or a file that was never a cache. SQLite files are
//     binary (the header itself holds NUL bytes), and the damage that
//     destroys a header (zeroed blocks after a crash, random overwrites) is
//     binary too; a text file (no NUL byte, valid UTF-8 — a YAML or JSON
//     config, a log) was never written by SQLite, so it is refused instead
//     of renamed: renaming someone's configuration breaks their program.
//
// The check is made through SQLite itself (mode=ro: the WAL is honored, and
// nothing is written) rather than by reading the file: this process may
// already have the file open through SQLite, and closing any other
// descriptor of it would drop SQLite's POSIX locks. The file is read
// directly only after SQLite has said it is not a database.
func inspect(ctx context.Context, path string, busy time.Duration) (fileState, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileMissing, nil
	}
	if err != nil {
		return 0, describe("cannot read cache file "+path, err)
	}
	if err := checkRegular(path, fi); err != nil {
		return 0, err
	}
	switch {
	case fi.Size() == 0:
		return fileEmpty, nil
	case fi.Size() < minDatabaseSize:
		// SQLite takes some such files for empty databases; they are not.
		return classifyNonSQLite(path)
	}
	p, err := probe(ctx, path, busy)
	// Another opener switching a new file to WAL holds an exclusive lock
	// that SQLite reports as busy without waiting on the busy timeout.
	for attempt := 1; err != nil && isBusy(err) && attempt < 40; attempt++ {
		time.Sleep(time.Duration(min(attempt, 10)) * 10 * time.Millisecond)
		p, err = probe(ctx, path, busy)
	}
	switch {
	case err == nil:
		return p.verdict(path)
	case isNotADB(err):
		return classifyNonSQLite(path)
	case isCorrupt(err):
		if p.appID != 0 && p.appID != ApplicationID {
			return 0, fmt.Errorf("sqlitecache: %s: %w: it is a damaged SQLite database of another application (application_id %#08x)",
				path, ErrForeignFile, p.appID)
		}
		return fileDamaged, nil
	}
	return 0, describe("cannot read cache file "+path, err)
}

// minDatabaseSize is the smallest page size: a SQLite database file that
// is not empty holds at least one page.
const minDatabaseSize = 512

func checkRegular(path string, fi os.FileInfo) error {
	switch {
	case fi.IsDir():
		return fmt.Errorf("sqlitecache: %s: %w: it is a directory", path, ErrForeignFile)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("sqlitecache: %s: %w: it is not a regular file (%v)", path, ErrForeignFile, fi.Mode().Type())
	}
	return nil
}

// probed is what a read-only look through SQLite found.
type probed struct {
	appID  uint32
	tables []string // tbl_name of every schema object, sorted, unique
}

func (p probed) verdict(path string) (fileState, error) {
	switch {
	case p.appID == ApplicationID:
		return fileOurs, nil
	case p.appID != 0:
		return 0, fmt.Errorf("sqlitecache: %s: %w: it is a SQLite database of another application (application_id %#08x)",
			path, ErrForeignFile, p.appID)
	case len(p.tables) == 0:
		return fileOurs, nil
	}
	var foreign []string
	for _, t := range p.tables {
		if !isOurTable(t) {
			foreign = append(foreign, t)
		}
	}
	switch {
	case len(foreign) > 0:
		return 0, fmt.Errorf("sqlitecache: %s: %w: it is a SQLite database with tables %s",
			path, ErrForeignFile, listNames(foreign))
	case !slices.Contains(p.tables, "cached_vendors"):
		return 0, fmt.Errorf("sqlitecache: %s: %w: it is a SQLite database with tables %s but no cached_vendors",
			path, ErrForeignFile, listNames(p.tables))
	}
	return fileOurs, nil
}

func listNames(names []string) string {
	const show = 8
	if len(names) > show {
		return strings.Join(names[:show], ", ") + fmt.Sprintf(" and %d more", len(names)-show)
	}
	return strings.Join(names, ", ")
}

// probe reads the application_id and the schema's table names with a
// read-only connection. On a corrupt schema it still returns the
// application_id when SQLite could read it (header values do not need the
// schema).
func probe(ctx context.Context, path string, busy time.Duration) (probed, error) {
	db, err := sql.Open("sqlite3", readOnlyDSN(path, busy))
	if err != nil {
		return probed{}, err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return probed{}, err
	}
	defer conn.Close()
	return probeWith(ctx, conn)
}

func probeWith(ctx context.Context, conn *sql.Conn) (probed, error) {
	var p probed
	var id int64
	if err := conn.QueryRowContext(ctx, `PRAGMA application_id`).Scan(&id); err != nil {
		return p, err
	}
	p.appID = uint32(id)
	rows, err := conn.QueryContext(ctx, `SELECT DISTINCT tbl_name FROM sqlite_master ORDER BY tbl_name`)
	if err != nil {
		return p, err
	}
	defer rows.Close()
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return p, err
		}
		p.tables = append(p.tables, t)
	}
	return p, rows.Err()
}

// readOnlyDSN opens path without ever writing to it. On a read-only file
// system SQLite cannot create the -shm a WAL file needs and fails with a
// misleading "no such file or directory"; there nobody can change the
// file, so immutable=1 (no locking, no -shm) is both safe and sufficient.
func readOnlyDSN(path string, busy time.Duration) string {
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?mode=ro&_busy_timeout=" + strconv.FormatInt(busy.Milliseconds(), 10)
	if errors.Is(syscall.Access(filepath.Dir(path), 2 /* W_OK */), syscall.EROFS) {
		dsn += "&immutable=1"
	}
	return dsn
}

// textSample is how much of a non-SQLite file is looked at to tell text
// from binary.
const textSample = 4096

// classifyNonSQLite judges a file SQLite does not recognize: binary is a
// damaged cache, text was never one (see inspect).
func classifyNonSQLite(path string) (fileState, error) {
	head, err := readHead(path, textSample)
	if err != nil {
		return 0, describe("cannot read cache file "+path, err)
	}
	// A header cut short by truncation is still SQLite's, text-like or not.
	if len(head) < len(sqliteMagic) && bytes.HasPrefix(sqliteMagic, head) {
		return fileDamaged, nil
	}
	if looksLikeText(head, len(head) == textSample) {
		return 0, fmt.Errorf("sqlitecache: %s: %w: it does not start with the SQLite header and looks like a text file; "+
			"refusing to touch it (point the cache at another path, or move the file away)", path, ErrForeignFile)
	}
	return fileDamaged, nil
}

func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, n)
	k, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return head[:k], nil
}

// looksLikeText: no NUL byte and valid UTF-8. cut says the sample ends
// before the file does, maybe inside a rune.
func looksLikeText(b []byte, cut bool) bool {
	if len(b) == 0 || bytes.IndexByte(b, 0) >= 0 {
		return false
	}
	for i := 0; cut && i < utf8.UTFMax-1 && len(b) > 1 && !utf8.Valid(b); i++ {
		b = b[:len(b)-1]
	}
	return utf8.Valid(b)
}

// stamp sets the application_id of a cache file that does not carry it
// yet (new, or written by an earlier version).
func stamp(ctx context.Context, db *sql.DB) error {
	var id int64
	if err := db.QueryRowContext(ctx, `PRAGMA application_id`).Scan(&id); err != nil {
		return err
	}
	if uint32(id) == ApplicationID {
		return nil
	}
	_, err := db.ExecContext(ctx, `PRAGMA application_id = `+strconv.FormatInt(ApplicationID, 10))
	return err
}
