package pgstore_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// A column that changes type while the application serves (a migration,
// an ALTER by hand) makes PostgreSQL refuse every statement pgx prepared
// on a connection before it: 0A000, "cached plan must not change result
// type". Each call must still succeed the first time.
func TestSchemaChangeWhileServing(t *testing.T) {
	ctx := feedCtx(t)
	// One connection, so that every statement below is prepared on the
	// connection the second round uses.
	s, err := pgstore.Open(ctx, pgtest.WithParam(pgtest.NewDatabase(t), "pool_max_conns", "1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	vendors, items := s.Vendors(), s.WorkItems()
	acme, err := vendors.Create(ctx, repository.Vendor{Name: "acme", Status: repository.VendorOperational})
	if err != nil {
		t.Fatal(err)
	}
	item, err := items.Create(ctx, newItem("first", nil))
	if err != nil {
		t.Fatal(err)
	}

	round := func(n int) []error {
		var errs []error
		check := func(err error) { errs = append(errs, err) }
		_, err := vendors.Get(ctx, "acme")
		check(err)
		_, err = vendors.List(ctx, repository.VendorFilter{})
		check(err)
		_, err = vendors.(interface {
			GetMany(context.Context, []string) ([]repository.Vendor, error)
		}).GetMany(ctx, []string{"acme"})
		check(err)
		_, err = vendors.(interface {
			ListAfter(context.Context, string, int) ([]repository.Vendor, error)
		}).ListAfter(ctx, "", 10)
		check(err)
		acme.ExtractorVersion = "1.0." + strconv.Itoa(n)
		acme, err = vendors.Update(ctx, acme)
		check(err)
		_, err = vendors.Create(ctx, repository.Vendor{Name: "temp", Status: repository.VendorOperational})
		check(err)
		check(vendors.Delete(ctx, "temp"))

		_, err = items.Get(ctx, item.ID)
		check(err)
		_, err = items.List(ctx, repository.WorkItemFilter{})
		check(err)
		_, err = items.(interface {
			GetMany(context.Context, []uuid.UUID) ([]repository.WorkItem, error)
		}).GetMany(ctx, []uuid.UUID{item.ID})
		check(err)
		_, err = items.(interface {
			ListAfter(context.Context, uuid.UUID, int) ([]repository.WorkItem, error)
		}).ListAfter(ctx, uuid.Nil, 10)
		check(err)
		item.Title = "renamed " + strconv.Itoa(n)
		item, err = items.Update(ctx, item)
		check(err)
		temp, err := items.Create(ctx, newItem("temp", nil))
		check(err)
		check(items.Delete(ctx, temp.ID))
		return errs
	}
	for i, err := range round(1) {
		if err != nil {
			t.Fatalf("call %d before the schema change: %v", i, err)
		}
	}
	feedExec(t, ctx, s, `ALTER TABLE vendors ALTER COLUMN extractor_version TYPE varchar(200)`)
	feedExec(t, ctx, s, `ALTER TABLE work_items ALTER COLUMN title TYPE varchar(300)`)
	for i, err := range round(2) {
		if err != nil {
			t.Errorf("call %d after the schema change: %v", i, err)
		}
	}
}
