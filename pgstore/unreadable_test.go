package pgstore

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// deepJSON is an object holding arrays nested levels deep in all: more than
// encoding/json (and so pgx) decodes once levels passes 10,000.
func deepJSON(levels int) string {
	return `{"a":` + strings.Repeat("[", levels-1) + strings.Repeat("]", levels-1) + `}`
}

// A row written around validation (plain SQL) that pgx cannot decode is an
// answer about that row: ErrUnreadable naming the key, never a bare scan
// error that a caller would take for an outage.
func TestUndecodableRowIsUnreadable(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Pool().Exec(ctx, `INSERT INTO vendors (id, name, status, metadata) VALUES (gen_random_uuid(), 'poison', 'operational', $1::jsonb)`,
		deepJSON(10_001)); err != nil {
		t.Fatalf("PostgreSQL refused 10,001 levels (it stores them): %v", err)
	}
	itemID := uuid.New()
	if _, err := s.Pool().Exec(ctx, `INSERT INTO work_items (id, type, title, status, path, depth, metadata)
		VALUES ($1, 'project', 'poison', 'active', '', 0, $2::jsonb)`, itemID, deepJSON(10_001)); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error, key string) {
		t.Helper()
		if !errors.Is(err, repository.ErrUnreadable) {
			t.Errorf("%s: got %v, want ErrUnreadable", what, err)
		} else if !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v does not name the row %s", what, err, key)
		}
		if errors.Is(err, repository.ErrNotFound) || errors.Is(err, repository.ErrInvalid) {
			t.Errorf("%s: %v also matches a sentinel that would misdescribe it", what, err)
		}
	}
	_, err = s.Vendors().Get(ctx, "poison")
	check("vendor Get", err, "poison")
	_, err = s.Vendors().List(ctx, repository.VendorFilter{})
	check("vendor List", err, "poison")
	_, err = s.vendors.GetMany(ctx, []string{"poison"})
	check("vendor GetMany", err, "poison")
	_, err = s.WorkItems().Get(ctx, itemID)
	check("work item Get", err, itemID.String())
	_, err = s.WorkItems().List(ctx, repository.WorkItemFilter{})
	check("work item List", err, itemID.String())
}

// SQLSTATE class 54 (program limit exceeded: PostgreSQL's jsonb stops at
// about 20,000 levels) is the server refusing that input: ErrInvalid.
func TestProgramLimitIsInvalid(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Pool().Exec(ctx, `INSERT INTO vendors (id, name, status, metadata) VALUES (gen_random_uuid(), 'too-deep', 'operational', $1::jsonb)`,
		deepJSON(200_000))
	if err == nil {
		t.Skip("this server stored 200,000 levels; nothing to map")
	}
	err = mapError("raw insert", err)
	if !errors.Is(err, repository.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
}
