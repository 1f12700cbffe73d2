package repository

import (
	"context"
	"errors"
	"time"
)

// Entity names a kind of entity in a Change.
type Entity string

const (
	EntityVendor   Entity = "vendor"
	EntityWorkItem Entity = "work_item"
)

// ChangeOp is what a committed change did to a row.
type ChangeOp string

const (
	ChangeInsert ChangeOp = "insert"
	ChangeUpdate ChangeOp = "update" // a work item's soft delete is an update
	ChangeDelete ChangeOp = "delete"
	// ChangeTruncate: the whole table was emptied (TRUNCATE); Key is empty.
	// A follower cannot tell what went, and resyncs.
	ChangeTruncate ChangeOp = "truncate"
)

// Change is one committed insert, update or delete of a row, by any
// writer: this library, another service, plain SQL. A key change (a vendor
// renamed in SQL) is a delete of the old key and an insert of the new one.
type Change struct {
	Seq     int64    // position in the log: increasing, but commits may arrive out of Seq order
	Entity  Entity   // EntityVendor or EntityWorkItem
	Key     string   // the vendor's Name, or the work item's ID as text
	Op      ChangeOp // ChangeInsert, ChangeUpdate, ChangeDelete or ChangeTruncate
	Version int64    // the row's Version after the change; before it, for a delete; 0 for a truncate
	// A writer in plain SQL may change a row without bumping its version:
	// followers refresh by key, whatever the version says.
	At time.Time
}

// ChangeBatch is one read of the change log.
type ChangeBatch struct {
	Changes []Change // in Seq order; may repeat changes an earlier read returned
	// Next is the cursor to read from next time. Store it only once the
	// changes are applied: reading from it never skips a change committed
	// after the cursor passed in, however late it commits.
	Next string
	// More: the read stopped at its limit; read again from Next at once.
	More bool
	// AsOf, when More is false: every change committed before this moment
	// (the database's clock) is in this batch or was before the cursor.
	AsOf time.Time
	// Rows, when a notification carried them (ReadHeardChanges), are the
	// current rows of some of the changed keys, read once for every
	// follower after the changes committed; a follower need not read
	// those keys again. ReadChanges leaves it empty.
	Rows []ChangedRow
}

// ChangedRow is a changed key's row as the feed read it: Vendor or
// WorkItem (as Entity says), or neither when the key had no row.
type ChangedRow struct {
	Entity   Entity
	Key      string
	Vendor   *Vendor
	WorkItem *WorkItem
	// At is no later than the read (the database's clock): a change
	// committed before At is in the row. A follower must not let the row
	// undo its own writes made since: a delete it made after At may be
	// missing from the row (the version rule protects its updates).
	At time.Time
}

// ErrCursorExpired means the change log no longer holds every change after
// the cursor (it was pruned, or the cursor comes from another database):
// the follower must resync, for example with a full warm, and start again
// from ChangeFeed.ChangeHead. It is never answered by skipping changes.
var ErrCursorExpired = errors.New("change cursor expired")

// ErrChangeLogIncomplete means the change log cannot be trusted to hold
// every committed change: a trigger that fills it is missing, disabled, or
// does not fire for every session (logical replication's apply workers
// included). The store answered; nothing is wrong with the caller's
// cursor. A follower keeps its AsOf and reads again later: once the
// triggers are repaired, every cursor read before the change expires
// (ErrCursorExpired), so that it resyncs.
var ErrChangeLogIncomplete = errors.New("change log incomplete")

// ChangeFeed is what a store offers so that caches follow every committed
// change. *pgstore.Store implements it once its schema is migrated.
type ChangeFeed interface {
	// ChangeHead returns a cursor at the end of the log: reading from it
	// returns only changes committed after this call began.
	// Errors: ErrUnavailable (or the raw connection error), ErrNotFound
	// when the schema has no change log (not migrated),
	// ErrChangeLogIncomplete.
	ChangeHead(ctx context.Context) (string, error)

	// ReadChanges returns up to limit changes committed after cursor,
	// read during the call: the batch's AsOf is no earlier than the call's
	// start (a follower stamps the batch with that start, in its own
	// clock, rather than compare the database's clock with its own).
	// Errors: ErrInvalid for a malformed cursor or limit < 1,
	// ErrCursorExpired, ErrNotFound when the schema has no change log,
	// ErrChangeLogIncomplete, ErrUnavailable (or the raw connection error).
	ReadChanges(ctx context.Context, cursor string, limit int) (ChangeBatch, error)

	// WatchChanges holds one dedicated connection that listens for change
	// notifications until ctx ends, reconnecting with backoff. It calls
	// wake(true) after every (re)connect, once it listens — notifications
	// sent while it was away are lost, so the caller catches up from its
	// cursor then — and wake(false) whenever changes may have been
	// committed: on every notification and, while it cannot be notified
	// (no connection, or no one to notify it), about once a second. wake
	// must not block for long. It returns ctx's error when ctx ends, or ErrInvalid
	// for a nil wake. It reports no connection errors: it retries, and a
	// follower learns the database is unreachable from ReadChanges.
	WatchChanges(ctx context.Context, wake func(reconnected bool)) error
}

// HeardChangeFeed is a ChangeFeed whose notifications may carry the changes
// they announce: one read of the log made for every follower, rather than
// a read by each follower woken. (pgstore's do; see its broadcast.go.)
type HeardChangeFeed interface {
	ChangeFeed

	// ReadHeardChanges answers as ReadChanges would, without a query, from
	// the changes that notifications heard by WatchChanges carried, when
	// they continue cursor and fit in limit; ok is false otherwise, and
	// the caller reads the log. Its AsOf is when the notifying read was
	// made, not now: use it after a wake-up, and ReadChanges where "up to
	// now" is meant (a poll, an explicit catch-up, a reconnect).
	ReadHeardChanges(cursor string, limit int) (batch ChangeBatch, ok bool)
}

// RefusableChangeFeed is a ChangeFeed whose listener may find that it must
// not listen where it connected (pgstore's: through a connection pooler, in
// another database than the store's, or on another installation's log), or
// that it cannot connect there while the store's other connections can.
// It then stands in, waking its follower about once a second, which is
// correct but slow; ListenerRefused says why in a word (pgstore's
// Refused… constants), for health checks and metrics, and "" while it
// listens or has not yet looked.
type RefusableChangeFeed interface {
	ChangeFeed

	ListenerRefused() string
}
