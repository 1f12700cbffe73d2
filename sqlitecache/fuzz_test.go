package sqlitecache

import (
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/pgfallback/pgfallback/repository"
)

// FuzzParseKey: ParseKey never panics, and an accepted key formats back to
// a key that parses to the same value.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"vendor:acme", "vendor:", "vendor:A", "work_item:" + uuid.NewString(),
		"work_item:" + uuid.Nil.String(), "work_item:urn:uuid:x", "vendor:a.b-c_d", "x:y", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			return
		}
		k2, err := ParseKey(k.String())
		if err != nil || k2 != k {
			t.Fatalf("ParseKey(%q) = %+v; reparsing %q gave %+v, %v", s, k, k.String(), k2, err)
		}
	})
}

// FuzzDecodeEntry: decoding arbitrary stored bytes in any encoding never
// panics nor allocates without bound; whatever decodes re-encodes to
// something that decodes to the same entity.
func FuzzDecodeEntry(f *testing.F) {
	v, _ := encodeVendor(testVendor("acme", 3))
	w, _ := encodeWorkItem(testWorkItem(2))
	zv, _ := compress(v, 1)
	for _, seed := range []struct {
		enc  int64
		data []byte
	}{
		{encBinary, v}, {encBinary, w}, {encBinaryZstd, zv}, {encJSON, []byte(`{"name":"x","depth":9}`)},
		{encBinary, []byte{magicVendor}}, {encBinary, []byte{magicWorkItem, 0xff, 0xff}}, {7, nil},
	} {
		f.Add(seed.enc, seed.data)
	}
	f.Fuzz(func(t *testing.T, enc int64, data []byte) {
		if v, err := decodeVendor(enc, data); err == nil {
			b, err := encodeVendor(v)
			if err != nil {
				t.Fatalf("re-encode vendor: %v", err)
			}
			v2, err := decodeVendorBinary(string(b))
			if err != nil || !reflect.DeepEqual(normVendorTimes(v), normVendorTimes(v2)) {
				t.Fatalf("vendor round trip: %+v\n%+v, %v", v, v2, err)
			}
		}
		if w, err := decodeWorkItem(enc, data); err == nil {
			b, err := encodeWorkItem(w)
			if err != nil {
				t.Fatalf("re-encode work item: %v", err)
			}
			if _, err := decodeWorkItemBinary(string(b)); err != nil {
				t.Fatalf("work item round trip: %v", err)
			}
		}
	})
}

// normVendorTimes compares times by instant: JSON-decoded legacy entries
// carry their own zone, binary ones come back in UTC.
func normVendorTimes(v repository.Vendor) repository.Vendor {
	v.CreatedAt = v.CreatedAt.UTC()
	v.UpdatedAt = v.UpdatedAt.UTC()
	return v
}
