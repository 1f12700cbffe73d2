// Command pgfallback runs failover drills, database migrations and cache
// maintenance for applications built on the pgfallback library.
//
//	pgfallback drill   [--dsn URL] [--scenario all] [--readers 8] [--writers 2] [--duration 3s] [--json FILE] [--html FILE]
//	pgfallback migrate up|down|status --dsn URL
//	pgfallback cache   stats|clear-stale|clear [--path FILE]
//
// --dsn defaults to $DATABASE_URL. Exit codes: 0 success, 1 failure (a
// drill whose bounds broke included), 2 bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage marks a usage error: exit code 2. The message is already printed.
var errUsage = errors.New("usage")

const usage = `pgfallback: failover drills, migrations and cache tools for pgfallback.

Usage:
  pgfallback drill   [flags]                    run a failover drill and report it
  pgfallback migrate up|down|status [flags]     apply, roll back or list PostgreSQL migrations
  pgfallback cache   stats|clear-stale|clear [flags]
                                                the SQLite cache's own operations

Run "pgfallback <command> --help" for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "drill":
		err = drillCmd(ctx, args[1:], stdout, stderr)
	case "migrate":
		err = migrateCmd(ctx, args[1:], stdout, stderr)
	case "cache":
		err = cacheCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "pgfallback: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "pgfallback %s: %v\n", args[0], err)
		return 1
	}
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage to stderr.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pgfallback "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pgfallback %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args; a bad flag (already reported by the flag package) is
// errUsage, --help is flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// parseAction parses "ACTION [flags]" for commands with actions. help is
// true when the user asked for the usage (already printed).
func parseAction(fs *flag.FlagSet, args []string, actions ...string) (action string, help bool, err error) {
	if len(args) == 0 {
		return "", false, usageError(fs, "missing action: one of %v", actions)
	}
	switch action = args[0]; action {
	case "-h", "-help", "--help":
		fs.Usage()
		return "", true, nil
	}
	if !slices.Contains(actions, action) {
		return "", false, usageError(fs, "unknown action %q: want one of %v", action, actions)
	}
	if err := parse(fs, args[1:]); err != nil {
		return "", false, err
	}
	if fs.NArg() > 0 {
		return "", false, usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	return action, false, nil
}

func usageError(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return errUsage
}
