package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/pgfallback/pgfallback/migrations"
)

func migrateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", "migrate up|down|status --dsn URL", stdout, stderr)
	// Migrations need PostgreSQL itself (goose's session lock), and an
	// application behind a pooler has its DATABASE_URL there: the direct
	// URL the docs have it set for the change feed comes first.
	dsnFlag := fs.dsnFlag("PostgreSQL itself, not a pooler (default $DATABASE_DIRECT_URL, else $DATABASE_URL)",
		"DATABASE_DIRECT_URL", "DATABASE_URL")
	action, err := fs.parseAction(args, "up", "down", "status")
	if err != nil {
		return err
	}
	dsn := dsnFlag()
	if dsn == "" {
		return fs.usageError("--dsn (or DATABASE_DIRECT_URL, or DATABASE_URL) is required")
	}
	switch action {
	case "up":
		if err := migrations.Up(ctx, dsn); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "migrations applied")
	case "down":
		if err := migrations.Down(ctx, dsn); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "rolled back the latest migration")
	case "status":
		st, err := migrations.Status(ctx, dsn)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tNAME\tSTATE\tAPPLIED AT")
		for _, s := range st {
			state, at := "pending", ""
			if s.Applied {
				state, at = "applied", s.AppliedAt.UTC().Format("2006-01-02 15:04:05 MST")
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.Version, s.Name, state, at)
		}
		tw.Flush()
	}
	return nil
}
