// Package mock provides hand-written fakes of the repository interfaces and
// of fallback.Primary: structs whose methods call the func fields a test
// sets, in the style of the WTF Dial project's mock package. They are for
// unit tests of decorators such as fallback; tests of real behaviour use the
// real stores.
package mock

import (
	"context"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// VendorRepository is a repository.VendorRepository whose methods call the
// corresponding Fn field. A nil field panics when called: the test did not
// expect the call.
type VendorRepository struct {
	GetFn    func(ctx context.Context, name string) (repository.Vendor, error)
	ListFn   func(ctx context.Context, f repository.VendorFilter) ([]repository.Vendor, error)
	CreateFn func(ctx context.Context, v repository.Vendor) (repository.Vendor, error)
	UpdateFn func(ctx context.Context, v repository.Vendor) (repository.Vendor, error)
	DeleteFn func(ctx context.Context, name string) error
}

var _ repository.VendorRepository = (*VendorRepository)(nil)

func (r *VendorRepository) Get(ctx context.Context, name string) (repository.Vendor, error) {
	return r.GetFn(ctx, name)
}

func (r *VendorRepository) List(ctx context.Context, f repository.VendorFilter) ([]repository.Vendor, error) {
	return r.ListFn(ctx, f)
}

func (r *VendorRepository) Create(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	return r.CreateFn(ctx, v)
}

func (r *VendorRepository) Update(ctx context.Context, v repository.Vendor) (repository.Vendor, error) {
	return r.UpdateFn(ctx, v)
}

func (r *VendorRepository) Delete(ctx context.Context, name string) error {
	return r.DeleteFn(ctx, name)
}

// WorkItemRepository is a repository.WorkItemRepository whose methods call
// the corresponding Fn field.
type WorkItemRepository struct {
	GetFn    func(ctx context.Context, id uuid.UUID) (repository.WorkItem, error)
	ListFn   func(ctx context.Context, f repository.WorkItemFilter) ([]repository.WorkItem, error)
	CreateFn func(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error)
	UpdateFn func(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error)
	DeleteFn func(ctx context.Context, id uuid.UUID) error
}

var _ repository.WorkItemRepository = (*WorkItemRepository)(nil)

func (r *WorkItemRepository) Get(ctx context.Context, id uuid.UUID) (repository.WorkItem, error) {
	return r.GetFn(ctx, id)
}

func (r *WorkItemRepository) List(ctx context.Context, f repository.WorkItemFilter) ([]repository.WorkItem, error) {
	return r.ListFn(ctx, f)
}

func (r *WorkItemRepository) Create(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	return r.CreateFn(ctx, w)
}

func (r *WorkItemRepository) Update(ctx context.Context, w repository.WorkItem) (repository.WorkItem, error) {
	return r.UpdateFn(ctx, w)
}

func (r *WorkItemRepository) Delete(ctx context.Context, id uuid.UUID) error {
	return r.DeleteFn(ctx, id)
}

// Primary is a fake fallback.Primary.
type Primary struct {
	VendorRepo   VendorRepository
	WorkItemRepo WorkItemRepository
	PingFn       func(ctx context.Context) error
}

func (p *Primary) Vendors() repository.VendorRepository     { return &p.VendorRepo }
func (p *Primary) WorkItems() repository.WorkItemRepository { return &p.WorkItemRepo }
func (p *Primary) Ping(ctx context.Context) error           { return p.PingFn(ctx) }

// ChangeFeed is a repository.ChangeFeed whose methods call the Fn fields.
type ChangeFeed struct {
	ChangeHeadFn   func(ctx context.Context) (string, error)
	ReadChangesFn  func(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error)
	WatchChangesFn func(ctx context.Context, wake func(reconnected bool)) error
}

var _ repository.ChangeFeed = (*ChangeFeed)(nil)

func (f *ChangeFeed) ChangeHead(ctx context.Context) (string, error) { return f.ChangeHeadFn(ctx) }

func (f *ChangeFeed) ReadChanges(ctx context.Context, cursor string, limit int) (repository.ChangeBatch, error) {
	return f.ReadChangesFn(ctx, cursor, limit)
}

func (f *ChangeFeed) WatchChanges(ctx context.Context, wake func(reconnected bool)) error {
	return f.WatchChangesFn(ctx, wake)
}

// HeardChangeFeed is a repository.HeardChangeFeed: a ChangeFeed, and
// ReadHeardChanges calling ReadHeardChangesFn.
type HeardChangeFeed struct {
	ChangeFeed
	ReadHeardChangesFn func(cursor string, limit int) (repository.ChangeBatch, bool)
}

var _ repository.HeardChangeFeed = (*HeardChangeFeed)(nil)

func (f *HeardChangeFeed) ReadHeardChanges(cursor string, limit int) (repository.ChangeBatch, bool) {
	return f.ReadHeardChangesFn(cursor, limit)
}

// RefusableChangeFeed is a repository.RefusableChangeFeed: a ChangeFeed,
// and ListenerRefused calling ListenerRefusedFn.
type RefusableChangeFeed struct {
	ChangeFeed
	ListenerRefusedFn func() string
}

var _ repository.RefusableChangeFeed = (*RefusableChangeFeed)(nil)

func (f *RefusableChangeFeed) ListenerRefused() string { return f.ListenerRefusedFn() }

// WriteChecker is a repository.WriteChecker whose TakesWrites calls
// TakesWritesFn.
type WriteChecker struct {
	TakesWritesFn func(ctx context.Context) (takes, standby bool, err error)
}

var _ repository.WriteChecker = (*WriteChecker)(nil)

func (c *WriteChecker) TakesWrites(ctx context.Context) (takes, standby bool, err error) {
	return c.TakesWritesFn(ctx)
}

// CommitProber is a repository.CommitProber whose ProbeCommit calls
// ProbeCommitFn.
type CommitProber struct {
	ProbeCommitFn func(ctx context.Context) error
}

var _ repository.CommitProber = (*CommitProber)(nil)

func (p *CommitProber) ProbeCommit(ctx context.Context) error { return p.ProbeCommitFn(ctx) }
