package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	pgdsn "github.com/pgfallback/pgfallback/internal/dsn"
)

// NewRole creates, through the superuser DSN admin, a role named
// prefix_<random> that can log in with the returned password and has no
// other attribute. At cleanup it is stripped of every attribute it might
// have gained (so that it grants nothing even if the drop fails) and
// dropped: register it before the databases it has privileges in, whose
// cleanups must run first. Roles are cluster-wide.
func NewRole(t testing.TB, admin, prefix string) (role, password string) {
	t.Helper()
	ctx := context.Background()
	// Hex: nothing to quote in the name or the password.
	role, password = prefix+"_"+randomHex(6), randomHex(16)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: connect to create a role: %v", pgdsn.Error(err))
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx,
		"CREATE ROLE "+role+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '"+password+"'"); err != nil {
		t.Fatalf("pgtest: create role %s: %v", role, err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("pgtest: drop role %s: %v", role, pgdsn.Error(err))
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "ALTER ROLE "+role+" NOSUPERUSER NOCREATEDB NOCREATEROLE NOLOGIN"); err != nil {
			t.Errorf("pgtest: strip role %s: %v", role, err)
		}
		if _, err := c.Exec(ctx, "DROP ROLE IF EXISTS "+role); err != nil {
			t.Errorf("pgtest: drop role %s: %v", role, err)
		}
	})
	return role, password
}
