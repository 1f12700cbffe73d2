package pgstore

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// sessionFault is a setting of the pool's sessions that pgx cannot work
// with, and the DSN parameter that pins it (pgdsn.PinnedSettings, which
// Open and the listener's connection set themselves).
type sessionFault struct{ what, param string }

// sessionFaults says what is wrong for pgx, in query exec mode mode, with
// a session whose client_encoding, DateStyle and
// standard_conforming_strings are those given: a DBA's defaults for the
// server, the database or the role, which a pool given to New keeps.
func sessionFaults(mode pgx.QueryExecMode, encoding, dateStyle, conforming string) []sessionFault {
	var faults []sessionFault
	if encoding != "UTF8" {
		faults = append(faults, sessionFault{fmt.Sprintf("client_encoding %q: the server takes the UTF-8 that pgx sends "+
			"for that encoding, and stores it so (pgx reads it back as sent; every other client sees it garbled)", encoding),
			"client_encoding=UTF8"})
	}
	text := mode == pgx.QueryExecModeExec || mode == pgx.QueryExecModeSimpleProtocol
	if text && !strings.HasPrefix(dateStyle, "ISO") {
		faults = append(faults, sessionFault{fmt.Sprintf("DateStyle %q, which pgx cannot read in query exec mode %q: "+
			"every row read fails as unreadable, and the change feed cannot follow", dateStyle, mode), "DateStyle=ISO"})
	}
	if mode == pgx.QueryExecModeSimpleProtocol && conforming != "on" {
		faults = append(faults, sessionFault{"standard_conforming_strings off, without which pgx refuses every " +
			"simple-protocol query that has arguments", "standard_conforming_strings=on"})
	}
	return faults
}

// sayFaults logs the session's faults once, with the remedy.
func (s *Store) sayFaults(faults []sessionFault) {
	if len(faults) == 0 || s.sessionSaid.Swap(true) {
		return
	}
	whats, params := make([]string, len(faults)), make([]string, len(faults))
	for i, f := range faults {
		whats[i], params[i] = f.what, f.param
	}
	s.log.Error("pgfallback: the pool's sessions have " + strings.Join(whats, "; and ") + ". Add " +
		strings.Join(params, "&") + " to the DSN, or build the pool from pgstore.ParseConfig, which sets them (docs/poolers.md)")
}
