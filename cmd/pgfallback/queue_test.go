package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/mattn/go-sqlite3"

	"github.com/pgfallback/pgfallback/repository"
	"github.com/pgfallback/pgfallback/sqlitecache"
)

// queueFile is a cache file with a dead letter (an update of vendor acme
// built on version 3, refused: PostgreSQL holds version 5) and a pending
// write (a create of vendor globex). The cache stays open, as a running
// application's would: the CLI must work beside it.
type queueFile struct {
	path          string
	c             *sqlitecache.Cache
	dead, pending repository.Write
}

func newQueueFile(t *testing.T) queueFile {
	t.Helper()
	ctx := context.Background()
	f := queueFile{path: filepath.Join(t.TempDir(), "cache.db")}
	c, err := sqlitecache.Open(f.path, sqlitecache.WithCleanupInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f.c = c
	acme := repository.Vendor{ID: uuid.New(), Name: "acme", Status: repository.VendorOperational, Version: 3}
	if err := c.SetVendor(ctx, acme); err != nil {
		t.Fatal(err)
	}
	f.dead = repository.Write{ID: newV7(t), Op: repository.WriteUpdate, Entity: repository.EntityVendor, Vendor: acme, BaseVersion: 3}
	q, err := c.Enqueue(ctx, f.dead, sqlitecache.Row{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	current := acme
	current.Version = 5
	if _, err := c.DeadLetter(ctx, q, "version conflict: the row is at version 5", sqlitecache.Row{Vendor: &current}); err != nil {
		t.Fatal(err)
	}
	f.pending = repository.Write{ID: newV7(t), Op: repository.WriteCreate, Entity: repository.EntityVendor,
		Vendor: repository.Vendor{Name: "globex", Status: repository.VendorOperational}}
	if _, err := c.Enqueue(ctx, f.pending, sqlitecache.Row{}, 0); err != nil {
		t.Fatal(err)
	}
	return f
}

func newV7(t *testing.T) uuid.UUID {
	t.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// line returns the line of out that holds s.
func line(t *testing.T, out, s string) string {
	t.Helper()
	for l := range strings.Lines(out) {
		if strings.Contains(l, s) {
			return l
		}
	}
	t.Fatalf("no line holds %q:\n%s", s, out)
	return ""
}

func TestQueueList(t *testing.T) {
	f := newQueueFile(t)
	code, stdout, stderr := runCLI(t, "queue", "list", "--path", f.path)
	if code != 0 || stderr != "" {
		t.Fatalf("queue list: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("queue list:\n%s", stdout)
	if first, _, _ := strings.Cut(stdout, "\n"); !strings.Contains(first, "1 pending (oldest queued ") || !strings.Contains(first, "1 dead letters") {
		t.Fatalf("summary line %q", first)
	}
	dead := strings.Fields(line(t, stdout, f.dead.ID.String()))
	// SEQ ID STATE OP ENTITY KEY BASE QUEUED-AT ATTEMPTS CURRENT ERROR...
	if len(dead) < 11 || dead[2] != "dead" || dead[3] != "update" || dead[4] != "vendor" || dead[5] != "acme" ||
		dead[6] != "3" || dead[9] != "5" || !strings.Contains(strings.Join(dead[10:], " "), "version conflict: the row is at version 5") {
		t.Fatalf("dead letter line: %q", dead)
	}
	if _, err := time.Parse(time.RFC3339, dead[7]); err != nil {
		t.Fatalf("queued at %q: %v", dead[7], err)
	}
	pending := strings.Fields(line(t, stdout, f.pending.ID.String()))
	if len(pending) < 10 || pending[2] != "pending" || pending[3] != "create" || pending[5] != "globex" || pending[6] != "-" || pending[9] != "-" {
		t.Fatalf("pending line: %q", pending)
	}

	_, stdout, _ = runCLI(t, "queue", "list", "--dead", "--path", f.path)
	if !strings.Contains(stdout, f.dead.ID.String()) || strings.Contains(stdout, f.pending.ID.String()) {
		t.Fatalf("list --dead:\n%s", stdout)
	}
	_, stdout, _ = runCLI(t, "queue", "list", "--path", f.path, "--pending")
	if strings.Contains(stdout, f.dead.ID.String()) || !strings.Contains(stdout, f.pending.ID.String()) {
		t.Fatalf("list --pending:\n%s", stdout)
	}
}

func TestQueueListJSON(t *testing.T) {
	f := newQueueFile(t)
	code, stdout, stderr := runCLI(t, "queue", "list", "--json", "--path", f.path)
	if code != 0 || stderr != "" {
		t.Fatalf("queue list --json: exit %d\n%s%s", code, stdout, stderr)
	}
	type write struct {
		Seq            int64     `json:"seq"`
		ID             string    `json:"id"`
		State          string    `json:"state"`
		Op             string    `json:"op"`
		Entity         string    `json:"entity"`
		Key            string    `json:"key"`
		BaseVersion    int64     `json:"base_version"`
		QueuedAt       time.Time `json:"queued_at"`
		Attempts       int       `json:"attempts"`
		Error          string    `json:"error"`
		DeadAt         time.Time `json:"dead_at"`
		CurrentVersion *int64    `json:"current_version"`
	}
	var out struct {
		Pending     []write `json:"pending"`
		DeadLetters []write `json:"dead_letters"`
		Stats       struct {
			Pending          int       `json:"pending"`
			OldestQueuedAt   time.Time `json:"oldest_queued_at"`
			OldestAgeSeconds float64   `json:"oldest_age_seconds"`
			DeadLetters      int       `json:"dead_letters"`
		} `json:"stats"`
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("not the documented JSON: %v\n%s", err, stdout)
	}
	if out.Stats.Pending != 1 || out.Stats.DeadLetters != 1 || out.Stats.OldestQueuedAt.IsZero() || out.Stats.OldestAgeSeconds < 0 {
		t.Fatalf("stats: %+v", out.Stats)
	}
	if len(out.DeadLetters) != 1 || len(out.Pending) != 1 {
		t.Fatalf("lists: %s", stdout)
	}
	d, p := out.DeadLetters[0], out.Pending[0]
	if d.ID != f.dead.ID.String() || d.State != "dead" || d.Op != "update" || d.Entity != "vendor" || d.Key != "acme" ||
		d.BaseVersion != 3 || d.QueuedAt.IsZero() || d.DeadAt.IsZero() || d.CurrentVersion == nil || *d.CurrentVersion != 5 ||
		!strings.Contains(d.Error, "version conflict") {
		t.Fatalf("dead letter: %+v", d)
	}
	if p.ID != f.pending.ID.String() || p.State != "pending" || p.Op != "create" || p.Key != "globex" || p.CurrentVersion != nil || p.Seq <= d.Seq {
		t.Fatalf("pending write: %+v", p)
	}

	// A list that was not asked for is absent, not empty.
	_, stdout, _ = runCLI(t, "queue", "list", "--json", "--dead", "--path", f.path)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw["pending"]; ok || raw["dead_letters"] == nil || raw["stats"] == nil {
		t.Fatalf("list --json --dead: %s", stdout)
	}
}

func TestQueueRetryAndDiscard(t *testing.T) {
	ctx := context.Background()
	f := newQueueFile(t)
	id := f.dead.ID.String()
	code, stdout, stderr := runCLI(t, "queue", "retry", "--path", f.path, id)
	if code != 0 || stdout != "requeued write "+id+" (update vendor \"acme\") at the end of the queue\n" {
		t.Fatalf("queue retry: exit %d\n%s%s", code, stdout, stderr)
	}
	ps, err := f.c.PendingWrites(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[1].Write.ID != f.dead.ID || ps[1].Attempts != 0 || ps[1].Err != "" || ps[1].Write.BaseVersion != 3 {
		t.Fatalf("after retry, pending writes: %+v", ps)
	}
	if ds, err := f.c.DeadLetters(ctx); err != nil || len(ds) != 0 {
		t.Fatalf("after retry, dead letters: %v %+v", err, ds)
	}
	// It is pending now: neither action takes it.
	for _, action := range []string{"retry", "discard"} {
		code, stdout, stderr = runCLI(t, "queue", action, id, "--path", f.path)
		if code != 1 || !strings.Contains(stderr, "pending, not a dead letter") {
			t.Fatalf("queue %s of a pending write: exit %d\n%s%s", action, code, stdout, stderr)
		}
	}

	if _, err := f.c.DeadLetter(ctx, ps[1], "refused again", sqlitecache.Row{}); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, "queue", "discard", "--path", f.path, id)
	if code != 0 || !strings.HasPrefix(stdout, "discarded write "+id+" (update vendor \"acme\")") {
		t.Fatalf("queue discard: exit %d\n%s%s", code, stdout, stderr)
	}
	if ds, err := f.c.DeadLetters(ctx); err != nil || len(ds) != 0 {
		t.Fatalf("after discard, dead letters: %v %+v", err, ds)
	}
	if ps, err := f.c.PendingWrites(ctx, 0); err != nil || len(ps) != 1 || ps[0].Write.ID != f.pending.ID {
		t.Fatalf("after discard, pending writes: %v %+v", err, ps)
	}
	code, _, stderr = runCLI(t, "queue", "discard", "--path", f.path, id)
	if code != 1 || !strings.Contains(stderr, "no queued write "+id) {
		t.Fatalf("discard of a discarded write: exit %d: %s", code, stderr)
	}
}

func TestQueueRefusals(t *testing.T) {
	f := newQueueFile(t)
	unknown := newV7(t).String()
	for _, action := range []string{"retry", "discard"} {
		code, stdout, stderr := runCLI(t, "queue", action, "--path", f.path, unknown)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "no queued write "+unknown) {
			t.Errorf("queue %s of an unknown ID: exit %d\n%s%s", action, code, stdout, stderr)
		}
		code, stdout, stderr = runCLI(t, "queue", action, "--path", f.path, "12345-nope")
		if code != 2 || stdout != "" || !strings.Contains(stderr, `malformed ID argument "12345-nope"`) || !strings.Contains(stderr, "Usage") {
			t.Errorf("queue %s of a malformed ID: exit %d\n%s%s", action, code, stdout, stderr)
		}
		code, _, stderr = runCLI(t, "queue", action, "--path", f.path)
		if code != 2 || !strings.Contains(stderr, "missing ID argument") {
			t.Errorf("queue %s without an ID: exit %d\n%s", action, code, stderr)
		}
		code, stdout, stderr = runCLI(t, "queue", action, "--path", f.path, f.pending.ID.String())
		if code != 1 || !strings.Contains(stderr, "pending, not a dead letter") {
			t.Errorf("queue %s of a pending write: exit %d\n%s%s", action, code, stdout, stderr)
		}
	}
	if ps, err := f.c.PendingWrites(context.Background(), 0); err != nil || len(ps) != 1 {
		t.Fatalf("the refusals changed the queue: %v %+v", err, ps)
	}
	if ds, err := f.c.DeadLetters(context.Background()); err != nil || len(ds) != 1 {
		t.Fatalf("the refusals changed the dead letters: %v %+v", err, ds)
	}
}

// Like the cache commands, every queue action refuses what is not a cache,
// and changes or creates nothing.
func TestQueueCommandsLeaveForeignFilesAlone(t *testing.T) {
	dir := t.TempDir()
	yaml, empty, foreign := foreignFiles(t, dir)
	missing := filepath.Join(dir, "missing.db")

	snapshot := func() map[string][]byte {
		files := map[string][]byte{}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			files[e.Name()] = b
		}
		return files
	}
	before := snapshot()
	id := newV7(t).String()
	for _, path := range []string{yaml, empty, foreign, missing} {
		for _, args := range [][]string{{"list"}, {"list", "--json"}, {"retry", id}, {"discard", id}} {
			run := append([]string{"queue"}, args...)
			run = append(run, "--path", path)
			code, stdout, stderr := runCLI(t, run...)
			if code != 1 || stdout != "" || !strings.Contains(stderr, path) {
				t.Errorf("pgfallback %s: exit %d, stdout %q, stderr %q: want a refusal naming the file (exit 1)",
					strings.Join(run, " "), code, stdout, stderr)
			}
		}
	}
	_, _, stderr := runCLI(t, "queue", "list", "--path", yaml)
	if !strings.Contains(stderr, "not a pgfallback cache file") {
		t.Errorf("queue list of a YAML file: %s", stderr)
	}
	after := snapshot()
	if len(after) != len(before) {
		t.Errorf("files in the directory changed: before %d, after %d", len(before), len(after))
	}
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s was changed", name)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("the missing file was created: %v", err)
	}
}

// A queued write whose stored bytes do not decode: list shows it (the
// JSON with its raw bytes), retry refuses it and says why, discard removes
// it — pending or dead — and every other write stays listed.
func TestQueueUndecodableWrite(t *testing.T) {
	ctx := context.Background()
	f := newQueueFile(t)
	damage := func(id uuid.UUID) {
		t.Helper()
		db, err := sql.Open("sqlite3", "file:"+f.path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(`UPDATE queued_writes SET data = x'deadbeef' WHERE id = ?`, id.String()); err != nil {
			t.Fatal(err)
		}
	}
	damage(f.pending.ID)
	damage(f.dead.ID)

	code, stdout, stderr := runCLI(t, "queue", "list", "--path", f.path)
	if code != 0 || stderr != "" {
		t.Fatalf("queue list: exit %d\n%s%s", code, stdout, stderr)
	}
	if l := line(t, stdout, f.pending.ID.String()); !strings.Contains(l, "does not decode") || !strings.Contains(l, "globex") {
		t.Fatalf("the damaged pending write's line: %q", l)
	}
	line(t, stdout, f.dead.ID.String())
	code, stdout, _ = runCLI(t, "queue", "list", "--json", "--path", f.path)
	var out struct {
		Pending []struct {
			ID, Undecodable string
			Raw             []byte
		}
	}
	if err := json.Unmarshal([]byte(stdout), &out); code != 0 || err != nil || len(out.Pending) != 1 ||
		!bytes.Equal(out.Pending[0].Raw, []byte{0xde, 0xad, 0xbe, 0xef}) || out.Pending[0].Undecodable == "" {
		t.Fatalf("queue list --json: exit %d, %v\n%s", code, err, stdout)
	}

	id := f.dead.ID.String()
	code, stdout, stderr = runCLI(t, "queue", "retry", "--path", f.path, id)
	if code != 1 || !strings.Contains(stderr, "do not decode") || !strings.Contains(stderr, "queue discard "+id) {
		t.Fatalf("retry of an undecodable dead letter: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, w := range []repository.Write{f.dead, f.pending} {
		code, stdout, stderr = runCLI(t, "queue", "discard", "--path", f.path, w.ID.String())
		if code != 0 || !strings.HasPrefix(stdout, "discarded write "+w.ID.String()) {
			t.Fatalf("discard of %s: exit %d\n%s%s", w.ID, code, stdout, stderr)
		}
	}
	if s, err := f.c.QueueStats(ctx); err != nil || s.Pending != 0 || s.DeadLetters != 0 {
		t.Fatalf("after discarding both: %+v, %v", s, err)
	}
}
