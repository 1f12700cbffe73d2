package pgtest

import (
	"context"
	"fmt"
	"time"

	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
)

// SetReadOnly makes the whole server refuse writes (on) or take them
// again (off) the way a provider's full-disk guard or a DBA's
// maintenance window does: default_transaction_read_only in
// postgresql.auto.conf and a reload, which reaches the sessions already
// open at their next command. It returns once a session shows the new
// setting, or with ctx's error; admin must be a superuser's DSN.
func SetReadOnly(ctx context.Context, admin string, on bool) error {
	conn, err := pgdsn.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("pgtest: read-only: %w", err)
	}
	defer conn.Close(context.Background())
	set, want := `ALTER SYSTEM SET default_transaction_read_only = on`, "on"
	if !on {
		set, want = `ALTER SYSTEM RESET default_transaction_read_only`, "off"
	}
	for _, q := range []string{set, `SELECT pg_reload_conf()`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("pgtest: read-only: %s: %w", q, err)
		}
	}
	// The reload is asynchronous: this session, opened before it, sees
	// the setting once the server has applied it.
	for {
		var got string
		if err := conn.QueryRow(ctx, `SHOW default_transaction_read_only`).Scan(&got); err != nil {
			return fmt.Errorf("pgtest: read-only: %w", err)
		}
		if got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pgtest: read-only: default_transaction_read_only still %s: %w", got, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
