package repository

import (
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
)

// WorkItemType classifies a work item.
type WorkItemType string

const (
	WorkItemProject  WorkItemType = "project"
	WorkItemSession  WorkItemType = "session"
	WorkItemTask     WorkItemType = "task"
	WorkItemResearch WorkItemType = "research"
)

// Valid reports whether t is one of the defined types.
func (t WorkItemType) Valid() bool {
	switch t {
	case WorkItemProject, WorkItemSession, WorkItemTask, WorkItemResearch:
		return true
	}
	return false
}

// WorkItemStatus is the progress state of a work item.
type WorkItemStatus string

const (
	WorkItemActive    WorkItemStatus = "active"
	WorkItemCompleted WorkItemStatus = "completed"
	WorkItemBlocked   WorkItemStatus = "blocked"
)

// Valid reports whether s is one of the defined statuses.
func (s WorkItemStatus) Valid() bool {
	return s == WorkItemActive || s == WorkItemCompleted || s == WorkItemBlocked
}

// WorkItem is a node in a hierarchy of projects, sessions, tasks and research.
type WorkItem struct {
	ID         uuid.UUID // assigned on Create when zero
	Version    int64     // optimistic-lock counter: 1 on create, +1 on every update
	Type       WorkItemType
	Title      string // 1-200 characters
	Status     WorkItemStatus
	ParentID   *uuid.UUID // nil for a root; the parent must exist and be live
	Path       string     // ancestor ids from the root, '/'-separated; maintained by the store
	Depth      int        // number of ancestors, 0-5; maintained by the store
	BranchName string     // at most 255 characters
	CommitHash string     // 40 hex characters when set
	Metadata   map[string]any
	CreatedAt  time.Time
	UpdatedAt  time.Time
	DeletedAt  *time.Time // set by Delete (soft delete)
	CreatedBy  string     // free text, at most 100 characters
}

// Limits shared by validation and by the database schema's CHECK constraints.
const (
	MaxTitleLen      = 200
	MaxBranchNameLen = 255
	MaxDepth         = 5
)

var commitHashRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Validate checks every field a caller sets. Path and Depth are computed by
// the store from the parent, so only their range is checked here.
func (w WorkItem) Validate() error {
	if !w.Type.Valid() {
		return Invalid("Type", "%q is not one of project, session, task, research", w.Type)
	}
	if err := validateText("Title", w.Title, 1, MaxTitleLen); err != nil {
		return err
	}
	if strings.TrimSpace(w.Title) == "" {
		return Invalid("Title", "must not be blank")
	}
	if !w.Status.Valid() {
		return Invalid("Status", "%q is not one of active, completed, blocked", w.Status)
	}
	if w.Version < 0 {
		return Invalid("Version", "must not be negative, got %d", w.Version)
	}
	if w.ParentID != nil {
		if *w.ParentID == uuid.Nil {
			return Invalid("ParentID", "must be nil or a non-zero id")
		}
		if w.ID != uuid.Nil && *w.ParentID == w.ID {
			return Invalid("ParentID", "an item cannot be its own parent")
		}
	}
	if w.Depth < 0 || w.Depth > MaxDepth {
		return Invalid("Depth", "must be 0-%d, got %d", MaxDepth, w.Depth)
	}
	if err := validateText("BranchName", w.BranchName, 0, MaxBranchNameLen); err != nil {
		return err
	}
	if w.CommitHash != "" && !commitHashRE.MatchString(w.CommitHash) {
		return Invalid("CommitHash", "%q must be 40 lowercase hex characters", w.CommitHash)
	}
	if err := validateText("CreatedBy", w.CreatedBy, 0, MaxCreatedByLen); err != nil {
		return err
	}
	return validateMetadata(w.Metadata)
}

// ValidateUpdate checks w as Update takes it: Validate, and a Version
// that is the one the caller read (at least 1).
func (w WorkItem) ValidateUpdate() error {
	if err := w.Validate(); err != nil {
		return err
	}
	return validateReadVersion(w.Version)
}

// ChildPath is the Path that the children of w carry: w's own path extended
// by w's id.
func (w WorkItem) ChildPath() string {
	if w.Path == "" {
		return w.ID.String()
	}
	return w.Path + "/" + w.ID.String()
}
