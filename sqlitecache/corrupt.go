package sqlitecache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// errNotADatabase marks a file whose header is not SQLite's.
var errNotADatabase = errors.New("file is not a SQLite database")

// sqliteMagic starts every SQLite 3 database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// checkHeader returns errNotADatabase when path exists, is not empty and
// does not start with the SQLite header. A missing or empty file is fine:
// SQLite creates the database.
func checkHeader(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sqlitecache: open %s: %w", path, err)
	}
	defer f.Close()
	head := make([]byte, len(sqliteMagic))
	n, err := io.ReadFull(f, head)
	switch {
	case n == 0 && (err == io.EOF || err == nil):
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF) || (err == nil && !bytes.Equal(head, sqliteMagic)):
		return fmt.Errorf("sqlitecache: %s: %w", path, errNotADatabase)
	case err != nil:
		return fmt.Errorf("sqlitecache: read %s: %w", path, err)
	}
	return nil
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
