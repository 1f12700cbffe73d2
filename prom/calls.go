package prom

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/repository"
)

// callSeries finds the series of pgfallback_calls_seconds for a call
// without HistogramVec.WithLabelValues on every call, which hashes the
// five label values and takes the vector's read lock — a cache line every
// core writes to. Every label is one of a few constants, so the series are
// kept in an array indexed by them, filled on first use (series are never
// deleted, so a pointer once stored stays right). Values outside the
// constants, which fallback may add, take the vector's path.
type callSeries struct {
	vec    *prometheus.HistogramVec
	series [len(ops) * len(entities) * len(sources) * len(outcomes) * 2]atomic.Pointer[prometheus.Observer]
}

var (
	ops      = [...]fallback.Op{fallback.OpGet, fallback.OpList, fallback.OpCreate, fallback.OpUpdate, fallback.OpDelete}
	entities = [...]repository.Entity{repository.EntityVendor, repository.EntityWorkItem}
	sources  = [...]fallback.Source{fallback.SourceNone, fallback.SourcePrimary, fallback.SourceCache, fallback.SourceQueue}
	outcomes = [...]fallback.Outcome{fallback.OutcomeOK, fallback.OutcomeNotFound, fallback.OutcomeInvalid,
		fallback.OutcomeConflict, fallback.OutcomeAlreadyExists, fallback.OutcomeUnreadable, fallback.OutcomeUnavailable,
		fallback.OutcomeOutcomeUnknown, fallback.OutcomeCanceled, fallback.OutcomeClosed, fallback.OutcomeError}
)

func indexOf[T comparable](values []T, v T) int {
	for i, x := range values {
		if x == v {
			return i
		}
	}
	return -1
}

func (s *callSeries) get(c *fallback.Call) prometheus.Observer {
	op, e, src, out := indexOf(ops[:], c.Op), indexOf(entities[:], c.Entity),
		indexOf(sources[:], c.Origin.Source), indexOf(outcomes[:], c.Outcome)
	if op < 0 || e < 0 || src < 0 || out < 0 {
		return s.lookup(c)
	}
	slow := 0
	if c.Origin.Slow {
		slow = 1
	}
	slot := &s.series[(((op*len(entities)+e)*len(sources)+src)*len(outcomes)+out)*2+slow]
	if p := slot.Load(); p != nil {
		return *p
	}
	h := s.lookup(c)
	slot.Store(&h)
	return h
}

func (s *callSeries) lookup(c *fallback.Call) prometheus.Observer {
	return s.vec.WithLabelValues(string(c.Op), string(c.Entity), c.Origin.Source.String(), string(c.Outcome),
		slowLabel(c.Origin.Slow))
}

// slowLabel is the slow label of pgfallback_calls_seconds: "true" for an
// answer from the cache because PostgreSQL was slower than
// Config.SoftTimeout (fallback.Origin.Slow), "false" for every other call.
func slowLabel(slow bool) string {
	if slow {
		return "true"
	}
	return "false"
}
