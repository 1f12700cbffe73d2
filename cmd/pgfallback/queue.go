package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

const queueSynopsis = `queue list [--path FILE] [--json] [--pending|--dead]
       pgfallback queue retry|discard [--path FILE] ID

The durable write queue in the cache file: the writes an application kept
while PostgreSQL could not take them (pending), and those PostgreSQL
refused for good (dead letters), which wait for an operator.

  list      show the pending writes and the dead letters (both by default)
  retry     put dead letter ID back at the end of the queue, as it was
            written; a running application replays it on its next replay
            tick (retry once the reason is gone, e.g. a parent now exists)
  discard   remove dead letter ID for good: it is never applied

ID is a write's ID as list shows it. Only dead letters can be retried or
discarded: the application replays pending writes itself. retry and
discard may run while the application runs: SQLite's locking makes it safe.
Every action first opens the file read-only, and refuses a missing file or
one that is not a cache without touching it.`

func queueCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("queue", queueSynopsis, stdout, stderr)
	path := fs.String("path", sqlitecache.DefaultPath, "cache file")
	asJSON := fs.Bool("json", false, "list: print JSON")
	onlyPending := fs.Bool("pending", false, "list: only the pending writes")
	onlyDead := fs.Bool("dead", false, "list: only the dead letters")
	action, ids, err := parseQueueArgs(fs, args)
	if err != nil {
		return err
	}
	if *onlyPending && *onlyDead {
		return fs.usageError("--pending and --dead exclude each other (neither lists both)")
	}
	var id uuid.UUID
	switch {
	case action == "list" && len(ids) > 0:
		return fs.usageError("unexpected argument %q", ids[0])
	case action == "list":
	case len(ids) == 0:
		return fs.usageError("%s: missing ID argument (a write's ID from `pgfallback queue list`)", action)
	case len(ids) > 1:
		return fs.usageError("%s: unexpected argument %q: one ID at a time", action, ids[1])
	default:
		if id, err = uuid.Parse(ids[0]); err != nil {
			return fs.usageError("%s: malformed ID argument %q: want a write's UUID from `pgfallback queue list`", action, ids[0])
		}
	}

	// As for `cache`: read-only first, which never creates, migrates or
	// moves anything and refuses what is not a cache; list needs nothing
	// more, retry and discard then reopen the file to write.
	c, err := sqlitecache.OpenReadOnly(*path)
	if err == nil && action != "list" {
		c.Close()
		c, err = sqlitecache.Open(*path, sqlitecache.WithCleanupInterval(0), sqlitecache.WithFileCheckInterval(0))
	}
	if err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	defer c.Close()

	switch action {
	case "list":
		return queueList(ctx, c, stdout, *asJSON, !*onlyDead, !*onlyPending)
	case "retry":
		q, err := c.RetryWrite(ctx, id)
		if err != nil {
			return queueActionError(*path, id, "retried", err)
		}
		fmt.Fprintf(stdout, "requeued write %s (%s) at the end of the queue\n", id, describeWrite(q.Write))
	case "discard":
		q, err := c.DiscardWrite(ctx, id)
		if err != nil {
			return queueActionError(*path, id, "discarded", err)
		}
		fmt.Fprintf(stdout, "discarded write %s (%s): it will not be applied\n", id, describeWrite(q.Write))
	}
	return nil
}

// parseQueueArgs parses "ACTION [flags] [ID] [flags]": parseAction's rules,
// with positional arguments (the ID) allowed among the flags.
func parseQueueArgs(fs *flagSet, args []string) (action string, positional []string, err error) {
	actions := []string{"list", "retry", "discard"}
	if len(args) == 0 {
		return "", nil, fs.usageError("missing action: one of %v", actions)
	}
	switch action = args[0]; action {
	case "-h", "-help", "--help", "help":
		fs.printUsage(fs.stdout)
		return "", nil, flag.ErrHelp
	}
	if !slices.Contains(actions, action) {
		return "", nil, fs.usageError("unknown action %q: want one of %v", action, actions)
	}
	if err := fs.parse(args[1:]); err != nil {
		return "", nil, err
	}
	for fs.NArg() > 0 {
		positional = append(positional, fs.Arg(0))
		if err := fs.parse(fs.Args()[1:]); err != nil {
			return "", nil, err
		}
	}
	return action, positional, nil
}

// queueActionError turns RetryWrite's and DiscardWrite's answers into what
// an operator needs to read.
func queueActionError(path string, id uuid.UUID, done string, err error) error {
	switch {
	case errors.Is(err, repository.ErrNotFound):
		return fmt.Errorf("no queued write %s in %s", id, path)
	case errors.Is(err, sqlitecache.ErrUndecodable):
		return fmt.Errorf("write %s cannot be %s: its stored bytes do not decode, so no replay can apply it; `pgfallback queue list --json` shows them (raw), and `pgfallback queue discard %s` removes it", id, done, id)
	case errors.Is(err, sqlitecache.ErrPending):
		return fmt.Errorf("write %s is pending, not a dead letter: only dead letters can be %s (the application replays pending writes itself)", id, done)
	}
	return err
}

// describeWrite is a write as an operator reads it: update vendor "acme".
func describeWrite(w repository.Write) string {
	return fmt.Sprintf("%s %s %q", w.Op, strings.ReplaceAll(string(w.Entity), "_", " "), w.Key())
}

func queueList(ctx context.Context, c *sqlitecache.Cache, stdout io.Writer, asJSON, pending, dead bool) error {
	stats, err := c.QueueStats(ctx)
	if err != nil {
		return err
	}
	var ps, ds []sqlitecache.QueuedWrite
	if pending {
		if ps, err = c.PendingWrites(ctx, 0); err != nil {
			return err
		}
	}
	if dead {
		if ds, err = c.DeadLetters(ctx); err != nil {
			return err
		}
	}
	now := time.Now()
	if asJSON {
		return writeQueueJSON(stdout, now, stats, ps, ds, pending, dead)
	}
	summary := fmt.Sprintf("%d pending", stats.Pending)
	if !stats.Oldest.IsZero() {
		summary += fmt.Sprintf(" (oldest queued %s ago)", now.Sub(stats.Oldest).Round(time.Second))
	}
	summary += fmt.Sprintf(", %d dead letters", stats.DeadLetters)
	fmt.Fprintln(stdout, summary)
	if len(ps)+len(ds) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tID\tSTATE\tOP\tENTITY\tKEY\tBASE\tQUEUED AT\tATTEMPTS\tCURRENT\tERROR")
	for _, q := range slices.Concat(ps, ds) {
		state, current := "pending", "-"
		if q.Dead {
			state, current = "dead", "unknown"
			if v, ok := currentVersion(q.Current); ok {
				current = strconv.FormatInt(v, 10)
				if q.Current.WorkItem != nil && q.Current.WorkItem.DeletedAt != nil {
					current += " (deleted)"
				}
			}
		}
		base, reason := "-", "-"
		switch {
		case q.Err != "":
			reason = oneLine(q.Err)
		case q.Undecodable != "":
			reason = "does not decode: " + oneLine(q.Undecodable)
		}
		if q.Write.Op == repository.WriteUpdate {
			base = strconv.FormatInt(q.Write.BaseVersion, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", q.Seq, q.Write.ID, state, q.Write.Op, q.Write.Entity,
			oneLine(q.Write.Key()), base, q.QueuedAt.UTC().Format(time.RFC3339), q.Attempts, current, reason)
	}
	return tw.Flush()
}

// currentVersion is the version of the row PostgreSQL held when a write
// was dead-lettered, when it is known.
func currentVersion(r sqlitecache.Row) (int64, bool) {
	switch {
	case r.Vendor != nil:
		return r.Vendor.Version, true
	case r.WorkItem != nil:
		return r.WorkItem.Version, true
	}
	return 0, false
}

// oneLine keeps a table row on one line whatever an error message holds.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

type queuedWriteJSON struct {
	Seq            int64      `json:"seq"`
	ID             string     `json:"id"`
	State          string     `json:"state"` // pending or dead
	Op             string     `json:"op"`
	Entity         string     `json:"entity"`
	Key            string     `json:"key"`
	BaseVersion    int64      `json:"base_version"`
	QueuedAt       time.Time  `json:"queued_at"`
	Attempts       int        `json:"attempts"`
	Error          string     `json:"error"`
	DeadAt         *time.Time `json:"dead_at,omitempty"`
	CurrentVersion *int64     `json:"current_version,omitempty"`
	CurrentDeleted bool       `json:"current_deleted,omitempty"`
	// Undecodable says why the stored write does not decode; Raw is its
	// stored bytes (base64), kept for an operator.
	Undecodable string `json:"undecodable,omitempty"`
	Raw         []byte `json:"raw,omitempty"`
}

// writeQueueJSON is `queue list --json`. A list that was not asked for
// (--pending, --dead) is left out; one that was is an array, empty or not.
func writeQueueJSON(w io.Writer, now time.Time, s sqlitecache.QueueStats, ps, ds []sqlitecache.QueuedWrite, pending, dead bool) error {
	type statsJSON struct {
		Pending          int        `json:"pending"`
		OldestQueuedAt   *time.Time `json:"oldest_queued_at,omitempty"`
		OldestAgeSeconds float64    `json:"oldest_age_seconds"`
		DeadLetters      int        `json:"dead_letters"`
	}
	out := struct {
		Pending     *[]queuedWriteJSON `json:"pending,omitempty"`
		DeadLetters *[]queuedWriteJSON `json:"dead_letters,omitempty"`
		Stats       statsJSON          `json:"stats"`
	}{Stats: statsJSON{Pending: s.Pending, DeadLetters: s.DeadLetters}}
	if !s.Oldest.IsZero() {
		oldest := s.Oldest.UTC()
		out.Stats.OldestQueuedAt = &oldest
		out.Stats.OldestAgeSeconds = now.Sub(s.Oldest).Seconds()
	}
	conv := func(qs []sqlitecache.QueuedWrite) *[]queuedWriteJSON {
		l := make([]queuedWriteJSON, 0, len(qs))
		for _, q := range qs {
			j := queuedWriteJSON{Seq: q.Seq, ID: q.Write.ID.String(), State: "pending", Op: string(q.Write.Op),
				Entity: string(q.Write.Entity), Key: q.Write.Key(), BaseVersion: q.Write.BaseVersion,
				QueuedAt: q.QueuedAt.UTC(), Attempts: q.Attempts, Error: q.Err, Undecodable: q.Undecodable, Raw: q.Raw}
			if q.Dead {
				j.State = "dead"
				if !q.DeadAt.IsZero() {
					at := q.DeadAt.UTC()
					j.DeadAt = &at
				}
				if v, ok := currentVersion(q.Current); ok {
					j.CurrentVersion = &v
					j.CurrentDeleted = q.Current.WorkItem != nil && q.Current.WorkItem.DeletedAt != nil
				}
			}
			l = append(l, j)
		}
		return &l
	}
	if pending {
		out.Pending = conv(ps)
	}
	if dead {
		out.DeadLetters = conv(ds)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
