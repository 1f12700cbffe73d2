package sqlitecache

import (
	"io"
	"log/slog"
	"os"
	"time"
)

// Defaults. The path and the TTL are the original cache's.
const (
	// DefaultPath is the cache file Open uses for "".
	DefaultPath = "cache/project_status.db"
	// DefaultTTL is both entry types' time to live.
	DefaultTTL = 30 * time.Minute
	// DefaultCleanupInterval is how often the background cleanup runs.
	DefaultCleanupInterval = 5 * time.Minute
	// DefaultStaleRetention is how long past its TTL the background cleanup
	// keeps an entry: the fallback layer's default StaleIfError.
	DefaultStaleRetention = 24 * time.Hour
	// DefaultCompressionThreshold is the entry size above which entries
	// are compressed.
	DefaultCompressionThreshold = 4096
	// DefaultBusyTimeout bounds waiting for another connection's lock.
	DefaultBusyTimeout = 5 * time.Second
	// DefaultMemoSize is the number of decoded entries kept per type.
	DefaultMemoSize = 4096
	// DefaultMemoBytes is the estimated memory the decoded entries of one
	// type may hold.
	DefaultMemoBytes = 32 << 20
	// DefaultFileCheckInterval is how often a Cache checks that its file is
	// still the one it opened (see WithFileCheckInterval).
	DefaultFileCheckInterval = 10 * time.Second
)

// Option configures Open.
type Option func(*config)

type config struct {
	vendorTTL            time.Duration
	workItemTTL          time.Duration
	clock                func() time.Time
	cleanupInterval      time.Duration
	staleRetention       time.Duration
	logger               *slog.Logger
	compressionThreshold int
	busyTimeout          time.Duration
	maxReaders           int
	memoSize             int
	memoBytes            int64
	fileMode             os.FileMode
	fileCheckInterval    time.Duration
}

func defaultConfig() config {
	return config{
		vendorTTL:            DefaultTTL,
		workItemTTL:          DefaultTTL,
		clock:                time.Now,
		cleanupInterval:      DefaultCleanupInterval,
		staleRetention:       DefaultStaleRetention,
		logger:               slog.Default(),
		compressionThreshold: DefaultCompressionThreshold,
		busyTimeout:          DefaultBusyTimeout,
		maxReaders:           8,
		memoSize:             DefaultMemoSize,
		memoBytes:            DefaultMemoBytes,
		fileMode:             DefaultFileMode,
		fileCheckInterval:    DefaultFileCheckInterval,
	}
}

// WithTTL sets the time to live of both entry types. An entry older than its
// TTL is stale: still returned by Get*, flagged in Entry, removed by
// ClearStale. Open fails with ErrInvalid for d <= 0.
func WithTTL(d time.Duration) Option {
	return func(c *config) { c.vendorTTL, c.workItemTTL = d, d }
}

// WithVendorTTL sets the TTL of vendor entries only.
func WithVendorTTL(d time.Duration) Option { return func(c *config) { c.vendorTTL = d } }

// WithWorkItemTTL sets the TTL of work item entries only.
func WithWorkItemTTL(d time.Duration) Option { return func(c *config) { c.workItemTTL = d } }

// WithClock replaces time.Now with now. It is a test hook, exported on
// purpose so that applications can test their own handling of time: the
// clock stamps cached_at (and the queue's timestamps) and decides
// staleness, so a test can open a cache with a clock it advances and see
// entries turn stale past the TTL (WithTTL) — and, through a fallback
// layer without a change feed (the feed dates answers by the database's
// clock), reads served stale or refused past its StaleIfError — without
// sleeping. Production code should not use it: the cache's times must be
// the machine's, which other processes sharing the file also use, and a
// clock that stops or goes back makes stale entries look fresh. A nil
// clock keeps time.Now.
func WithClock(now func() time.Time) Option {
	return func(c *config) {
		if now != nil {
			c.clock = now
		}
	}
}

// WithCleanupInterval sets how often a background goroutine removes entries
// that have been stale for longer than the retention (WithStaleRetention).
// 0 (or negative) disables it; the default is DefaultCleanupInterval.
func WithCleanupInterval(d time.Duration) Option {
	return func(c *config) { c.cleanupInterval = d }
}

// WithStaleRetention sets how long past its TTL the background cleanup
// keeps a stale entry. Stale entries are what the fallback layer serves
// during an outage (up to its StaleIfError, 24 h by default), so the
// cleanup must not remove them at the TTL; ClearStale, called explicitly,
// still removes every stale entry. Default DefaultStaleRetention (24 h);
// 0 removes entries as soon as they are stale.
func WithStaleRetention(d time.Duration) Option { return func(c *config) { c.staleRetention = d } }

// WithLogger sets the logger for the rare events worth reporting (a
// quarantined corrupt file, a cache file lost under the running process,
// a failed background cleanup, a corrupt entry).
// The default is slog.Default(), so those events are not lost; nil discards.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l == nil {
			l = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
		c.logger = l
	}
}

// WithCompressionThreshold compresses (zstd) entries whose encoded size is
// above n bytes; n <= 0 disables compression. Default 4096.
func WithCompressionThreshold(n int) Option {
	return func(c *config) { c.compressionThreshold = n }
}

// WithBusyTimeout sets how long a statement waits for another connection's
// (or process's) lock before failing. Default 5 s.
func WithBusyTimeout(d time.Duration) Option { return func(c *config) { c.busyTimeout = d } }

// WithMaxReaders sets the size of the reader connection pool (default 8).
func WithMaxReaders(n int) Option { return func(c *config) { c.maxReaders = n } }

// WithMemoSize bounds the in-process memo of decoded entries, per entry
// type (default 4096; 0 disables it). The memo only saves decoding: every
// Get still checks the row in the file, so it never serves data another
// process has replaced.
func WithMemoSize(n int) Option { return func(c *config) { c.memoSize = n } }

// WithMemoBytes bounds the memory (estimated from the entries' encoded
// size) the memo of each entry type may hold; default 32 MiB. An entry
// larger than an eighth of it is never memoized.
func WithMemoBytes(n int64) Option { return func(c *config) { c.memoBytes = n } }

// WithFileMode sets the permissions of the cache files Open creates (the
// database and its -wal and -shm); default DefaultFileMode (0600). A
// directory Open creates gets the matching search bits (0600 -> 0700, 0660
// -> 0770). The mode is applied exactly, whatever the process umask, since
// its purpose is to grant a group access deliberately (e.g. 0660 for a
// service and an operator's CLI in one group). Existing files and
// directories keep their mode: Open does not chmod what it did not create.
// Open fails with ErrInvalid when m has bits other than permissions or does
// not let the owner read and write.
func WithFileMode(m os.FileMode) Option { return func(c *config) { c.fileMode = m } }

// WithFileCheckInterval sets how often a goroutine checks that the cache
// file is still the one the Cache opened: not deleted, replaced or
// truncated under the running process. A lost file is logged at Error,
// counted in Stats.FileLost, and the cache is reopened on a fresh file, so
// the loss shows (and is repaired) long before an outage needs the cache.
// Statement errors that suggest a lost file (no such table, I/O errors,
// corruption) trigger the check at once. One os.Stat per check. Default
// DefaultFileCheckInterval (10 s); 0 or negative disables the checks.
func WithFileCheckInterval(d time.Duration) Option {
	return func(c *config) { c.fileCheckInterval = d }
}
