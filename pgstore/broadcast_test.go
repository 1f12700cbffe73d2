package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

const testLogID = "6f1c2a9e-3b7d-4c55-9e21-0a8b7c6d5e4f"

func testCursor(seq int64, xmin, xmax uint64, xip ...uint64) cursor {
	return cursor{system: 7, db: 5, timeline: 1, logID: testLogID, seq: seq, snap: snapshot{xmin: xmin, xmax: xmax, xip: xip}}
}

func testChange(seq int64, key string) repository.Change {
	return repository.Change{Seq: seq, Entity: repository.EntityVendor, Key: key, Op: repository.ChangeUpdate,
		Version: seq + 1, At: time.UnixMicro(1_700_000_000_000_000 + seq).UTC()}
}

func TestBroadcastSealing(t *testing.T) {
	b := broadcast{
		from: testCursor(10, 100, 105, 101, 103), next: testCursor(12, 103, 107, 103),
		asOf: time.UnixMicro(1_700_000_000_500_000).UTC(),
		changes: []repository.Change{testChange(11, "acme"), {Seq: 12, Entity: repository.EntityWorkItem,
			Key: "0b7c4a8e-0000-4000-8000-000000000001", Op: repository.ChangeDelete, Version: 3,
			At: time.UnixMicro(1_700_000_000_400_000).UTC()}},
	}
	p, ok := encodeBroadcast(b)
	if !ok {
		t.Fatal("encodeBroadcast refused a small batch")
	}
	if !strings.HasPrefix(p, broadcastPrefix) || strings.Contains(p, "acme") || strings.Contains(p, testLogID) {
		t.Fatalf("payload %q: want an opaque %q… (no key, no log id in the clear)", p, broadcastPrefix)
	}
	got, err := decodeBroadcast(p, testLogID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("decoded %+v\nwant %+v", got, b)
	}
	if _, err := decodeBroadcast(p, "6f1c2a9e-3b7d-4c55-9e21-0a8b7c6d5e40"); !errors.Is(err, errNotBroadcast) {
		t.Errorf("opened with another log's key: %v, want errNotBroadcast", err)
	}
	for i := len(broadcastPrefix); i < len(p); i += 7 {
		tampered := []byte(p)
		tampered[i] ^= 1
		if _, err := decodeBroadcast(string(tampered), testLogID); err == nil {
			t.Fatalf("a payload changed at byte %d opened", i)
		}
	}
	for _, junk := range []string{"", broadcastPrefix, broadcastPrefix + "!!", WakePayload, HeartbeatPayload} {
		if _, err := decodeBroadcast(junk, testLogID); err == nil {
			t.Errorf("%q opened as a broadcast", junk)
		}
	}

	// The largest batch that fits, and one change more.
	big := b
	big.changes = nil
	for i := int64(0); ; i++ {
		big.changes = append(big.changes, testChange(100+i, strings.Repeat("k", 90)+fmt.Sprint(i)))
		p, ok := encodeBroadcast(big)
		if !ok {
			if i < 20 {
				t.Fatalf("only %d changes of 100-byte keys fit", i)
			}
			break
		}
		if len(p) >= 8000 {
			t.Fatalf("a payload of %d bytes: PostgreSQL refuses 8000 and more", len(p))
		}
	}
	for _, c := range []repository.Change{{Seq: 1, Entity: "other", Op: repository.ChangeUpdate}, {Seq: 1, Entity: repository.EntityVendor, Op: repository.ChangeUpdate, Key: "a\nb"}} {
		if _, ok := encodeBroadcast(broadcast{from: b.from, next: b.next, changes: []repository.Change{c}}); ok {
			t.Errorf("encoded %+v, which does not decode", c)
		}
	}
}

func TestCursorCovers(t *testing.T) {
	base := testCursor(10, 100, 105, 101, 103)
	other := func(f func(*cursor)) cursor { c := testCursor(10, 100, 105, 101, 103); f(&c); return c }
	for _, tc := range []struct {
		name string
		c    cursor
		want bool
	}{
		{"itself", base, true},
		{"later: 101 ended, more started", testCursor(12, 103, 109, 103, 106), true},
		{"a lower seq", testCursor(9, 100, 105, 101, 103), false},
		{"an earlier xmax", testCursor(10, 100, 104, 101, 103), false},
		{"sees 102 in progress, which base saw end", testCursor(11, 101, 106, 101, 102), false},
		{"another log", other(func(c *cursor) { c.logID = "6f1c2a9e-3b7d-4c55-9e21-0a8b7c6d5e40" }), false},
		{"another timeline", other(func(c *cursor) { c.timeline = 2 }), false},
		{"another database", other(func(c *cursor) { c.db = 6 }), false},
		{"a legacy cursor", other(func(c *cursor) { c.legacy = true }), false},
	} {
		if got := tc.c.covers(base); got != tc.want {
			t.Errorf("%s: covers = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHeardBroadcastsContinueACursor(t *testing.T) {
	c0, c1, c2 := testCursor(10, 100, 101), testCursor(12, 101, 103, 102), testCursor(14, 103, 104)
	c3, c4, c5, c6 := testCursor(20, 110, 111), testCursor(21, 111, 112), testCursor(22, 112, 113), testCursor(23, 113, 114)
	var h heardBroadcasts
	add := func(from, next cursor, changes ...repository.Change) {
		b := broadcast{from: from, next: next, asOf: time.UnixMicro(int64(next.seq)).UTC(), changes: changes}
		p, ok := encodeBroadcast(b)
		if !ok {
			t.Fatal("encode")
		}
		h.add(p, nil)
	}
	h.add("b1:junk", nil)
	add(c1, c2, testChange(11, "late"), testChange(14, "d")) // heard out of order
	add(c0, c1, testChange(11, "late"), testChange(12, "b"))

	keys := func(b repository.ChangeBatch) string {
		var k []string
		for _, c := range b.Changes {
			k = append(k, fmt.Sprintf("%d:%s", c.Seq, c.Key))
		}
		return strings.Join(k, " ")
	}
	b, ok := h.read(c0, 100)
	if !ok || keys(b) != "11:late 12:b 14:d" || b.Next != c2.String() || !b.AsOf.Equal(time.UnixMicro(14)) || b.More {
		t.Fatalf("from c0: %v %q next %s asOf %v, want 11 12 14 (once each, in seq order) up to c2", ok, keys(b), b.Next, b.AsOf)
	}
	if _, ok := h.read(c0, 2); ok {
		t.Fatal("three changes answered within a limit of 2")
	}
	// A cursor past every broadcast heard: nothing new, as of the last.
	if b, ok := h.read(c2, 100); !ok || len(b.Changes) != 0 || b.Next != c2.String() || !b.AsOf.Equal(time.UnixMicro(12)) {
		t.Fatalf("from c2: %v %q next %s asOf %v, want nothing new as of the last broadcast", ok, keys(b), b.Next, b.AsOf)
	}
	if _, ok := h.read(testCursor(9, 99, 100), 100); ok {
		t.Fatal("answered a cursor from before every broadcast")
	}

	// A gap: the broadcasts up to c2, then one from c3. They no longer
	// reach the last notification from c0.
	add(c3, c4, testChange(21, "x"))
	if b, ok := h.read(c0, 100); ok {
		t.Fatalf("from c0, across a gap: %q", keys(b))
	}
	if b, ok := h.read(c3, 100); !ok || keys(b) != "21:x" || b.Next != c4.String() {
		t.Fatalf("from c3: %v %q", ok, keys(b))
	}
	// The last notification carried nothing usable: only the log knows.
	for _, last := range []string{WakePayload, "b1:junk"} {
		h.add(last, nil)
		if b, ok := h.read(c3, 100); ok {
			t.Fatalf("after %q: answered %q", last, keys(b))
		}
	}
	// Broadcasts that link up need nothing between them: a WakePayload
	// the waker sent moved its cursor (the next broadcast would start
	// elsewhere), so one here came from someone else and announced nothing.
	add(c4, c5, testChange(22, "y"))
	if b, ok := h.read(c3, 100); !ok || keys(b) != "21:x 22:y" {
		t.Fatalf("from c3 across a WakePayload: %v %q", ok, keys(b))
	}
	if b, ok := h.read(c4, 100); !ok || keys(b) != "22:y" {
		t.Fatalf("from c4: %v %q", ok, keys(b))
	}
	for range heardRing {
		h.add(WakePayload, nil)
	}
	add(c5, c6)
	if _, ok := h.read(c4, 100); ok {
		t.Fatalf("kept more than %d notifications", heardRing)
	}
}

// broadcastStores opens a waker and a follower on one database: the
// follower's reads are answered by what it hears.
func broadcastStores(t *testing.T, ctx context.Context, wakerOpts ...Option) (waker, follower *Store, wakes *atomic.Int64) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	var err error
	if waker, err = Open(ctx, dsn, wakerOpts...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(waker.Close)
	if follower, err = Open(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(follower.Close)
	watchUntilCleanup(t, ctx, waker, func(bool) {})
	eventually(t, "the first store is the waker", func() bool { return len(wakerHolders(t, ctx, waker)) == 1 })
	// The waker's first look reads the head and sends a plain wake-up; a
	// write the test makes before that look would be in it, not broadcast.
	// Holding the lock comes before the look: wait for the look too.
	eventually(t, "the waker's first look", func() bool { return lastHeard(waker) != "none" })
	wakes = new(atomic.Int64)
	connected := make(chan struct{}, 1)
	watchUntilCleanup(t, ctx, follower, func(reconnected bool) {
		if reconnected {
			select { // every reconnect after the first is the test's to see, not to block on
			case connected <- struct{}{}:
			default:
			}
		} else {
			wakes.Add(1)
		}
	})
	<-connected
	// A follower's first catch-up reads the log: it then knows the log's
	// key, and trusts what opens under it (hear).
	headOf(t, ctx, follower)
	return waker, follower, wakes
}

// watchUntilCleanup runs s.WatchChanges with wake until the test ends.
func watchUntilCleanup(t *testing.T, ctx context.Context, s *Store, wake func(bool)) {
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.WatchChanges(wctx, wake) }()
	t.Cleanup(func() { stop(); <-done })
}

// wakerHolders lists the backends that hold the waker's lock in s's
// database.
func wakerHolders(t *testing.T, ctx context.Context, s *Store) []uint32 {
	t.Helper()
	rows, _ := s.pool.Query(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND ((classid::bigint << 32) | objid::bigint) = $1`, ChangeWakerLockKey)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// execWoken runs sql on the waker's pool and waits until the follower
// watching with wakes is woken after it.
func execWoken(t *testing.T, ctx context.Context, waker *Store, wakes *atomic.Int64, what, sql string, args ...any) {
	t.Helper()
	woken := wakes.Load()
	if _, err := waker.pool.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the follower woken by "+what, func() bool { return wakes.Load() > woken })
}

// eavesdrop is a connection of its own to s's database, listening on
// ChangeChannel until the test ends.
func eavesdrop(t *testing.T, ctx context.Context, s *Store) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+ChangeChannel); err != nil {
		t.Fatal(err)
	}
	return conn
}

// lastHeard is the payload of the last notification s kept: "" for a plain
// wake-up, "none" before the first. It locks as the listener does, which
// the race detector checks.
func lastHeard(s *Store) string {
	s.heard.mu.Lock()
	defer s.heard.mu.Unlock()
	if n := len(s.heard.entries); n > 0 {
		return s.heard.entries[n-1].payload
	}
	return "none"
}

// eventually polls cond until it holds, for up to 10 s; detail, if any,
// adds what the failure message should say about the state at the end.
func eventually(t *testing.T, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			for _, d := range detail {
				what += "; " + d()
			}
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readHeard reads from cur once a broadcast answers it, and checks the
// answer against the same read of the log.
func readHeard(t *testing.T, ctx context.Context, s *Store, cur string) repository.ChangeBatch {
	t.Helper()
	served := s.heard.served.Load()
	var b repository.ChangeBatch
	// A plain wake-up heard last (a listener that heard nothing for a
	// second stands in for the waker) makes it "not heard": the message
	// says which.
	eventually(t, "a broadcast answers ReadHeardChanges", func() bool {
		var ok bool
		b, ok = s.ReadHeardChanges(cur, 1000)
		return ok && s.heard.served.Load() > served && len(b.Changes) > 0
	}, func() string { return fmt.Sprintf("the last notification heard: %.40q", lastHeard(s)) })
	c, err := parseCursor(cur)
	if err != nil {
		t.Fatal(err)
	}
	r, err := readChanges(ctx, s.pool, c, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// The log, read now, may hold later changes; it holds the broadcast's.
	for _, ch := range b.Changes {
		i := 0
		for i < len(r.changes) && r.changes[i].Seq != ch.Seq {
			i++
		}
		if i == len(r.changes) || !reflect.DeepEqual(r.changes[i], ch) {
			t.Fatalf("broadcast change %+v is not the log's (%+v)", ch, r.changes)
		}
	}
	return b
}

func vendorKeys(b repository.ChangeBatch) []string {
	var out []string
	for _, c := range b.Changes {
		out = append(out, c.Key)
	}
	return out
}

const insertVendorSQL = `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), $1, 'operational')`

// insertVendor commits a new vendor through s.
func insertVendor(t *testing.T, ctx context.Context, s *Store, name string) {
	t.Helper()
	if _, err := s.pool.Exec(ctx, insertVendorSQL, name); err != nil {
		t.Fatal(err)
	}
}

// headOf is s's ChangeHead.
func headOf(t *testing.T, ctx context.Context, s *Store) string {
	t.Helper()
	cur, err := s.ChangeHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

// A commit reaches a follower as the waker's broadcast, in order with one
// that committed out of seq order; the answers are the log's.
func TestBroadcastAnswersReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, follower, _ := broadcastStores(t, ctx)
	cur := headOf(t, ctx, follower)
	insertVendor(t, ctx, waker, "first")
	b := readHeard(t, ctx, follower, cur)
	if got := vendorKeys(b); !reflect.DeepEqual(got, []string{"first"}) {
		t.Fatalf("heard %v, want first", got)
	}

	// A transaction that took its seq first and commits last.
	conn, err := waker.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, insertVendorSQL, "late"); err != nil {
		t.Fatal(err)
	}
	insertVendor(t, ctx, waker, "early")
	b = readHeard(t, ctx, follower, b.Next)
	if got := vendorKeys(b); !reflect.DeepEqual(got, []string{"early"}) {
		t.Fatalf("heard %v, want early (late has not committed)", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b = readHeard(t, ctx, follower, b.Next)
	if got := vendorKeys(b); !reflect.DeepEqual(got, []string{"late"}) {
		t.Fatalf("heard %v, want late, committed after the cursor with a lower seq", got)
	}
	// Nothing more, from the log itself.
	if more, err := follower.ReadChanges(ctx, b.Next, 1000); err != nil || len(more.Changes) != 0 {
		t.Fatalf("after the broadcasts: %v, %v; want nothing", vendorKeys(more), err)
	}
}

// Any role that can connect can NOTIFY on the channel: a payload that does
// not open under the log's key is never an answer, whatever it claims.
func TestForgedBroadcastIsIgnored(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, follower, wakes := broadcastStores(t, ctx)
	curText := headOf(t, ctx, follower)
	cur, err := parseCursor(curText)
	if err != nil {
		t.Fatal(err)
	}
	// What a forger knows: the format (this source), the system, database
	// and timeline (pg_control_system, pg_database), not the log id. Its
	// broadcast says nothing changed, and moves far past the cursor.
	ahead := cur
	ahead.seq += 1_000
	ahead.snap = snapshot{xmin: cur.snap.xmax + 1_000, xmax: cur.snap.xmax + 1_000}
	forged := broadcast{from: cur, next: ahead, asOf: time.Now()}
	forged.from.logID, forged.next.logID = "00000000-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000000"
	p, ok := encodeBroadcast(forged)
	if !ok {
		t.Fatal("encode")
	}
	forgeries := []string{p, broadcastPrefix + "AAAA", broadcastPrefix + strings.Repeat("A", 200)}
	woken := wakes.Load()
	for _, payload := range forgeries {
		if _, err := waker.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, ChangeChannel, payload); err != nil {
			t.Fatal(err)
		}
	}
	// Each wakes the follower, to read the log: kept as a plain wake-up.
	eventually(t, "the follower woken by the forgeries", func() bool {
		return wakes.Load() >= woken+int64(len(forgeries))
	})
	if p := lastHeard(follower); p != "" {
		t.Fatalf("a forgery was kept as a broadcast: %.40q", p)
	}
	if b, ok := follower.ReadHeardChanges(curText, 1000); ok {
		t.Fatalf("a forged broadcast answered: %v, next %s", vendorKeys(b), b.Next)
	}
	insertVendor(t, ctx, waker, "hidden")
	b := readHeard(t, ctx, follower, curText)
	if got := vendorKeys(b); !reflect.DeepEqual(got, []string{"hidden"}) {
		t.Fatalf("heard %v, want hidden", got)
	}
}

// Any role that can connect may take the waker's lock (an advisory lock
// needs no privilege) and notify on the channel. One that holds the lock
// and says what a waker says — HeartbeatPayload, and heartbeats and a
// broadcast recorded earlier, sealed under the log's real key — must not
// keep a follower from a commit: each of them wakes it into a read of the
// log. (Before heartbeats were sealed and replays refused, the follower
// believed the waker alive and nothing changed until its poll, 30 s.)
func TestSquatterCannotHideWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	role, password := pgtest.NewRole(t, pgtest.Shared(t).DSN(), "squatter") // no grant at all
	dsn := pgtest.NewDatabase(t)
	follower, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(follower.Close)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal("the test DSN is not a URL")
	}
	u.User = url.UserPassword(role, password)
	squatter, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(func() { squatter.Close(context.Background()) })
	if _, err := squatter.Exec(ctx, `SELECT pg_advisory_lock($1)`, ChangeWakerLockKey); err != nil {
		t.Fatal(err)
	}

	curText := headOf(t, ctx, follower)
	cur, err := parseCursor(curText)
	if err != nil {
		t.Fatal(err)
	}
	// What a recording made a minute ago holds: true statements about the
	// log up to the cursor, sealed by the real waker.
	recorded := func(i int, changes ...repository.Change) string {
		p, ok := encodeBroadcast(broadcast{from: cur, next: cur, asOf: time.Now().Add(-time.Minute + time.Duration(i)*time.Millisecond), changes: changes})
		if !ok {
			t.Fatal("encode")
		}
		return p
	}
	old := testChange(cur.seq, "old")
	lines := []string{HeartbeatPayload}
	for i := range 20 {
		lines = append(lines, recorded(2*i), recorded(2*i+1, old))
	}

	wakes := new(atomic.Int64)
	watchUntilCleanup(t, ctx, follower, func(bool) { wakes.Add(1) })
	sctx, stopSaying := context.WithCancel(ctx)
	said := make(chan struct{})
	go func() {
		defer close(said)
		for i := 0; sctx.Err() == nil; i++ {
			if _, err := squatter.Exec(sctx, `SELECT pg_notify($1, $2)`, ChangeChannel, lines[i%len(lines)]); err != nil {
				return
			}
			select {
			case <-sctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	defer func() { stopSaying(); <-said }()
	eventually(t, "the follower hears the squatter", func() bool { return wakes.Load() >= 3 })

	insertVendor(t, ctx, follower, "hidden")
	// The follower's part: a wake-up, then the heard changes or else the log.
	deadline := time.Now().Add(5 * time.Second)
	for {
		woken := wakes.Load()
		b, ok := follower.ReadHeardChanges(curText, 1000)
		if !ok {
			if b, err = follower.ReadChanges(ctx, curText, 1000); err != nil {
				t.Fatal(err)
			}
		}
		if slices.Contains(vendorKeys(b), "hidden") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the commit did not reach the follower in 5 s: its reads were answered %v (heard: %v)", vendorKeys(b), ok)
		}
		eventually(t, "another wake-up", func() bool { return wakes.Load() > woken })
	}
}

// The waker's heartbeats are sealed and new: a follower trusts them, and
// they wake no one (an idle follower sends no query).
func TestTrustedHeartbeatsWakeNoOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, _, wakes := broadcastStores(t, ctx)
	listener := eavesdrop(t, ctx, waker)
	cur, err := parseCursor(headOf(t, ctx, waker))
	if err != nil {
		t.Fatal(err)
	}
	before := wakes.Load()
	for heartbeats := 0; heartbeats < 3; {
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			t.Fatal("no heartbeat heard:", err)
		}
		b, err := decodeBroadcast(n.Payload, cur.logID)
		if err != nil {
			t.Fatalf("the idle waker said %.40q: not a sealed heartbeat (%v)", n.Payload, err)
		}
		if len(b.changes) > 0 {
			t.Fatalf("the idle waker broadcast changes: %v", b.changes)
		}
		heartbeats++
	}
	if n := wakes.Load() - before; n != 0 {
		t.Fatalf("three heartbeats woke the follower %d times", n)
	}
}

// A waker whose process is paused (or whose network is cut while the
// server's end of the socket stays open) still holds the lock: its session
// lives, and the server's TCP keepalive would take hours to notice. Its
// session is let go once idle for wakerSilence, and another follower takes
// over.
func TestPausedWakerIsReplaced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	paused := waker{conn: conn}
	if err := paused.tryElect(ctx); err != nil || !paused.elected {
		t.Fatalf("the first connection is not elected: %v", err)
	}
	// From here on the paused waker sends nothing.
	other, err := Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	watchUntilCleanup(t, ctx, other, func(bool) {})
	replaced := func() bool {
		h := wakerHolders(t, ctx, other)
		return len(h) == 1 && h[0] != conn.PgConn().PID()
	}
	start := time.Now()
	for !replaced() {
		if time.Since(start) > 3*wakerSilence {
			t.Fatalf("the paused waker still holds the lock after %v", 3*wakerSilence)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the paused waker was replaced after %v", time.Since(start).Round(time.Millisecond))
}

// A listener waits for notifications without sending a query for up to
// watchIdleCheck: a database whose idle_session_timeout is shorter (a
// DBA's guard against leaked sessions) must not end it again and again,
// each time costing a reconnect and a read of the log.
func TestListenerOutlivesAShortIdleSessionTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var alter string
	if err := admin.QueryRow(ctx, `SELECT format('ALTER DATABASE %I SET idle_session_timeout = 1000', current_database())`).Scan(&alter); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, alter); err != nil {
		t.Fatal(err)
	}
	var connects [2]atomic.Int64
	stores := make([]*Store, 2)
	for i := range stores {
		if stores[i], err = Open(ctx, dsn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stores[i].Close)
		watchUntilCleanup(t, ctx, stores[i], func(reconnected bool) {
			if reconnected {
				connects[i].Add(1)
			}
		})
		eventually(t, fmt.Sprintf("listener %d connects", i), func() bool { return connects[i].Load() == 1 })
	}
	// Six heartbeats: three seconds, three times the database's timeout.
	if _, err := admin.Exec(ctx, `SET idle_session_timeout = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "LISTEN "+ChangeChannel); err != nil {
		t.Fatal(err)
	}
	for beats := 0; beats < 6; beats++ {
		if _, err := admin.WaitForNotification(ctx); err != nil {
			t.Fatal("no heartbeat:", err)
		}
	}
	for i := range connects {
		if n := connects[i].Load(); n != 1 {
			t.Fatalf("listener %d connected %d times in three seconds: the database's idle_session_timeout ended it", i, n)
		}
	}
}

// The payload of a broadcast tells an eavesdropper nothing of the rows.
func TestBroadcastIsSealed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, _, _ := broadcastStores(t, ctx)
	eavesdropper := eavesdrop(t, ctx, waker)
	insertVendor(t, ctx, waker, "secret-vendor")
	for {
		n, err := eavesdropper.WaitForNotification(ctx)
		if err != nil {
			t.Fatal("no broadcast heard:", err)
		}
		if strings.Contains(n.Payload, "secret") {
			t.Fatalf("a notification shows the row's key: %q", n.Payload)
		}
		if strings.HasPrefix(n.Payload, broadcastPrefix) {
			return
		}
	}
}

// After a log reset the waker's next look tells the followers without a
// broadcast, so the next catch-up reads the log and finds its cursor
// expired, commits or not.
func TestBroadcastAfterALogReset(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, follower, wakes := broadcastStores(t, ctx)
	cur := headOf(t, ctx, follower)
	insertVendor(t, ctx, waker, "before")
	// Heard, not yet applied: a broadcast that continues the cursor.
	readHeard(t, ctx, follower, cur)
	execWoken(t, ctx, waker, wakes, "the reset", `DELETE FROM pgfallback_change_log`)
	if b, ok := follower.ReadHeardChanges(cur, 1000); ok {
		t.Fatalf("after the reset a broadcast answered: %v", vendorKeys(b))
	}
	if _, err := follower.ReadChanges(ctx, cur, 1000); !errors.Is(err, repository.ErrCursorExpired) {
		t.Fatalf("ReadChanges after the reset: %v, want ErrCursorExpired", err)
	}
}

// A listener that stops reading holds every notification after it in
// PostgreSQL's queue (at most 8 GB, on disk). Broadcasts would fill it a
// thousand times faster than wake-ups: past a threshold the waker sends
// wake-ups only, without reading the rows they cannot carry, and
// broadcasts again once the queue drains.
func TestBroadcastsStopWhileTheNotificationQueueBacksUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Any use at all is over this threshold: the queue backs up as soon as
	// it spans two pages.
	waker, follower, wakes := broadcastStores(t, ctx, func(s *Store) { s.maxQueueUsage = 1e-12 })
	usage := func() float64 {
		var u float64
		if err := waker.pool.QueryRow(ctx, `SELECT pg_notification_queue_usage()`).Scan(&u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	write := func(name string) {
		t.Helper()
		woken := wakes.Load()
		insertVendor(t, ctx, waker, name)
		eventually(t, "the follower woken by "+name, func() bool { return wakes.Load() > woken })
	}
	write("first")
	if !strings.HasPrefix(lastHeard(follower), broadcastPrefix) {
		t.Fatalf("the queue is empty and the last notification %q is no broadcast", lastHeard(follower))
	}

	// A listener stuck in a transaction: PostgreSQL delivers nothing to it
	// until it ends, and keeps all that follows.
	stuck, err := pgx.Connect(ctx, waker.pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close(ctx)
	for _, sql := range []string{"LISTEN " + ChangeChannel, "BEGIN", "SELECT 1"} {
		if _, err := stuck.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; usage() == 0; i++ {
		if i == 1000 {
			t.Fatal("1,000 broadcasts and the queue still within a page")
		}
		write(fmt.Sprintf("fill-%d", i))
	}
	write("backed-up")
	if p := lastHeard(follower); p != "" {
		t.Fatalf("with the queue backing up (usage %g) the waker still broadcasts: %.40q…", usage(), p)
	}
	// Nor does it read the changed rows it would not send.
	reads := waker.rowReads.Load()
	write("backed-up-2")
	write("backed-up-3")
	if n := waker.rowReads.Load() - reads; n != 0 {
		t.Fatalf("with the queue backing up the waker read the changed rows %d more times, for wake-ups that cannot carry them", n)
	}

	// The listener reads again; the queue drains and broadcasts resume.
	if err := stuck.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.HasPrefix(lastHeard(follower), broadcastPrefix); i++ {
		if i == 1000 {
			t.Fatalf("no broadcast after the queue drained (usage %g)", usage())
		}
		write(fmt.Sprintf("drained-%d", i))
	}
	reads = waker.rowReads.Load()
	write("drained-rows")
	if waker.rowReads.Load() == reads {
		t.Fatal("broadcasts resumed, and the waker still reads no rows for them")
	}
}

// A batch too large for a notification is read from the log; the
// broadcasts after it continue the cursor that read returned.
func TestBroadcastAfterABatchTooLargeToCarry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, follower, wakes := broadcastStores(t, ctx)
	cur := headOf(t, ctx, follower)
	execWoken(t, ctx, waker, wakes, "the bulk insert", `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'bulk-' || g, 'operational' FROM generate_series(1, $1::int) g`, broadcastMaxChanges+50)
	if b, ok := follower.ReadHeardChanges(cur, 10_000); ok && len(b.Changes) > 0 {
		t.Fatalf("%d changes answered from notifications, which carry at most %d", len(b.Changes), broadcastMaxChanges)
	}
	b, err := follower.ReadChanges(ctx, cur, 10_000)
	if err != nil || len(b.Changes) != broadcastMaxChanges+50 {
		t.Fatalf("read from the log: %d changes, %v; want %d", len(b.Changes), err, broadcastMaxChanges+50)
	}
	cur = b.Next
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("after-%d", i)
		insertVendor(t, ctx, waker, name)
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if b, ok := follower.ReadHeardChanges(cur, 10_000); ok && slices.Contains(vendorKeys(b), name) {
				return // a broadcast continues the cursor the log gave
			}
		}
		b, err := follower.ReadChanges(ctx, cur, 10_000)
		if err != nil || !slices.Contains(vendorKeys(b), name) {
			t.Fatalf("after %s, from the log: %v, %v", name, vendorKeys(b), err)
		}
		cur = b.Next
	}
	t.Fatal("20 writes after the bulk insert, and no broadcast continues the cursor the log gave")
}

// Fewer changes than the limit can still be too long for a notification
// (long keys): the followers read them from the log, and the waker does
// not read their rows, which no broadcast would carry.
func TestBatchTooLongToCarryReadsNoRows(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, follower, wakes := broadcastStores(t, ctx)
	cur := headOf(t, ctx, follower)
	const n = 150 // × a 100-byte name: twice a notification, under broadcastMaxChanges
	reads := waker.rowReads.Load()
	execWoken(t, ctx, waker, wakes, "the insert of long names", `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'long-' || lpad(g::text, 95, '0'), 'operational' FROM generate_series(1, $1::int) g`, n)
	if b, ok := follower.ReadHeardChanges(cur, 10_000); ok && len(b.Changes) > 0 {
		t.Fatalf("%d changes of 100-byte keys answered from notifications of 8,000 bytes", len(b.Changes))
	}
	if got := waker.rowReads.Load() - reads; got != 0 {
		t.Fatalf("the waker read the changed rows %d times for a batch no broadcast could carry", got)
	}
	b, err := follower.ReadChanges(ctx, cur, 10_000)
	if err != nil || len(b.Changes) != n {
		t.Fatalf("read from the log: %d changes, %v; want %d", len(b.Changes), err, n)
	}
	// A batch that fits is broadcast with its row, read once.
	cur = b.Next
	insertVendor(t, ctx, waker, "short")
	eventually(t, "the broadcast of short, with its row", func() bool {
		b, ok := follower.ReadHeardChanges(cur, 10_000)
		return ok && slices.Contains(vendorKeys(b), "short") && len(b.Rows) == 1 && b.Rows[0].Vendor != nil
	})
	if waker.rowReads.Load() == reads {
		t.Fatal("a batch that fits was broadcast without the waker reading its rows")
	}
}

// The log has no CHECK constraints (migration 00006): a row the trigger
// functions would never write, put there by the owner, is read as it is
// and never broadcast, since its entity or op has no code.
func TestUncheckedLogRowsAreReadNotBroadcast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waker, follower, wakes := broadcastStores(t, ctx)
	cur := headOf(t, ctx, follower)
	execWoken(t, ctx, waker, wakes, "rows the triggers never write", `INSERT INTO pgfallback_changes (entity, key, op, version)
		VALUES ('vendor', 'odd', 'renamed', 3), ('gizmo', 'g1', 'update', 1)`)
	eventually(t, "a plain wake-up for rows that have no code", func() bool { return lastHeard(follower) == "" })
	if b, ok := follower.ReadHeardChanges(cur, 1000); ok {
		t.Fatalf("heard an answer for rows that cannot be broadcast: %v", vendorKeys(b))
	}
	b, err := follower.ReadChanges(ctx, cur, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range b.Changes {
		got = append(got, fmt.Sprintf("%s %s %s %d", c.Entity, c.Key, c.Op, c.Version))
	}
	if want := []string{"vendor odd renamed 3", "gizmo g1 update 1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
}
