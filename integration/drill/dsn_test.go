package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pgfallback/pgfallback/integration/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// withPoolSettings appends pgxpool settings to a URL DSN, as an
// application's DATABASE_URL may carry them.
func withPoolSettings(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("test DSN is not a URL: %v", err)
	}
	q := u.Query()
	q.Set("pool_max_conns", "5")
	q.Set("pool_min_conns", "1")
	u.RawQuery = q.Encode()
	return u.String()
}

// The drill's own connections around the proxy (schema check, rows changed
// behind the layer, clean-up) take the DSN the application's pool takes.
func TestDirectConnectionsAcceptPoolSettings(t *testing.T) {
	ctx := context.Background()
	plain := pgtest.NewDatabase(t)
	pooled := withPoolSettings(t, plain)
	if version, err := checkSchema(ctx, pooled); err != nil || version == "" {
		t.Fatalf("checkSchema: server_version %q, %v", version, err)
	}

	conn, err := pgx.Connect(ctx, plain)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	const tag = "dsntest"
	for _, n := range []string{tag + "-a", tag + "-b", "other"} {
		if _, err := conn.Exec(ctx, `INSERT INTO vendors (id, name, status) VALUES ($1, $2, 'operational')`, uuid.New(), n); err != nil {
			t.Fatal(err)
		}
	}
	if err := changeRows(ctx, pooled, []string{tag + "-a"}); err != nil {
		t.Fatalf("changeRows: %v", err)
	}
	var status string
	var version int64
	if err := conn.QueryRow(ctx, `SELECT status, version FROM vendors WHERE name = $1`, tag+"-a").Scan(&status, &version); err != nil {
		t.Fatal(err)
	}
	if status != "broken" || version != 2 {
		t.Fatalf("after changeRows: status %s, version %d", status, version)
	}
	if err := removeRows(ctx, pooled, tag); err != nil {
		t.Fatalf("removeRows: %v", err)
	}
	var left []string
	rows, _ := conn.Query(ctx, `SELECT name FROM vendors ORDER BY name`)
	if left, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != "other" {
		t.Fatalf("after removeRows: %v, want [other]", left)
	}
}

// A DSN that cannot be parsed is refused with an error that does not show
// its password: pgx alone shows "retpw" of the first and all of the second.
func TestRunErrorShowsNoPassword(t *testing.T) {
	for _, d := range []string{
		"postgres://u:s3c@retpw@127.0.0.1:notaport/db",
		"host=127.0.0.1 port=notaport password = s3cretpw",
		"postgres://u:s3cretpw@127.0.0.1:1/db?connect_timeout=1",
	} {
		_, err := Run(context.Background(), Config{DSN: d, Scenarios: []string{ScenarioDown}})
		if err == nil {
			t.Errorf("Run(%q) succeeded", d)
			continue
		}
		if strings.Contains(err.Error(), "s3c") || strings.Contains(err.Error(), "retpw") {
			t.Errorf("Run(%q): the error shows the password: %v", d, err)
		}
	}
}

// Violations quote errors, and errors from pgx quote connection strings;
// the reports are published, so none of the three forms may show one.
func TestReportsShowNoPassword(t *testing.T) {
	rep := &Report{RunID: "r", Scenarios: []ScenarioReport{{
		Name:        ScenarioDown,
		Violations:  []string{"open the application: drill: parse dsn: cannot parse `postgres://u:s3cretpw@h:x/db`: invalid port"},
		Warm:        WarmSummary{Err: "failed: host=h password=s3cretpw"},
		Description: "password = s3cretpw",
	}}}
	rep.redact()
	var text bytes.Buffer
	rep.WriteText(&text)
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	if err := rep.WriteJSON(jsonPath); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteHTML(htmlPath); err != nil {
		t.Fatal(err)
	}
	js, _ := os.ReadFile(jsonPath)
	page, _ := os.ReadFile(htmlPath)
	if !json.Valid(js) {
		t.Fatalf("JSON report is not JSON:\n%s", js)
	}
	for name, b := range map[string][]byte{"text": text.Bytes(), "JSON": js, "HTML": page} {
		if bytes.Contains(b, []byte("s3cretpw")) {
			t.Errorf("the %s report shows the password", name)
		}
	}
	if !strings.Contains(text.String(), "invalid port") {
		t.Errorf("redaction lost the violation's reason:\n%s", text.String())
	}
}
