package repository

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every implementation wraps one of these, so callers check
// the kind of a failure with errors.Is and never by matching messages.
var (
	// ErrNotFound means the store answered and the entity does not exist.
	// A cache that does not hold an entity during an outage does NOT return
	// ErrNotFound: its ignorance is not the database's answer (see
	// ErrUnavailable).
	ErrNotFound = errors.New("not found")

	// ErrAlreadyExists means a Create collided with an existing key.
	ErrAlreadyExists = errors.New("already exists")

	// ErrConflict means an Update carried a Version that is no longer the
	// current one: somebody else updated the entity since the caller read it.
	// Re-read, re-apply, retry.
	ErrConflict = errors.New("version conflict")

	// ErrInvalid means the input was rejected before anything was written.
	// The error's message names the offending field; errors.As to
	// *ValidationError gives the field programmatically.
	ErrInvalid = errors.New("invalid")

	// ErrUnavailable means the store could not be reached and no trustworthy
	// answer could be given: the write did not happen, or the read could not
	// be served. The cause is wrapped beside it.
	ErrUnavailable = errors.New("unavailable")

	// ErrOutcomeUnknown means a write reached the store but no reply came
	// back (the connection broke or timed out mid-call): it may or may not
	// have been applied. It is deliberately not ErrUnavailable, which
	// promises the write did not happen. Re-read before retrying.
	ErrOutcomeUnknown = errors.New("outcome unknown")

	// ErrUnreadable means the store answered but holds a row this program
	// cannot turn into the domain's types — one written around validation
	// (plain SQL, another service) with, say, metadata nested deeper than
	// encoding/json reads. It is an answer about that row, not an outage: a
	// fallback passes it through and never counts it toward tripping. A
	// List or a batch read that meets such a row fails with it; the message
	// names the key. A write that returns it says in its message whether it
	// was applied.
	ErrUnreadable = errors.New("unreadable row")
)

// IsAnswer reports whether err is the store's answer about the call itself
// (ErrNotFound, ErrAlreadyExists, ErrConflict, ErrInvalid, ErrUnreadable),
// which no retry changes, as opposed to a failure to get one
// (ErrUnavailable, ErrOutcomeUnknown, a context's error, anything else).
// A write queue dead-letters a write on an answer and keeps it queued
// otherwise; BatchWriteApplier.ApplyWrites stops at the write an answer is
// about. The one definition keeps the store and the queue agreeing.
func IsAnswer(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrAlreadyExists) || errors.Is(err, ErrConflict) ||
		errors.Is(err, ErrInvalid) || errors.Is(err, ErrUnreadable)
}

// ValidationError describes one rejected field. It matches ErrInvalid with
// errors.Is.
type ValidationError struct {
	Field  string // the Go field name, e.g. "Name" or "Metadata"
	Reason string // human-readable, e.g. "must be 1-100 characters"
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		// PostgreSQL names no column for some refusals of a value (an
		// encoding it cannot convert, SQLSTATE 22P05).
		return "invalid value: " + e.Reason
	}
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}

// Is makes errors.Is(err, ErrInvalid) true for every ValidationError.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Invalid returns a *ValidationError for field, with a formatted reason.
func Invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}
