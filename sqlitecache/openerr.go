package sqlitecache

import (
	"errors"
	"fmt"
	"syscall"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// describedErr is an error whose message names the OS condition in words an
// operator can act on, and which unwraps to both the original error and
// the OS errno (SQLite's errors do not unwrap to it), so errors.Is(err,
// syscall.ENOSPC) works whichever layer failed.
type describedErr struct {
	msg  string
	errs []error
}

func (e *describedErr) Error() string   { return e.msg }
func (e *describedErr) Unwrap() []error { return e.errs }

// describe builds "sqlitecache: <what>: <reason>: <err>".
func describe(what string, err error) error {
	cause := osCause(err)
	if cause == 0 {
		return fmt.Errorf("sqlitecache: %s: %w", what, err)
	}
	return &describedErr{
		msg:  fmt.Sprintf("sqlitecache: %s: %s: %v", what, reason(cause), err),
		errs: []error{err, cause},
	}
}

// osCause finds the errno behind err, also inside a SQLite error.
func osCause(err error) syscall.Errno {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return 0
	}
	switch se.Code {
	case sqlite3.ErrFull:
		// Open never limits the page count, so SQLITE_FULL there is the
		// disk; SQLite does not report the errno for it.
		if se.SystemErrno != 0 {
			return se.SystemErrno
		}
		return syscall.ENOSPC
	case sqlite3.ErrIoErr, sqlite3.ErrCantOpen, sqlite3.ErrReadonly, sqlite3.ErrPerm:
		return se.SystemErrno
	}
	return 0
}

func reason(errno syscall.Errno) string {
	switch errno {
	case syscall.EROFS:
		return "the file system is read-only"
	case syscall.ENOSPC:
		return "no space left on device"
	case syscall.EDQUOT:
		return "disk quota exceeded"
	case syscall.EACCES, syscall.EPERM:
		return "permission denied"
	case syscall.ENOTDIR:
		return "a component of the path is not a directory"
	case syscall.EISDIR:
		return "it is a directory"
	}
	return errno.Error()
}
