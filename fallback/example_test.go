package fallback_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/pgstore"
	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// VendorService is application code: it depends on the repository
// interface only, and does not know whether PostgreSQL or the cache answers.
type VendorService struct {
	Vendors repository.VendorRepository
}

func (s *VendorService) Status(ctx context.Context, name string) (repository.VendorStatus, error) {
	v, err := s.Vendors.Get(ctx, name)
	if err != nil {
		return "", err
	}
	return v.Status, nil
}

// Wiring the layer into an application: a lazily connecting pool (so the
// service starts even while PostgreSQL is down), the layer with its cache
// file (so the service starts even when the cache cannot be opened), and
// the repositories handed to application code.
func Example() {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		logger.Error("bad DATABASE_URL") // pgx's error may quote the password
		return
	}
	store := pgstore.New(pool)
	defer store.Close()

	layer, err := fallback.NewWithCacheFile(store, "cache/project_status.db", fallback.Config{
		PrimaryTimeout: time.Second,
		Logger:         logger,
		OnStateChange: func(from, to fallback.State) {
			logger.Warn("database circuit", "from", from, "to", to)
		},
	}, sqlitecache.WithLogger(logger))
	if err != nil {
		logger.Error("fallback layer", "err", err) // bad configuration only
		return
	}
	defer layer.Close() // applies the write-through queue to the cache (up to CloseTimeout), closes the cache

	svc := &VendorService{Vendors: layer.Vendors()}
	status, err := svc.Status(ctx, "acme")
	fmt.Println(status, err)
}

// Telling callers the truth: where a result came from, whether it is stale,
// and that a miss during an outage is not "not found".
func ExampleWithProvenance() {
	var layer *fallback.Layer // from fallback.New
	handler := func(w http.ResponseWriter, r *http.Request) {
		ctx, prov := fallback.WithProvenance(r.Context())
		v, err := layer.Vendors().Get(ctx, r.URL.Query().Get("name"))
		switch {
		case errors.Is(err, repository.ErrNotFound):
			http.Error(w, "no such vendor", http.StatusNotFound)
			return
		case errors.Is(err, repository.ErrUnavailable):
			// PostgreSQL is down and the cache cannot vouch for this key.
			w.Header().Set("Retry-After", "5")
			http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if o := prov.Origin(); o.Source == fallback.SourceCache {
			w.Header().Set("X-Served-From", "cache")
			w.Header().Set("Age", fmt.Sprint(int(o.Age.Seconds())))
			if o.Stale {
				w.Header().Set("Warning", `110 - "Response is Stale"`)
			}
		}
		fmt.Fprintln(w, v.Name, v.Status)
	}
	_ = handler
}

// Writes during an outage fail fast and say so; a write whose reply was
// lost says that instead.
func ExampleLayer_Vendors_writes() {
	var layer *fallback.Layer // from fallback.New
	_, err := layer.Vendors().Create(context.Background(), repository.Vendor{Name: "acme", Status: repository.VendorOperational})
	switch {
	case errors.Is(err, repository.ErrUnavailable):
		// Not written. Safe to retry later.
	case errors.Is(err, repository.ErrOutcomeUnknown):
		// Maybe written: re-read before retrying.
	}
}
