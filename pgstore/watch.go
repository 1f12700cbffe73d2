package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/repository"
)

// Waking followers without costing writers.
//
// Writers do not notify: a transaction that has issued NOTIFY takes a lock
// on the whole instance at commit (PostgreSQL's async.c, PreCommit_Notify),
// so that every writer commits one at a time. Instead, each database (each
// installation, when it holds several: installation.go) has one waker,
// elected among the listening connections with a session advisory lock.
// The waker reads the log every ChangeWakeInterval from where its last
// notification ended and, when commits added rows, sends one NOTIFY on
// ChangeChannel that carries them (broadcast.go): one
// notification per batch of commits, however many writers, and one read
// of the log for every follower. What the feed costs PostgreSQL is then
// one listening connection per follower and one waker's polling, whatever
// the number of followers.
//
// The waker also sends a heartbeat every wakerHeartbeat. A follower that
// hears nothing for wakerTakeover tries the lock: when the waker's process
// dies, its session ends, the lock is free, and another follower takes
// over within about a second. Followers other than the waker send no query
// while they hear heartbeats, so a follower needs no poll of its own. Any
// role that can connect may take the lock or notify, so a heartbeat is
// sealed like a broadcast and trusted only when it is new (broadcast.go):
// a squatter's or an older version's plain "alive" wakes the follower
// into a read, as a plain wake-up does.
// While no waker can be heard (the lock is held by a session gone silent,
// the listening connection is down, or it would go through a connection
// pooler, where a session is not its own, or reach another database than
// the pool's) WatchChanges stands in for one and wakes its follower about
// once a second.

// ChangeChannel is the LISTEN/NOTIFY channel the waker notifies. After
// commits added changes to the log the payload is a sealed broadcast of
// them ("b1:…", broadcast.go), or WakePayload when they do not fit in a
// notification; otherwise it is a heartbeat: a sealed broadcast of no
// change, or HeartbeatPayload while the log has no log_id. (Migration 00003's
// triggers notified from every writer with the entity as the payload;
// migration 00005 removed that.) It is the channel of the installation in
// schema public; another installation in the database has its own
// (installation.go).
const ChangeChannel = "pgfallback_changes"

// Payloads of notifications on ChangeChannel.
const (
	WakePayload      = "changes"
	HeartbeatPayload = "alive"
)

// ChangeWakerLockKey is the session advisory lock the waker holds:
// "pgfwaker" in ASCII. Another installation's than schema public's has its
// log's OID xor'ed into the low bits (installation.go).
const ChangeWakerLockKey int64 = 0x7067_6677_616b_6572

// DefaultChangeWakeInterval is how often the waker reads the log while
// commits come in; each look is one read of the log from the last
// notification's cursor (a few index probes when nothing changed). After
// wakerBusy without a change the interval doubles at each look that found
// nothing new, up to wakerIdleFactor times, so that an idle database is
// looked at 50 times a second, and the delay the waker adds between a
// commit and the followers' wake-up is at most 20 ms (5 ms while writes
// flow).
const DefaultChangeWakeInterval = 5 * time.Millisecond

// wakerIdleFactor bounds the idle waker's interval: this many times the
// wake interval.
const wakerIdleFactor = 4

// wakerBusy: how long after a look that found changes the waker keeps the
// wake interval. Backing off at the first look that found nothing, it saw
// a stream of commits 20 ms apart (50 a second, a service's steady trickle)
// up to 15 ms late: looks at +5, +15, +35 ms after each.
const wakerBusy = 250 * time.Millisecond

// WithChangeWakeInterval sets how often this Store's waker, when elected,
// reads the log's head (DefaultChangeWakeInterval when d <= 0).
func WithChangeWakeInterval(d time.Duration) Option {
	return func(s *Store) { s.wakeInterval = d }
}

const (
	watchMinBackoff = 50 * time.Millisecond
	// A listener is cheap to retry, and a follower without notifications
	// falls back to its poll: reconnecting within a second keeps a healed
	// connection's catch-up well within the 2 s the feed promises.
	watchMaxBackoff = time.Second
	// wakerHeartbeat: the waker's notification when there is nothing to
	// say; wakerTakeover: how long a follower hears nothing before it tries
	// to become the waker. A follower that cannot take over (the lock is
	// held by a session that went silent) keeps trying at this pace, and
	// pings the server once per watchIdleCheck.
	wakerHeartbeat = 500 * time.Millisecond
	wakerTakeover  = time.Second
	// wakerSilence: how long the waker's session may be idle before
	// PostgreSQL ends it and frees the lock (tryElect).
	wakerSilence = 5 * time.Second
	// wakerQueryTimeout bounds the election's and the waker's queries: a
	// connection that stopped answering is given up and made again.
	wakerQueryTimeout = 2 * time.Second
	// watchIdleCheck: after this long without a notification the listener
	// pings, so that a connection a network silently dropped is noticed in
	// seconds rather than when TCP keepalive gives up.
	watchIdleCheck   = 30 * time.Second
	watchPingTimeout = 5 * time.Second
	// listenConnectTimeout bounds the listener's connect when its
	// configuration sets no shorter ConnectTimeout (most DSNs set none): a
	// server that accepts the connection and never answers would otherwise
	// hold it forever. WatchChanges stands in for the waker meanwhile.
	listenConnectTimeout = 10 * time.Second
	watchAppName         = "pgfallback-feed"
	// refusedRecheck: how often a listener that must not listen where it
	// connects (checkListener) connects again to look.
	refusedRecheck = time.Minute
	// cannotConnectRetry: how often a listener that the server refused
	// while the pool's connections answer tries again (cannotConnect).
	cannotConnectRetry = 10 * time.Second
)

// WatchChanges listens for change notifications on a dedicated connection
// until ctx ends, and takes its turn as the database's waker. See
// repository.ChangeFeed.
func (s *Store) WatchChanges(ctx context.Context, wake func(reconnected bool)) error {
	if wake == nil {
		return fmt.Errorf("pgstore: watch changes: %w", repository.Invalid("wake", "must not be nil"))
	}
	backoff := watchMinBackoff
	lastWake := time.Now()
	for {
		listened, recheck := s.listen(ctx, wake)
		if err := ctx.Err(); err != nil {
			return err
		}
		if recheck > 0 {
			// Nowhere to listen, or turned away: stand in until it is time
			// to look again.
			if err := s.standInFor(ctx, wake, recheck); err != nil {
				return err
			}
			lastWake = time.Now()
			continue
		}
		if listened {
			backoff = watchMinBackoff
			lastWake = time.Now()
		} else if time.Since(lastWake) >= wakerTakeover {
			s.standIn(wake) // no connection, so no waker
			lastWake = time.Now()
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, watchMaxBackoff)
	}
}

// listen runs one connection: connect, LISTEN, wake(true), then wake(false)
// per wake-up until the connection fails or ctx ends, acting as the waker
// while it holds the lock. It reports whether it got as far as listening,
// and, when it must not try again at once, how long to wait: refusedRecheck
// when it found it must not listen there (checkListener) and did nothing,
// cannotConnect's wait when the server turned it away. Its errors are not
// returned: the caller reconnects
// whatever they were, and a follower that needs to know the database is
// unreachable learns it from ReadChanges.
func (s *Store) listen(ctx context.Context, wake func(bool)) (listened bool, recheck time.Duration) {
	conn, err := s.connectStandingIn(ctx, wake)
	if err != nil {
		if ctx.Err() != nil {
			return false, 0
		}
		return false, s.cannotConnect(ctx, err)
	}
	defer func() {
		// Close tells the server goodbye, so the backend ends (and the
		// waker's lock is free) now rather than when it notices the socket;
		// bounded, since the server may be the thing that is gone.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		conn.Close(cctx) // the socket is closed whatever this returns
	}()
	// Bounded like the waker's queries: a connection that stops answering
	// now is given up and made again.
	sctx, cancel := context.WithTimeout(ctx, wakerQueryTimeout)
	defer cancel()
	why, inst, err := s.checkListener(sctx, conn)
	if err != nil {
		return false, 0
	} else if why.reason != "" {
		s.refuse(why, conn.Config())
		return false, refusedRecheck
	}
	s.refusedSaid.Store(nil)
	if _, err := conn.Exec(sctx, "LISTEN "+pgx.Identifier{inst.channel()}.Sanitize()); err != nil {
		return false, 0
	}
	// A listener sends no query while it hears the waker, for up to
	// watchIdleCheck: a shorter idle_session_timeout set for the database
	// or the role (a guard against leaked sessions) would end it again
	// and again, each time a reconnect and a read of the log. The waker
	// sets its own (tryElect). PostgreSQL 13 (which migrations.Up refuses)
	// has no such setting: ignored.
	_, _ = conn.Exec(sctx, "SET idle_session_timeout = 0")
	// Payloads sealed before now were sent to others: one replayed to us
	// is not trusted (broadcast.go, hear).
	//
	// A NOTIFY assigns its transaction an xid, so its commit waits for a
	// WAL flush like a writer's: the waker's notifications, up to 200 a
	// second, would each queue for the disk among the writers' commits.
	// Nothing in them needs to survive a crash. (Set here rather than in
	// the startup packet, which a pooler may refuse for an unknown
	// parameter before the check above could say why.)
	var floor time.Time
	if err := conn.QueryRow(sctx, `SELECT statement_timestamp(), set_config('synchronous_commit', 'off', false)`).
		Scan(&floor, nil); err != nil {
		return false, 0
	}
	cancel()
	wake(true)
	w := waker{conn: conn, self: conn.PgConn().PID(), inst: inst, every: s.wakeInterval, heard: s.heard, maxQueueUsage: s.maxQueueUsage,
		rowReads: &s.rowReads}
	if w.maxQueueUsage <= 0 {
		w.maxQueueUsage = broadcastMaxQueueUsage
	}
	if w.every <= 0 {
		w.every = DefaultChangeWakeInterval
	}
	var heard time.Time // nothing yet: try to be the waker at once
	for {
		if !w.elected && time.Since(heard) >= wakerTakeover {
			if err := w.tryElect(ctx); err != nil {
				return true, 0
			}
			if !w.elected && !heard.IsZero() {
				// Held by a session we cannot hear: wake our follower as
				// the waker would have, and try again as long after.
				s.standIn(wake)
			}
			heard = time.Now()
		}
		if w.elected {
			woke, err := w.look(ctx)
			if err != nil {
				return true, 0
			}
			if woke {
				wake(false) // our own notification is skipped below
			}
		}
		wait := wakerTakeover - time.Since(heard)
		if w.elected {
			wait = time.Until(w.next)
		}
		n, err := waitNotification(ctx, conn, max(wait, 0))
		switch {
		case err == nil:
			if n.PID == w.self {
				continue
			}
			// Whatever it says, a session is there; only a trusted
			// heartbeat leaves the follower asleep (broadcast.go).
			heard = time.Now()
			if s.heard.hear(n.Payload, &floor) {
				wake(false)
			}
		case ctx.Err() != nil:
			return true, 0
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			// Only our timer: a timeout leaves the connection usable.
			if !w.elected && time.Since(w.pinged) >= watchIdleCheck {
				if err := w.ping(ctx); err != nil {
					return true, 0
				}
			}
		default:
			return true, 0
		}
	}
}

// standIn wakes the follower as a waker would have, when none can be
// heard: whatever committed is the log's to say.
func (s *Store) standIn(wake func(bool)) {
	s.heard.add(WakePayload, nil)
	wake(false)
}

// standInFor stands in for the waker now and every wakerTakeover, for d or
// until ctx ends.
func (s *Store) standInFor(ctx context.Context, wake func(bool), d time.Duration) error {
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(wakerTakeover)
	defer tick.Stop()
	for {
		s.standIn(wake)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-end.C:
			return nil
		case <-tick.C:
		}
	}
}

// listenerIdentitySQL says where a connection is: its server session, its
// database, its cluster, its installation (installation.go). In the simple
// protocol: one message, which no pooler splits across sessions, whatever
// query exec mode the DSN chose.
const listenerIdentitySQL = `SELECT pg_backend_pid(), current_database(),
	(SELECT system_identifier FROM pg_control_system())::text, ` + logSchemaSQL + `, ` + installationSQL

// Why a listener refuses to listen where it connected (ListenerRefused).
const (
	RefusedPooler            = "pooler"             // a connection pooler
	RefusedOtherDatabase     = "other_database"     // another database or cluster than the pool's
	RefusedOtherInstallation = "other_installation" // another installation's change log than the pool's
	RefusedCannotConnect     = "cannot_connect"     // no connection where it is pointed, while the pool's answer
)

// refusal is why a listener does not listen where it is pointed: one of
// the Refused reasons, and the text the log says. Zero: it may listen.
type refusal struct{ reason, text string }

// checkListener says why the listener must do nothing on conn, or nothing
// when it may listen there. Before anything else:
//
//   - A connection pooler (PgBouncer, say) answers the connect itself,
//     with a process ID of its own making, and in transaction mode runs
//     each transaction on whichever server session is free: a LISTEN, the
//     waker's session lock and its settings would land on sessions that
//     other clients then use, and notifications on one nobody reads.
//   - A WithListenConfig pointing elsewhere than the pool (another
//     database, another server: a second DSN with a typo) would hear that
//     database's waker, or elect itself there, and never wake its
//     follower for the pool's commits. So would one whose search_path
//     finds another installation's change log in the same database.
//
// When it may listen, it returns the installation to listen for.
func (s *Store) checkListener(ctx context.Context, conn *pgx.Conn) (why refusal, inst installation, err error) {
	var backend uint32
	var id poolIdentity
	if err := conn.QueryRow(ctx, listenerIdentitySQL, pgx.QueryExecModeSimpleProtocol).
		Scan(&backend, &id.db, &id.system, &id.logSchema, &id.inst); err != nil {
		return refusal{}, 0, err
	}
	// Where the pool's connections are stays so through a failover (a
	// promoted standby keeps the system identifier), so it is read once,
	// and again only when the listener finds another place: a
	// reconnecting listener adds no query on the pool to the failover's
	// path, where the waker's election should come first.
	pool := s.poolIdent.Load()
	if pool == nil || *pool != id {
		if pool, err = s.checkPool(ctx); err != nil {
			return refusal{}, 0, err
		}
	}
	switch {
	case backend != conn.PgConn().PID():
		return refusal{reason: RefusedPooler, text: "the change feed's listening connection goes through a connection pooler (its server " +
			"session is not the one the connect reported), where it cannot LISTEN or hold the waker's lock. Point " +
			"pgstore.WithListenConfig at PostgreSQL itself (docs/poolers.md)"}, 0, nil
	case id.db != pool.db || id.system != pool.system:
		return refusal{reason: RefusedOtherDatabase, text: fmt.Sprintf("the change feed's listening connection (pgstore.WithListenConfig) "+
			"reaches database %q of cluster %s, not the pool's database %q of cluster %s, where the pool's commits are",
			id.db, id.system, pool.db, pool.system)}, 0, nil
	case id.inst != pool.inst:
		return refusal{reason: RefusedOtherInstallation, text: fmt.Sprintf("the change feed's listening connection (pgstore.WithListenConfig) "+
			"finds the change log of schema %q, not the pool's, in schema %q: set the same search_path on both",
			id.logSchema, pool.logSchema)}, 0, nil
	}
	return refusal{}, id.inst, nil
}

// poolIdentitySQL is listenerIdentitySQL, and the session's settings that
// pgx needs pinned (sessionFaults).
const poolIdentitySQL = listenerIdentitySQL + `,
	current_setting('client_encoding'), current_setting('DateStyle'), current_setting('standard_conforming_strings')`

// poolIdentity is where the pool's connections are.
type poolIdentity struct {
	db, system, logSchema string
	inst                  installation
}

// checkPool says, and records, where the pool's connections are. When they
// go through a pooler that does not keep pgx's prepared statements, it
// warns once (checkPrepared). Settings of the pool's sessions that pgx
// cannot work with (a DBA's, which a pool given to New keeps) are said
// once too.
func (s *Store) checkPool(ctx context.Context) (*poolIdentity, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Release()
	var backend uint32
	var id poolIdentity
	var encoding, dateStyle, conforming string
	// Not in the simple protocol, which pgx refuses under some of the
	// settings looked at; exec mode's messages reach the server session
	// as one too, up to their Sync.
	if err := c.QueryRow(ctx, poolIdentitySQL, pgx.QueryExecModeExec).
		Scan(&backend, &id.db, &id.system, &id.logSchema, &id.inst, &encoding, &dateStyle, &conforming); err != nil {
		return nil, err
	}
	s.poolIdent.Store(&id)
	s.sayFaults(sessionFaults(s.pool.Config().ConnConfig.DefaultQueryExecMode, encoding, dateStyle, conforming))
	if backend != c.Conn().PgConn().PID() {
		s.checkPrepared(ctx, c.Conn())
	}
	return &id, nil
}

// ListenerRefused says why the change feed's listener does nothing where it
// connected (checkListener): RefusedPooler, RefusedOtherDatabase or
// RefusedOtherInstallation; or RefusedCannotConnect while it cannot connect
// there though the pool's connections answer (cannotConnect); or "" while
// it listens or has not yet looked.
// The log says more, once. See repository.RefusableChangeFeed.
func (s *Store) ListenerRefused() string {
	if why := s.refusedSaid.Load(); why != nil {
		return why.reason
	}
	return ""
}

// refuse says why the listener does not listen where it is pointed, once
// for each reason until it listens again.
func (s *Store) refuse(why refusal, cfg *pgx.ConnConfig) {
	if last := s.refusedSaid.Swap(&why); last != nil && last.reason == why.reason {
		return
	}
	s.log.Error("pgfallback: "+why.text+"; meanwhile followers read the change log about once a second "+
		"instead of being woken", "host", cfg.Host, "port", cfg.Port)
}

// cannotConnect reports a listener that cannot connect while the pool's
// connections answer. An outage takes both, and says so where calls fail;
// a listener whose own way in is broken (a WithListenConfig with a wrong
// password or host, a pg_hba.conf rule, a server with no connection slot
// left for a new session) leaves its follower woken about once a second
// instead of at each commit, and no call shows it. It is reported as
// RefusedCannotConnect, cleared when the listener listens. Once reported,
// a connect the server refused is tried again every cannotConnectRetry
// rather than each second: each try is a failed authentication in the
// server's log, or a backend forked and turned away by a server out of
// connection slots. One that met no server (a silent path) costs the
// server nothing and keeps the usual backoff. It returns how long to wait
// before the next try; 0 for the usual backoff.
func (s *Store) cannotConnect(ctx context.Context, err error) (recheck time.Duration) {
	if last := s.refusedSaid.Load(); last == nil {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if s.pool.Ping(pctx) != nil {
			return 0 // PostgreSQL is out of reach: not the listener's own failure
		}
		cfg := s.listenConfig
		if cfg == nil {
			cfg = s.pool.Config().ConnConfig
		}
		s.refuse(refusal{reason: RefusedCannotConnect, text: "the change feed's listener cannot connect where it is pointed, " +
			"though the pool's connections answer: " + pgdsn.Redact(err.Error())}, cfg)
	} else if last.reason != RefusedCannotConnect {
		return 0 // said otherwise (a pooler, another database), which it still is as far as it knows
	}
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) {
		return 0
	}
	if s.cannotConnectRetry > 0 {
		return s.cannotConnectRetry
	}
	return cannotConnectRetry
}

// connectStandingIn opens the listener's connection, bounded by
// listenConnectTimeout, and wakes the follower every wakerTakeover while it
// waits: with no connection, no waker can be heard, so it stands in for one.
// wake is only ever called from the caller's goroutine.
func (s *Store) connectStandingIn(ctx context.Context, wake func(bool)) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, listenConnectTimeout)
	defer cancel()
	type connected struct {
		conn *pgx.Conn
		err  error
	}
	done := make(chan connected, 1)
	go func() {
		conn, err := s.connectListener(cctx)
		done <- connected{conn, err}
	}()
	standIn := time.NewTicker(wakerTakeover)
	defer standIn.Stop()
	for {
		select {
		case c := <-done: // cctx ends with ctx: the connect returns, and so does this
			return c.conn, c.err
		case <-standIn.C:
			s.standIn(wake)
		}
	}
}

// connectListener opens the dedicated connection of WatchChanges.
func (s *Store) connectListener(ctx context.Context) (*pgx.Conn, error) {
	pc := s.pool.Config()
	cfg := pc.ConnConfig.Copy()
	// The pool's query tracer (otelpgx, tracelog) is for the application's
	// queries: the elected waker reads the log 50 to 200 times a second,
	// which would be as many spans or log lines. A WithListenConfig keeps
	// its own.
	cfg.Tracer = nil
	if s.listenConfig != nil {
		cfg = s.listenConfig.Copy()
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = watchAppName
	}
	pgdsn.PinSessionSettings(cfg)
	// The pool's hooks may supply what a connection needs (a rotated
	// password in BeforeConnect, a role or type registrations in
	// AfterConnect): this connection gets them too.
	if pc.BeforeConnect != nil {
		if err := pc.BeforeConnect(ctx, cfg); err != nil {
			return nil, err
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if pc.AfterConnect != nil {
		if err := pc.AfterConnect(ctx, conn); err != nil {
			conn.Close(ctx)
			return nil, err
		}
	}
	return conn, nil
}

// waitNotification waits up to d for a notification; a zero d only
// collects one already received.
func waitNotification(ctx context.Context, conn *pgx.Conn, d time.Duration) (*pgconn.Notification, error) {
	wctx, cancel := context.WithTimeout(ctx, max(d, time.Microsecond))
	defer cancel()
	return conn.WaitForNotification(wctx)
}

// waker is the state of one listening connection's part in the election.
type waker struct {
	conn  *pgx.Conn
	self  uint32       // the backend's pid: our own notifications come back to us
	inst  installation // whose waker it may be, and on which channel
	every time.Duration
	heard *heardBroadcasts // the Store's: the waker keeps what it sends
	// maxQueueUsage: broadcastMaxQueueUsage, or a test's.
	maxQueueUsage float64
	// backedUp: the last broadcast went out as a wake-up because the
	// notification queue was over maxQueueUsage. Until one goes out again,
	// broadcasts are sent without rows: reading them would be a wasted
	// query 200 times a second for as long as a listener is stuck.
	backedUp  bool
	rowReads  *atomic.Uint64 // the Store's
	elected   bool
	next      time.Time     // elected: the next look at the log
	changedAt time.Time     // elected: the last look that found changes
	idle      time.Duration // elected: the wait until it
	said      time.Time     // elected: the last notification sent
	pinged    time.Time

	// from is where the next broadcast starts: the cursor after the last
	// notification's changes, or the head the waker read when elected. A
	// look that finds nothing leaves it, so that each broadcast continues
	// the one before (broadcast.go).
	from   cursor
	looked bool
}

// notifyBroadcastSQL sends the broadcast $2 on channel $1, or $3 when the
// notification queue is more than $4 full, and says which it sent.
//
// PostgreSQL keeps a notification until every listening backend has read
// it, in a queue of at most 8 GB on disk (pg_notify), and a NOTIFY fails
// once it is full. A listener that stops reading (a process paused or
// frozen, a backend stuck in a transaction) holds everything after it;
// broadcasts, up to 8 kB each and 200 a second, would fill the queue a
// thousand times faster than the 7-byte wake-ups. Past the threshold the
// waker sends those instead, and the followers read the log.
const notifyBroadcastSQL = `
		SELECT pg_notify($1, CASE WHEN q.ok THEN $2 ELSE $3 END), q.ok
		FROM (SELECT pg_notification_queue_usage() < $4::float8 AS ok) q`

// broadcastMaxQueueUsage: the share of the notification queue in use above
// which the waker stops broadcasting (0.1 %: 8 MB, a thousand broadcasts).
const broadcastMaxQueueUsage = 0.001

// tryElect takes the waker's lock if it is free.
func (w *waker) tryElect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, wakerQueryTimeout)
	defer cancel()
	if err := w.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, w.inst.wakerKey()).Scan(&w.elected); err != nil {
		return err
	}
	w.pinged = time.Now() // the query proved the connection
	w.next, w.looked = time.Now(), false
	if w.elected {
		// A crash empties the unlogged log and its one-row table: give it
		// a new log_id now, rather than when pruning next writes the row,
		// so that followers resync once after a crash, not twice. A role
		// without INSERT on it (docs/privileges.md) leaves it to pruning.
		_, _ = w.conn.Exec(ctx, insertLogIDSQL)
		// A waker that goes silent without its session ending (its process
		// paused, its network cut while the server's end of the socket
		// stays open, as behind a proxy) would keep the lock until TCP
		// keepalive gives up, hours by default, and every follower would
		// stand in for it meanwhile. It sends a query every few
		// milliseconds: PostgreSQL ends its session once it has been idle
		// for wakerSilence, and another follower takes over. (PostgreSQL
		// 14 and later; before it, the lock waits for keepalive.)
		_, _ = w.conn.Exec(ctx, "SET idle_session_timeout = "+strconv.FormatInt(wakerSilence.Milliseconds(), 10))
	}
	return nil
}

func (w *waker) ping(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, watchPingTimeout)
	defer cancel()
	w.pinged = time.Now()
	return w.conn.Ping(pctx)
}

// look reads the log from the last notification's cursor when it is time
// to, notifies when commits added changes since, and heartbeats otherwise.
// It reports whether it notified.
func (w *waker) look(ctx context.Context) (woke bool, err error) {
	now := time.Now()
	if now.Before(w.next) {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, wakerQueryTimeout)
	defer cancel()
	changed := false
	var bc *broadcast   // the changes, when they fit in a broadcast
	var payload string  // bc sealed
	var quiet broadcast // the read, when it found nothing: sealed, the heartbeat
	fromHead := func() error {
		h, err := readHead(ctx, w.conn)
		if err != nil {
			return err
		}
		w.from, w.looked, changed = h.cursor(h.maxSeq), true, true
		w.heard.learn(h.logID)
		return nil
	}
	if !w.looked {
		// A new waker's first look notifies: commits since the last
		// waker's last look (or since the listener connected) were told
		// to no one.
		err = fromHead()
	} else {
		// The look is a read, the one a follower would make ("Index
		// probes only" in changes.go): one for every follower.
		var r logRead
		r, err = readChanges(ctx, w.conn, w.from, broadcastMaxChanges)
		if err == nil {
			w.heard.learn(r.next.logID)
			quiet = broadcast{from: w.from, next: r.next, asOf: r.asOf}
		}
		switch {
		case errors.Is(err, repository.ErrCursorExpired):
			// Pruned past us, the log reset, a promotion: each follower
			// learns it from its own read, and resyncs.
			err = fromHead()
		case err == nil && (len(r.changes) > 0 || r.more):
			changed = true
			b := broadcast{from: w.from, next: r.next, asOf: r.asOf, changes: r.changes}
			// Cut at the limit, or changes too long for a notification: the
			// followers read the log, and the rows are not read.
			text, fits := "", false
			if !r.more {
				text, fits = broadcastText(b)
			}
			if fits {
				if !w.backedUp {
					w.rowReads.Add(1)
					b.rows = readRows(ctx, w.conn, b.changes, b.asOf)
				}
				if p, ok := sealBroadcast(b.from.logID, text, b.rows); ok {
					payload, bc = p, &b
				}
			}
			w.from = r.next
		}
	}
	if errors.Is(err, repository.ErrChangeLogIncomplete) {
		// Nothing the log says is complete (triggers.go), so nothing is
		// sealed: a plain heartbeat keeps the followers from standing in
		// and wakes each (our own too, which does not hear us) into a read
		// that tells it why. Once the triggers are repaired, the look from
		// the head wakes them all.
		w.looked, w.next = false, now.Add(wakerIdleFactor*w.every)
		if now.Sub(w.said) < wakerHeartbeat {
			return false, nil
		}
		if _, err = w.conn.Exec(ctx, `SELECT pg_notify($1, $2)`, w.inst.channel(), HeartbeatPayload); err != nil {
			return false, err
		}
		w.said = now
		w.heard.add(WakePayload, nil)
		return true, nil
	}
	if err != nil {
		return false, err
	}
	// Look again after every while commits come in; an idle database is
	// looked at less often, down to every wakerIdleFactor × every.
	if changed {
		w.changedAt = now
	}
	if changed || w.idle == 0 || now.Sub(w.changedAt) < wakerBusy {
		w.idle = w.every
	} else {
		w.idle = min(2*w.idle, wakerIdleFactor*w.every)
	}
	w.next = now.Add(w.idle)
	switch {
	case changed && bc != nil:
		// A broadcast, unless the notification queue is backing up.
		var sealed bool
		err = w.conn.QueryRow(ctx, notifyBroadcastSQL, w.inst.channel(), payload, WakePayload, w.maxQueueUsage).
			Scan(nil, &sealed)
		w.backedUp = err == nil && !sealed
		if err == nil && sealed {
			w.heard.add(payload, bc)
		} else {
			w.heard.add(WakePayload, nil)
		}
	case changed:
		w.heard.add(WakePayload, nil)
		_, err = w.conn.Exec(ctx, `SELECT pg_notify($1, $2)`, w.inst.channel(), WakePayload)
	case now.Sub(w.said) >= wakerHeartbeat:
		// Nothing changed, as a sealed statement (broadcast.go, on
		// replays); HeartbeatPayload, which no listener trusts, while the
		// log has no log_id to seal it with.
		heartbeat, ok := encodeBroadcast(quiet)
		if !ok {
			heartbeat = HeartbeatPayload
		}
		_, err = w.conn.Exec(ctx, `SELECT pg_notify($1, $2)`, w.inst.channel(), heartbeat)
	default:
		return false, nil
	}
	if err != nil {
		return false, err
	}
	w.said = now
	return changed, nil
}
