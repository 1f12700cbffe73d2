package fallback

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/repository"
)

// Class is how the layer treats the outcome of a call to the primary.
type Class int

const (
	// Answer: the primary answered (success, or a business error such as
	// ErrNotFound or a constraint violation). Passed through, counted as a
	// success by the breaker, never served from the cache.
	Answer Class = iota
	// Outage: the primary could not answer. Counts towards tripping the
	// breaker; reads fall back to the cache, writes fail with
	// repository.ErrUnavailable.
	Outage
	// Canceled: the caller's own context ended. Returned as is, not
	// counted by the breaker either way.
	Canceled
	// ReadOnly: the primary answered, but takes no writes now: it is
	// read-only (SQLSTATE 25006: a provider's guard against a full disk or
	// a DBA's maintenance window, default_transaction_read_only; or a DSN
	// that reached a hot standby), or out of disk space (53100, what that
	// guard pre-empts). PostgreSQL is reachable and answers reads, so it is
	// not an outage: the breaker does not count it and reads keep going to
	// PostgreSQL. The write was not applied: it fails with
	// repository.ErrUnavailable, or is queued (WithWriteQueue) and replayed
	// once PostgreSQL takes writes again. A read refused so (a sort that
	// spills to a full disk) is answered from the cache. Counted as
	// FailReadOnly or FailDiskFull.
	ReadOnly
)

func (c Class) String() string {
	switch c {
	case Answer:
		return "answer"
	case Outage:
		return "outage"
	case Canceled:
		return "canceled"
	case ReadOnly:
		return "read_only"
	}
	return "unknown"
}

// FailureKind names the kind of an outage, for Stats and logs.
type FailureKind string

const (
	FailConnect     FailureKind = "connect"      // could not establish a connection
	FailTimeout     FailureKind = "timeout"      // PrimaryTimeout or a network timeout expired
	FailConnection  FailureKind = "connection"   // an established connection broke (reset, EOF, SQLSTATE 08)
	FailShutdown    FailureKind = "shutdown"     // the server is shutting down or starting (SQLSTATE 57P01-57P05)
	FailOverload    FailureKind = "overload"     // too many connections (SQLSTATE 53300)
	FailReadOnly    FailureKind = "read_only"    // a write refused by a read-only server (SQLSTATE 25006); not an outage, see ReadOnly
	FailDiskFull    FailureKind = "disk_full"    // a call refused for lack of disk space (SQLSTATE 53100); not an outage, see ReadOnly
	FailUnavailable FailureKind = "unavailable"  // the primary itself reported repository.ErrUnavailable
	FailUnknown     FailureKind = "unknown"      // an error that is neither an answer nor recognised
	FailBreakerOpen FailureKind = "breaker_open" // not a call: the breaker refused it
)

// Classify decides what an error from the primary means. callerCtx is the
// context the caller passed in (before the layer added PrimaryTimeout), so
// the caller's own cancellation can be told from the layer's timeout.
//
// The rules, in order:
//   - nil, and the repository's business errors (ErrNotFound,
//     ErrAlreadyExists, ErrConflict, ErrInvalid) are answers, and so is
//     ErrUnreadable: a row that does not decode is an answer about that
//     row, never a sign the server is down, as is a raw pgx.ScanArgError;
//     so are the change feed's ErrChangeLogIncomplete and ErrCursorExpired
//     (a recovery whose catch-up meets them closes the breaker all the
//     same: PostgreSQL answered);
//   - anything once the caller's context has ended is Canceled;
//   - connection failures, timeouts (ours or the network's), SQLSTATE class
//     08, 57P01-57P05, 57014 (statement timeout) and 53300 are outages;
//   - SQLSTATE 25006 and 53100 are ReadOnly: a server that answers but
//     takes no writes now (read-only, or out of disk space);
//   - any other SQLSTATE (classes 22, 23, 40, 42, ...) is an answer: the
//     server is up and said no;
//   - anything else is an outage of kind FailUnknown. pgstore maps every
//     business outcome to a sentinel, so an unrecognised error is taken to
//     be infrastructure — serving the cache is safer than failing.
func Classify(callerCtx context.Context, err error) (Class, FailureKind) {
	if err == nil {
		return Answer, ""
	}
	if repository.IsAnswer(err) ||
		errors.Is(err, repository.ErrChangeLogIncomplete) || errors.Is(err, repository.ErrCursorExpired) {
		return Answer, ""
	}
	// A value the client could not decode (pgx wraps every one in a
	// ScanArgError) is about that row, even when its cause reads like a
	// broken stream (io.ErrUnexpectedEOF from a short binary value).
	var scanErr pgx.ScanArgError
	if errors.As(err, &scanErr) {
		return Answer, ""
	}
	if callerCtx != nil && callerCtx.Err() != nil {
		return Canceled, ""
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch code := pgErr.Code; {
		case len(code) == 5 && code[:2] == "08":
			return Outage, FailConnection
		case code >= "57P01" && code <= "57P05":
			return Outage, FailShutdown
		case code == "57014": // query_canceled: statement_timeout, or our deadline seen by the server
			return Outage, FailTimeout
		case code == "53300":
			return Outage, FailOverload
		case code == "25006":
			return ReadOnly, FailReadOnly
		case code == "53100":
			return ReadOnly, FailDiskFull
		default:
			return Answer, ""
		}
	}
	var connectErr *pgconn.ConnectError
	switch {
	case errors.As(err, &connectErr):
		return Outage, FailConnect
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		return Outage, FailTimeout
	case errors.Is(err, context.Canceled):
		// Canceled while the caller's context is fine: something between
		// us and the server gave up (a closing pool, say).
		return Outage, FailConnection
	case errors.Is(err, syscall.ECONNREFUSED):
		return Outage, FailConnect
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return Outage, FailConnection
	case errors.Is(err, repository.ErrUnavailable):
		return Outage, FailUnavailable
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		if netErr.Timeout() {
			return Outage, FailTimeout
		}
		return Outage, FailConnection
	}
	return Outage, FailUnknown
}
