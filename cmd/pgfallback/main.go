// Command pgfallback runs failover drills, database migrations and cache
// maintenance for applications built on the pgfallback library.
//
//	pgfallback drill   [--dsn URL] [--scenario all] [--readers 8] [--writers 2] [--duration 3s] [--json FILE] [--html FILE]
//	pgfallback migrate up|down|status --dsn URL
//	pgfallback cache   stats|clear-stale|clear [--path FILE] [--ttl D]
//	pgfallback cache   warm [--path FILE] [--dsn URL] [--all]
//	pgfallback queue   list|retry|discard [--path FILE] [ID]
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

	"github.com/pgfallback/pgfallback/integration/drill"
	"github.com/pgfallback/pgfallback/internal/dsn"
)

func main() {
	drill.ChildMain() // a drill's child process (queued-kill) runs here and exits
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
  pgfallback cache   stats|clear-stale|clear|warm [flags]
                                                show or clear a SQLite cache file, or warm it
                                                (fill it from PostgreSQL)
  pgfallback queue   list|retry|discard [flags] [ID]
                                                list the queued writes, retry or discard a dead letter

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
	case "queue":
		err = queueCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "pgfallback: unknown command %q\n\n%s", dsn.Redact(args[0]), usage)
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
		// Every source of err redacts already; the command's promise is
		// kept here whatever a dependency's error quotes.
		fmt.Fprintf(stderr, "pgfallback %s: %s\n", args[0], dsn.Redact(err.Error()))
		return 1
	}
}

// flagSet is a subcommand's flag set. Like the go command, it prints the
// usage to stdout when asked for it (-h, --help, help) and to stderr, after
// the message, on a usage error.
type flagSet struct {
	*flag.FlagSet
	synopsis string
	// about, if set, is printed between the usage line and the flags: what
	// the command's actions do, which flags apply to which.
	about  string
	stdout io.Writer
}

func newFlagSet(name, synopsis string, stdout, stderr io.Writer) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet("pgfallback "+name, flag.ContinueOnError), synopsis: synopsis, stdout: stdout}
	// Usage errors quote arguments, and a misplaced DSN is an argument:
	// `migrate postgres://…`, `--readers postgres://…`.
	fs.SetOutput(redactingWriter{stderr})
	// The flag package calls Usage both for -h and after an error message,
	// which go to different streams: parse prints the usage itself.
	fs.Usage = func() {}
	return fs
}

func (fs *flagSet) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: pgfallback %s\n\n", fs.synopsis)
	if fs.about != "" {
		fmt.Fprintf(w, "%s\n", fs.about)
	}
	fmt.Fprint(w, "Flags:\n")
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

// parse parses args; a bad flag (reported with the usage on stderr) is
// errUsage, --help (the usage printed on stdout) is flag.ErrHelp.
func (fs *flagSet) parse(args []string) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.printUsage(fs.stdout)
		return err
	default:
		fs.printUsage(fs.Output())
		return errUsage
	}
}

// parseFlags parses the arguments of a command without actions: flags
// only, or "help".
func (fs *flagSet) parseFlags(args []string) error {
	if len(args) == 1 && args[0] == "help" {
		fs.printUsage(fs.stdout)
		return flag.ErrHelp
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fs.usageError("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// parseAction parses "ACTION [flags]" for commands with actions.
func (fs *flagSet) parseAction(args []string, actions ...string) (action string, err error) {
	if len(args) == 0 {
		return "", fs.usageError("missing action: one of %v", actions)
	}
	switch action = args[0]; action {
	case "-h", "-help", "--help", "help":
		fs.printUsage(fs.stdout)
		return "", flag.ErrHelp
	}
	if !slices.Contains(actions, action) {
		return "", fs.usageError("unknown action %q: want one of %v", action, actions)
	}
	if err := fs.parse(args[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fs.usageError("unexpected argument %q", fs.Arg(0))
	}
	return action, nil
}

// usageError prints the message and the usage on stderr.
func (fs *flagSet) usageError(format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.printUsage(fs.Output())
	return errUsage
}

// dsnFlag defines --dsn, which defaults to the first of envs that is set
// ($DATABASE_URL when none are named). The flag's own default stays
// empty: flag defaults are printed in the usage, and the variable holds a
// password.
func (fs *flagSet) dsnFlag(usage string, envs ...string) func() string {
	v := fs.String("dsn", "", usage)
	if len(envs) == 0 {
		envs = []string{"DATABASE_URL"}
	}
	return func() string {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "dsn" })
		if set {
			return *v // --dsn "" chooses the drill's embedded server
		}
		for _, env := range envs {
			if d := os.Getenv(env); d != "" {
				return d
			}
		}
		return ""
	}
}

// redactingWriter masks passwords in what it writes. Each write must hold
// whole DSNs: the flag package and usageError write a message at a time.
type redactingWriter struct{ w io.Writer }

func (r redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(r.w, dsn.Redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
