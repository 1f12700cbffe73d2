package fallback

import (
	"log/slog"
	"time"
)

// WarmStrategy chooses what the layer re-reads from the primary when it
// comes back after an outage (and on Warm).
type WarmStrategy int

const (
	// WarmCached re-reads every key the cache holds, in batches, refreshing
	// those the primary still has and dropping those it no longer has.
	WarmCached WarmStrategy = iota
	// WarmAll mirrors both tables into the cache, page by page, up to
	// Config.WarmLimit rows per table.
	WarmAll
	// WarmNone does not warm; the breaker closes as soon as the primary
	// answers a ping.
	WarmNone
)

func (s WarmStrategy) String() string {
	switch s {
	case WarmCached:
		return "cached"
	case WarmAll:
		return "all"
	case WarmNone:
		return "none"
	}
	return "unknown"
}

// Config configures a Layer. The zero value works: every field documents
// the default it takes when left zero.
type Config struct {
	// PrimaryTimeout bounds each call to the primary. It is applied as a
	// context deadline, never later than the caller's own. Default 2 s.
	PrimaryTimeout time.Duration

	// OpenTimeout is how long the breaker stays open before the prober
	// first pings the primary, and the interval between pings while it
	// keeps failing. Default 5 s.
	OpenTimeout time.Duration

	// ProbeTimeout bounds each ping of the prober. Default 1 s.
	ProbeTimeout time.Duration

	// Trip rule. The breaker opens after ConsecutiveFailures outage
	// failures in a row (default 5), or when at least MinRequests calls
	// (default 20) within the rolling Window (default 60 s) failed at a
	// ratio of FailureRatio or more (default 0.5). Business errors and
	// caller cancellations never count as failures.
	ConsecutiveFailures uint32
	MinRequests         uint32
	FailureRatio        float64
	Window              time.Duration

	// Slow calls trip the breaker too: a call to the primary that took
	// SlowCallDuration or longer (default half of PrimaryTimeout) is slow,
	// and when at least MinRequests calls within Window were slow at a
	// ratio of SlowCallRate or more (default 0.5) the breaker opens, as it
	// does on failures. While it is open the prober closes it only on a
	// ping faster than SlowCallDuration. A negative SlowCallRate turns
	// slow-call tripping off.
	SlowCallDuration time.Duration
	SlowCallRate     float64

	// SoftTimeout, when positive, bounds how long a read waits for the
	// primary before it is answered from the cache, by the rules of an
	// outage (fresh, or stale within StaleIfError and marked stale): a Get
	// of a cached key, or a List the cache can answer completely (mirror
	// mode). Otherwise the read keeps waiting, up to PrimaryTimeout. The
	// primary's call is not canceled at the soft timeout: it finishes in
	// the background, its result is written through, and it counts toward
	// the breaker. Writes are never answered early. Zero (the default)
	// turns it off. See docs/layer.md for when to turn it on.
	SoftTimeout time.Duration
	// MaxAbandonedCalls bounds the primary calls still running in the
	// background after their reads were answered early (default 16): a
	// brownout does not become a connection storm. Beyond it, a read of a
	// cached key is answered from the cache at once, without a call.
	MaxAbandonedCalls int

	// StaleIfError is how far past its TTL a cached entry may still be
	// served while the primary is down. Beyond it the read fails with
	// repository.ErrUnavailable. Default 24 h; negative means never serve
	// stale entries.
	//
	// The TTL is the cache's, not the layer's: set it when opening the
	// cache, with sqlitecache.WithTTL (or WithVendorTTL and
	// WithWorkItemTTL; default sqlitecache.DefaultTTL, 30 min), passed to
	// sqlitecache.Open or NewWithCacheFile. An entry within its TTL is
	// served as fresh; past it, within StaleIfError, as stale
	// (Origin.Stale). The cache's background cleanup keeps stale entries
	// for sqlitecache.WithStaleRetention (default 24 h): keep that at least
	// StaleIfError, or they are gone before StaleIfError runs out.
	StaleIfError time.Duration

	// Warm is the strategy run after an outage, before the breaker closes,
	// and by Warm. Default WarmCached.
	Warm WarmStrategy
	// WarmBatch is the number of keys or rows per batch. Default 500.
	WarmBatch int
	// WarmLimit caps the rows per table that WarmAll mirrors. Default 100 000.
	WarmLimit int
	// WarmTimeout bounds one warm run after recovery; the breaker closes
	// when it ends, warmed or not. It also bounds each attempt of the
	// change feed's resync (at least 2 × PrimaryTimeout, time for a
	// batch), which goes on where the last one stopped. Default 60 s.
	WarmTimeout time.Duration

	// WriteQueue is the capacity of the write-through queue. When it is
	// full, further cache updates are dropped and counted, never waited
	// for. Default 4096.
	WriteQueue int
	// WriteThroughRefresh is how long a read that returns an unchanged
	// entity (same Version as last sent) skips rewriting its cached copy,
	// so hot keys cost one cache write per interval instead of one per
	// read. Changes always go through at once. Default: a tenth of the
	// cache's shorter TTL; negative: rewrite on every read.
	WriteThroughRefresh time.Duration
	// WriteBatch is the most updates the writer applies in one cache
	// transaction. Default 256.
	WriteBatch int

	// CloseTimeout bounds how long Close applies the write-through queue
	// to the cache before dropping (and counting) what is left, e.g. when
	// another process holds the cache's write lock. A cache statement
	// already waiting for a lock then still finishes, within the cache's
	// busy timeout. Default 5 s. Shutdown takes a context instead.
	CloseTimeout time.Duration

	// DisableChangeFeed turns off following the primary's change log. By
	// default a layer whose primary offers one (repository.ChangeFeed:
	// *pgstore.Store once migrated) follows it, so that its cache reflects
	// every committed change, whoever made it.
	DisableChangeFeed bool
	// ChangeFeedPoll is how often the feed reads the log without being
	// woken: the last backstop. pgstore's watcher already wakes the feed
	// about once a second whenever it cannot be notified (its connection
	// is down, or no waker is heard), so a healthy follower sends no query
	// between changes. Default 30 s.
	ChangeFeedPoll time.Duration
	// ChangeFeedMinInterval is the shortest time between the starts of two
	// catch-ups: a wake-up that comes sooner waits out the rest. Under a
	// stream of commits the waker notifies every few milliseconds, and a
	// follower that read the log for each notification would cost
	// PostgreSQL (and its own host) a transaction per notification; it
	// reads batches instead. It adds at most this much to the time a
	// change takes to reach the cache. Default 20 ms; negative: none.
	ChangeFeedMinInterval time.Duration
	// ChangeRetention is how long the change log keeps entries; the layer
	// prunes it hourly (one instance at a time). Default 7 days; negative:
	// never prune. A cache whose cursor is older than this resyncs with a
	// full warm.
	ChangeRetention time.Duration

	// CacheRetry is how often a Layer made by NewWithCacheFile retries opening a
	// cache it could not open. Default 30 s.
	CacheRetry time.Duration

	// MaxQueuedWrites bounds the durable write queue (WithWriteQueue):
	// with this many writes pending, a write that would be queued fails
	// with ErrUnavailable instead. Dead letters do not count. Default
	// 10,000; negative is invalid.
	MaxQueuedWrites int
	// ReplayInterval is how often queued writes are replayed while the
	// breaker is closed (after a transient failure, the wait doubles up to
	// OpenTimeout; a replay that cannot reach PostgreSQL counts as a
	// failed call of the breaker). Default 5 s.
	ReplayInterval time.Duration
	// ReplayBatch is how many queued writes a replay applies per
	// PostgreSQL transaction, when the primary can apply a batch
	// (repository.BatchWriteApplier, as *pgstore.Store): one commit per
	// batch instead of one per write. It also bounds how long the replay
	// holds the batch's row locks. A batch that outlasts PrimaryTimeout is
	// rolled back and the replay goes on with half as many (a slow server),
	// growing back after each batch that commits. Default 256; 1 replays
	// write by write; negative is invalid.
	ReplayBatch int
	// AppliedWriteRetention is how long PostgreSQL keeps the record of a
	// replayed write (the ID that makes a second replay of it do nothing);
	// the layer prunes older records hourly. It must outlast any replay of
	// a write that was already applied — a crash after PostgreSQL committed
	// it and before the queue forgot it, then an outage — so keep it far
	// longer than an outage can last. A queued write first sent to
	// PostgreSQL longer ago than this is not replayed again but becomes a
	// dead letter (ErrOutcomeUnknown): its record may be gone. Default 7
	// days; negative: never prune (and always replay).
	AppliedWriteRetention time.Duration
	// OnConflict, if set, is called once for each queued write that
	// PostgreSQL rejects at replay, and for each write queued behind it for
	// the same key, after it became a dead letter (see DeadLetters). err
	// matches repository.ErrConflict for a version conflict (a
	// *repository.ConflictError with PostgreSQL's row), ErrAlreadyExists
	// for a create of a taken key, ErrInvalid or ErrNotFound, or
	// ErrOutcomeUnknown for a write first sent longer than
	// AppliedWriteRetention ago (see there), which is not replayed. It runs on
	// the replayer's goroutine: it must not block for long.
	OnConflict func(QueuedWrite, error)

	// Observer, if set, is told of every repository call (see Observer):
	// the hook for metrics and tracing. Default: none, at no cost.
	Observer Observer

	// Logger receives one line per trip, recovery and warm, and cache
	// write failures (rate-limited). Default: slog.Default().
	Logger *slog.Logger

	// OnStateChange, if set, is called after every state change, outside
	// of the breaker's lock, from the goroutine that caused it (a failing
	// call, or the prober). It may call State and Stats; it must not block
	// for long.
	OnStateChange func(from, to State)
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.PrimaryTimeout, 2*time.Second)
	def(&c.OpenTimeout, 5*time.Second)
	def(&c.ProbeTimeout, time.Second)
	def(&c.Window, time.Minute)
	def(&c.WarmTimeout, time.Minute)
	def(&c.CloseTimeout, 5*time.Second)
	def(&c.CacheRetry, 30*time.Second)
	def(&c.ChangeFeedPoll, 30*time.Second)
	if c.ChangeFeedMinInterval == 0 {
		c.ChangeFeedMinInterval = 20 * time.Millisecond
	}
	def(&c.ReplayInterval, 5*time.Second)
	if c.ReplayBatch == 0 {
		c.ReplayBatch = DefaultReplayBatch
	}
	if c.AppliedWriteRetention == 0 {
		c.AppliedWriteRetention = DefaultAppliedWriteRetention
	}
	if c.MaxQueuedWrites == 0 {
		c.MaxQueuedWrites = DefaultMaxQueuedWrites
	}
	if c.ChangeRetention == 0 {
		c.ChangeRetention = 7 * 24 * time.Hour
	}
	if c.StaleIfError == 0 {
		c.StaleIfError = 24 * time.Hour
	}
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = 5
	}
	if c.MinRequests == 0 {
		c.MinRequests = 20
	}
	if c.FailureRatio <= 0 {
		c.FailureRatio = 0.5
	}
	if c.SlowCallDuration <= 0 {
		c.SlowCallDuration = c.PrimaryTimeout / 2
	}
	if c.SlowCallRate == 0 {
		c.SlowCallRate = 0.5
	}
	if c.MaxAbandonedCalls <= 0 {
		c.MaxAbandonedCalls = 16
	}
	if c.WarmBatch <= 0 {
		c.WarmBatch = 500
	}
	if c.WarmLimit <= 0 {
		c.WarmLimit = 100_000
	}
	if c.WriteQueue <= 0 {
		c.WriteQueue = 4096
	}
	if c.WriteBatch <= 0 {
		c.WriteBatch = 256
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
