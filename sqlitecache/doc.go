// Package sqlitecache is pgfallback's persistent cache: a SQLite file
// (github.com/mattn/go-sqlite3, cgo) that mirrors vendors and work items so
// an application can keep serving while PostgreSQL is unavailable, and
// survives restarts.
//
// # Entries and staleness
//
// Every entry carries the time it was cached (cached_at). An entry older
// than its type's TTL (default 30 minutes; WithTTL, WithVendorTTL,
// WithWorkItemTTL) is stale. Get* still return stale entries, flagged in
// Entry.Stale, because during an outage a stale answer can beat none; the
// caller decides. ClearStale and the background cleanup (WithCleanupInterval)
// delete them. Staleness is computed from cached_at and the TTL of the
// Cache asking, so changing the TTL applies to entries already cached.
//
// Writes are version-monotonic: Set* never replaces an entry with a lower
// Version of the same entity, so out-of-order write-through from concurrent
// requests cannot regress the cache.
//
// # The write queue
//
// The file also holds the fallback layer's durable write queue
// (fallback.WithWriteQueue): writes made while PostgreSQL could not take
// them, kept until they are replayed. Enqueue stores a write and the
// cache entry it changes in one SQLite transaction, so a crash or a
// restart keeps both or neither; the entry is marked pending
// (Entry.Pending), reads answer the write's result, and write-through,
// eviction and cleanup leave it alone until the replay settles it. A write
// leaves the queue when it is applied (CompleteWrite, CompleteWrites) or
// becomes a dead letter (DeadLetter), kept for an operator: PendingWrites,
// DeadLetters and QueueStats read the queue, RetryWrite and DiscardWrite
// act on a dead letter (the CLI's "pgfallback queue list|retry|discard").
// ClearAll and ClearStale never remove queued writes nor the entries they
// hold pending. A file deleted, or left behind when the application moves
// to another path, takes its writes not yet replayed with it: while
// writes are queued it is data, not a disposable cache.
//
// # Concurrency and processes
//
// A Cache is safe for any number of goroutines. The file is in WAL mode
// with synchronous=NORMAL and a busy timeout; writes go through one
// connection, reads through separate ones, so reads never wait for writes.
// Several processes may open the same file. OpenReadOnly opens an existing
// cache without ever writing it (SQLite mode=ro; immutable on a read-only
// file system), for tools that inspect a cache a service is using: reads
// work, writes return ErrReadOnly, no background goroutine runs.
//
// # Files and permissions
//
// The cache holds business data. Open creates the file (and SQLite its
// -wal and -shm) with mode 0600 and missing directories with 0700, exactly,
// whatever the umask; WithFileMode(0o660) shares them with a group (the
// directories then get 0770). Files and directories that already exist
// keep their mode.
//
// # Whose file it is
//
// Open stamps its files with PRAGMA application_id = ApplicationID ("pgfb")
// and takes over only what is a cache: a missing or empty file, a stamped
// database, a database of an earlier version (application_id 0 and only
// the cache's tables), or a SQLite database without tables. Anything else —
// another application's database, a text file such as a YAML config, a
// directory — is refused with ErrForeignFile and left exactly as it was;
// the check is made read-only, before anything could write.
//
// # Damaged files
//
// A damaged cache — binary garbage where the SQLite header should be, or a
// valid header over pages SQLite reports corrupt (found by a cheap probe of
// the schema version and table roots at every Open, confirmed with PRAGMA
// quick_check after a failed migration) — is moved aside to
// "<path>.corrupt-<UTC timestamp>" with its -wal and -shm, logged at
// Error, and replaced by an empty cache, in milliseconds: the application
// starts. A text file is never taken for a damaged cache: SQLite never
// writes one, and renaming someone's configuration would break their
// program.
//
// # Lost files
//
// SQLite keeps using the file it opened, so a cache file deleted or
// truncated under a running process would otherwise go unnoticed: writes
// "succeed" into a deleted inode and the next process starts empty. A
// Cache checks every WithFileCheckInterval (10 s; one os.Stat), and at
// once when a statement fails in a way a lost file causes, that the path
// still names the file it opened. When not, it logs at Error, counts
// Stats.FileLost, and reopens on a fresh file (Stats.Reopens). Calls racing
// the reopen may fail; while a truncated file is replaced, all calls fail
// for the few milliseconds the reopen takes.
//
// # Errors
//
// Misses are repository.ErrNotFound, bad input is repository.ErrInvalid (a
// *repository.ValidationError naming the field), a closed cache is
// ErrClosed, a malformed key is ErrInvalidKey. An entry that does not decode
// is reported as a miss (ErrNotFound together with ErrCorruptEntry) and
// logged. Open's errors say what is wrong with the file system (read-only,
// no space left, permission denied, not a directory) and wrap the OS errno
// even when SQLite reported it, so errors.Is(err, syscall.ENOSPC) works; a
// failed Open removes the files and directories it created. Nothing in
// this package panics on bad data.
//
// # Logging
//
// The cache logs only rare events (quarantined file, lost file, corrupt
// entry, failed background cleanup) to the *slog.Logger given by
// WithLogger, by default slog.Default() so they are not lost.
//
// # Storage
//
// The schema is created and upgraded by the goose migrations in
// migrations/sqlite (migrations.UpSQLite), which keep the original layout
// (cached_vendors, cached_work_items, cache_metadata) and add columns. Entries
// are stored in a compact binary encoding, zstd-compressed above
// WithCompressionThreshold bytes; rows in the original JSON format are read
// too.
package sqlitecache
