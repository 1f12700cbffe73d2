package main

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

// server holds what the handlers need. It depends on the repository
// interfaces only: the handlers do not know that a circuit breaker and a
// SQLite cache stand between them and PostgreSQL (main wires that), and a
// test can hand them fakes.
type server struct {
	vendors   repository.VendorRepository
	workItems repository.WorkItemRepository
	log       *slog.Logger
	// retryAfter is what a 503 tells the client to wait: about the time
	// until the layer next probes PostgreSQL, since nothing changes before.
	retryAfter time.Duration
}

// routes returns the service's handler. health and metrics come from main's
// wiring: they need the layer itself, not the repositories.
func (s *server) routes(health, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /vendors", s.listVendors)
	mux.HandleFunc("POST /vendors", s.createVendor)
	mux.HandleFunc("GET /vendors/{name}", s.getVendor)
	mux.HandleFunc("PUT /vendors/{name}", s.updateVendor)
	mux.HandleFunc("DELETE /vendors/{name}", s.deleteVendor)

	mux.HandleFunc("GET /work-items", s.listWorkItems)
	mux.HandleFunc("POST /work-items", s.createWorkItem)
	mux.HandleFunc("GET /work-items/{id}", s.getWorkItem)
	mux.HandleFunc("PUT /work-items/{id}", s.updateWorkItem)
	mux.HandleFunc("DELETE /work-items/{id}", s.deleteWorkItem)

	// GET patterns also match HEAD.
	mux.Handle("GET /healthz", health)
	mux.Handle("GET /metrics", metrics)
	return mux
}
