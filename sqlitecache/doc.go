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
// # Concurrency and processes
//
// A Cache is safe for any number of goroutines. The file is in WAL mode
// with synchronous=NORMAL and a busy timeout; writes go through one
// connection, reads through separate ones, so reads never wait for writes.
// Several processes may open the same file.
//
// # Errors
//
// Misses are repository.ErrNotFound, bad input is repository.ErrInvalid (a
// *repository.ValidationError naming the field), a closed cache is
// ErrClosed, a malformed key is ErrInvalidKey. An entry that does not decode
// is reported as a miss (ErrNotFound together with ErrCorruptEntry) and
// logged. A file that is not a database is moved aside by Open and replaced
// by an empty cache. Nothing in this package panics on bad data.
//
// # Logging
//
// The cache logs only rare events (quarantined file, corrupt entry, failed
// background cleanup) to the *slog.Logger given by WithLogger, by default
// slog.Default() so they are not lost.
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
