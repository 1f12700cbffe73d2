package fallback

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestEvictionLog(t *testing.T) {
	var e evictionLog[string]
	start := e.begin()
	if e.since(start, "a") {
		t.Fatal("nothing evicted, yet stale")
	}
	e.record("b")
	if e.since(start, "a") || !e.since(start, "a", "b") {
		t.Fatal("an eviction of b must hold back b, and only b")
	}
	if later := e.begin(); e.since(later, "b") {
		t.Fatal("a call that began after the eviction is held back")
	}
	// Past its bound the log forgets keys: then every call that began
	// before is held back.
	start = e.begin()
	for i := range maxRecent {
		e.record(fmt.Sprint(i))
	}
	if !e.since(start, "never-evicted") {
		t.Fatal("a call older than the cleared log is not held back")
	}
	if e.since(e.begin(), "never-evicted") {
		t.Fatal("a new call is held back")
	}
}

func TestItemKeysAreTheItemAndItsAncestors(t *testing.T) {
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	got := itemKeys(c, a.String()+"/"+b.String())
	if len(got) != 3 || got[0] != c || got[1] != a || got[2] != b {
		t.Fatalf("itemKeys = %v", got)
	}
	if got := itemKeys(c, ""); len(got) != 1 {
		t.Fatalf("a root's keys: %v", got)
	}
}

// Rows another process read (a broadcast's) carry a time, not a position:
// a key evicted at or after that time must be read again, since the
// delete behind the eviction may be missing from the row.
func TestEvictionsSinceATime(t *testing.T) {
	var e evictionLog[string]
	before := time.Now().UnixNano()
	e.record("a")
	after := time.Now().UnixNano() + 1
	if !e.stale(evictionMark{at: before}, "a") {
		t.Error("a row read before a's eviction may be written after it")
	}
	if e.stale(evictionMark{at: before}, "b") {
		t.Error("b was never evicted")
	}
	if e.stale(evictionMark{at: after}, "a") {
		t.Error("a row read after a's eviction is not stale")
	}
	for i := range maxRecent {
		e.record(fmt.Sprint(i)) // clears the map once: what came before is forgotten
	}
	if !e.stale(evictionMark{at: before}, "b") {
		t.Error("a row read before the map was cleared: unknown, must be read again")
	}
}
