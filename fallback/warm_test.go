package fallback

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/pgfallback/pgfallback/internal/testutil"
	"github.com/pgfallback/pgfallback/repository"
)

// A warm that fails is logged as one that did not finish, at warning
// level, never as "cache warmed".
func TestFailedWarmIsNotLoggedAsWarmed(t *testing.T) {
	db := newFakeDB()
	db.put(repository.Vendor{Name: "acme", Status: repository.VendorOperational})
	var logs testutil.Buffer
	l, _ := newTestLayer(t, db, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), DisableChangeFeed: true})
	ctx := context.Background()
	if _, err := l.Vendors().Get(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	flush(t, l)
	if _, err := l.Warm(ctx); err != nil {
		t.Fatalf("Warm: %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "level=INFO msg=\"pgfallback: cache warmed\"") {
		t.Fatalf("a warm that finished is not logged as warmed:\n%s", out)
	}

	db.down(errors.New("boom"))
	if _, err := l.Warm(ctx); err == nil {
		t.Fatal("Warm succeeded while every read of the primary fails")
	}
	out := logs.String()
	if n := strings.Count(out, "cache warmed"); n != 1 {
		t.Errorf("%d lines say the cache was warmed, want only the first warm's:\n%s", n, out)
	}
	if !strings.Contains(out, "level=WARN msg=\"pgfallback: cache warm did not finish\"") || !strings.Contains(out, "boom") {
		t.Errorf("the failed warm is not logged as a warning with its error:\n%s", out)
	}
}
