package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/repository"
)

// Rows in broadcasts: the waker reads the changed rows once for every
// follower.
//
// A follower that takes a batch from a broadcast still had to re-read each
// changed key it caches: with 50 followers, 50 reads of the same rows for
// every commit, the herd that broadcasts removed from the log, now on the
// tables. Measured on two cores (BenchmarkFeedFollowers, 50 followers, a
// commit every 20 ms), those reads took commit → follower p99 from 46–49
// ms to 115–205 ms. So the waker, after a look that found changes, reads
// the current rows of their keys (one round trip, on its own connection)
// and the broadcast carries those that fit in the payload. A follower
// applies them as it would its own read (the version rule, the pending
// state of queued writes), and reads only the keys without a row.
//
// Sealed like the rest of the broadcast, the rows can be read by every
// role that can read the log (docs/privileges.md), as every follower's
// role can read the tables. Under row-level security a role reads only
// its rows, so a table with row security enabled never has its rows
// broadcast: the check is in the same round trip, after the reads.

// readRows reads the rows of the keys changes names, as of now (after
// the changes committed), for a broadcast whose asOf is at. It returns
// nothing when the read fails or a table has row security: the followers
// then read the keys themselves.
func readRows(ctx context.Context, conn batchSender, changes []repository.Change, at time.Time) []repository.ChangedRow {
	// A line for every key asked for: its row, or none (deleted).
	var out []repository.ChangedRow
	line := map[string]int{} // rowKey → its index in out
	var names, ids []string
	for _, c := range changes {
		if c.Op == repository.ChangeTruncate {
			return nil // the followers resync
		}
		key := c.Key
		switch c.Entity {
		case repository.EntityVendor:
		case repository.EntityWorkItem:
			id, err := uuid.Parse(c.Key)
			if err != nil {
				continue
			}
			key = id.String()
		default:
			continue
		}
		k := rowKey(c.Entity, key)
		if _, ok := line[k]; ok {
			continue
		}
		line[k] = len(out)
		out = append(out, repository.ChangedRow{Entity: c.Entity, Key: key, At: at})
		if c.Entity == repository.EntityVendor {
			names = append(names, key)
		} else {
			ids = append(ids, key)
		}
	}
	if len(out) == 0 {
		return nil
	}
	var b pgx.Batch
	if len(names) > 0 {
		b.Queue(getVendorsSQL, names)
	}
	if len(ids) > 0 {
		b.Queue(getWorkItemsSQL, ids)
	}
	b.Queue(`SELECT coalesce(bool_or(relrowsecurity), false) FROM pg_catalog.pg_class
		WHERE oid IN (pg_catalog.to_regclass('vendors'), pg_catalog.to_regclass('work_items'))`)
	br := conn.SendBatch(ctx, &b)
	defer br.Close()
	var vs []repository.Vendor
	var ws []repository.WorkItem
	var err error
	if len(names) > 0 {
		vs, err = collectBatch(br, scanVendor)
	}
	if err == nil && len(ids) > 0 {
		ws, err = collectBatch(br, scanWorkItem)
	}
	var secured bool
	if err == nil {
		err = br.QueryRow().Scan(&secured)
	}
	if err != nil || secured {
		return nil
	}
	for i := range vs {
		if j, ok := line[rowKey(repository.EntityVendor, vs[i].Name)]; ok {
			out[j].Vendor = &vs[i]
		}
	}
	for i := range ws {
		if j, ok := line[rowKey(repository.EntityWorkItem, ws[i].ID.String())]; ok {
			out[j].WorkItem = &ws[i]
		}
	}
	return out
}

// collectBatch scans the next result of a batch.
func collectBatch[T any](br pgx.BatchResults, scan func(pgx.Row) (T, error)) ([]T, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return scan(row) })
}

// rowKey names a key of an entity, for maps over both kinds.
func rowKey(e repository.Entity, key string) string { return string(e) + "\x00" + key }

// encodeRow is r's line in a broadcast's text: entity code, key, and the
// row as JSON, or nothing when the key had no row.
func encodeRow(r repository.ChangedRow) (string, bool) {
	code := entityCodes[r.Entity]
	if code == 0 || strings.ContainsAny(r.Key, "\t\n") {
		return "", false
	}
	var row any
	switch {
	case r.Vendor != nil:
		row = r.Vendor
	case r.WorkItem != nil:
		row = r.WorkItem
	}
	var js []byte
	if row != nil {
		var err error
		if js, err = json.Marshal(row); err != nil {
			return "", false
		}
	}
	return string(code) + "\t" + r.Key + "\t" + string(js) + "\n", true // JSON has no raw newline
}

// decodeRows parses the rows' lines of a broadcast read at asOf.
func decodeRows(lines []string, asOf time.Time) ([]repository.ChangedRow, error) {
	out := make([]repository.ChangedRow, 0, len(lines))
	for _, line := range lines {
		f := strings.SplitN(line, "\t", 3)
		if len(f) != 3 || len(f[0]) != 1 {
			return nil, errors.New("a row's line")
		}
		r := repository.ChangedRow{Entity: uncode(entityCodes, f[0][0]), Key: f[1], At: asOf}
		var err error
		switch {
		case f[2] == "":
		case r.Entity == repository.EntityVendor:
			r.Vendor = new(repository.Vendor)
			if err = json.Unmarshal([]byte(f[2]), r.Vendor); err == nil && r.Vendor.Name != r.Key {
				err = errors.New("a vendor under another key")
			}
		case r.Entity == repository.EntityWorkItem:
			r.WorkItem = new(repository.WorkItem)
			if err = json.Unmarshal([]byte(f[2]), r.WorkItem); err == nil && r.WorkItem.ID.String() != r.Key {
				err = errors.New("a work item under another key")
			}
		default:
			err = errors.New("a row of no entity")
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// heardRows merges the rows of the broadcasts one heard read spans. A
// key's row is current only if it came with the last broadcast that
// changed the key: a later change whose row did not fit leaves the key to
// the follower's own read.
type heardRows struct {
	row     map[string]repository.ChangedRow
	changed map[string]time.Time // the asOf of the last broadcast that changed the key
}

func (h *heardRows) add(b *broadcast) {
	if h.row == nil {
		h.row, h.changed = map[string]repository.ChangedRow{}, map[string]time.Time{}
	}
	for _, c := range b.changes {
		if k := rowKey(c.Entity, c.Key); b.asOf.After(h.changed[k]) {
			h.changed[k] = b.asOf
		}
	}
	for _, r := range b.rows {
		if k := rowKey(r.Entity, r.Key); !r.At.Before(h.row[k].At) {
			h.row[k] = r
		}
	}
}

// current is the rows that are current, in a stable order.
func (h *heardRows) current() []repository.ChangedRow {
	var out []repository.ChangedRow
	for k, r := range h.row {
		if !r.At.Before(h.changed[k]) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b repository.ChangedRow) int {
		return strings.Compare(rowKey(a.Entity, a.Key), rowKey(b.Entity, b.Key))
	})
	return out
}
