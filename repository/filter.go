package repository

import "github.com/google/uuid"

// VendorFilter selects vendors for List. Results are ordered by Name.
// The zero value lists every vendor.
type VendorFilter struct {
	Status *VendorStatus // nil: any status
	Limit  int           // 0: no limit
	Offset int
}

// Validate checks the filter's fields.
func (f VendorFilter) Validate() error {
	if f.Status != nil && !f.Status.Valid() {
		return Invalid("Status", "%q is not a vendor status", *f.Status)
	}
	return validatePage(f.Limit, f.Offset)
}

// WorkItemFilter selects work items for List. Results are ordered by
// CreatedAt, then ID. The zero value lists every live (not deleted) item.
type WorkItemFilter struct {
	Type           *WorkItemType
	Status         *WorkItemStatus
	ParentID       *uuid.UUID // only the direct children of this item
	IncludeDeleted bool
	Limit          int // 0: no limit
	Offset         int
}

// Validate checks the filter's fields.
func (f WorkItemFilter) Validate() error {
	if f.Type != nil && !f.Type.Valid() {
		return Invalid("Type", "%q is not a work item type", *f.Type)
	}
	if f.Status != nil && !f.Status.Valid() {
		return Invalid("Status", "%q is not a work item status", *f.Status)
	}
	return validatePage(f.Limit, f.Offset)
}

func validatePage(limit, offset int) error {
	if limit < 0 {
		return Invalid("Limit", "must not be negative, got %d", limit)
	}
	if offset < 0 {
		return Invalid("Offset", "must not be negative, got %d", offset)
	}
	return nil
}
