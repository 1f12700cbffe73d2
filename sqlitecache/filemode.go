package sqlitecache

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
)

// DefaultFileMode is the mode of the cache files Open creates: the cache
// holds business data, so only the owner may read it.
const DefaultFileMode os.FileMode = 0o600

// dirMode is the mode of a directory Open creates for files of mode m:
// whoever may read the files may also enter the directory (0600 -> 0700,
// 0660 -> 0770, 0640 -> 0750).
func dirMode(m os.FileMode) os.FileMode {
	return m | (m&0o444)>>2
}

// created records what one attempt to open the file created, so a failed
// attempt leaves nothing behind.
type created struct {
	dirs []string    // directories created, outermost first
	main os.FileInfo // the cache file, when this attempt created it
}

func (cr *created) createdMain() bool { return cr.main != nil }

// mkdirs creates dir and its missing parents with mode exactly (chmod after
// mkdir: the option exists to grant a group access on purpose, and a umask
// of 022 would silently take group write away again). Directories that
// exist keep their mode.
func (cr *created) mkdirs(dir string, mode os.FileMode) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		_, err := os.Stat(d)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return describe("cannot create cache directory "+dir, err)
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		err := os.Mkdir(d, mode)
		if errors.Is(err, fs.ErrExist) {
			continue // another process was faster
		}
		if err != nil {
			return describe("cannot create cache directory "+d, err)
		}
		cr.dirs = append(cr.dirs, d)
		if err := os.Chmod(d, mode); err != nil {
			return describe("cannot set the mode of cache directory "+d, err)
		}
	}
	return nil
}

// createMain creates the cache file with mode before SQLite opens it:
// SQLite gives the -wal and -shm files the main file's permissions, so this
// sets all three. O_EXCL: an existing file is never re-created (the caller
// sees fs.ErrExist and inspects it).
func (cr *created) createMain(path string, mode os.FileMode, log *slog.Logger) error {
	// A -wal or -shm without a main file belongs to a database that was
	// deleted, maybe under a process that still has it open: SQLite would
	// replay that WAL into the new file. They go first, while the main
	// file is still missing, so a -wal of a file another opener has just
	// created is never touched.
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err := os.Remove(path + suffix); err == nil {
			log.Warn("sqlitecache: removed a leftover file of a deleted cache", "path", path+suffix)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, fs.ErrExist) {
		return err
	}
	if err != nil {
		return describe("cannot create cache file "+path, err)
	}
	err = f.Chmod(mode)
	fi, serr := f.Stat()
	_ = f.Close()
	if err == nil {
		err = serr
	}
	if err != nil {
		_ = os.Remove(path)
		return describe("cannot set the mode of cache file "+path, err)
	}
	cr.main = fi
	return nil
}

// undo removes what this attempt created: the cache file with the -wal and
// -shm SQLite made for it (only while the path still names the file we
// created), then the directories, innermost first (os.Remove leaves
// non-empty ones alone).
func (cr *created) undo(path string, log *slog.Logger) {
	if cr.main != nil {
		if fi, err := os.Stat(path); err == nil && os.SameFile(fi, cr.main) {
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					log.Warn("sqlitecache: cannot remove a file of a failed open", "path", p, "err", err)
				}
			}
		}
	}
	for i := len(cr.dirs) - 1; i >= 0; i-- {
		_ = os.Remove(cr.dirs[i])
	}
}

// checkWritable says clearly why an existing cache file cannot be opened
// for writing, before SQLite would say "unable to open database file" or
// fall back to read-only and fail later. access(2), not open(2): this
// process may have the file open through SQLite, and closing another
// descriptor of it would drop SQLite's POSIX locks.
func checkWritable(path string) error {
	const wOK = 2
	if err := syscall.Access(path, wOK); err != nil {
		return describe("cannot open cache file "+path+" for writing (OpenReadOnly can still read it)",
			&fs.PathError{Op: "access", Path: path, Err: err})
	}
	// WAL needs its -wal and -shm next to the file.
	dir := filepath.Dir(path)
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Lstat(path + suffix); errors.Is(err, fs.ErrNotExist) {
			if err := syscall.Access(dir, wOK); err != nil {
				return describe("cannot create the cache's -wal and -shm files in "+dir,
					&fs.PathError{Op: "access", Path: dir, Err: err})
			}
			break
		}
	}
	return nil
}
