package pgstore_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// A DBA's DateStyle (set for the server, the database or the role) does
// not reach pgstore's reads. In the exec and simple_protocol modes, which
// docs/poolers.md advises behind a transaction pooler, pgx reads results as
// text and parses only ISO dates: with 'SQL, DMY' every row failed to
// decode ("invalid PostgreSQL date/time value"), every write was "applied,
// but its result cannot be read back", and the change feed could not read
// its head. The time zone, half an hour off UTC, checks the offsets' parse.
func TestNonISODateStyle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	alterDatabase(ctx, t, dsn, `DateStyle = 'SQL, DMY'`, `TimeZone = 'America/St_Johns'`)

	for _, mode := range []string{"cache_statement", "exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			modeDSN := pgtest.WithParam(dsn, "default_query_exec_mode", mode)
			pool, err := pgxpool.New(ctx, modeDSN)
			if err != nil {
				t.Fatalf("pool: %v", pgdsn.Error(err))
			}
			defer pool.Close()
			var style string
			if err := pool.QueryRow(ctx, `SHOW DateStyle`).Scan(&style); err != nil || style != "SQL, DMY" {
				t.Fatalf("the database's DateStyle, as its sessions see it: %q, %v", style, err)
			}

			if _, err := pool.Exec(ctx, `TRUNCATE vendors, work_items, pgfallback_applied_writes`); err != nil {
				t.Fatal(err)
			}
			// Open pins ISO: everything works.
			s, err := pgstore.Open(ctx, modeDSN)
			if err != nil {
				t.Fatalf("open: %v", pgdsn.Error(err))
			}
			defer s.Close()
			exerciseStore(ctx, t, s)

			// A pool of the application's making keeps the database's
			// DateStyle: in the text modes its reads fail, saying why, and
			// the first listener says so in the log too.
			var logged testutil.Buffer
			own := pgstore.New(pool, pgstore.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
			_, err = own.Vendors().Get(ctx, "acme")
			text := mode != "cache_statement"
			switch {
			case !text && err != nil:
				t.Fatalf("Get through the application's pool, binary results: %v", err)
			case text && (!errors.Is(err, repository.ErrUnreadable) || !strings.Contains(err.Error(), "DateStyle=ISO")):
				t.Fatalf("Get through the application's pool: %v, want ErrUnreadable naming DateStyle=ISO", err)
			}
			// Once listening, the listener has looked at one of the pool's
			// connections.
			wctx, stop := context.WithCancel(ctx)
			listening := make(chan struct{}, 1)
			done := make(chan error, 1)
			go func() {
				done <- own.WatchChanges(wctx, func(reconnected bool) {
					if reconnected {
						select {
						case listening <- struct{}{}:
						default:
						}
					}
				})
			}()
			select {
			case <-listening:
			case <-time.After(10 * time.Second):
				t.Error("not listening after 10 s")
			}
			stop()
			<-done
			if said := strings.Contains(logged.String(), `DateStyle \"SQL, DMY\"`); said != text {
				t.Fatalf("logged (want the DateStyle named: %v):\n%s", text, logged.String())
			}
		})
	}
}

// alterDatabase sets defaults for the database of dsn (ALTER DATABASE …
// SET), as a DBA would: new sessions take them.
func alterDatabase(ctx context.Context, t *testing.T, dsn string, settings ...string) {
	t.Helper()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", pgdsn.Error(err))
	}
	defer admin.Close(ctx)
	for _, set := range settings {
		if _, err := admin.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{admin.Config().Database}.Sanitize()+` SET `+set); err != nil {
			t.Fatal(err)
		}
	}
}
