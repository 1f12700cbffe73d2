package sqlitecache

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/klauspost/compress/zstd"

	"github.com/pgfallback/pgfallback/repository"
)

// maxDecodedSize bounds what a compressed entry may expand to. An entity is
// at most 1 MiB of JSON metadata plus small fields; the binary form is not
// larger than a few times that, so 16 MiB rejects only hostile input.
const maxDecodedSize = 16 << 20

// The zstd encoder and decoder are safe for concurrent EncodeAll/DecodeAll
// and expensive to build, so one of each serves every Cache in the process.
var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
	zstdErr  error
)

func zstdCodec() (*zstd.Encoder, *zstd.Decoder, error) {
	zstdOnce.Do(func() {
		zstdEnc, zstdErr = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if zstdErr != nil {
			return
		}
		zstdDec, zstdErr = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(maxDecodedSize), zstd.WithDecoderConcurrency(0))
	})
	return zstdEnc, zstdDec, zstdErr
}

// compress returns the bytes to store and their encoding: compressed only when
// raw is larger than threshold (threshold <= 0 disables compression) and
// compression actually made it smaller.
func compress(raw []byte, threshold int) ([]byte, int) {
	if threshold <= 0 || len(raw) <= threshold {
		return raw, encBinary
	}
	enc, _, err := zstdCodec()
	if err != nil {
		return raw, encBinary // compression is an optimization; store raw
	}
	z := enc.EncodeAll(raw, make([]byte, 0, len(raw)/2))
	if len(z) >= len(raw) {
		return raw, encBinary
	}
	return z, encBinaryZstd
}

// plain returns the uncompressed binary form of a stored entry as a string
// (see decoder for why a string).
func plain(encoding int64, data []byte) (string, error) {
	switch encoding {
	case encBinary:
		return string(data), nil
	case encBinaryZstd:
		_, dec, err := zstdCodec()
		if err != nil {
			return "", err
		}
		raw, err := dec.DecodeAll(data, nil)
		if err != nil {
			return "", fmt.Errorf("%w: zstd: %w", errCorrupt, err)
		}
		return string(raw), nil
	}
	return "", fmt.Errorf("%w: unknown encoding %d", errCorrupt, encoding)
}

// decodeVendor decodes a stored vendor in any encoding this package knows.
// Errors: errCorrupt (wrapped) for anything that does not decode.
func decodeVendor(encoding int64, data []byte) (repository.Vendor, error) {
	if encoding == encJSON {
		var j jsonVendor
		if err := json.Unmarshal(data, &j); err != nil {
			return repository.Vendor{}, fmt.Errorf("%w: %w", errCorrupt, err)
		}
		return j.vendor(), nil
	}
	s, err := plain(encoding, data)
	if err != nil {
		return repository.Vendor{}, err
	}
	return decodeVendorBinary(s)
}

// decodeWorkItem decodes a stored work item in any encoding this package
// knows. Errors: errCorrupt (wrapped) for anything that does not decode.
func decodeWorkItem(encoding int64, data []byte) (repository.WorkItem, error) {
	if encoding == encJSON {
		var j jsonWorkItem
		if err := json.Unmarshal(data, &j); err != nil {
			return repository.WorkItem{}, fmt.Errorf("%w: %w", errCorrupt, err)
		}
		if j.Depth < 0 || j.Depth > repository.MaxDepth {
			return repository.WorkItem{}, fmt.Errorf("%w: depth %d", errCorrupt, j.Depth)
		}
		return j.workItem(), nil
	}
	s, err := plain(encoding, data)
	if err != nil {
		return repository.WorkItem{}, err
	}
	return decodeWorkItemBinary(s)
}

// jsonVendor is the original implementation's row format (the Postgres
// column names), read from cache files it wrote.
type jsonVendor struct {
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

func (j jsonVendor) vendor() repository.Vendor {
	return repository.Vendor{
		ID: j.ID, Name: j.Name, Status: repository.VendorStatus(j.Status), Version: j.Version,
		ExtractorVersion: j.ExtractorVersion, Metadata: j.Metadata,
		CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, CreatedBy: j.CreatedBy,
	}
}

type jsonWorkItem struct {
	ID         uuid.UUID      `json:"id"`
	Version    int64          `json:"version"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Status     string         `json:"status"`
	ParentID   *uuid.UUID     `json:"parent_id"`
	Path       string         `json:"path"`
	Depth      int            `json:"depth"`
	BranchName string         `json:"branch_name"`
	CommitHash string         `json:"commit_hash"`
	Metadata   map[string]any `json:"metadata"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
	DeletedAt  *time.Time     `json:"deleted_at"`
	CreatedBy  string         `json:"created_by"`
}

func (j jsonWorkItem) workItem() repository.WorkItem {
	return repository.WorkItem{
		ID: j.ID, Version: j.Version, Type: repository.WorkItemType(j.Type), Title: j.Title,
		Status: repository.WorkItemStatus(j.Status), ParentID: j.ParentID, Path: j.Path, Depth: j.Depth,
		BranchName: j.BranchName, CommitHash: j.CommitHash, Metadata: j.Metadata,
		CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, DeletedAt: j.DeletedAt, CreatedBy: j.CreatedBy,
	}
}
