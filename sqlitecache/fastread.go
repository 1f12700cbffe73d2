package sqlitecache

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// fastReaders is a small pool of driver-level SQLite connections used only
// for the Get* point lookups and the change feed's cached-keys checks, each
// holding its prepared statements.
//
// Why not database/sql: profiling a Get hit showed database/sql's
// bookkeeping (connection checkout, Rows, Scan conversions) costing about as
// much as SQLite itself, and with a cancellable context it also starts a
// goroutine per query, which alone doubled the time of a hit. A point
// lookup on a local file takes microseconds and, in WAL mode, never waits
// for writers, so it checks the context before it starts instead of
// watching it while it runs (busy_timeout still bounds the rare wait).
type fastReaders struct {
	dsn   string
	slots chan struct{} // one token per connection in use: bounds the pool

	mu     sync.Mutex
	idle   []*fastReader
	closed bool
}

type fastReader struct {
	conn        *sqlite3.SQLiteConn
	getVendor   driver.StmtQueryContext
	getWorkItem driver.StmtQueryContext
	// cachedVendors, cachedWorkItems: cachedVendorsSQL, cachedWorkItemsSQL.
	cachedVendors   driver.StmtQueryContext
	cachedWorkItems driver.StmtQueryContext
	closers         []io.Closer
	args            [2]driver.NamedValue
	dest            [5]driver.Value
}

func newFastReaders(dsn string, max int) *fastReaders {
	return &fastReaders{dsn: dsn, slots: make(chan struct{}, max)}
}

func (p *fastReaders) acquire(ctx context.Context) (*fastReader, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return nil, errPoolClosed
	}
	if n := len(p.idle); n > 0 {
		r := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return r, nil
	}
	p.mu.Unlock()
	r, err := p.dial()
	if err != nil {
		<-p.slots
		return nil, err
	}
	return r, nil
}

func (p *fastReaders) release(r *fastReader) {
	clear(r.dest[:]) // do not pin the last blob
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		r.close()
	} else {
		p.idle = append(p.idle, r)
		p.mu.Unlock()
	}
	<-p.slots
}

func (p *fastReaders) dial() (*fastReader, error) {
	dc, err := (&sqlite3.SQLiteDriver{}).Open(p.dsn)
	if err != nil {
		return nil, err
	}
	r := &fastReader{conn: dc.(*sqlite3.SQLiteConn)}
	prep := func(q string) (driver.StmtQueryContext, error) {
		st, err := r.conn.Prepare(q)
		if err != nil {
			return nil, err
		}
		r.closers = append(r.closers, st)
		sq, ok := st.(driver.StmtQueryContext)
		if !ok {
			return nil, errors.New("sqlite3 statement without QueryContext")
		}
		return sq, nil
	}
	if r.getVendor, err = prep(getVendorSQL); err == nil {
		r.getWorkItem, err = prep(getWorkItemSQL)
	}
	if err == nil {
		r.cachedVendors, err = prep(cachedVendorsSQL)
	}
	if err == nil {
		r.cachedWorkItems, err = prep(cachedWorkItemsSQL)
	}
	if err != nil {
		r.close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	return r, nil
}

func (r *fastReader) close() {
	for _, c := range r.closers {
		_ = c.Close()
	}
	_ = r.conn.Close()
}

// inUse is the number of connections calls hold right now.
func (p *fastReaders) inUse() int { return len(p.slots) }

func (p *fastReaders) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, r := range idle {
		r.close()
	}
}

// storedRow is one row of getVendorSQL/getWorkItemSQL.
type storedRow struct {
	rev      int64 // 0: NULL (a legacy row, never memoized)
	cachedAt float64
	enc      int64
	data     []byte // nil when the caller's memo is current
	pending  int64  // see migration 00003: 0, pendingWrite or pendingDelete
}

// lookup runs st (getVendorSQL or getWorkItemSQL) for key, passing memoRev.
// found is false when there is no row.
func (p *fastReaders) lookup(ctx context.Context, workItem bool, memoRev int64, key string) (row storedRow, found bool, err error) {
	if err := ctx.Err(); err != nil {
		return row, false, err
	}
	r, err := p.acquire(ctx)
	if err != nil {
		return row, false, err
	}
	defer p.release(r)
	st := r.getVendor
	if workItem {
		st = r.getWorkItem
	}
	r.args[0] = driver.NamedValue{Ordinal: 1, Value: memoRev}
	r.args[1] = driver.NamedValue{Ordinal: 2, Value: key}
	rows, err := st.QueryContext(context.Background(), r.args[:])
	if err != nil {
		return row, false, err
	}
	err = rows.Next(r.dest[:])
	cerr := rows.Close()
	if err == io.EOF {
		return row, false, cerr
	}
	if err != nil {
		return row, false, err
	}
	row.rev, _ = r.dest[0].(int64)
	switch v := r.dest[1].(type) {
	case float64:
		row.cachedAt = v
	case int64:
		row.cachedAt = float64(v)
	}
	row.enc, _ = r.dest[2].(int64)
	switch v := r.dest[3].(type) {
	case []byte:
		row.data = v
	case string: // legacy JSON stored as TEXT
		row.data = []byte(v)
	}
	row.pending, _ = r.dest[4].(int64)
	return row, true, cerr
}

// cachedKeys runs cachedVendorsSQL or cachedWorkItemsSQL with list, a JSON
// array of keys, and returns the keys found.
func (p *fastReaders) cachedKeys(ctx context.Context, workItem bool, list string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer p.release(r)
	st := r.cachedVendors
	if workItem {
		st = r.cachedWorkItems
	}
	r.args[0] = driver.NamedValue{Ordinal: 1, Value: list}
	rows, err := st.QueryContext(context.Background(), r.args[:1])
	if err != nil {
		return nil, err
	}
	var out []string
	for {
		if err = rows.Next(r.dest[:1]); err != nil {
			break
		}
		switch v := r.dest[0].(type) {
		case string:
			out = append(out, v)
		case []byte:
			out = append(out, string(v))
		}
	}
	cerr := rows.Close()
	if err != io.EOF {
		return nil, err
	}
	return out, cerr
}

// lookup runs a Get's point lookup on the current connections. A lookup
// that raced a reopen (its pool was closed under it) runs once more on the
// new connections instead of failing.
func (c *Cache) lookup(ctx context.Context, workItem bool, memoRev int64, key string) (storedRow, bool, error) {
	h := c.h.Load()
	row, found, err := h.fast.lookup(ctx, workItem, memoRev, key)
	if err != nil && errors.Is(err, errPoolClosed) {
		if nh := c.h.Load(); nh != h {
			return nh.fast.lookup(ctx, workItem, memoRev, key)
		}
	}
	return row, found, err
}
