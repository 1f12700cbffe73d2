//go:build linux

package fallback_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/integration/pgtest"
	"github.com/pgfallback/pgfallback/repository"
)

// A PostgreSQL whose disk is full, for real: the vendors table lives in a
// tablespace on an 8 MB tmpfs that a filler file then fills, so that
// PostgreSQL fails to extend it ("could not extend file … No space left on
// device", SQLSTATE 53100) while the rest of the cluster (WAL, catalogs,
// the change log) has room. It answers reads, so it is not an outage: the
// breaker stays closed, reads come from PostgreSQL, each refused create
// fails as not written, and Stats says why until a write is applied after
// the filler is removed. Mounting needs root (CAP_SYS_ADMIN) and a local
// server; elsewhere the test skips, saying so.
func TestDiskFullPostgreSQLServesReadsAndRefusesWrites(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := pgtest.Shared(t)
	if srv.Mode() != pgtest.ModeLocal {
		t.Skipf("a tablespace on a small file system needs a server on this machine; this one is %s", srv.Mode())
	}
	admin, err := pgx.Connect(ctx, srv.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { admin.Close(context.Background()) }()
	var dataDir string
	if err := admin.QueryRow(ctx, `SHOW data_directory`).Scan(&dataDir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	owner := fi.Sys().(*syscall.Stat_t).Uid

	// Cleanups run last first: the database (made below) is dropped
	// before its tablespace, and the tablespace before the unmount.
	dir, err := os.MkdirTemp("", "pgfallback-diskfull-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=8m,mode=0700,uid=%d", owner)); err != nil {
		os.Remove(dir)
		t.Skipf("cannot mount a small tmpfs for the full disk (needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	space := "pgfallback_full_" + strings.ReplaceAll(filepath.Base(dir), "-", "_")
	if _, err := admin.Exec(ctx, `CREATE TABLESPACE `+space+` LOCATION '`+dir+`'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the database's drop, on a connection of its own
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, srv.DSN())
		if err == nil {
			_, err = conn.Exec(ctx, `DROP TABLESPACE `+space)
			conn.Close(ctx)
		}
		if err != nil {
			t.Errorf("drop the tablespace: %v", err)
		}
	})
	dsn := pgtest.NewDatabase(t)
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close(context.Background()) }()
	if _, err := db.Exec(ctx, `ALTER TABLE vendors SET TABLESPACE `+space); err != nil {
		t.Fatal(err)
	}

	s := openStack(t, dsn, filepath.Join(t.TempDir(), "c.db"), fallback.Config{})
	names := seed(t, s, 3)
	if _, err := s.store.Vendors().Create(ctx, repository.Vendor{Name: "uncached", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	fill(t, filler)

	// Rows go into the table's last page while it has room; the first
	// that needs a new page is refused.
	pad := strings.Repeat("x", 1000)
	var refusedAt int
	for i := 0; refusedAt == 0; i++ {
		if i == 200 {
			t.Fatal("200 creates of 1 kB on a full disk all succeeded")
		}
		_, err := s.layer.Vendors().Create(ctx, repository.Vendor{Name: fmt.Sprintf("full-%03d", i), Status: repository.VendorOperational,
			Metadata: map[string]any{"pad": pad}})
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
		case errors.Is(err, repository.ErrUnavailable) && errors.As(err, &pgErr) && pgErr.Code == "53100":
			refusedAt = i
		default:
			t.Fatalf("create %d on a full disk: %v, want success or ErrUnavailable caused by SQLSTATE 53100", i, err)
		}
	}
	for i := range 20 { // more than ConsecutiveFailures
		_, err := s.layer.Vendors().Create(ctx, repository.Vendor{Name: fmt.Sprintf("refused-%03d", i), Status: repository.VendorOperational,
			Metadata: map[string]any{"pad": pad}})
		if !errors.Is(err, repository.ErrUnavailable) || errors.Is(err, repository.ErrOutcomeUnknown) {
			t.Fatalf("create %d after the disk filled: %v, want ErrUnavailable", i, err)
		}
	}
	st := s.layer.Stats()
	if st.State != fallback.Closed || st.Transitions != 0 || st.ReadOnlyCause != fallback.FailDiskFull || st.PrimaryFailures[fallback.FailDiskFull] != 21 {
		t.Fatalf("after 21 refused creates: breaker %v after %d transitions, refusing since %v (%q), failures %v",
			st.State, st.Transitions, st.ReadOnlySince, st.ReadOnlyCause, st.PrimaryFailures)
	}
	for _, name := range []string{names[0], "uncached"} {
		rctx, prov := fallback.WithProvenance(ctx)
		if _, err := s.layer.Vendors().Get(rctx, name); err != nil || prov.Origin().Source != fallback.SourcePrimary {
			t.Fatalf("Get %s on a full disk: %v from %v, want PostgreSQL's answer", name, err, prov.Origin().Source)
		}
	}
	var stored int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM vendors WHERE name LIKE 'refused-%'`).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("%d refused creates stored (%v)", stored, err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := s.layer.Vendors().Create(ctx, repository.Vendor{Name: "room-again", Status: repository.VendorOperational}); err != nil {
		t.Fatalf("create once the disk has room: %v", err)
	}
	if st := s.layer.Stats(); !st.ReadOnlySince.IsZero() {
		t.Fatalf("still refusing writes since %v after one was applied", st.ReadOnlySince)
	}
	t.Logf("the disk filled at create %d; 21 refused, none stored, reads from PostgreSQL throughout", refusedAt)
}

// fill writes path until the file system has no room left.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	block := make([]byte, 64<<10)
	for {
		if _, err := f.Write(block); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
}
