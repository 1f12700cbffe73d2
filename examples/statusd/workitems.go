package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/repository"
)

// workItemJSON is a work item as the API shows it.
type workItemJSON struct {
	ID         uuid.UUID      `json:"id"`
	Version    int64          `json:"version"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Status     string         `json:"status"`
	ParentID   *uuid.UUID     `json:"parent_id"` // null for a root
	Path       string         `json:"path"`      // ancestor ids from the root, '/'-separated
	Depth      int            `json:"depth"`
	BranchName string         `json:"branch_name"`
	CommitHash string         `json:"commit_hash"`
	Metadata   map[string]any `json:"metadata"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
	DeletedAt  *time.Time     `json:"deleted_at"` // set once soft-deleted
	CreatedBy  string         `json:"created_by"`
}

func toWorkItemJSON(w repository.WorkItem) workItemJSON {
	return workItemJSON{ID: w.ID, Version: w.Version, Type: string(w.Type), Title: w.Title, Status: string(w.Status),
		ParentID: w.ParentID, Path: w.Path, Depth: w.Depth, BranchName: w.BranchName, CommitHash: w.CommitHash,
		Metadata: orEmpty(w.Metadata), CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, DeletedAt: w.DeletedAt,
		CreatedBy: w.CreatedBy}
}

// workItemInput is the body of POST /work-items and PUT /work-items/{id}.
// Ids are strings here, parsed by hand, so that a malformed one is a 422
// naming its field rather than uuid's bare message. Read-only fields are
// accepted and ignored, so that what was read can be PUT back.
type workItemInput struct {
	// ID, on POST: optional. A client that chooses the id makes a retried
	// create safe: after a 502 (outcome unknown) the retry is either
	// created or a 409 saying the first one was.
	ID         string         `json:"id"`
	Version    int64          `json:"version"` // PUT: the version read; ignored by POST
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Status     string         `json:"status"`
	ParentID   *string        `json:"parent_id"`
	BranchName string         `json:"branch_name"`
	CommitHash string         `json:"commit_hash"`
	Metadata   map[string]any `json:"metadata"`
	CreatedBy  string         `json:"created_by"` // POST only: an update keeps the stored one

	Path      json.RawMessage `json:"path"`
	Depth     json.RawMessage `json:"depth"`
	CreatedAt json.RawMessage `json:"created_at"`
	UpdatedAt json.RawMessage `json:"updated_at"`
	DeletedAt json.RawMessage `json:"deleted_at"`
}

func (in workItemInput) workItem() (repository.WorkItem, error) {
	w := repository.WorkItem{Version: in.Version, Type: repository.WorkItemType(in.Type), Title: in.Title,
		Status: repository.WorkItemStatus(in.Status), BranchName: in.BranchName, CommitHash: in.CommitHash,
		Metadata: in.Metadata, CreatedBy: in.CreatedBy}
	if in.ID != "" {
		id, err := parseID("id", in.ID)
		if err != nil {
			return w, err
		}
		w.ID = id
	}
	if in.ParentID != nil {
		p, err := parseID("parent_id", *in.ParentID)
		if err != nil {
			return w, err
		}
		w.ParentID = &p
	}
	return w, nil
}

func parseID(field, s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, invalidParam(field, "must be a UUID such as 0b7a6cbe-1f6d-4b1e-9a53-3f1e8d8f6c2a")
	}
	return id, nil
}

func workItemWhat(id string) string { return "work item " + strconv.Quote(id) }

func (s *server) getWorkItem(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	id, err := parseID("id", raw)
	if err != nil {
		s.fail(w, r, err, workItemWhat(raw))
		return
	}
	ctx, prov := fallback.WithProvenance(r.Context())
	item, err := s.workItems.Get(ctx, id)
	if err != nil {
		s.fail(w, r, err, workItemWhat(raw))
		return
	}
	setProvenance(w.Header(), prov.Origin(), time.Now())
	writeJSON(w, http.StatusOK, toWorkItemJSON(item))
}

// listWorkItems: ?type= &status= &parent=<id> (direct children) &include_deleted=true &limit= &offset=.
func (s *server) listWorkItems(w http.ResponseWriter, r *http.Request) {
	f, err := workItemFilter(r)
	if err != nil {
		s.fail(w, r, err, "work items")
		return
	}
	ctx, prov := fallback.WithProvenance(r.Context())
	items, err := s.workItems.List(ctx, f)
	if err != nil {
		s.fail(w, r, err, "work items")
		return
	}
	o := prov.Origin()
	setProvenance(w.Header(), o, time.Now())
	out := listJSON[workItemJSON]{Items: make([]workItemJSON, 0, len(items)), Limit: f.Limit, Offset: f.Offset, Partial: o.Partial}
	for _, it := range items {
		out.Items = append(out.Items, toWorkItemJSON(it))
	}
	writeJSON(w, http.StatusOK, out)
}

// workItemFilter reads the query. Type and status are passed as given: the
// repository validates them and names the field, whatever the database's
// state.
func workItemFilter(r *http.Request) (repository.WorkItemFilter, error) {
	q := r.URL.Query()
	var f repository.WorkItemFilter
	if err := checkParams(q, "type", "status", "parent", "include_deleted", "limit", "offset"); err != nil {
		return f, err
	}
	var err error
	if f.Limit, f.Offset, err = page(q); err != nil {
		return f, err
	}
	if q.Has("type") {
		t := repository.WorkItemType(q.Get("type"))
		f.Type = &t
	}
	if q.Has("status") {
		st := repository.WorkItemStatus(q.Get("status"))
		f.Status = &st
	}
	if q.Has("parent") {
		p, err := parseID("parent", q.Get("parent"))
		if err != nil {
			return f, err
		}
		f.ParentID = &p
	}
	if q.Has("include_deleted") {
		if f.IncludeDeleted, err = strconv.ParseBool(q.Get("include_deleted")); err != nil {
			return f, invalidParam("include_deleted", "must be true or false")
		}
	}
	return f, nil
}

func (s *server) createWorkItem(w http.ResponseWriter, r *http.Request) {
	var in workItemInput
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err, "the work item")
		return
	}
	item, err := in.workItem()
	if err != nil {
		s.fail(w, r, err, "the work item")
		return
	}
	what := "the work item"
	if item.ID != uuid.Nil {
		what = workItemWhat(item.ID.String())
	}
	ctx, prov := writeContext(r)
	item, err = s.workItems.Create(ctx, item)
	if err != nil {
		s.fail(w, r, err, what)
		return
	}
	w.Header().Set("Location", "/work-items/"+item.ID.String())
	writeJSON(w, writeStatus(w.Header(), prov, http.StatusCreated), toWorkItemJSON(item))
}

// updateWorkItem replaces the item's fields with the body's (PUT: a field
// left out becomes empty), provided the body's version is current. A new
// parent_id moves the whole subtree.
func (s *server) updateWorkItem(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	id, err := parseID("id", raw)
	if err != nil {
		s.fail(w, r, err, workItemWhat(raw))
		return
	}
	var in workItemInput
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err, workItemWhat(raw))
		return
	}
	item, err := in.workItem()
	if err == nil && item.ID != uuid.Nil && item.ID != id {
		err = invalidParam("id", "must be the id in the path")
	}
	if err != nil {
		s.fail(w, r, err, workItemWhat(raw))
		return
	}
	item.ID = id
	ctx, prov := writeContext(r)
	item, err = s.workItems.Update(ctx, item)
	if err != nil {
		s.fail(w, r, err, workItemWhat(raw))
		return
	}
	writeJSON(w, writeStatus(w.Header(), prov, http.StatusOK), toWorkItemJSON(item))
}

// deleteWorkItem soft-deletes the item and its live descendants. Deleting
// a deleted item is a no-op, so a retried DELETE is safe.
func (s *server) deleteWorkItem(w http.ResponseWriter, r *http.Request) {
	raw := r.PathValue("id")
	ctx, prov := writeContext(r)
	id, err := parseID("id", raw)
	if err == nil {
		err = s.workItems.Delete(ctx, id)
	}
	if err != nil {
		s.fail(w, r, err, workItemWhat(raw))
		return
	}
	w.WriteHeader(writeStatus(w.Header(), prov, http.StatusNoContent))
}
