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
	schemaChangeWhileServing(t, pgtest.NewDatabase(t))
}

// Behind PgBouncer 1.22+ keeping prepared statements, which keys them by
// their text on each server session: a client's own statement forgotten
// is not enough.
func TestSchemaChangeBehindPgBouncerThatKeepsPreparedStatements(t *testing.T) {
	if v := pgtest.PgBouncerVersion(t); !v.AtLeast(1, 22) {
		t.Skipf("PgBouncer %s: 1.22 and later keep prepared statements and handle DEALLOCATE ALL; "+
			"integration/pgtest/pgbouncer/fetch.sh fetches 1.24, and %s names it", v, pgtest.EnvPgBouncer)
	}
	schemaChangeWhileServing(t, pgtest.NewPgBouncer(t, pgtest.NewDatabase(t), "transaction", 1, "max_prepared_statements = 200"))
}

// schemaChangeWhileServing runs each of the store's calls, changes the
// type of a column both tables return, and runs it again: the second run
// must succeed. One call at a time, since the first refusal makes the
// connection forget every statement it prepared (forgetPlans): a call
// after it would find nothing stale.
func schemaChangeWhileServing(t *testing.T, dsn string) {
	ctx := feedCtx(t)
	// One connection (and, behind a pooler, one server session), so that
	// the statement a call prepared is the one its second run meets.
	s, err := pgstore.Open(ctx, pgtest.WithParam(dsn, "pool_max_conns", "1"))
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
	n := 0
	calls := []struct {
		name string
		run  func() error
	}{
		{"vendor Get", func() error { _, err := vendors.Get(ctx, "acme"); return err }},
		{"vendor List", func() error { _, err := vendors.List(ctx, repository.VendorFilter{}); return err }},
		{"vendor GetMany", func() error {
			_, err := vendors.(interface {
				GetMany(context.Context, []string) ([]repository.Vendor, error)
			}).GetMany(ctx, []string{"acme"})
			return err
		}},
		{"vendor ListAfter", func() error {
			_, err := vendors.(interface {
				ListAfter(context.Context, string, int) ([]repository.Vendor, error)
			}).ListAfter(ctx, "", 10)
			return err
		}},
		{"vendor Update", func() error {
			acme.ExtractorVersion = "1.0." + strconv.Itoa(n)
			v, err := vendors.Update(ctx, acme)
			if err == nil {
				acme = v
			}
			return err
		}},
		{"vendor Create and Delete", func() error {
			if _, err := vendors.Create(ctx, repository.Vendor{Name: "temp", Status: repository.VendorOperational}); err != nil {
				return err
			}
			return vendors.Delete(ctx, "temp")
		}},
		{"work item Get", func() error { _, err := items.Get(ctx, item.ID); return err }},
		{"work item List", func() error { _, err := items.List(ctx, repository.WorkItemFilter{}); return err }},
		{"work item GetMany", func() error {
			_, err := items.(interface {
				GetMany(context.Context, []uuid.UUID) ([]repository.WorkItem, error)
			}).GetMany(ctx, []uuid.UUID{item.ID})
			return err
		}},
		{"work item ListAfter", func() error {
			_, err := items.(interface {
				ListAfter(context.Context, uuid.UUID, int) ([]repository.WorkItem, error)
			}).ListAfter(ctx, uuid.Nil, 10)
			return err
		}},
		{"work item Update", func() error {
			item.Title = "renamed " + strconv.Itoa(n)
			w, err := items.Update(ctx, item)
			if err == nil {
				item = w
			}
			return err
		}},
		{"work item Create and Delete", func() error {
			temp, err := items.Create(ctx, newItem("temp", nil))
			if err != nil {
				return err
			}
			return items.Delete(ctx, temp.ID)
		}},
		// The write queue's replay: one write; a batch (the pipeline); a
		// child's create (statement by statement).
		{"ApplyWrite", func() error {
			acme.ExtractorVersion = "2.0." + strconv.Itoa(n)
			a, err := s.ApplyWrite(ctx, vendorWrite(repository.WriteUpdate, acme, acme.Version))
			if err == nil {
				acme = *a.Vendor
			}
			return err
		}},
		{"ApplyWrites, pipelined", func() error {
			acme.ExtractorVersion = "3.0." + strconv.Itoa(n)
			a, err := s.ApplyWrites(ctx, []repository.Write{vendorWrite(repository.WriteUpdate, acme, acme.Version),
				itemWrite(repository.WriteCreate, newItem("queued", nil), 0)})
			if err == nil {
				acme = *a[0].Vendor
			}
			return err
		}},
		{"ApplyWrites, statement by statement", func() error {
			_, err := s.ApplyWrites(ctx, []repository.Write{itemWrite(repository.WriteCreate, newItem("child", &item), 0)})
			return err
		}},
	}
	for _, c := range calls {
		n++
		if err := c.run(); err != nil {
			t.Fatalf("%s before the schema change: %v", c.name, err)
		}
		n++
		// Another length each time: another result type.
		feedExec(t, ctx, s, `ALTER TABLE vendors ALTER COLUMN extractor_version TYPE varchar(`+strconv.Itoa(200+n)+`)`)
		feedExec(t, ctx, s, `ALTER TABLE work_items ALTER COLUMN title TYPE varchar(`+strconv.Itoa(300+n)+`)`)
		if err := c.run(); err != nil {
			t.Errorf("%s after the schema change: %v", c.name, err)
		}
	}
}
