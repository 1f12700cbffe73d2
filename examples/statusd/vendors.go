package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/fallback"
	"github.com/pgfallback/pgfallback/repository"
)

// vendorJSON is a vendor as the API shows it.
type vendorJSON struct {
	ID               uuid.UUID      `json:"id"`
	Name             string         `json:"name"`
	Status           string         `json:"status"`
	Version          int64          `json:"version"`
	ExtractorVersion string         `json:"extractor_version"`
	Metadata         map[string]any `json:"metadata"`
	CreatedAt        time.Time      `json:"created_at"`
	UpdatedAt        time.Time      `json:"updated_at"`
	CreatedBy        string         `json:"created_by"`
}

func toVendorJSON(v repository.Vendor) vendorJSON {
	return vendorJSON{ID: v.ID, Name: v.Name, Status: string(v.Status), Version: v.Version,
		ExtractorVersion: v.ExtractorVersion, Metadata: orEmpty(v.Metadata), CreatedAt: v.CreatedAt,
		UpdatedAt: v.UpdatedAt, CreatedBy: v.CreatedBy}
}

// vendorInput is the body of POST /vendors and PUT /vendors/{name}. The
// read-only fields are accepted and ignored, so that a client can PUT back
// what it read (with its changes); they are json.RawMessage so that their
// type does not matter either.
type vendorInput struct {
	Name             string         `json:"name"`
	Status           string         `json:"status"`
	Version          int64          `json:"version"` // PUT: the version read; ignored by POST
	ExtractorVersion string         `json:"extractor_version"`
	Metadata         map[string]any `json:"metadata"`
	CreatedBy        string         `json:"created_by"` // POST only: an update keeps the stored one

	ID        json.RawMessage `json:"id"`
	CreatedAt json.RawMessage `json:"created_at"`
	UpdatedAt json.RawMessage `json:"updated_at"`
}

func (in vendorInput) vendor() repository.Vendor {
	return repository.Vendor{Name: in.Name, Status: repository.VendorStatus(in.Status), Version: in.Version,
		ExtractorVersion: in.ExtractorVersion, Metadata: in.Metadata, CreatedBy: in.CreatedBy}
}

// listJSON is the body of a list. Partial repeats X-Partial for clients that
// read bodies only: a list from the cache during an outage holds what had
// been cached, not necessarily every match. It is always present, false
// included, so a client never has to tell "complete" from "not said".
type listJSON[T any] struct {
	Items   []T  `json:"items"`
	Limit   int  `json:"limit"`
	Offset  int  `json:"offset"`
	Partial bool `json:"partial"`
}

func (s *server) getVendor(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, prov := fallback.WithProvenance(r.Context())
	v, err := s.vendors.Get(ctx, name)
	if err != nil {
		s.fail(w, r, err, vendorWhat(name))
		return
	}
	setProvenance(w.Header(), prov.Origin(), time.Now())
	writeJSON(w, http.StatusOK, toVendorJSON(v))
}

func (s *server) listVendors(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f repository.VendorFilter
	err := checkParams(q, "status", "limit", "offset")
	if err == nil {
		f.Limit, f.Offset, err = page(q)
	}
	if err == nil && q.Has("status") {
		st := repository.VendorStatus(q.Get("status"))
		f.Status = &st
	}
	if err != nil {
		s.fail(w, r, err, "vendors")
		return
	}
	ctx, prov := fallback.WithProvenance(r.Context())
	vs, err := s.vendors.List(ctx, f)
	if err != nil {
		s.fail(w, r, err, "vendors")
		return
	}
	o := prov.Origin()
	setProvenance(w.Header(), o, time.Now())
	out := listJSON[vendorJSON]{Items: make([]vendorJSON, 0, len(vs)), Limit: f.Limit, Offset: f.Offset, Partial: o.Partial}
	for _, v := range vs {
		out.Items = append(out.Items, toVendorJSON(v))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) createVendor(w http.ResponseWriter, r *http.Request) {
	var in vendorInput
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err, "the vendor")
		return
	}
	ctx, prov := writeContext(r)
	v, err := s.vendors.Create(ctx, in.vendor())
	if err != nil {
		s.fail(w, r, err, vendorWhat(in.Name))
		return
	}
	w.Header().Set("Location", "/vendors/"+url.PathEscape(v.Name))
	writeJSON(w, writeStatus(w.Header(), prov, http.StatusCreated), toVendorJSON(v))
}

// updateVendor replaces the vendor's fields with the body's (PUT: a field
// left out becomes empty), provided the body's version is current.
func (s *server) updateVendor(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var in vendorInput
	if err := decodeJSON(w, r, &in); err != nil {
		s.fail(w, r, err, vendorWhat(name))
		return
	}
	if in.Name != "" && in.Name != name {
		s.fail(w, r, &apiError{status: http.StatusUnprocessableEntity, code: "invalid", field: "name",
			message: "name: must be the name in the path: a vendor cannot be renamed"}, vendorWhat(name))
		return
	}
	in.Name = name
	ctx, prov := writeContext(r)
	v, err := s.vendors.Update(ctx, in.vendor())
	if err != nil {
		s.fail(w, r, err, vendorWhat(name))
		return
	}
	writeJSON(w, writeStatus(w.Header(), prov, http.StatusOK), toVendorJSON(v))
}

func (s *server) deleteVendor(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	ctx, prov := writeContext(r)
	if err := s.vendors.Delete(ctx, name); err != nil {
		s.fail(w, r, err, vendorWhat(name))
		return
	}
	w.WriteHeader(writeStatus(w.Header(), prov, http.StatusNoContent))
}

func vendorWhat(name string) string { return fmt.Sprintf("vendor %q", name) }

// orEmpty shows absent metadata as {}, so clients need not handle null.
func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
