package pgstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// A store that cannot reach its server returns the connection error in
// kind, not a repository verdict: the fallback layer classifies it.
func TestConnectionFailureKeepsItsKind(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	s := pgstore.New(pool)
	defer s.Close()
	_, err = s.Vendors().Get(ctx, "acme")
	var connErr *pgconn.ConnectError
	if !errors.As(err, &connErr) {
		t.Fatalf("Get on a dead server: got %v (%T), want a wrapped *pgconn.ConnectError", err, err)
	}
	for _, sentinel := range []error{repository.ErrNotFound, repository.ErrInvalid, repository.ErrConflict, repository.ErrAlreadyExists} {
		if errors.Is(err, sentinel) {
			t.Fatalf("connection failure matched %v", sentinel)
		}
	}
	if err := s.Ping(ctx); !errors.As(err, &connErr) {
		t.Fatalf("Ping on a dead server: got %v", err)
	}
	if _, err := pgstore.Open(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=2"); err == nil {
		t.Fatal("Open of a dead server succeeded")
	}
	if _, err := pgstore.Open(ctx, "postgres://%zz"); err == nil {
		t.Fatal("Open of a malformed DSN succeeded")
	}
	// pgx's own parse error quotes part of this password ("retpw").
	if _, err := pgstore.ParseConfig("host=h port=notaport password = s3cretpw"); err == nil || strings.Contains(err.Error(), "retpw") {
		t.Fatalf("ParseConfig of a malformed DSN: %v, want an error without the password", err)
	}
}

// A database that was never migrated answers every call with PostgreSQL's
// `relation "vendors" does not exist`; the error says what to do, and what
// else it may be: a role whose search_path misses the schema the owner
// migrated into.
func TestUnmigratedDatabaseSaysRunMigrations(t *testing.T) {
	ctx := context.Background()
	s := storeWithout(t, ctx, 1) // every migration
	_, err := s.Vendors().Get(ctx, "acme")
	if err == nil || !strings.Contains(err.Error(), "migrations.Up") || !strings.Contains(err.Error(), `"vendors" does not exist`) ||
		!strings.Contains(err.Error(), "search_path") {
		t.Fatalf("Get on an unmigrated database: %v, want the cause and the fix", err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Fatalf("the PostgreSQL error is not wrapped: %v", err)
	}
	if _, err := s.WorkItems().List(ctx, repository.WorkItemFilter{}); err == nil || !strings.Contains(err.Error(), "migrations.Up") {
		t.Fatalf("List on an unmigrated database: %v", err)
	}
}
