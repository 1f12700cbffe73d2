package prom_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgfallback/pgfallback/prom"
	"github.com/pgfallback/pgfallback/repository"
)

// A PostgreSQL that refuses writes as read-only is exported for as long as
// it lasts, with the refusals counted by kind: the breaker stays closed
// then, so its gauges alone would show nothing wrong.
func TestReadOnlyGauge(t *testing.T) {
	ctx := context.Background()
	p := newPrimary()
	l, _ := newLayer(t, p, nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prom.NewCollector(l))
	const gauge = "pgfallback_primary_read_only_since_timestamp_seconds"
	if m := find(scrape(t, reg), gauge); m != nil {
		t.Fatalf("exported while PostgreSQL takes writes: %v", m)
	}

	p.readOnly.Store(true)
	before := time.Now()
	if _, err := l.Vendors().Create(ctx, repository.Vendor{Name: "refused", Status: repository.VendorOperational}); !errors.Is(err, repository.ErrUnavailable) {
		t.Fatalf("a create on a read-only primary: %v", err)
	}
	mfs := scrape(t, reg)
	if got := value(t, mfs, gauge); got < float64(before.Unix()) || got > float64(time.Now().Unix()+1) {
		t.Errorf("%s = %v, want the time of the refusal (about %d)", gauge, got, before.Unix())
	}
	if got := value(t, mfs, "pgfallback_primary_failures_total", "kind=read_only"); got != 1 {
		t.Errorf("failures{read_only} = %v, want 1", got)
	}
	if got := value(t, mfs, "pgfallback_circuitbreaker_state", "state=closed"); got != 1 {
		t.Errorf("breaker closed = %v, want 1: a read-only server is not an outage", got)
	}

	p.readOnly.Store(false)
	if _, err := l.Vendors().Create(ctx, repository.Vendor{Name: "taken", Status: repository.VendorOperational}); err != nil {
		t.Fatal(err)
	}
	if m := find(scrape(t, reg), gauge); m != nil {
		t.Fatalf("still exported after a write was applied: %v", m)
	}
}
