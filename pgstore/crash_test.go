package pgstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// The change log is unlogged (migration 00005): a crash of the server
// empties it, and its identity sequence starts again. Every cursor from
// before the crash must expire, even once the new log's seq has passed the
// cursor's, and the log must work again after a resync.
func TestCrashResetsTheLogAndExpiresCursors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := pgtest.NewServer(t)
	dsn, _, err := srv.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Pool().Exec(ctx, `INSERT INTO vendors (id, name, status)
		SELECT gen_random_uuid(), 'v' || g, 'operational' FROM generate_series(1, 20) g`); err != nil {
		t.Fatal(err)
	}
	before := changeHead(t, ctx, s)
	if _, err := s.Pool().Exec(ctx, `CHECKPOINT`); err != nil { // the vendors themselves are durable
		t.Fatal(err)
	}

	if err := srv.Kill(); err != nil { // SIGKILL: crash recovery resets unlogged tables
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// Writes after the crash take the log's seq past the old cursor's.
	for range 3 {
		if err := retryExec(ctx, s, `UPDATE vendors SET version = version + 1`); err != nil {
			t.Fatal(err)
		}
	}
	var vendors, logged int
	if err := s.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM vendors), (SELECT count(*) FROM pgfallback_changes)`).
		Scan(&vendors, &logged); err != nil {
		t.Fatal(err)
	}
	if vendors != 20 || logged != 60 {
		t.Fatalf("after the crash: %d vendors, %d changes logged; want 20 and the 60 made since", vendors, logged)
	}
	_, err = s.ReadChanges(ctx, before, 100)
	if !errors.Is(err, repository.ErrCursorExpired) || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("a cursor from before the crash: %v, want ErrCursorExpired saying the log was reset", err)
	}
	after := changeHead(t, ctx, s)
	if err := retryExec(ctx, s, `UPDATE vendors SET version = version + 1 WHERE name = 'v1'`); err != nil {
		t.Fatal(err)
	}
	b, err := s.ReadChanges(ctx, after, 100)
	if err != nil || len(b.Changes) != 1 || b.Changes[0].Key != "v1" {
		t.Fatalf("reading from a new head after the crash: %v, %v; want v1's update", describeChanges(b.Changes), err)
	}
}

// retryExec runs sql until it succeeds or ctx ends: the pool's connections
// died with the server.
func retryExec(ctx context.Context, s *pgstore.Store, sql string) error {
	for {
		_, err := s.Pool().Exec(ctx, sql)
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
