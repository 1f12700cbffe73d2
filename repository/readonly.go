package repository

import "context"

// WriteChecker is implemented by a primary that can tell, without
// writing, whether it takes writes now; *pgstore.Store does. A write's
// refusal says only that the server refused that one: the fallback layer
// asks this while its primary refuses writes as read-only, so that the
// window ends when the server takes writes again rather than at the next
// write applied, and so that a connection string that reached a standby
// is named as such.
type WriteChecker interface {
	// TakesWrites reports whether a transaction begun now could write
	// (false on a read-only server, or for a role or database made
	// read-only, or on a standby) and whether the server is a standby (in
	// recovery: it takes no writes until it is promoted). It writes
	// nothing, so it cannot tell that a disk is full.
	// Errors: raw errors only (a connection failure, a timeout).
	TakesWrites(ctx context.Context) (takes, standby bool, err error)
}

// CommitProber is implemented by a primary that can finish a transaction
// the way a write's would, without changing any row; *pgstore.Store does.
// The fallback layer asks it while its primary's writes time out at
// commit (a synchronous replica missing) and PostgreSQL answers other
// calls, to learn when commits finish again without spending a caller's
// write on it.
type CommitProber interface {
	// ProbeCommit commits a transaction that writes nothing but its
	// commit record, so that it waits at commit as a write does (for a
	// synchronous replica, for the WAL flush). A probe cut short by ctx
	// may stay waiting on the server until the wait ends; it changes no
	// row either way.
	// Errors: raw errors only (a connection failure, a timeout, or the
	// server's refusal on a read-only server or a standby).
	ProbeCommit(ctx context.Context) error
}
