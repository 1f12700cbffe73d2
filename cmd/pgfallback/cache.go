package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pgfallback/pgfallback/sqlitecache"
)

// cacheAbout is what `cache --help` says of the actions.
const cacheAbout = `Actions:
  stats        show the file's entries, how many are stale (older than --ttl), and how current
               it is: the change feed's position and "as of" (--json: the same as JSON)
  clear-stale  remove the entries older than --ttl
  clear        remove every entry
  warm         fill the file from PostgreSQL (--dsn, or DATABASE_URL): refresh the keys it
               holds, or with --all copy every row (a mirror); it records the change log's
               position and the time the file is current as of, so an instance starting on
               the file catches up instead of warming

--ttl applies to stats and clear-stale only: give the application's TTL (sqlitecache.WithTTL,
statusd's --ttl), or "stale" means something else than in the application; clear and warm
ignore it. Neither clearing action touches queued writes nor the entries they hold pending.
`

func cacheCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("cache", "cache stats|clear-stale|clear|warm [--path FILE] [--ttl D] [--json] [--dsn URL] [--all]", stdout, stderr)
	fs.about = cacheAbout
	path := fs.String("path", sqlitecache.DefaultPath, "cache file")
	ttl := fs.Duration("ttl", sqlitecache.DefaultTTL, "stats, clear-stale: an entry cached longer ago is stale (use the application's TTL)")
	asJSON := fs.Bool("json", false, "stats: print JSON")
	dsnFlag := fs.dsnFlag("warm: PostgreSQL connection URL (default $DATABASE_URL)")
	all := fs.Bool("all", false, "warm: copy every row (a mirror), not only the keys the file holds")
	action, err := fs.parseAction(args, "stats", "clear-stale", "clear", "warm")
	if err != nil {
		return err
	}
	if *ttl <= 0 {
		return fs.usageError("--ttl must be positive")
	}
	if action == "warm" {
		conn := dsnFlag()
		if conn == "" {
			return fs.usageError("warm: --dsn (or DATABASE_URL) is required")
		}
		return warmCmd(ctx, conn, *path, *all, stdout, stderr)
	}
	// Every action first opens the file read-only, which never creates,
	// migrates, moves or stamps anything, and refuses what is not a cache:
	// a missing file (a typo in --path), an empty one, another program's.
	// stats needs nothing more; the clearing actions then reopen it to write.
	c, err := sqlitecache.OpenReadOnly(*path, sqlitecache.WithTTL(*ttl))
	if err == nil && action != "stats" {
		c.Close()
		c, err = sqlitecache.Open(*path, sqlitecache.WithTTL(*ttl), sqlitecache.WithCleanupInterval(0),
			sqlitecache.WithFileCheckInterval(0))
	}
	if err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	defer c.Close()
	switch action {
	case "stats":
		s, err := c.Stats(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			feed, err := c.FeedState(ctx)
			if err != nil {
				return err
			}
			return writeStatsJSON(stdout, *path, *ttl, s, feed)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "file\t%s\n", *path)
		fmt.Fprintf(tw, "entries\t%d\n", s.TotalEntries)
		fmt.Fprintf(tw, "vendors\t%d\n", s.VendorsCached)
		fmt.Fprintf(tw, "work items\t%d\n", s.WorkItemsCached)
		fmt.Fprintf(tw, "stale (ttl %s)\t%d\n", *ttl, s.StaleEntries)
		fmt.Fprintf(tw, "oldest entry\t%s\n", s.OldestEntryAge.Round(time.Second))
		feed, err := c.FeedState(ctx)
		if err != nil {
			return err
		}
		cursor, asOf := describeFeed(feed, time.Now())
		mirror := "no"
		if feed.Mirror {
			mirror = "complete"
		}
		fmt.Fprintf(tw, "change feed\t%s\n", cursor)
		fmt.Fprintf(tw, "as of\t%s\n", asOf)
		fmt.Fprintf(tw, "mirror\t%s\n", mirror)
		tw.Flush()
	case "clear-stale":
		n, err := c.ClearStale(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %d stale entries\n", n)
	case "clear":
		n, err := c.ClearAll(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "removed %d entries\n", n)
	}
	return nil
}

// describeFeed says, for `cache stats`, where the file stands in the change
// log and since when it is known current. The cursor itself is opaque (a
// position in one database's log): the text says what it is for and shows
// it last, for support; --json has it alone.
func describeFeed(feed sqlitecache.FeedState, now time.Time) (cursor, asOf string) {
	switch {
	case feed.Cursor == "":
		cursor = "no position recorded: the change feed has not run on this file, nor a warm with the change log"
	default:
		cursor = "position recorded: an instance starting on this file catches up from it (" + feed.Cursor + ")"
	}
	switch {
	case !feed.AsOf.IsZero():
		asOf = fmt.Sprintf("%s (%s ago): every change committed before then is in the file",
			feed.AsOf.UTC().Format(time.RFC3339), now.Sub(feed.AsOf).Round(time.Second))
	case feed.Cursor != "":
		asOf = "unknown: the position was recorded without a time (by an older warm, or before the feed's first catch-up); an instance learns it at its first catch-up"
	default:
		asOf = "unknown"
	}
	return cursor, asOf
}
