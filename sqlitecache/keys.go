package sqlitecache

import (
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// KeyKind says which table a Key addresses.
type KeyKind int

const (
	KeyVendor   KeyKind = iota + 1 // "vendor:<name>"
	KeyWorkItem                    // "work_item:<uuid>"
)

const (
	vendorPrefix   = "vendor:"
	workItemPrefix = "work_item:"
)

// Key is a parsed cache key.
type Key struct {
	Kind KeyKind
	Name string    // vendor name, for KeyVendor
	ID   uuid.UUID // work item id, for KeyWorkItem
}

// VendorKey returns the cache key of the vendor with the given name.
func VendorKey(name string) string { return vendorPrefix + name }

// WorkItemKey returns the cache key of the work item with the given id.
func WorkItemKey(id uuid.UUID) string { return workItemPrefix + id.String() }

// String formats k as ParseKey accepts it.
func (k Key) String() string {
	switch k.Kind {
	case KeyVendor:
		return VendorKey(k.Name)
	case KeyWorkItem:
		return WorkItemKey(k.ID)
	}
	return ""
}

// ParseKey parses "vendor:<name>" (name valid per
// repository.ValidateVendorName) or "work_item:<uuid>" (the canonical
// 36-character form, any hex case).
// Errors: ErrInvalidKey, naming what is wrong.
func ParseKey(s string) (Key, error) {
	switch {
	case strings.HasPrefix(s, vendorPrefix):
		name := s[len(vendorPrefix):]
		if err := repository.ValidateVendorName(name); err != nil {
			return Key{}, fmt.Errorf("%w %q: %v", ErrInvalidKey, s, err)
		}
		return Key{Kind: KeyVendor, Name: name}, nil
	case strings.HasPrefix(s, workItemPrefix):
		raw := s[len(workItemPrefix):]
		// uuid.Parse also takes urn:, braced and undashed forms; a key has
		// one spelling so the same entry is never addressed two ways.
		if len(raw) != 36 {
			return Key{}, fmt.Errorf("%w %q: work item id must be a 36-character uuid", ErrInvalidKey, s)
		}
		id, err := uuid.Parse(raw)
		if err != nil {
			return Key{}, fmt.Errorf("%w %q: %v", ErrInvalidKey, s, err)
		}
		return Key{Kind: KeyWorkItem, ID: id}, nil
	}
	return Key{}, fmt.Errorf("%w %q: want %q or %q", ErrInvalidKey, s, vendorPrefix+"<name>", workItemPrefix+"<uuid>")
}
