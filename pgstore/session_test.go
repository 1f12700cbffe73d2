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

// A DBA's defaults for the database (or the role, or the server) do not
// reach pgstore's sessions where pgx cannot work with them:
//
//   - client_encoding LATIN1 (a LATIN1 database's default): the server took
//     the UTF-8 bytes pgx sent for LATIN1 characters, and stored a title
//     "Zürich€" as ten of them; pgx read it back as sent, so only other
//     clients saw it garbled;
//   - DateStyle 'SQL, DMY': in the exec and simple_protocol modes, which
//     docs/poolers.md advises behind a transaction pooler, pgx reads
//     results as text and parses only ISO dates: every row failed to
//     decode, every write was "applied, but its result cannot be read
//     back", and the change feed could not read its head;
//   - standard_conforming_strings off: pgx refuses simple-protocol queries.
//
// The time zone, half an hour off UTC, checks the offsets' parse.
func TestDatabaseSessionDefaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t)
	alterDatabase(ctx, t, dsn, `DateStyle = 'SQL, DMY'`, `TimeZone = 'America/St_Johns'`, `client_encoding = 'LATIN1'`,
		`standard_conforming_strings = off`)
	const zurich = "Zürich€"

	for _, mode := range []string{"cache_statement", "exec", "simple_protocol"} {
		t.Run(mode, func(t *testing.T) {
			modeDSN := pgtest.WithParam(dsn, "default_query_exec_mode", mode)
			pool, err := pgxpool.New(ctx, modeDSN)
			if err != nil {
				t.Fatalf("pool: %v", pgdsn.Error(err))
			}
			defer pool.Close()
			var settings string
			if err := pool.QueryRow(ctx, `SELECT concat_ws(' / ', current_setting('DateStyle'), current_setting('client_encoding'),
				current_setting('standard_conforming_strings'))`, pgx.QueryExecModeExec).Scan(&settings); err != nil || settings != "SQL, DMY / LATIN1 / off" {
				t.Fatalf("the database's defaults, as its sessions see them: %q, %v", settings, err)
			}
			if _, err := pool.Exec(ctx, `TRUNCATE vendors, work_items, pgfallback_applied_writes`, pgx.QueryExecModeExec); err != nil {
				t.Fatal(err)
			}

			// Open pins them: everything works, and a title is stored as
			// the characters it has.
			s, err := pgstore.Open(ctx, modeDSN)
			if err != nil {
				t.Fatalf("open: %v", pgdsn.Error(err))
			}
			defer s.Close()
			exerciseStore(ctx, t, s)
			w, err := s.WorkItems().Create(ctx, repository.WorkItem{Type: repository.WorkItemProject, Title: zurich, Status: repository.WorkItemActive})
			if err != nil {
				t.Fatal(err)
			}
			var n int
			if err := s.Pool().QueryRow(ctx, `SELECT char_length(title) FROM work_items WHERE id = $1`, w.ID).Scan(&n); err != nil || n != 7 {
				t.Fatalf("%q stored as %d characters (%v), want 7", zurich, n, err)
			}

			// So does a pool the application builds from ParseConfig.
			pcfg, err := pgstore.ParseConfig(modeDSN)
			if err != nil {
				t.Fatal(err)
			}
			pinnedPool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				t.Fatal(err)
			}
			pinned := pgstore.New(pinnedPool)
			defer pinned.Close()
			if _, err := pinned.Vendors().Get(ctx, "acme"); err != nil {
				t.Fatalf("Get through a pool from ParseConfig: %v", err)
			}
			w, err = pinned.WorkItems().Create(ctx, repository.WorkItem{Type: repository.WorkItemProject, Title: zurich, Status: repository.WorkItemActive})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Pool().QueryRow(ctx, `SELECT char_length(title) FROM work_items WHERE id = $1`, w.ID).Scan(&n); err != nil || n != 7 {
				t.Fatalf("%q stored through a pool from ParseConfig as %d characters (%v), want 7", zurich, n, err)
			}

			// A pool of the application's making otherwise keeps the
			// database's defaults: in the text modes its reads fail, saying
			// why, and the first listener says so in the log, in every mode.
			var logged testutil.Buffer
			own := pgstore.New(pool, pgstore.WithLogger(slog.New(slog.NewTextHandler(&logged, nil))))
			_, err = own.Vendors().Get(ctx, "acme")
			switch mode {
			case "cache_statement":
				if err != nil {
					t.Fatalf("Get through the application's pool, binary results: %v", err)
				}
			case "exec":
				if !errors.Is(err, repository.ErrUnreadable) || !strings.Contains(err.Error(), "DateStyle=ISO") {
					t.Fatalf("Get through the application's pool: %v, want ErrUnreadable naming DateStyle=ISO", err)
				}
			default:
				if err == nil {
					t.Fatal("Get through the application's pool: nil error, want pgx's refusal")
				}
			}
			// Once listening, the listener has looked at one of the pool's
			// connections.
			wakes := watch(t, ctx, own)
			feedEventually(t, 10*time.Second, "the listener listening", func() bool { connects, _ := wakes.counts(); return connects > 0 })
			out := logged.String()
			for _, want := range []struct {
				text string
				said bool
			}{
				{`client_encoding \"LATIN1\"`, true},
				{`DateStyle \"SQL, DMY\"`, mode != "cache_statement"},
				{`standard_conforming_strings off`, mode == "simple_protocol"},
			} {
				if strings.Contains(out, want.text) != want.said {
					t.Errorf("%s said: %v, want %v", want.text, !want.said, want.said)
				}
			}
			if n := strings.Count(out, "level=ERROR"); n != 1 || !strings.Contains(out, "client_encoding=UTF8") {
				t.Errorf("logged %d errors, want one naming the remedy:\n%s", n, out)
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
