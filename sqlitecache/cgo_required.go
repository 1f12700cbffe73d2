//go:build !cgo

package sqlitecache

// The cache is SQLite through cgo (github.com/mattn/go-sqlite3): without
// cgo this package cannot work, and this names the fix where the build
// fails.
var _ = pgfallback_sqlitecache_requires_cgo_build_with_CGO_ENABLED_1_and_a_C_compiler_such_as_gcc
