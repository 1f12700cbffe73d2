package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pgfallback/pgfallback/fallback"
)

// setProvenance tells the client where an answer came from (README, "Where
// did this answer come from?"). A client that only reads bodies gets the
// same JSON either way; one that cares can tell a fresh answer of the
// database from the cache's, how old the cache's is, whether a list may
// be missing entries, and whether it holds a write PostgreSQL does not
// have yet.
//
//	X-Served-From  primary | cache | queue (the state a queued write will give the entity)
//	Age            seconds since the cached entry was known current (RFC 9111)
//	Warning        110 - "Response is Stale": past the cache's TTL
//	X-As-Of        RFC 3339: the cache reflects every change committed before it
//	X-Partial      true: a list from the cache holds only what had been cached
//	X-Pending      true: the answer holds a queued write, not yet in PostgreSQL
func setProvenance(h http.Header, o fallback.Origin, now time.Time) {
	switch o.Source {
	case fallback.SourcePrimary:
		h.Set("X-Served-From", "primary")
	case fallback.SourceQueue:
		// Read-your-writes: the entity as a queued write will make it. It
		// is not PostgreSQL's yet, and may never be (a dead letter), so
		// it is neither "primary" nor an aged copy of it: no Age.
		h.Set("X-Served-From", "queue")
		h.Set("X-Pending", "true")
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
		if o.Pending {
			// A list from the cache while writes are queued: it includes
			// their pending changes.
			h.Set("X-Pending", "true")
		}
	}
}

// writeContext is the context of a write. A client that sends Prefer:
// respond-async (RFC 7240) says the write may be applied later: then a
// write PostgreSQL cannot take is queued (fallback.WithWriteQueue) rather
// than refused. Without it a write fails fast during an outage, as it
// always did: queueing is the client's choice, since only the client
// knows whether its write can wait (README, "Writes that can wait").
// prov tells the handler where the write went.
func writeContext(r *http.Request) (context.Context, *fallback.Provenance) {
	ctx := r.Context()
	if prefersAsync(r.Header) {
		ctx = fallback.WithWriteQueue(ctx)
	}
	return fallback.WithProvenance(ctx)
}

// prefersAsync reports whether h holds the preference respond-async. A
// Prefer field is a comma-separated list of preferences, each a token
// with an optional =value and ;parameters, and may be repeated (RFC 7240
// section 2); tokens are case-insensitive.
func prefersAsync(h http.Header) bool {
	for _, field := range h.Values("Prefer") {
		for _, pref := range strings.Split(field, ",") {
			token, _, _ := strings.Cut(pref, ";")
			token, _, _ = strings.Cut(token, "=")
			if strings.EqualFold(strings.TrimSpace(token), "respond-async") {
				return true
			}
		}
	}
	return false
}

// writeStatus is the status of a successful write: status when PostgreSQL
// took it; 202 Accepted when it was queued, since it is not applied yet
// and may still be refused at replay (a version conflict becomes a dead
// letter). A queued write also says where it went (X-Served-From: queue,
// X-Pending: true) and that the preference was honoured
// (Preference-Applied, RFC 7240 section 3), so a client can tell "done"
// from "will be done" by headers as well as by status.
func writeStatus(h http.Header, prov *fallback.Provenance, status int) int {
	o := prov.Origin()
	if o.Source != fallback.SourceQueue {
		return status
	}
	setProvenance(h, o, time.Now())
	h.Set("Preference-Applied", "respond-async")
	return http.StatusAccepted
}
