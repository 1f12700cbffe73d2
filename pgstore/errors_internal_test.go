package pgstore

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// The schema's CHECK constraints back the Go validation up; a violation
// that reaches the server still comes back as ErrInvalid naming the field.
func TestDatabaseConstraintMapsToInvalid(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Pool().Exec(ctx, `INSERT INTO vendors (id, name, status) VALUES (gen_random_uuid(), 'ok', 'asleep')`)
	if err == nil {
		t.Fatal("the schema accepted an invalid status")
	}
	err = mapError("raw insert", err)
	var ve *repository.ValidationError
	if !errors.Is(err, repository.ErrInvalid) || !errors.As(err, &ve) || ve.Field != "Status" {
		t.Fatalf("got %v, want ErrInvalid naming Status", err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23514" {
		t.Fatalf("the PgError cause is lost: %v", err)
	}
}
