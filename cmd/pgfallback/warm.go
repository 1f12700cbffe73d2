package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// warmCmd fills a cache file from PostgreSQL — every row with all (a
// mirror), else a refresh of the keys the file holds — for example to ship
// an instance with a filled cache. It records the change log's head taken
// before the copy, so an instance that starts on the file catches up from
// there instead of warming again, and the database's time read just before
// that head as the file's AsOf: every change committed before then is in
// the head's snapshot or read by the copy that follows it, so the file is
// current as of then (an instance serving from it during an outage says
// so: X-As-Of), and `cache stats` can say since when.
func warmCmd(ctx context.Context, conn, path string, all bool, stdout, stderr io.Writer) error {
	pcfg, err := dsn.ParseConfig(conn)
	if err != nil {
		return fmt.Errorf("warm: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("warm: %w", dsn.Error(err))
	}
	store := pgstore.New(pool)
	defer store.Close()
	if err := store.Ping(ctx); err != nil {
		return fmt.Errorf("warm: connect: %w", dsn.Error(err))
	}
	cache, err := sqlitecache.Open(path, sqlitecache.WithCleanupInterval(0),
		sqlitecache.WithFileCheckInterval(0), sqlitecache.WithLogger(slog.New(slog.NewTextHandler(stderr, nil))))
	if err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	defer cache.Close()

	// The total, for the progress bar: rows to copy, or keys to refresh.
	var total int64
	if all {
		err = store.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM vendors) + (SELECT count(*) FROM work_items)`).Scan(&total)
	} else {
		var s sqlitecache.Stats
		s, err = cache.Stats(ctx)
		total = int64(s.TotalEntries)
	}
	if err != nil {
		return fmt.Errorf("warm: %w", dsn.Error(err))
	}
	// The database's clock, not this machine's: AsOf is compared with the
	// times the change feed reads from the same database.
	var asOf time.Time
	if err := store.Pool().QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&asOf); err != nil {
		return fmt.Errorf("warm: %w", dsn.Error(err))
	}
	head, headErr := store.ChangeHead(ctx) // absent before migration 00003: the file then gets no cursor

	strategy := fallback.WarmCached
	if all {
		strategy = fallback.WarmAll
	}
	layer, err := fallback.New(store, cache, fallback.Config{
		Warm: strategy, WarmLimit: 1 << 40, WarmBatch: 5000, PrimaryTimeout: time.Minute, WarmTimeout: 24 * time.Hour,
		DisableChangeFeed: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	defer layer.Close()
	bar := newProgress(stderr, total, isTerminal(stderr))
	rep, err := layer.Warm(fallback.WithWarmProgress(ctx, bar.add))
	bar.done()
	if err != nil {
		return dsn.Error(err)
	}
	if headErr == nil && !rep.Truncated {
		if err := cache.SetFeedState(ctx, sqlitecache.FeedState{Cursor: head, AsOf: asOf.UTC(), Mirror: all}); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "warmed %s: %d rows written, %d removed in %s (%s)\n", path, rep.Refreshed, rep.Removed,
		rep.Duration.Round(time.Millisecond), rep.Strategy)
	switch {
	case headErr != nil:
		fmt.Fprintf(stderr, "no change log position recorded (%v): an instance starting on the file warms it again\n", dsn.Error(headErr))
	case rep.Truncated:
		fmt.Fprintln(stderr, "no change log position recorded: the warm stopped at its limit, so an instance starting on the file warms it again")
	default:
		fmt.Fprintf(stdout, "current as of %s: an instance starting on the file catches up from there\n", asOf.UTC().Format(time.RFC3339))
	}
	return nil
}

// progress draws a bar on a terminal, and a line every few seconds
// elsewhere (a CI log).
type progress struct {
	w        io.Writer
	total    int64
	terminal bool
	count    atomic.Int64
	start    time.Time
	last     time.Time
}

func newProgress(w io.Writer, total int64, terminal bool) *progress {
	return &progress{w: w, total: total, terminal: terminal, start: time.Now()}
}

func (p *progress) add(n int) {
	d := p.count.Add(int64(n))
	now := time.Now()
	if p.terminal && now.Sub(p.last) < 100*time.Millisecond || !p.terminal && now.Sub(p.last) < 5*time.Second {
		return
	}
	p.last = now
	p.draw(d)
}

func (p *progress) draw(d int64) {
	rate := float64(d) / max(time.Since(p.start).Seconds(), 1e-3)
	if p.total <= 0 {
		fmt.Fprintf(p.w, "\r%d rows, %.0f rows/s", d, rate)
		return
	}
	frac := min(float64(d)/float64(p.total), 1)
	const width = 30
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = '.'
		if i < filled {
			bar[i] = '#'
		}
	}
	line := fmt.Sprintf("[%s] %3.0f%% %d/%d rows, %.0f rows/s", bar, 100*frac, d, p.total, rate)
	if p.terminal {
		fmt.Fprint(p.w, "\r"+line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p *progress) done() {
	p.draw(p.count.Load())
	if p.terminal {
		fmt.Fprintln(p.w)
	}
}

// writeStatsJSON is `cache stats --json`.
func writeStatsJSON(w io.Writer, path string, ttl time.Duration, s sqlitecache.Stats, feed sqlitecache.FeedState) error {
	out := struct {
		File            string     `json:"file"`
		TTLSeconds      float64    `json:"ttl_seconds"`
		Entries         int        `json:"entries"`
		Vendors         int        `json:"vendors"`
		WorkItems       int        `json:"work_items"`
		Stale           int        `json:"stale"`
		OldestAgeSecond float64    `json:"oldest_entry_age_seconds"`
		FeedCursor      string     `json:"feed_cursor,omitempty"`
		AsOf            *time.Time `json:"as_of,omitempty"`
		Mirror          bool       `json:"mirror"`
	}{File: path, TTLSeconds: ttl.Seconds(), Entries: s.TotalEntries, Vendors: s.VendorsCached, WorkItems: s.WorkItemsCached,
		Stale: s.StaleEntries, OldestAgeSecond: s.OldestEntryAge.Seconds(), FeedCursor: feed.Cursor, Mirror: feed.Mirror}
	if !feed.AsOf.IsZero() {
		out.AsOf = &feed.AsOf
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
