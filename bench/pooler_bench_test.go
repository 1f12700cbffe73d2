package bench_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
)

// BenchmarkStoreGetVendorPooled is what running behind a transaction
// pooler costs a read (docs/poolers.md): one pgstore Get of a vendor with
// ~1 KB of metadata, side by side, over loopback TCP:
//
//   - path=direct,mode=cache_statement: pgx's default, a prepared statement;
//   - path=direct,mode=cache_describe: the unnamed statement, parsed and
//     planned by the server every time, its description cached by pgx
//     (binary results);
//   - path=direct,mode=exec: parsed and planned every time, text results;
//   - path=pgbouncer,mode=…: those two through PgBouncer in transaction
//     mode (one more hop), as docs/poolers.md sets it up; and pgx's
//     default through a PgBouncer that keeps prepared statements (1.21 and
//     later, max_prepared_statements = 200, 1.24's default), only there.
//
// Skipped without a pgbouncer binary (unless PGFALLBACK_REQUIRE_PGBOUNCER=1).
//
//	go test -run '^$' -bench StoreGetVendorPooled -benchmem -count 6 ./bench/
//	PGFALLBACK_TEST_PGBOUNCER=/opt/pgbouncer-trixie/pgbouncer go test -run '^$' -bench StoreGetVendorPooled -benchmem -count 6 ./bench/
func BenchmarkStoreGetVendorPooled(b *testing.B) {
	ctx := context.Background()
	direct := pgtest.NewDatabase(b)
	var keeps []string
	if pgtest.PgBouncerVersion(b).AtLeast(1, 21) {
		keeps = []string{"max_prepared_statements = 200"}
	}
	pooled := pgtest.NewPgBouncer(b, direct, "transaction", 2, keeps...)
	seeder, err := pgstore.Open(ctx, direct)
	if err != nil {
		b.Fatal(err)
	}
	defer seeder.Close()
	var names []string
	for i := range 100 {
		v, err := seeder.Vendors().Create(ctx, repository.Vendor{Name: fmt.Sprintf("pooled-%03d", i),
			Status: repository.VendorOperational, Metadata: metadata(i)})
		if err != nil {
			b.Fatal(err)
		}
		names = append(names, v.Name)
	}
	listen, err := pgx.ParseConfig(direct)
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct{ path, dsn, mode string }{
		{"direct", direct, "cache_statement"},
		{"direct", direct, "cache_describe"},
		{"direct", direct, "exec"},
		{"pgbouncer", pooled, "cache_describe"},
		{"pgbouncer", pooled, "exec"},
	}
	if keeps != nil {
		cases = append(cases, struct{ path, dsn, mode string }{"pgbouncer", pooled, "cache_statement"})
	}
	for _, c := range cases {
		b.Run("path="+c.path+",mode="+c.mode, func(b *testing.B) {
			s, err := pgstore.Open(ctx, pgtest.WithParam(c.dsn, "default_query_exec_mode", c.mode), pgstore.WithListenConfig(listen))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			getLoop(b, names, func(ctx context.Context, name string) error {
				_, err := s.Vendors().Get(ctx, name)
				return err
			})
		})
	}
}
