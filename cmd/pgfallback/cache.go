package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pgfallback/pgfallback/sqlitecache"
)

func cacheCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("cache", "cache stats|clear-stale|clear|warm [--path FILE] [--json] [--dsn URL --all]", stdout, stderr)
	path := fs.String("path", sqlitecache.DefaultPath, "cache file")
	ttl := fs.Duration("ttl", sqlitecache.DefaultTTL, "TTL that decides staleness (use the application's)")
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
		return warmCmd(ctx, conn, *path, *ttl, *all, stdout, stderr)
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
		cursor, asOf, mirror := "none (the change feed has not run on this file)", "unknown", "no"
		if feed.Cursor != "" {
			cursor = feed.Cursor
		}
		if !feed.AsOf.IsZero() {
			asOf = fmt.Sprintf("%s (%s ago)", feed.AsOf.UTC().Format(time.RFC3339), time.Since(feed.AsOf).Round(time.Second))
		}
		if feed.Mirror {
			mirror = "complete"
		}
		fmt.Fprintf(tw, "feed cursor\t%s\n", cursor)
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
