package repository

import (
	"regexp"
	"time"

	"github.com/google/uuid"
)

// VendorStatus is the operational state of a vendor's extractor.
type VendorStatus string

const (
	VendorOperational VendorStatus = "operational"
	VendorBroken      VendorStatus = "broken"
)

// Valid reports whether s is one of the defined statuses.
func (s VendorStatus) Valid() bool { return s == VendorOperational || s == VendorBroken }

// Vendor is a data vendor whose extractor the application tracks. Name is the
// natural key that every repository method uses.
type Vendor struct {
	ID               uuid.UUID
	Name             string // unique; 1-100 characters matching ^[a-z0-9][a-z0-9_.-]*$
	Status           VendorStatus
	Version          int64  // optimistic-lock counter: 1 on create, +1 on every update
	ExtractorVersion string // semantic version such as "2.3.1"; empty when unknown
	Metadata         map[string]any
	CreatedAt        time.Time
	UpdatedAt        time.Time
	CreatedBy        string // free text, at most 100 characters
}

// Limits shared by validation and by the database schema's CHECK constraints.
const (
	MaxVendorNameLen = 100
	MaxCreatedByLen  = 100
	MaxMetadataBytes = 1 << 20 // 1 MiB of JSON
	// MaxMetadataDepth is how deeply Metadata may nest objects and arrays
	// (the Metadata object itself is level 1). Far below what the parts
	// behind it can read back — encoding/json and so pgx stop at 10,000
	// levels, PostgreSQL's jsonb at about 20,000 (SQLSTATE 54001), the
	// cache's codec at 10,000 — so everything validation accepts is
	// readable everywhere, and refusing costs bounded time and stack.
	MaxMetadataDepth = 64
)

// vendorNamePattern is the rule ValidateVendorName applies (by hand: a
// regexp cost 300 ns, and the fallback layer checks every key it is given).
const vendorNamePattern = `^[a-z0-9][a-z0-9_.-]*$`

var (
	// Semantic Versioning 2.0.0, the regular expression suggested by semver.org.
	semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)` +
		`(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?` +
		`(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)
)

// ValidateVendorName checks a vendor key. Repositories call it before any
// lookup so a malformed name is ErrInvalid, not ErrNotFound.
func ValidateVendorName(name string) error {
	if err := validateText("Name", name, 1, MaxVendorNameLen); err != nil {
		return err
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || i > 0 && (c == '_' || c == '.' || c == '-')) {
			return Invalid("Name", "%q must match %s", name, vendorNamePattern)
		}
	}
	return nil
}

// ValidateUpdate checks v as Update takes it: Validate, and a Version that
// is the one the caller read (at least 1).
func (v Vendor) ValidateUpdate() error {
	if err := v.Validate(); err != nil {
		return err
	}
	return validateReadVersion(v.Version)
}

// Validate checks every field a caller sets. The store-maintained fields
// (ID, CreatedAt, UpdatedAt) are not checked; Version must not be negative.
func (v Vendor) Validate() error {
	if err := ValidateVendorName(v.Name); err != nil {
		return err
	}
	if !v.Status.Valid() {
		return Invalid("Status", "%q is not one of %q, %q", v.Status, VendorOperational, VendorBroken)
	}
	if v.Version < 0 {
		return Invalid("Version", "must not be negative, got %d", v.Version)
	}
	if v.ExtractorVersion != "" && !semverRE.MatchString(v.ExtractorVersion) {
		return Invalid("ExtractorVersion", "%q is not a semantic version such as 2.3.1", v.ExtractorVersion)
	}
	if err := validateText("CreatedBy", v.CreatedBy, 0, MaxCreatedByLen); err != nil {
		return err
	}
	return validateMetadata(v.Metadata)
}
