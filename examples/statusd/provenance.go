package main

import (
	"net/http"
	"strconv"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
)

// setProvenance tells the client where an answer came from (README, "Where
// did this answer come from?"). A client that only reads bodies gets the
// same JSON either way; one that cares can tell a fresh answer of the
// database from the cache's, how old the cache's is, and whether a list
// may be missing entries.
//
//	X-Served-From  primary | cache
//	Age            seconds since the cached entry was known current (RFC 9111)
//	Warning        110 - "Response is Stale": past the cache's TTL
//	X-As-Of        RFC 3339: the cache reflects every change committed before it
//	X-Partial      true: a list from the cache holds only what had been cached
func setProvenance(h http.Header, o fallback.Origin, now time.Time) {
	switch o.Source {
	case fallback.SourcePrimary:
		h.Set("X-Served-From", "primary")
	case fallback.SourceCache:
		h.Set("X-Served-From", "cache")
		age, known := o.Age, !o.CachedAt.IsZero()
		if !known && !o.AsOf.IsZero() {
			// A List has no entry age; with the change feed's AsOf the whole
			// answer is known current as of then.
			age, known = now.Sub(o.AsOf), true
		}
		if known {
			h.Set("Age", strconv.Itoa(int(max(age, 0).Seconds())))
		}
		if o.Stale {
			h.Set("Warning", `110 - "Response is Stale"`)
		}
		if !o.AsOf.IsZero() {
			h.Set("X-As-Of", o.AsOf.UTC().Format(time.RFC3339))
		}
		if o.Partial {
			h.Set("X-Partial", "true")
		}
	}
}
