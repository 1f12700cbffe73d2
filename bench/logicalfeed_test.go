package bench_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// A prototype, for BenchmarkFeedWriterThroughput's feed=logical mode only:
// the change log written from logical decoding instead of by triggers, to
// measure what that would cost writers before it is built. The triggers
// are disabled; pg_recvlogical streams a slot (test_decoding, whose text
// costs about what pgoutput's binary does, measured side by side) and
// logicalFeeder writes each batch of decoded commits into the log with one
// INSERT every 5 ms, as the elected waker would; the waker, its broadcasts
// and the followers are the shipped ones. Not measured here, and needed
// before it could ship: the slot lost at a failover (PostgreSQL 15), an
// AsOf bounded by what was decoded, the waker's REPLICATION role, deletes
// (whose old key test_decoding gives by primary key, not name).

const (
	logicalSlot       = "pgfallback_bench"
	logicalFlushEvery = 5 * time.Millisecond
	logicalAppName    = "pgfallback-bench-decoder"
)

// decodedVendor parses test_decoding's line for an insert or update of a
// vendor: its op, name and version (no regular expressions: the parse runs
// for every update, in this process, which shares the cores).
func decodedVendor(line string) (row decodedRow, ok bool, err error) {
	rest, ok := strings.CutPrefix(line, "table public.vendors: ")
	if !ok {
		return row, false, nil
	}
	switch {
	case strings.HasPrefix(rest, "UPDATE: "):
		row.op = "update"
	case strings.HasPrefix(rest, "INSERT: "):
		row.op = "insert"
	default:
		return row, false, nil
	}
	_, afterName, ok1 := strings.Cut(rest, " name[text]:'")
	name, _, ok2 := strings.Cut(afterName, "'")
	_, afterVersion, ok3 := strings.Cut(rest, " version[bigint]:")
	digits, _, _ := strings.Cut(afterVersion, " ")
	v, err := strconv.ParseInt(digits, 10, 64)
	if !ok1 || !ok2 || !ok3 || err != nil {
		return row, false, fmt.Errorf("a decoded vendor row without name or version: %.200s", line)
	}
	row.key, row.version = name, v
	return row, true, nil
}

type logicalFeeder struct {
	cmd      *exec.Cmd
	inserted atomic.Int64 // log rows written
	// waitedVisible: batches held back because a decoded commit was not yet
	// visible (see write).
	waitedVisible atomic.Int64
	stop          context.CancelFunc
	done          chan struct{}
	closing       sync.Once
	mu            sync.Mutex
	pending       []decodedRow // committed, not yet written
	err           error        // the first failure; under mu
}

type decodedRow struct {
	key     string
	op      string
	version int64
	xid     int64 // the writer's transaction, 32 bits as test_decoding gives it
}

// startLogicalFeeder moves the slot to the current end of WAL (what
// earlier runs wrote is not this run's) and starts streaming it.
func startLogicalFeeder(ctx context.Context, recvlogical string, env []string, conn, writer *pgx.Conn) (*logicalFeeder, error) {
	if _, err := conn.Exec(ctx, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, logicalSlot); err != nil {
		return nil, fmt.Errorf("advance the slot: %w", err)
	}
	var db string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PGDATABASE="); ok {
			db = v
		}
	}
	fctx, stop := context.WithCancel(context.Background())
	cmd := exec.CommandContext(fctx, recvlogical, "-d", db, "-S", logicalSlot, "--start", "-f", "-", "-F", "0", "-s", "1",
		"-o", "skip-empty-xacts=1", "-o", "include-xids=1")
	cmd.Env = append(append([]string(nil), env...), "PGAPPNAME="+logicalAppName, "PGOPTIONS=")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		stop()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		stop()
		return nil, err
	}
	f := &logicalFeeder{cmd: cmd, stop: stop, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.read(out) }()
	go func() { defer wg.Done(); f.write(fctx, writer) }()
	go func() { wg.Wait(); close(f.done) }()
	return f, nil
}

// read parses test_decoding's lines, and queues each transaction's rows at
// its COMMIT.
func (f *logicalFeeder) read(out interface{ Read([]byte) (int, error) }) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	var tx []decodedRow
	var xid int64
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "BEGIN "):
			tx = tx[:0]
			xid, _ = strconv.ParseInt(strings.TrimPrefix(line, "BEGIN "), 10, 64)
		case strings.HasPrefix(line, "COMMIT "):
			f.mu.Lock()
			f.pending = append(f.pending, tx...)
			f.mu.Unlock()
			tx = tx[:0]
		default:
			row, ok, err := decodedVendor(line)
			if err != nil {
				f.fail(err)
			}
			if ok {
				row.xid = xid
				tx = append(tx, row)
			}
		}
	}
}

// write inserts what is pending every logicalFlushEvery, on its own
// connection (synchronous_commit off, as the waker's).
func (f *logicalFeeder) write(ctx context.Context, conn *pgx.Conn) {
	tick := time.NewTicker(logicalFlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		f.mu.Lock()
		rows := f.pending
		f.pending = nil
		f.mu.Unlock()
		if len(rows) == 0 {
			continue
		}
		keys, ops := make([]string, len(rows)), make([]string, len(rows))
		versions, xids := make([]int64, len(rows)), make([]int64, len(rows))
		for i, r := range rows {
			keys[i], ops[i], versions[i], xids[i] = r.key, r.op, r.version, r.xid
		}
		// A commit is decoded once its WAL record is flushed, and becomes
		// visible to other sessions only after that (when its backend
		// leaves the proc array): a follower that read the row at once
		// could get the version before it, and keep it, the change being
		// applied. The rows go in once no decoded transaction is still in
		// progress for a new snapshot.
		for t0 := time.Now(); ; {
			tag, err := conn.Exec(ctx, `INSERT INTO pgfallback_changes (entity, key, op, version)
				SELECT 'vendor', k, o, v FROM unnest($1::text[], $2::text[], $3::bigint[]) AS r(k, o, v)
				WHERE NOT EXISTS (SELECT FROM pg_snapshot_xip(pg_current_snapshot()) x
					WHERE x::text::bigint % 4294967296 = ANY ($4::bigint[]))`, keys, ops, versions, xids)
			if err != nil {
				if ctx.Err() == nil {
					f.fail(err)
				}
				return
			}
			if tag.RowsAffected() > 0 {
				break
			}
			f.waitedVisible.Add(1)
			if time.Since(t0) > 5*time.Second {
				f.fail(errors.New("decoded transactions still invisible after 5 s"))
				return
			}
			time.Sleep(time.Millisecond)
		}
		f.inserted.Add(int64(len(rows)))
	}
}

func (f *logicalFeeder) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

// drain waits until n rows were written (every update of the run), then
// stops the stream. It returns how long the wait took.
func (f *logicalFeeder) drain(n int64, within time.Duration) (time.Duration, error) {
	t0 := time.Now()
	defer f.close()
	for f.inserted.Load() < n {
		f.mu.Lock()
		err := f.err
		f.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if time.Since(t0) > within {
			return 0, fmt.Errorf("%d of %d decoded rows written after %v", f.inserted.Load(), n, within)
		}
		time.Sleep(logicalFlushEvery)
	}
	return time.Since(t0), nil
}

func (f *logicalFeeder) close() {
	f.closing.Do(func() {
		f.stop()
		<-f.done
		_ = f.cmd.Wait()
	})
}

// findRecvlogical is pg_recvlogical beside pgbench.
func findRecvlogical(pgbench string) (string, error) {
	p := filepath.Join(filepath.Dir(pgbench), "pg_recvlogical")
	if _, err := exec.LookPath(p); err != nil {
		return "", errors.New("no pg_recvlogical beside " + pgbench)
	}
	return p, nil
}
