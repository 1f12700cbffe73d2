package pgtest

import (
	"context"
	"fmt"
	"strings"
	"time"

	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
)

// SetReadOnly makes the whole server refuse writes (on) or take them
// again (off) the way a provider's full-disk guard or a DBA's
// maintenance window does: default_transaction_read_only in
// postgresql.auto.conf and a reload, which reaches the sessions already
// open at their next command (see Reconfigure).
func SetReadOnly(ctx context.Context, admin string, on bool) error {
	value := ""
	if on {
		value = "on"
	}
	return Reconfigure(ctx, admin, "default_transaction_read_only", value)
}

// Reconfigure sets a server setting with ALTER SYSTEM (RESET when value
// is "") and reloads the configuration. It returns once a session shows
// the new value, or with ctx's error; admin must be a superuser's DSN.
// The reload is asynchronous for every process: what other backends and
// the checkpointer do with it may lag a little behind.
func Reconfigure(ctx context.Context, admin, name, value string) error {
	conn, err := pgdsn.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("pgtest: reconfigure %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	set := `ALTER SYSTEM RESET ` + name
	if value != "" {
		set = `ALTER SYSTEM SET ` + name + ` = '` + strings.ReplaceAll(value, `'`, `''`) + `'`
	}
	for _, q := range []string{set, `SELECT pg_reload_conf()`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("pgtest: reconfigure: %s: %w", q, err)
		}
	}
	want := value
	if value == "" {
		if err := conn.QueryRow(ctx, `SELECT boot_val FROM pg_settings WHERE name = $1`, name).Scan(&want); err != nil {
			return fmt.Errorf("pgtest: reconfigure %s: %w", name, err)
		}
	}
	for {
		var got string
		if err := conn.QueryRow(ctx, `SELECT setting FROM pg_settings WHERE name = $1`, name).Scan(&got); err != nil {
			return fmt.Errorf("pgtest: reconfigure %s: %w", name, err)
		}
		if got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: reconfigure: %s still %q: %w", name, got, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
