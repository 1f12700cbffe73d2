package drill

import (
	"strings"
	"testing"
)

// checkChain must find a real lie and must not invent one: each case is a
// key's history as the drill records it.
func TestCheckChain(t *testing.T) {
	sure := func(wid string, base int64) versionWrite { return versionWrite{wid: wid, base: base, sure: true} }
	unknown := func(wid string, base int64) versionWrite { return versionWrite{wid: wid, base: base} }
	for _, c := range []struct {
		name     string
		v0, last int64
		rowWid   string
		writes   []versionWrite
		want     string // a violation containing this; "" for none
	}{
		{"one applied write", 1, 2, "a0-1", []versionWrite{sure("a0-1", 1)}, ""},
		{"a chain", 1, 3, "a1-2", []versionWrite{sure("a0-1", 1), sure("a1-2", 2)}, ""},
		// Two writers timed out on the same row: one of them landed.
		{"two unknown on one version, the second landed", 1, 2, "a0-105",
			[]versionWrite{unknown("a1-74", 1), unknown("a0-105", 1)}, ""},
		{"unknown steps before an applied last", 1, 3, "a0-9",
			[]versionWrite{unknown("a1-4", 1), unknown("a1-5", 1), sure("a0-9", 2)}, ""},
		{"the row holds a write reported failed", 1, 2, "a0-105",
			[]versionWrite{sure("a1-74", 1)}, `the last write applied (on version 1) is "a1-74" (reported applied)`},
		{"the row holds a write nobody made on that version", 1, 2, "a0-105",
			[]versionWrite{unknown("a1-74", 1)}, `is "a1-74" (of unknown outcome)`},
		{"two applied on one version", 1, 2, "a0-1",
			[]versionWrite{sure("a0-1", 1), sure("a1-1", 1)}, "were both applied on version 1"},
		{"a step nobody made", 1, 3, "a0-2", []versionWrite{sure("a0-2", 2)}, "1 steps more than the writes applied"},
		{"a version that went back", 2, 1, "", nil, "older than the seeded"},
		{"untouched", 1, 1, "", nil, ""},
		{"untouched but marked", 1, 1, "a0-1", []versionWrite{unknown("a0-1", 1)}, "at the seeded version"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := strings.Join(checkChain("k", c.v0, c.last, c.rowWid, c.writes), "\n")
			switch {
			case c.want == "" && got != "":
				t.Errorf("a violation where there is none: %s", got)
			case c.want != "" && !strings.Contains(got, c.want):
				t.Errorf("got %q, want a violation containing %q", got, c.want)
			}
		})
	}
}
