package sqlitecache

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// Stored encodings, kept in each row's encoding column so old rows stay
// readable when the writer's format changes.
const (
	// encJSON is the original implementation's format: the entity as a JSON
	// object with snake_case keys. Only read, never written.
	encJSON = 0
	// encBinary is this package's compact binary format (below). It exists
	// because decoding metadata with encoding/json dominated a Get hit.
	encBinary = 1
	// encBinaryZstd is encBinary compressed with zstd, used above the
	// compression threshold when it actually saves space.
	encBinaryZstd = 2
)

// Format magic bytes: the first byte of an encBinary entity, so a vendor is
// never decoded as a work item (or garbage as either) by accident.
const (
	magicVendor   = 'V'
	magicWorkItem = 'W'
)

// Value tags of the binary metadata encoding: exactly the JSON data model,
// because that is what Postgres's jsonb gives back and the cache must return
// the same values the store would.
const (
	tagNull = iota
	tagFalse
	tagTrue
	tagFloat  // 8 bytes, IEEE 754 little endian
	tagInt    // zig-zag varint of an integral float64 (smaller than tagFloat)
	tagString // uvarint length, bytes
	tagArray  // uvarint count, values
	tagObject // uvarint count, (uvarint key length, key bytes, value)...
)

// maxNesting bounds metadata nesting, as encoding/json does, so a hostile
// stored entry cannot exhaust the stack while decoding.
const maxNesting = 10000

// errCorrupt marks bytes that do not decode; ErrCorruptEntry is returned to
// callers.
var errCorrupt = errors.New("malformed entry")

// ---- encoder ----

type encoder struct{ b []byte }

func (e *encoder) byte(c byte)      { e.b = append(e.b, c) }
func (e *encoder) uvarint(u uint64) { e.b = binary.AppendUvarint(e.b, u) }
func (e *encoder) varint(i int64)   { e.b = binary.AppendVarint(e.b, i) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) id(u uuid.UUID)   { e.b = append(e.b, u[:]...) }

func (e *encoder) time(t time.Time) {
	e.varint(t.Unix())
	e.uvarint(uint64(t.Nanosecond()))
}

func (e *encoder) optTime(t *time.Time) {
	if t == nil {
		e.byte(0)
		return
	}
	e.byte(1)
	e.time(*t)
}

func (e *encoder) metadata(m map[string]any) error {
	if m == nil {
		e.byte(tagNull)
		return nil
	}
	return e.object(m, 0)
}

func (e *encoder) object(m map[string]any, depth int) error {
	e.byte(tagObject)
	e.uvarint(uint64(len(m)))
	for k, v := range m {
		if !utf8.ValidString(k) {
			// json.Marshal would replace invalid bytes; normalize the same way.
			k = string([]rune(k))
		}
		e.str(k)
		if err := e.value(v, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// value encodes v the way a JSON round trip would leave it: numbers become
// float64, anything that is not a JSON-native Go type goes through
// encoding/json once so the cache returns what Postgres's jsonb would.
func (e *encoder) value(v any, depth int) error {
	if depth > maxNesting {
		return fmt.Errorf("metadata nested deeper than %d", maxNesting)
	}
	switch x := v.(type) {
	case nil:
		e.byte(tagNull)
	case bool:
		if x {
			e.byte(tagTrue)
		} else {
			e.byte(tagFalse)
		}
	case float64:
		e.float(x)
	case int:
		e.float(float64(x))
	case int64:
		e.float(float64(x))
	case int32:
		e.float(float64(x))
	case string:
		if !utf8.ValidString(x) {
			x = string([]rune(x))
		}
		e.byte(tagString)
		e.str(x)
	case []any:
		e.byte(tagArray)
		e.uvarint(uint64(len(x)))
		for _, el := range x {
			if err := e.value(el, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		return e.object(x, depth)
	default:
		// Rare: structs, typed slices, json.Number, time.Time... Normalize
		// through JSON exactly as a store round trip would.
		b, err := json.Marshal(x)
		if err != nil {
			return err
		}
		var n any
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		return e.value(n, depth)
	}
	return nil
}

func (e *encoder) float(f float64) {
	// Integral values in the exactly-representable range take a varint:
	// metadata counters are usually small integers.
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 && !(f == 0 && math.Signbit(f)) {
		e.byte(tagInt)
		e.varint(int64(f))
		return
	}
	e.byte(tagFloat)
	e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(f))
}

func encodeVendor(v repository.Vendor) ([]byte, error) {
	e := encoder{b: make([]byte, 0, 256)}
	e.byte(magicVendor)
	e.id(v.ID)
	e.str(v.Name)
	e.str(string(v.Status))
	e.varint(v.Version)
	e.str(v.ExtractorVersion)
	if err := e.metadata(v.Metadata); err != nil {
		return nil, repository.Invalid("Metadata", "%v", err)
	}
	e.time(v.CreatedAt)
	e.time(v.UpdatedAt)
	e.str(v.CreatedBy)
	return e.b, nil
}

func encodeWorkItem(w repository.WorkItem) ([]byte, error) {
	e := encoder{b: make([]byte, 0, 256)}
	e.byte(magicWorkItem)
	e.id(w.ID)
	e.varint(w.Version)
	e.str(string(w.Type))
	e.str(w.Title)
	e.str(string(w.Status))
	if w.ParentID == nil {
		e.byte(0)
	} else {
		e.byte(1)
		e.id(*w.ParentID)
	}
	e.str(w.Path)
	e.uvarint(uint64(w.Depth))
	e.str(w.BranchName)
	e.str(w.CommitHash)
	if err := e.metadata(w.Metadata); err != nil {
		return nil, repository.Invalid("Metadata", "%v", err)
	}
	e.time(w.CreatedAt)
	e.time(w.UpdatedAt)
	e.optTime(w.DeletedAt)
	e.str(w.CreatedBy)
	return e.b, nil
}

// ---- decoder ----

// decoder reads the binary format. s is the whole entry as one string, so
// every decoded string (keys included) is a substring of it: one allocation
// for all the text instead of one per string. Any malformed input sets err
// and yields zero values; it never panics.
type decoder struct {
	s   string
	i   int
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || d.i >= len(d.s) {
		d.fail()
		return 0
	}
	c := d.s[d.i]
	d.i++
	return c
}

func (d *decoder) uvarint() uint64 {
	var x uint64
	var shift uint
	for n := 0; ; n++ {
		if n == binary.MaxVarintLen64 {
			d.fail()
			return 0
		}
		c := d.byte()
		if d.err != nil {
			return 0
		}
		if c < 0x80 {
			if n == binary.MaxVarintLen64-1 && c > 1 {
				d.fail()
				return 0
			}
			return x | uint64(c)<<shift
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
}

func (d *decoder) varint() int64 {
	u := d.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

// length reads a count and checks it against the bytes left, so a corrupt
// length can never make the decoder allocate more than the entry's size.
func (d *decoder) length() int {
	u := d.uvarint()
	if d.err != nil || u > uint64(len(d.s)-d.i) {
		d.fail()
		return 0
	}
	return int(u)
}

func (d *decoder) str() string {
	n := d.length()
	if d.err != nil {
		return ""
	}
	s := d.s[d.i : d.i+n]
	d.i += n
	// The encoder only writes valid UTF-8 (JSON's and Postgres's text
	// model); anything else was damaged on disk.
	if !utf8.ValidString(s) {
		d.fail()
		return ""
	}
	return s
}

func (d *decoder) id() uuid.UUID {
	var u uuid.UUID
	if d.err != nil || len(d.s)-d.i < 16 {
		d.fail()
		return u
	}
	copy(u[:], d.s[d.i:d.i+16])
	d.i += 16
	return u
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if d.err != nil || nsec >= 1e9 {
		d.fail()
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (d *decoder) optTime() *time.Time {
	switch d.byte() {
	case 0:
		return nil
	case 1:
		t := d.time()
		return &t
	}
	d.fail()
	return nil
}

func (d *decoder) metadata() map[string]any {
	switch d.byte() {
	case tagNull:
		return nil
	case tagObject:
		return d.object(0)
	}
	d.fail()
	return nil
}

func (d *decoder) object(depth int) map[string]any {
	n := d.length()
	if d.err != nil {
		return nil
	}
	m := make(map[string]any, n)
	for range n {
		k := d.str()
		v := d.value(depth + 1)
		if d.err != nil {
			return nil
		}
		m[k] = v
	}
	return m
}

func (d *decoder) value(depth int) any {
	if depth > maxNesting {
		d.fail()
		return nil
	}
	switch d.byte() {
	case tagNull:
		return nil
	case tagFalse:
		return false
	case tagTrue:
		return true
	case tagFloat:
		if len(d.s)-d.i < 8 {
			d.fail()
			return nil
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64([]byte(d.s[d.i : d.i+8])))
		d.i += 8
		if math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail() // JSON cannot carry these; the encoder never writes them
		}
		return f
	case tagInt:
		return float64(d.varint())
	case tagString:
		return d.str()
	case tagArray:
		n := d.length()
		if d.err != nil {
			return nil
		}
		a := make([]any, n)
		for i := range a {
			a[i] = d.value(depth + 1)
		}
		return a
	case tagObject:
		return d.object(depth)
	}
	d.fail()
	return nil
}

// done reports trailing garbage as corruption.
func (d *decoder) done() error {
	if d.err == nil && d.i != len(d.s) {
		d.fail()
	}
	return d.err
}

func decodeVendorBinary(s string) (repository.Vendor, error) {
	d := decoder{s: s}
	var v repository.Vendor
	if d.byte() != magicVendor {
		return v, errCorrupt
	}
	v.ID = d.id()
	v.Name = d.str()
	v.Status = repository.VendorStatus(d.str())
	v.Version = d.varint()
	v.ExtractorVersion = d.str()
	v.Metadata = d.metadata()
	v.CreatedAt = d.time()
	v.UpdatedAt = d.time()
	v.CreatedBy = d.str()
	if err := d.done(); err != nil {
		return repository.Vendor{}, err
	}
	return v, nil
}

func decodeWorkItemBinary(s string) (repository.WorkItem, error) {
	d := decoder{s: s}
	var w repository.WorkItem
	if d.byte() != magicWorkItem {
		return w, errCorrupt
	}
	w.ID = d.id()
	w.Version = d.varint()
	w.Type = repository.WorkItemType(d.str())
	w.Title = d.str()
	w.Status = repository.WorkItemStatus(d.str())
	switch d.byte() {
	case 0:
	case 1:
		p := d.id()
		w.ParentID = &p
	default:
		d.fail()
	}
	w.Path = d.str()
	depth := d.uvarint()
	if depth > repository.MaxDepth {
		d.fail()
	}
	w.Depth = int(depth)
	w.BranchName = d.str()
	w.CommitHash = d.str()
	w.Metadata = d.metadata()
	w.CreatedAt = d.time()
	w.UpdatedAt = d.time()
	w.DeletedAt = d.optTime()
	w.CreatedBy = d.str()
	if err := d.done(); err != nil {
		return repository.WorkItem{}, err
	}
	return w, nil
}
