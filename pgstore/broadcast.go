package pgstore

import (
	"cmp"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgfallback/pgfallback/repository"
)

// Broadcast reads: the waker reads the log once for every follower.
//
// Each commit used to wake every follower into a ReadChanges of its own:
// with 50 followers, 50 reads of the same rows at once, a herd that on a
// small server took longer to serve than the commits took to come. The
// waker now looks at the log by reading it (the look it made anyway, from
// the cursor its last read returned) and, when the read found changes,
// sends them in its notification: the batch, the cursor it was read from
// and the cursor after it. A Store keeps the last broadcasts its listener
// heard, and ReadChanges answers from them, without a query, when they
// continue the caller's cursor (see cursor.covers): ReadHeardChanges,
// which a follower calls when a notification woke it. Anything else (a
// cursor from before the broadcasts, a batch too large for a
// notification, a gap, a catch-up that must reach "now") is read from
// PostgreSQL with ReadChanges; the changes are the same either way.
//
// Closed to forgery and to eavesdropping. Any role that can connect may
// NOTIFY and LISTEN on any channel, so a payload in the clear would let it
// read which rows change, and a forged one would let it hide writes from
// every follower (a batch that skips a change, with a cursor past it). The
// payload is sealed with AES-256-GCM under a key derived from the log's
// log_id, which only roles granted SELECT on pgfallback_change_log can
// read (docs/privileges.md): the same roles that can already rewrite the
// log. The waker's heartbeats are sealed too, as broadcasts of no change.
//
// A replayed payload is a true statement about the log, but an old one:
// a role that holds the waker's lock (it needs no privilege) and replays
// heartbeats, or a broadcast the follower's cursor has passed, would make
// every follower believe the waker alive and nothing changed, and hide
// every write until the feed's poll. So a listener trusts a payload only
// if it opens under the log_id this Store last read and is newer (its
// asOf, the server's clock at the waker's read) than every payload it
// trusted and than its own connection (hear). Whatever else it hears, a
// plain wake-up, HeartbeatPayload, a forgery or a replay, wakes the
// follower into a read of the log: it can cost a read, never hide one.

// broadcastPrefix starts a broadcast's payload on ChangeChannel; what
// follows is base64 (standard, unpadded) of nonce, sealed batch and tag.
const broadcastPrefix = "b1:"

const (
	// broadcastMaxChanges bounds the waker's read: a batch that big does
	// not fit in a notification anyway (PostgreSQL's payload limit is
	// 8000 bytes), and the followers read it from the log.
	broadcastMaxChanges = 250
	// broadcastMaxPlain bounds the sealed text, so that the payload stays
	// below 8000 bytes: prefix + base64 of (12 + text + 16) bytes.
	broadcastMaxPlain = (7990-len(broadcastPrefix))/4*3 - 12 - 16
	// heardRing: how many broadcasts a Store keeps. A follower reads at
	// most every ChangeFeedMinInterval (20 ms by default) while the waker
	// may broadcast every 5 ms: it continues its cursor through several.
	heardRing = 32
)

// broadcastAD binds a sealed payload to its use.
var broadcastAD = []byte("pgfallback change broadcast v1")

// broadcast is one read of the log by the waker, and the rows of the keys
// it found changed, read after it (rows.go), those that fit.
type broadcast struct {
	from, next cursor
	asOf       time.Time
	changes    []repository.Change
	rows       []repository.ChangedRow // At: asOf
}

// rowsMark starts the rows' lines in a broadcast's text; each is entity
// code, key and the row as JSON (nothing: the key had no row). A release
// before this one cannot parse them, and reads the log when it hears one.
const rowsMark = "="

// broadcastAEAD is the cipher of the broadcasts of the log named logID.
func broadcastAEAD(logID string) (cipher.AEAD, error) {
	key := sha256.Sum256([]byte("pgfallback change broadcast key\x00" + logID))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// encodeBroadcast seals b under its log's key. ok is false when the log
// has no log_id yet, or the batch does not fit in a notification.
func encodeBroadcast(b broadcast) (payload string, ok bool) {
	text, ok := broadcastText(b)
	if !ok {
		return "", false
	}
	return sealBroadcast(b.from.logID, text, b.rows)
}

// broadcastText is b's text without its rows: the cursors, asOf and the
// changes. ok is false when the log has no log_id yet, or the changes do
// not fit in a notification (then neither would the broadcast, whatever
// its rows: the waker does not read them).
func broadcastText(b broadcast) (text string, ok bool) {
	if b.from.logID == "" || b.from.logID != b.next.logID || len(b.changes) > broadcastMaxChanges {
		return "", false
	}
	var t strings.Builder
	t.WriteString(b.from.String())
	t.WriteByte('\n')
	t.WriteString(b.next.String())
	t.WriteByte('\n')
	asOf := b.asOf.UnixMicro()
	t.WriteString(strconv.FormatInt(asOf, 10))
	t.WriteByte('\n')
	for _, c := range b.changes {
		e, o := entityCodes[c.Entity], opCodes[c.Op]
		if e == 0 || o == 0 || strings.ContainsAny(c.Key, "\t\n") {
			return "", false
		}
		t.WriteString(strconv.FormatInt(c.Seq, 10))
		t.WriteByte('\t')
		t.WriteByte(e)
		t.WriteByte(o)
		t.WriteByte('\t')
		t.WriteString(strconv.FormatInt(c.Version, 10))
		t.WriteByte('\t')
		t.WriteString(strconv.FormatInt(asOf-c.At.UnixMicro(), 10))
		t.WriteByte('\t')
		t.WriteString(c.Key)
		t.WriteByte('\n')
		if t.Len() > broadcastMaxPlain {
			return "", false
		}
	}
	return t.String(), true
}

// sealBroadcast seals text (broadcastText's) and the rows that fit after
// it under the key of the log named logID; a follower reads the other rows
// itself.
func sealBroadcast(logID, text string, rows []repository.ChangedRow) (payload string, ok bool) {
	var t strings.Builder
	t.WriteString(text)
	var lines strings.Builder
	room := broadcastMaxPlain - t.Len() - len(rowsMark) - 1
	for _, r := range rows {
		if line, ok := encodeRow(r); ok && lines.Len()+len(line) <= room {
			lines.WriteString(line)
		}
	}
	if lines.Len() > 0 {
		t.WriteString(rowsMark + "\n")
		t.WriteString(lines.String())
	}
	aead, err := broadcastAEAD(logID)
	if err != nil {
		return "", false
	}
	sealed := make([]byte, aead.NonceSize(), aead.NonceSize()+t.Len()+aead.Overhead())
	if _, err := rand.Read(sealed); err != nil {
		return "", false
	}
	sealed = aead.Seal(sealed, sealed, []byte(t.String()), broadcastAD)
	return broadcastPrefix + base64.RawStdEncoding.EncodeToString(sealed), true
}

var errNotBroadcast = errors.New("not a broadcast of this log")

// decodeBroadcast opens a payload with the key of the log named logID.
func decodeBroadcast(payload, logID string) (broadcast, error) {
	text, ok := strings.CutPrefix(payload, broadcastPrefix)
	if !ok || logID == "" {
		return broadcast{}, errNotBroadcast
	}
	sealed, err := base64.RawStdEncoding.DecodeString(text)
	if err != nil {
		return broadcast{}, errNotBroadcast
	}
	aead, err := broadcastAEAD(logID)
	if err != nil || len(sealed) < aead.NonceSize()+aead.Overhead() {
		return broadcast{}, errNotBroadcast
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], broadcastAD)
	if err != nil {
		return broadcast{}, errNotBroadcast
	}
	// Sealed by a holder of the key: a malformed text is a bug, not an
	// attack, and is refused all the same.
	bad := func(what string) (broadcast, error) {
		return broadcast{}, fmt.Errorf("pgstore: a broadcast that does not parse (%s)", what)
	}
	lines := strings.Split(strings.TrimSuffix(string(plain), "\n"), "\n")
	if len(lines) < 3 {
		return bad("header")
	}
	var b broadcast
	if b.from, err = parseCursor(lines[0]); err != nil || b.from.legacy || b.from.logID != logID {
		return bad("from")
	}
	if b.next, err = parseCursor(lines[1]); err != nil || b.next.legacy || b.next.logID != logID {
		return bad("next")
	}
	asOf, err := strconv.ParseInt(lines[2], 10, 64)
	if err != nil {
		return bad("asOf")
	}
	b.asOf = time.UnixMicro(asOf).UTC()
	b.changes = make([]repository.Change, 0, len(lines)-3)
	for i, line := range lines[3:] {
		if line == rowsMark {
			if b.rows, err = decodeRows(lines[3+i+1:], b.asOf); err != nil {
				return bad("row")
			}
			break
		}
		f := strings.SplitN(line, "\t", 5)
		if len(f) != 5 || len(f[1]) != 2 {
			return bad("change")
		}
		c := repository.Change{Entity: uncode(entityCodes, f[1][0]), Op: uncode(opCodes, f[1][1]), Key: f[4]}
		var ago int64
		c.Seq, err = strconv.ParseInt(f[0], 10, 64)
		if err == nil {
			c.Version, err = strconv.ParseInt(f[2], 10, 64)
		}
		if err == nil {
			ago, err = strconv.ParseInt(f[3], 10, 64)
		}
		if err != nil || c.Entity == "" || c.Op == "" {
			return bad("change")
		}
		c.At = time.UnixMicro(asOf - ago).UTC()
		b.changes = append(b.changes, c)
	}
	return b, nil
}

// The one-letter codes of a change's entity and op in a broadcast.
var (
	entityCodes = map[repository.Entity]byte{repository.EntityVendor: 'v', repository.EntityWorkItem: 'w'}
	opCodes     = map[repository.ChangeOp]byte{
		repository.ChangeInsert: 'i', repository.ChangeUpdate: 'u', repository.ChangeDelete: 'd', repository.ChangeTruncate: 't',
	}
)

// uncode is the value whose code is b, or the zero value.
func uncode[T comparable](codes map[T]byte, b byte) T {
	for v, c := range codes {
		if c == b {
			return v
		}
	}
	var zero T
	return zero
}

// covers reports whether c has delivered every change that b has: the
// same log, triggers and history, a seq at least b's, and a snapshot that
// sees committed every transaction b's sees committed. A batch read from b
// then brings c to the batch's next cursor (see the cursor invariant in
// changes.go): what c delivered, plus the batch, includes all that next
// claims.
func (c cursor) covers(b cursor) bool {
	if c.legacy || b.legacy || c.system != b.system || c.db != b.db || c.timeline != b.timeline ||
		c.logID != b.logID || c.triggers != b.triggers || c.seq < b.seq || c.snap.xmax < b.snap.xmax {
		return false
	}
	// A transaction c saw in progress must be one b did not see end:
	// in progress for b too, or not yet started.
	for _, x := range c.snap.xip {
		if x < b.snap.xmax && !slices.Contains(b.snap.xip, x) {
			return false
		}
	}
	return true
}

var _ repository.HeardChangeFeed = (*Store)(nil)

// ReadHeardChanges answers from the broadcasts this Store's listener heard
// or its waker sent. See repository.HeardChangeFeed.
func (s *Store) ReadHeardChanges(cursorText string, limit int) (repository.ChangeBatch, bool) {
	c, err := parseCursor(cursorText)
	if err != nil || limit < 1 {
		return repository.ChangeBatch{}, false
	}
	return s.heard.read(c, min(limit, maxReadLimit))
}

// heardBroadcasts are the last notifications that announced changes, as
// this Store's listener heard them or its waker sent them, oldest first.
type heardBroadcasts struct {
	mu      sync.Mutex
	entries []heardBroadcast
	served  atomic.Uint64 // ReadHeardChanges answered
	// logID is the log_id of the Store's last read of the log (nil before
	// one): the key its listener opens payloads with.
	logID atomic.Pointer[string]
}

// learn notes the log_id a read of the log found.
func (h *heardBroadcasts) learn(logID string) {
	if p := h.logID.Load(); p == nil || *p != logID {
		h.logID.Store(&logID)
	}
}

// hear takes a notification a listener received from another session. It
// keeps what the notification announced for ReadHeardChanges and reports
// whether the follower must be woken: every notification but a trusted
// heartbeat. Trusted is a sealed payload that opens under the learned
// log_id and whose asOf is after *floor, which it then moves; anything
// else is kept as a plain wake-up, which only the log answers.
func (h *heardBroadcasts) hear(payload string, floor *time.Time) (wake bool) {
	if p := h.logID.Load(); p != nil && strings.HasPrefix(payload, broadcastPrefix) {
		if b, err := decodeBroadcast(payload, *p); err == nil && b.asOf.After(*floor) {
			*floor = b.asOf
			if len(b.changes) == 0 {
				return false // a heartbeat: the waker is there, and nothing changed
			}
			h.add(payload, &b)
			return true
		}
	}
	h.add(WakePayload, nil)
	return true
}

type heardBroadcast struct {
	payload string     // "" for a WakePayload: changes it does not carry
	logID   string     // the key it was last opened with
	b       *broadcast // nil: it does not open with logID's key, or carries nothing
}

// add keeps a notification that announced changes: payload is a broadcast
// or WakePayload; b, when not nil, is the broadcast already decoded (the
// waker's own, or one hear trusted).
func (h *heardBroadcasts) add(payload string, b *broadcast) {
	e := heardBroadcast{b: b}
	if strings.HasPrefix(payload, broadcastPrefix) {
		e.payload = payload
	}
	if b != nil {
		e.logID = b.from.logID
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entries) == heardRing {
		h.entries = slices.Delete(h.entries, 0, 1)
	}
	h.entries = append(h.entries, e)
}

// read answers ReadHeardChanges from the broadcasts that continue c, when
// they reach the last notification heard and fit in limit. The last one
// decides: after a WakePayload, or a payload that does not open under c's
// log (forged, or sealed under a log reset since), what was announced is
// known only to the log.
func (h *heardBroadcasts) read(c cursor, limit int) (repository.ChangeBatch, bool) {
	if c.legacy || c.logID == "" {
		return repository.ChangeBatch{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entries) == 0 {
		return repository.ChangeBatch{}, false
	}
	for i := range h.entries {
		e := &h.entries[i]
		if e.payload != "" && e.logID != c.logID {
			e.logID, e.b = c.logID, nil
			if b, err := decodeBroadcast(e.payload, c.logID); err == nil {
				e.b = &b
			}
		}
	}
	last := h.entries[len(h.entries)-1].b
	if last == nil {
		return repository.ChangeBatch{}, false
	}
	var changes []repository.Change
	var rows heardRows
	asOf := last.asOf // for a cursor already past the last broadcast
	used := make([]bool, len(h.entries))
	for progress := true; progress; {
		progress = false
		for i, e := range h.entries {
			if used[i] || e.b == nil || !c.covers(e.b.from) || c.covers(e.b.next) {
				continue
			}
			changes = append(changes, e.b.changes...)
			rows.add(e.b)
			c, used[i], progress = e.b.next, true, true
			asOf = e.b.asOf
		}
	}
	if !c.covers(last.next) {
		return repository.ChangeBatch{}, false
	}
	// In seq order, once each: broadcasts may repeat a change (a
	// transaction that commits out of seq order is in the read after its
	// commit, seq below the ones before it).
	slices.SortStableFunc(changes, func(a, b repository.Change) int { return cmp.Compare(a.Seq, b.Seq) })
	changes = slices.CompactFunc(changes, func(a, b repository.Change) bool { return a.Seq == b.Seq })
	if len(changes) > limit {
		return repository.ChangeBatch{}, false
	}
	h.served.Add(1)
	return repository.ChangeBatch{Changes: changes, Next: c.String(), AsOf: asOf, Rows: rows.current()}, true
}
