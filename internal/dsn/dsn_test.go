package dsn

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

const secret = "s3cretpw"

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://u:s3cretpw@host:5432/db?sslmode=disable", "postgres://u:xxxxx@host:5432/db?sslmode=disable"},
		{"postgresql://u:s3cretpw@h1,h2/db", "postgresql://u:xxxxx@h1,h2/db"},
		{"POSTGRES://u:s3cretpw@host/db", "POSTGRES://u:xxxxx@host/db"},
		{"postgres://:s3cretpw@host/db", "postgres://:xxxxx@host/db"},
		// Malformed: an unencoded '@' or '/' in the password.
		{"postgres://u:s3c@retpw@host/db", "postgres://u:xxxxx@host/db"},
		{"postgres://u:s3c/retpw@host/db", "postgres://u:xxxxx@host/db"},
		{"postgres://u:s3cretpw@host:notaport/db", "postgres://u:xxxxx@host:notaport/db"},
		// No password: nothing to hide, the port stays.
		{"postgres://u@host:5432/db", "postgres://u@host:5432/db"},
		{"postgres://host:5432/db?sslmode=disable", "postgres://host:5432/db?sslmode=disable"},
		// Query parameters.
		{"postgres://u@host/db?password=s3cretpw&sslmode=disable", "postgres://u@host/db?password=xxxxx&sslmode=disable"},
		{"postgres://u@host/db?sslmode=disable&password=s3cretpw", "postgres://u@host/db?sslmode=disable&password=xxxxx"},
		{"postgres://u@host/db?sslpassword=s3cretpw", "postgres://u@host/db?sslpassword=xxxxx"},
		{"postgres://u@host/db?pass%77ord=s3cretpw", "postgres://u@host/db?pass%77ord=xxxxx"},
		{"postgres://u@host/db?PASSWORD=s3cretpw", "postgres://u@host/db?PASSWORD=xxxxx"},
		{"postgres://u@host/db?pool_max_conns=5", "postgres://u@host/db?pool_max_conns=5"},
		// Keyword/value form.
		{"host=h user=u password=s3cretpw dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"password=s3cretpw", "password=xxxxx"},
		{"host=h password = s3cretpw dbname=d", "host=h password = xxxxx dbname=d"},
		{"host=h password='s3c retpw' dbname=d", "host=h password=xxxxx dbname=d"},
		{`host=h password='s3c\'retpw' dbname=d`, "host=h password=xxxxx dbname=d"},
		{"host=h password='s3c retpw", "host=h password=xxxxx"},
		{"host=h PASSWORD=s3cretpw", "host=h PASSWORD=xxxxx"},
		{"host=h sslpassword=s3cretpw", "host=h sslpassword=xxxxx"},
		// Text quoting a DSN, as error messages do.
		{"cannot parse `postgres://u:s3cretpw@host:x/db`: invalid port", "cannot parse `postgres://u:xxxxx@host:x/db`: invalid port"},
		{`unexpected argument "postgres://u:s3cretpw@host/db"`, `unexpected argument "postgres://u:xxxxx@host/db"`},
		{"cannot parse `host=h password=s3cretpw`: x", "cannot parse `host=h password=xxxxx x"},
		// Redacting twice keeps what closes a masked value.
		{"cannot parse `host=h password=xxxxx`: invalid port", "cannot parse `host=h password=xxxxx`: invalid port"},
		{"cannot parse `postgres://h/db?password=xxxxx`: invalid port", "cannot parse `postgres://h/db?password=xxxxx`: invalid port"},
		// Nothing to redact.
		{"password authentication failed for user \"u\"", "password authentication failed for user \"u\""},
		{"", ""},
	} {
		got := Redact(tc.in)
		if got != tc.want {
			t.Errorf("Redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "s3c") {
			t.Errorf("Redact(%q) = %q shows the password", tc.in, got)
		}
		if again := Redact(got); again != got {
			t.Errorf("Redact is not idempotent on %q: %q", got, again)
		}
	}
}

// pgx masks passwords in its parse errors on a best-effort basis only; what
// reaches a user goes through ParseConfig, whose errors must never show one.
func TestParseErrorsShowNoPassword(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u:s3cretpw@host:notaport/db", "cannot parse `postgres://u:xxxxx@host:notaport/db`: invalid port"},
		{"postgres://u:s3cretpw@host/db?pool_max_conns=lots", "cannot parse `postgres://u:xxxxx@host/db?pool_max_conns=lots`: cannot parse pool_max_conns"},
		{"postgres://u:s3cretpw@host/db?connect_timeout=soon", "invalid connect_timeout"},
		// pgx v5.12 shows "retpw" of this one (and of a URL with an
		// unencoded "@", now refused first: TestUnencodedAtIsRefused).
		{"host=h port=notaport password = s3cretpw", "cannot parse `host=h port=notaport password = xxxxx`: invalid port"},
		{"postgres://u:s3c/retpw@host:x/db", "invalid port"},
		{"postgres://u@host:x/db?password=s3cretpw", "cannot parse `postgres://u@host:x/db?password=xxxxx`: invalid port"},
		{"host=h port=notaport password=s3cretpw", "cannot parse `host=h port=notaport password=xxxxx`: invalid port"},
		{"host=h port=notaport password='s3cretpw with spaces'", "cannot parse `host=h port=notaport password=xxxxx`: invalid port"},
		{"host=h password=s3cretpw bogus", "invalid keyword/value"},
	} {
		_, err := ParseConfig(tc.dsn)
		if err == nil {
			t.Errorf("ParseConfig(%q) succeeded", tc.dsn)
			continue
		}
		s := tc.dsn
		if strings.Contains(err.Error(), "s3c") || strings.Contains(err.Error(), "retpw") {
			t.Errorf("ParseConfig(%q): error shows the password: %v", s, err)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q): %q does not say %q", s, err, tc.want)
		}
		var pe *pgconn.ParseConfigError
		if !errors.As(err, &pe) {
			t.Errorf("ParseConfig(%q): %T does not unwrap to *pgconn.ParseConfigError", s, err)
		}
	}
}

func TestConnConfigDropsPoolSettings(t *testing.T) {
	cfg, err := ConnConfig("postgres://u:s3cretpw@host/db?pool_max_conns=5&pool_min_conns=1&application_name=x")
	if err != nil {
		t.Fatal(err)
	}
	for k := range cfg.RuntimeParams {
		if strings.HasPrefix(k, "pool_") {
			t.Errorf("runtime parameter %q would be sent to the server", k)
		}
	}
	if cfg.RuntimeParams["application_name"] != "x" || cfg.Password != secret {
		t.Errorf("ConnConfig lost settings: %v, password kept %v", cfg.RuntimeParams, cfg.Password == secret)
	}
}

// Whatever the DSN says of the pinned settings, in any case of their names,
// the sessions get pgx's values, once: two spellings would both reach the
// server, in no set order.
func TestParseConfigPinsSessionSettings(t *testing.T) {
	for _, s := range []string{
		"postgres://u@host/db",
		"postgres://u@host/db?datestyle=German&CLIENT_ENCODING=LATIN1&standard_conforming_strings=off",
		"host=h user=u DateStyle='SQL, DMY' client_encoding=SQL_ASCII application_name=x",
	} {
		cfg, err := ParseConfig(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range PinnedSettings {
			var got []string
			for k, v := range cfg.ConnConfig.RuntimeParams {
				if strings.EqualFold(k, kv[0]) {
					got = append(got, k+"="+v)
				}
			}
			if len(got) != 1 || got[0] != kv[0]+"="+kv[1] {
				t.Errorf("ParseConfig(%q): %v, want %s=%s alone", s, got, kv[0], kv[1])
			}
		}
	}
}

func TestConnectErrorShowsNoPassword(t *testing.T) {
	// Port 1 refuses at once: the connect error, not the parse, is checked.
	_, err := Connect(context.Background(), "postgres://u:s3cretpw@127.0.0.1:1/db?connect_timeout=1&pool_max_conns=5")
	if err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "s3c") || strings.Contains(err.Error(), "pool_max_conns") {
		t.Fatalf("Connect: %v", err)
	}
}

func TestErrorKeepsTheCause(t *testing.T) {
	cause := errors.New("cannot parse `password=s3cretpw`")
	err := Error(cause)
	if !errors.Is(err, cause) || strings.Contains(err.Error(), "s3c") {
		t.Fatalf("Error(%v) = %v", cause, err)
	}
	if Error(nil) != nil {
		t.Fatal("Error(nil) is not nil")
	}
}

// An unencoded "@" in a URL's password made pgx take the rest of the
// password for the host: "lookup Passw0rd@127.0.0.1: no such host" showed
// it. Such a DSN is refused before anything is connected to, quoting none
// of it.
func TestUnencodedAtIsRefused(t *testing.T) {
	for _, d := range []string{
		"postgres://u:S3cret@Passw0rd@127.0.0.1:1/sd",
		"postgresql://u:S3cret@Passw0rd@127.0.0.1:1",
		"postgres://u@x:S3cret@Passw0rd@127.0.0.1:1/sd?sslmode=disable",
		"postgres://u:s3c@retpw@host:x/db",
	} {
		_, err := ParseConfig(d)
		if !errors.Is(err, ErrUnencodedAt) || strings.Contains(err.Error(), "S3cret") || strings.Contains(err.Error(), "Passw0rd") ||
			strings.Contains(err.Error(), "retpw") {
			t.Errorf("ParseConfig: %v, want ErrUnencodedAt without the password", err)
		}
		if _, err := ConnConfig(d); !errors.Is(err, ErrUnencodedAt) {
			t.Errorf("ConnConfig: %v, want ErrUnencodedAt", err)
		}
	}
	for _, d := range []string{
		"postgres://u:p%40ss@127.0.0.1:1/sd",                // encoded
		"postgres://u:p@127.0.0.1:1,127.0.0.1:2/sd",         // several hosts
		"postgres://u:p@127.0.0.1:1/sd?options=a@b",         // "@" after the path
		"host=127.0.0.1 port=1 user=u password=S3cret@Pass", // keyword/value: quoted as a whole
	} {
		if _, err := ParseConfig(d); err != nil {
			t.Errorf("ParseConfig(%s): %v, want it accepted", Redact(d), err)
		}
	}
}

// Issue 17: an unauthenticated health endpoint showed "failed to connect to
// `user=postgres database=sd`: 127.0.0.1:56432 …" during an outage.
func TestRedactDetails(t *testing.T) {
	for in, want := range map[string]string{
		"failed to connect to `user=postgres database=sd`: 127.0.0.1:56432 (127.0.0.1): dial error: connect: connection refused": "failed to connect to `user=xxxxx database=xxxxx`: address (address): dial error: connect: connection refused",
		"dial tcp [::1]:5432: connect: connection refused":                                                                       "dial tcp [address]: connect: connection refused",
		"dial tcp: lookup db.internal.example: no such host; db.internal.example:5432":                                           "dial tcp: lookup db.internal.example: no such host; address",
		"postgres://app:s3cret@db:5432/orders":                                                                                   "postgres://app:xxxxx@address/orders",
		"fallback: change feed: read: timeout: context deadline exceeded":                                                        "fallback: change feed: read: timeout: context deadline exceeded",
	} {
		if got := RedactDetails(in); got != want {
			t.Errorf("RedactDetails(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}
