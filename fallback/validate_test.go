package fallback

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// With the breaker open, bad input came back as ErrUnavailable; on a
// healthy layer the same calls return ErrInvalid. The answer to bad input
// must not depend on the database's state, nor count as unavailability.
func TestBadInputIsInvalidWhateverTheState(t *testing.T) {
	ctx := context.Background()
	bad := func(l *Layer) map[string]error {
		v := vendor("ok")
		w := repository.WorkItem{Type: repository.WorkItemTask, Title: "t", Status: repository.WorkItemActive}
		v.Version, w.Version, w.ID = 0, 0, uuid.New()
		_, getErr := l.Vendors().Get(ctx, "BAD NAME")
		_, listErr := l.Vendors().List(ctx, repository.VendorFilter{Limit: -1})
		_, updErr := l.Vendors().Update(ctx, v)
		_, badCreate := l.Vendors().Create(ctx, vendor("Bad Name"))
		_, itemList := l.WorkItems().List(ctx, repository.WorkItemFilter{Offset: -5})
		_, itemUpd := l.WorkItems().Update(ctx, w)
		_, itemCreate := l.WorkItems().Create(ctx, repository.WorkItem{Title: "no type"})
		return map[string]error{
			"vendor Get":       getErr,
			"vendor List":      listErr,
			"vendor Update v0": updErr,
			"vendor Create":    badCreate,
			"vendor Delete":    l.Vendors().Delete(ctx, "BAD NAME"),
			"work item List":   itemList,
			"work item Update": itemUpd,
			"work item Create": itemCreate,
		}
	}
	for _, open := range []bool{false, true} {
		db := newFakeDB()
		l, _ := newTestLayer(t, db, Config{})
		if open {
			tripBreaker(t, l, db)
		}
		before, calls := l.Stats(), db.calls.Load()
		for call, err := range bad(l) {
			if !errors.Is(err, repository.ErrInvalid) || errors.Is(err, repository.ErrUnavailable) {
				t.Errorf("breaker open=%v: %s with bad input: %v, want ErrInvalid", open, call, err)
			}
		}
		after := l.Stats()
		if db.calls.Load() != calls {
			t.Errorf("breaker open=%v: bad input reached the primary", open)
		}
		if after.Unavailable != before.Unavailable || after.RejectedWhileOpen != before.RejectedWhileOpen {
			t.Errorf("breaker open=%v: bad input counted as unavailable (%d→%d) or rejected (%d→%d)", open,
				before.Unavailable, after.Unavailable, before.RejectedWhileOpen, after.RejectedWhileOpen)
		}
	}
}
