package main

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/integration/pgtest"
)

// A vendor's life through the API against a real PostgreSQL: create, read,
// list, update with the version read, a stale update refused, delete.
func TestVendorCRUD(t *testing.T) {
	a := startApp(t, pgtest.NewDatabase(t))

	var created vendorJSON
	r := a.do(t, "POST", "/vendors", map[string]any{
		"name": "acme", "status": "operational", "extractor_version": "2.3.1",
		"metadata": map[string]any{"region": "eu"}, "created_by": "alice",
	}).expect(t, "create", http.StatusCreated, &created)
	if loc := r.header.Get("Location"); loc != "/vendors/acme" {
		t.Errorf("Location %q", loc)
	}
	if created.Version != 1 || created.ID == uuid.Nil || created.CreatedAt.IsZero() || created.Metadata["region"] != "eu" {
		t.Fatalf("created %+v", created)
	}

	var got vendorJSON
	r = a.do(t, "GET", "/vendors/acme", nil).expect(t, "get", http.StatusOK, &got)
	if got.ID != created.ID || got.Status != "operational" || got.ExtractorVersion != "2.3.1" || got.CreatedBy != "alice" {
		t.Fatalf("got %+v, created %+v", got, created)
	}
	if src := r.header.Get("X-Served-From"); src != "primary" {
		t.Errorf("X-Served-From %q while PostgreSQL answers", src)
	}
	if r.header.Get("Age") != "" || r.header.Get("Warning") != "" {
		t.Errorf("cache headers on an answer of PostgreSQL: %v", r.header)
	}

	a.do(t, "POST", "/vendors", map[string]any{"name": "beta", "status": "broken"}).expect(t, "create beta", http.StatusCreated, nil)
	var list listJSON[vendorJSON]
	r = a.do(t, "GET", "/vendors", nil).expect(t, "list", http.StatusOK, &list)
	if len(list.Items) != 2 || list.Items[0].Name != "acme" || list.Items[1].Name != "beta" || list.Partial || list.Limit != defaultLimit {
		t.Fatalf("list %+v", list)
	}
	// "partial" is in every list's body, false included (README, Routes).
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil || string(raw["partial"]) != "false" {
		t.Errorf("list body without \"partial\": false: %s", r.body)
	}
	a.do(t, "GET", "/vendors?status=broken&limit=1", nil).expect(t, "list broken", http.StatusOK, &list)
	if len(list.Items) != 1 || list.Items[0].Name != "beta" {
		t.Fatalf("list broken %+v", list)
	}

	// PUT what was read, changed: the version read goes back with it.
	got.Status = "broken"
	var updated vendorJSON
	a.do(t, "PUT", "/vendors/acme", got).expect(t, "update", http.StatusOK, &updated)
	if updated.Version != 2 || updated.Status != "broken" || updated.CreatedBy != "alice" || updated.ID != created.ID {
		t.Fatalf("updated %+v", updated)
	}
	// The same PUT again carries version 1, no longer current.
	r = a.do(t, "PUT", "/vendors/acme", got).expect(t, "stale update", http.StatusConflict, nil)
	if code, _, _ := r.apiErr(t); code != "version_conflict" {
		t.Errorf("stale update: code %q", code)
	}

	a.do(t, "DELETE", "/vendors/acme", nil).expect(t, "delete", http.StatusNoContent, nil)
	a.do(t, "GET", "/vendors/acme", nil).expect(t, "get deleted", http.StatusNotFound, nil)
	a.do(t, "DELETE", "/vendors/acme", nil).expect(t, "delete again", http.StatusNotFound, nil)
}

// A work item tree: create a root and a child, filter, update, soft-delete
// (the child goes with its parent, still readable by id, hidden from lists
// unless include_deleted), and a client-chosen id makes a repeated create
// a 409 instead of a duplicate.
func TestWorkItemCRUD(t *testing.T) {
	a := startApp(t, pgtest.NewDatabase(t))

	var root, child workItemJSON
	r := a.do(t, "POST", "/work-items", map[string]any{"type": "project", "title": "Ship statusd", "status": "active"}).
		expect(t, "create root", http.StatusCreated, &root)
	if r.header.Get("Location") != "/work-items/"+root.ID.String() || root.Version != 1 || root.ParentID != nil || root.Depth != 0 {
		t.Fatalf("root %+v, Location %q", root, r.header.Get("Location"))
	}
	a.do(t, "POST", "/work-items", map[string]any{
		"type": "task", "title": "Write the tests", "status": "active", "parent_id": root.ID.String(),
		"branch_name": "statusd", "commit_hash": strings.Repeat("ab", 20), "metadata": map[string]any{"points": 3},
	}).expect(t, "create child", http.StatusCreated, &child)
	if child.ParentID == nil || *child.ParentID != root.ID || child.Depth != 1 || child.Path != root.ID.String() {
		t.Fatalf("child %+v", child)
	}

	var list listJSON[workItemJSON]
	a.do(t, "GET", "/work-items?parent="+root.ID.String(), nil).expect(t, "children", http.StatusOK, &list)
	if len(list.Items) != 1 || list.Items[0].ID != child.ID {
		t.Fatalf("children %+v", list)
	}
	a.do(t, "GET", "/work-items?type=project&status=active", nil).expect(t, "projects", http.StatusOK, &list)
	if len(list.Items) != 1 || list.Items[0].ID != root.ID {
		t.Fatalf("projects %+v", list)
	}
	a.do(t, "GET", "/work-items?limit=1&offset=1", nil).expect(t, "second page", http.StatusOK, &list)
	if len(list.Items) != 1 || list.Items[0].ID != child.ID {
		t.Fatalf("second page %+v", list)
	}

	child.Status = "completed"
	var updated workItemJSON
	a.do(t, "PUT", "/work-items/"+child.ID.String(), child).expect(t, "update", http.StatusOK, &updated)
	if updated.Version != 2 || updated.Status != "completed" || updated.Metadata["points"] != float64(3) {
		t.Fatalf("updated %+v", updated)
	}
	a.do(t, "PUT", "/work-items/"+child.ID.String(), child).expect(t, "stale update", http.StatusConflict, nil)

	a.do(t, "DELETE", "/work-items/"+root.ID.String(), nil).expect(t, "delete root", http.StatusNoContent, nil)
	a.do(t, "DELETE", "/work-items/"+root.ID.String(), nil).expect(t, "delete again (a no-op)", http.StatusNoContent, nil)
	var gone workItemJSON
	a.do(t, "GET", "/work-items/"+child.ID.String(), nil).expect(t, "get deleted child", http.StatusOK, &gone)
	if gone.DeletedAt == nil {
		t.Fatalf("child of a deleted root: %+v", gone)
	}
	a.do(t, "GET", "/work-items", nil).expect(t, "live items", http.StatusOK, &list)
	if len(list.Items) != 0 {
		t.Fatalf("deleted items listed: %+v", list)
	}
	a.do(t, "GET", "/work-items?include_deleted=true", nil).expect(t, "all items", http.StatusOK, &list)
	if len(list.Items) != 2 {
		t.Fatalf("include_deleted: %+v", list)
	}

	id := uuid.NewString()
	item := map[string]any{"id": id, "type": "research", "title": "Idempotent create", "status": "blocked"}
	a.do(t, "POST", "/work-items", item).expect(t, "create with an id", http.StatusCreated, nil)
	r = a.do(t, "POST", "/work-items", item).expect(t, "the same create again", http.StatusConflict, nil)
	if code, _, _ := r.apiErr(t); code != "already_exists" {
		t.Errorf("repeated create: code %q", code)
	}
}

// Every client error the API documents, against a real PostgreSQL: the
// status, the error code, and the field named in the body.
func TestStatusCodes(t *testing.T) {
	a := startApp(t, pgtest.NewDatabase(t))
	a.do(t, "POST", "/vendors", map[string]any{"name": "acme", "status": "operational"}).expect(t, "seed", http.StatusCreated, nil)
	var item workItemJSON
	a.do(t, "POST", "/work-items", map[string]any{"type": "task", "title": "t", "status": "active"}).
		expect(t, "seed item", http.StatusCreated, &item)
	itemPath := "/work-items/" + item.ID.String()
	missing := uuid.NewString()

	cases := []struct {
		method, path string
		body         any
		status       int
		code, field  string
	}{
		{"GET", "/vendors/nope", nil, 404, "not_found", ""},
		{"PUT", "/vendors/nope", map[string]any{"status": "broken", "version": 1}, 404, "not_found", ""},
		{"DELETE", "/vendors/nope", nil, 404, "not_found", ""},
		{"GET", "/work-items/" + missing, nil, 404, "not_found", ""},
		{"DELETE", "/work-items/" + missing, nil, 404, "not_found", ""},

		{"POST", "/vendors", map[string]any{"name": "acme", "status": "operational"}, 409, "already_exists", ""},
		{"PUT", "/vendors/acme", map[string]any{"status": "broken", "version": 7}, 409, "version_conflict", ""},
		{"PUT", itemPath, map[string]any{"type": "task", "title": "t", "status": "active", "version": 9}, 409, "version_conflict", ""},

		// The domain's rules, each naming the JSON field.
		{"GET", "/vendors/Not%20A%20Name", nil, 422, "invalid", "name"},
		{"POST", "/vendors", map[string]any{"name": "x", "status": "sleeping"}, 422, "invalid", "status"},
		{"POST", "/vendors", map[string]any{"name": "x", "status": "operational", "extractor_version": "1.2"}, 422, "invalid", "extractor_version"},
		{"PUT", "/vendors/acme", map[string]any{"status": "broken"}, 422, "invalid", "version"},
		{"PUT", "/vendors/acme", map[string]any{"name": "other", "status": "broken", "version": 1}, 422, "invalid", "name"},
		{"POST", "/work-items", map[string]any{"type": "epic", "title": "t", "status": "active"}, 422, "invalid", "type"},
		{"POST", "/work-items", map[string]any{"type": "task", "title": " ", "status": "active"}, 422, "invalid", "title"},
		{"POST", "/work-items", map[string]any{"type": "task", "title": "t", "status": "active", "parent_id": missing}, 422, "invalid", "parent_id"},
		{"POST", "/work-items", map[string]any{"type": "task", "title": "t", "status": "active", "parent_id": "42"}, 422, "invalid", "parent_id"},
		{"POST", "/work-items", map[string]any{"type": "task", "title": "t", "status": "active", "commit_hash": "HEAD"}, 422, "invalid", "commit_hash"},
		{"PUT", itemPath, map[string]any{"id": missing, "type": "task", "title": "t", "status": "active", "version": 1}, 422, "invalid", "id"},

		// Bad ids and query parameters.
		{"GET", "/work-items/not-a-uuid", nil, 422, "invalid", "id"},
		{"PUT", "/work-items/not-a-uuid", map[string]any{}, 422, "invalid", "id"},
		{"DELETE", "/work-items/not-a-uuid", nil, 422, "invalid", "id"},
		{"GET", "/work-items?parent=zzz", nil, 422, "invalid", "parent"},
		{"GET", "/work-items?status=done", nil, 422, "invalid", "status"},
		{"GET", "/work-items?include_deleted=maybe", nil, 422, "invalid", "include_deleted"},
		{"GET", "/work-items?limit=0", nil, 422, "invalid", "limit"},
		{"GET", "/work-items?limit=" + strconv.Itoa(maxLimit+1), nil, 422, "invalid", "limit"},
		{"GET", "/vendors?offset=-1", nil, 422, "invalid", "offset"},
		{"GET", "/vendors?stauts=broken", nil, 422, "invalid", "stauts"},

		// Bodies that are not the resource: 400; a value of the wrong type: 422.
		{"POST", "/vendors", `{"name": "x",`, 400, "malformed_json", ""},
		{"POST", "/vendors", ``, 400, "malformed_json", ""},
		{"POST", "/vendors", `[1, 2]`, 400, "malformed_json", ""},
		{"POST", "/vendors", `{"name": "x", "status": "operational"} {}`, 400, "malformed_json", ""},
		{"POST", "/vendors", `{"name": "x", "status": "operational", "extractorVersion": "1.0.0"}`, 400, "unknown_field", "extractorVersion"},
		{"POST", "/vendors", `{"name": 5, "status": "operational"}`, 422, "invalid", "name"},
		{"PUT", "/vendors/acme", `{"status": "broken", "version": "1"}`, 422, "invalid", "version"},
		{"POST", "/vendors", `{"name": "x", "status": "operational", "metadata": "` + strings.Repeat("x", maxBody) + `"}`, 413, "body_too_large", ""},
	}
	for _, c := range cases {
		r := a.do(t, c.method, c.path, c.body)
		what := c.method + " " + c.path
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d; body %s", what, r.status, c.status, r.body)
			continue
		}
		code, field, msg := r.apiErr(t)
		if code != c.code || field != c.field || msg == "" {
			t.Errorf("%s: code %q field %q message %q; want code %q field %q", what, code, field, msg, c.code, c.field)
		}
	}

	// Routing: a method a route does not have, and no route at all.
	if r := a.do(t, "PATCH", "/vendors/acme", `{}`); r.status != http.StatusMethodNotAllowed || !strings.Contains(r.header.Get("Allow"), "PUT") {
		t.Errorf("PATCH: %d, Allow %q", r.status, r.header.Get("Allow"))
	}
	a.do(t, "GET", "/nothing-here", nil).expect(t, "unknown path", http.StatusNotFound, nil)
}
