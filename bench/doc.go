// Package bench holds the side-by-side benchmarks that compare pgfallback's
// layers in one run against a real PostgreSQL server (see integration/pgtest):
// the pgx store, the SQLite cache, and the fallback layer healthy and open.
//
//	go test -run '^$' -bench . -benchmem ./bench/
package bench
