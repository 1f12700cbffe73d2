package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/internal/dsn"
	"github.com/pgfallback/pgfallback/repository"
)

// apiError is an error as the API shows it.
type apiError struct {
	status  int
	code    string // stable, for programs: not_found, invalid, unavailable...
	message string // for people; never the internal error's text
	field   string // the JSON field (or query parameter) at fault, when there is one
	retry   bool   // 503: send Retry-After
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

// errorBody is the JSON of every error response.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field,omitempty"`
	} `json:"error"`
}

// statusClientClosed is nginx's "client closed request": nobody reads it,
// but it keeps access logs from counting a client leaving as a server error.
const statusClientClosed = 499

// toAPIError maps a repository error to the API. The repository contract
// (README, "Errors") promises every error matches one sentinel, so the
// switch is on kinds only, never on messages. what names the entity for
// messages ("vendor \"acme\"").
func (s *server) toAPIError(r *http.Request, err error, what string) *apiError {
	var ae *apiError
	var ve *repository.ValidationError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &ve):
		field := jsonField(ve.Field)
		return &apiError{status: http.StatusUnprocessableEntity, code: "invalid", field: field,
			message: fmt.Sprintf("%s: %s", field, ve.Reason)}
	case errors.Is(err, repository.ErrInvalid):
		// ErrInvalid without a field: the database refused the value as
		// beyond one of its limits (SQLSTATE class 54).
		return &apiError{status: http.StatusUnprocessableEntity, code: "invalid", message: "the input exceeds a limit of the database"}
	case errors.Is(err, repository.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: "not_found", message: "no " + what}
	case errors.Is(err, repository.ErrAlreadyExists):
		return &apiError{status: http.StatusConflict, code: "already_exists", message: what + " already exists"}
	case errors.Is(err, repository.ErrConflict):
		return &apiError{status: http.StatusConflict, code: "version_conflict",
			message: "the version given is not the current one: somebody changed " + what + "; read it again, re-apply the change, retry"}
	case errors.Is(err, repository.ErrOutcomeUnknown):
		// Checked before ErrUnavailable: "maybe written" is the cautious
		// answer. 502: the database (our upstream) took the request and its
		// reply was lost — a gateway's failure, not a refusal (503 promises
		// nothing happened) and not a bug of this service (500).
		return &apiError{status: http.StatusBadGateway, code: "outcome_unknown",
			message: "the database did not confirm the write: it may or may not have been applied; read " + what + " before retrying"}
	case errors.Is(err, repository.ErrUnavailable), errors.Is(err, fallback.ErrClosed):
		// Never 404 during an outage: the cache not holding an entity is not
		// the database saying it does not exist.
		msg := "the database is unavailable and the cache holds no answer it can vouch for about " + what
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			msg = "the database is unavailable: " + what + " was not changed; retry later"
			switch class, kind := fallback.Classify(nil, err); {
			case class == fallback.ReadOnly && kind == fallback.FailDiskFull:
				// It answers reads: say what is wrong, not "down".
				msg = "the database takes no writes for now (out of disk space): " + what + " was not changed; retry later"
			case class == fallback.ReadOnly:
				msg = "the database takes no writes for now (read-only): " + what + " was not changed; retry later"
			case errors.Is(err, fallback.ErrWritesStalled):
				msg = "the database does not finish writes for now (its commits time out): " + what + " was not changed; retry later"
			}
			if why := notQueuedReason(err); why != "" {
				// Prefer: respond-async, and the layer said why it could
				// not queue the write: the client can tell "retry later"
				// from "this write cannot wait".
				msg = "the database is unavailable and the write could not be queued (" + why + "): " + what + " was not changed; retry later"
			}
		}
		return &apiError{status: http.StatusServiceUnavailable, code: "unavailable", retry: true, message: msg}
	case errors.Is(err, repository.ErrUnreadable):
		return &apiError{status: http.StatusInternalServerError, code: "unreadable",
			message: "the stored record of " + what + " cannot be read by this service"}
	case r.Context().Err() != nil:
		return &apiError{status: statusClientClosed, code: "canceled", message: "the request was canceled"}
	}
	return &apiError{status: http.StatusInternalServerError, code: "internal", message: "internal error"}
}

// notQueuedReason returns why the layer could not queue a write that asked
// for its queue (Prefer: respond-async), for the client; "" when err is not
// such a refusal. Only the layer's Reason is shown, never the failure
// behind it (a path, an OS error: for the log) nor the primary's failure,
// which names addresses; it is redacted all the same (dsn.RedactDetails).
func notQueuedReason(err error) string {
	var nq *fallback.NotQueuedError
	if !errors.As(err, &nq) {
		return ""
	}
	return dsn.RedactDetails(nq.Reason)
}

// fail writes err as the API shows it and logs what an operator needs:
// server-side failures with the internal error (redacted: a pgx error may
// quote the connection string), the rest at debug, since during an outage
// every request fails and the layer already logs the trip once.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error, what string) {
	e := s.toAPIError(r, err, what)
	level := slog.LevelDebug
	switch {
	case e.status == http.StatusBadGateway:
		level = slog.LevelWarn
	case e.status >= 500 && e.status != http.StatusServiceUnavailable:
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path,
		"status", e.status, "code", e.code, "err", dsn.Error(err))
	writeError(w, e, s.retryAfter.Seconds())
}

// writeError writes e; retryAfter (seconds) goes into Retry-After when e
// asks for it.
func writeError(w http.ResponseWriter, e *apiError, retryAfter float64) {
	if e.retry {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(retryAfter)))))
	}
	w.Header().Set("Cache-Control", "no-store")
	var b errorBody
	b.Error.Code, b.Error.Message, b.Error.Field = e.code, e.message, e.field
	writeJSON(w, e.status, b)
}

// jsonFields maps the domain's Go field names (ValidationError.Field) to
// the API's JSON names, so a client is told the field it sent.
var jsonFields = map[string]string{
	"ID": "id", "Name": "name", "Status": "status", "Version": "version",
	"ExtractorVersion": "extractor_version", "Metadata": "metadata", "CreatedBy": "created_by",
	"Type": "type", "Title": "title", "ParentID": "parent_id", "Depth": "depth",
	"BranchName": "branch_name", "CommitHash": "commit_hash", "Limit": "limit", "Offset": "offset",
}

func jsonField(goName string) string {
	if f, ok := jsonFields[goName]; ok {
		return f
	}
	return goName
}
