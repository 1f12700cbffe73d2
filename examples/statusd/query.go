package main

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

// Lists are paged: limit 1-1000, 100 when not given. The repositories
// read "no limit" from 0, but an API that answers a bare GET with every
// row is one large table away from an outage of its own.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// checkParams refuses query parameters the route does not know, so that a
// typo (?stauts=broken) is an error instead of an unfiltered list.
func checkParams(q url.Values, known ...string) error {
	for k := range q {
		if !slices.Contains(known, k) {
			return &apiError{status: http.StatusUnprocessableEntity, code: "invalid", field: k,
				message: fmt.Sprintf("unknown query parameter %q; this list takes %v", k, known)}
		}
	}
	return nil
}

// page reads limit and offset. A negative offset is left to the
// repository's validation, which names the field like any other.
func page(q url.Values) (limit, offset int, err error) {
	limit = defaultLimit
	if q.Has("limit") {
		limit, err = strconv.Atoi(q.Get("limit"))
		if err != nil || limit < 1 || limit > maxLimit {
			return 0, 0, invalidParam("limit", fmt.Sprintf("must be an integer from 1 to %d", maxLimit))
		}
	}
	if q.Has("offset") {
		if offset, err = strconv.Atoi(q.Get("offset")); err != nil {
			return 0, 0, invalidParam("offset", "must be an integer")
		}
	}
	return limit, offset, nil
}

func invalidParam(name, reason string) error {
	return &apiError{status: http.StatusUnprocessableEntity, code: "invalid", field: name, message: name + ": " + reason}
}
