// Package dsn keeps PostgreSQL connection strings out of sight and parses
// them the same way everywhere: the CLI, the migrations and the drill accept
// one DATABASE_URL, pool settings included, and never print its password.
package dsn

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// mask replaces every password Redact finds, as pgx's own redaction does.
const mask = "xxxxx"

var (
	// The userinfo password runs to the last '@' of the token, not the
	// first: an unencoded '@' or '/' in a password is malformed, but it is
	// exactly what reaches an error message, and masking too much is safe.
	urlUserinfo = regexp.MustCompile(`(?i)(postgres(?:ql)?://[^:@/?#\s]*:)\S*@`)
	// Query parameters are decoded before comparing, as pgx does, so an
	// encoded key (pass%77ord) is caught too.
	urlParam = regexp.MustCompile(`([?&])([^=&#\s]*)=[^&#\s]*`)
	// Keyword/value form: password=secret, password = secret,
	// password='it\'s quoted'. An unterminated quote masks to the end.
	// The leading character keeps URL query parameters (after ? or &) out:
	// they end at '&', which a keyword/value password may contain.
	keywordValue = regexp.MustCompile(`(?i)(^|[\s'"` + "`" + `(,;])((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)
)

// Redact returns s with every PostgreSQL password in it replaced by xxxxx.
// s is a DSN in URL or keyword/value form, or any text that may quote one,
// such as an error message. Everything else is left as it was.
func Redact(s string) string {
	s = urlUserinfo.ReplaceAllString(s, "${1}"+mask+"@")
	s = urlParam.ReplaceAllStringFunc(s, func(m string) string {
		sub := urlParam.FindStringSubmatch(m)
		key, err := url.QueryUnescape(sub[2])
		if err != nil {
			key = sub[2]
		}
		if !strings.EqualFold(key, "password") && !strings.EqualFold(key, "sslpassword") {
			return m
		}
		return sub[1] + sub[2] + "=" + maskValue(m[len(sub[1])+len(sub[2])+1:])
	})
	return keywordValue.ReplaceAllStringFunc(s, func(m string) string {
		sub := keywordValue.FindStringSubmatch(m)
		return sub[1] + sub[2] + maskValue(sub[3])
	})
}

// maskValue masks an unquoted password value, which runs to the next space
// and so takes in the quote or punctuation that closes it in a message.
// A value already masked keeps that tail: redacting a text twice (the CLI
// redacts errors that were redacted where they arose) must not eat it.
// Only a password beginning with xxxxx and a quote shows the rest.
func maskValue(v string) string {
	if rest, ok := strings.CutPrefix(v, mask); ok && rest != "" && strings.ContainsRune("`'\"),;:", rune(rest[0])) {
		return v
	}
	return mask
}

// Error returns err with its text redacted; errors.Is and errors.As still
// see err. Nil stays nil.
func Error(err error) error {
	if err == nil {
		return nil
	}
	return &redactedError{err: err}
}

type redactedError struct{ err error }

func (e *redactedError) Error() string { return Redact(e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }

// ParseConfig is pgxpool.ParseConfig with an error that shows no password:
// pgx masks the password of a connection string it cannot parse only on a
// best-effort basis (v5.12 shows "password = secret", and half of a
// password holding an '@'). It pins what pgx needs of a session
// (PinSessionSettings).
func ParseConfig(s string) (*pgxpool.Config, error) {
	if err := checkUserInfo(s); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(s)
	if err != nil {
		var pe *pgconn.ParseConfigError
		if errors.As(err, &pe) {
			return nil, &parseError{pe: pe}
		}
		return nil, Error(err)
	}
	PinSessionSettings(cfg.ConnConfig)
	return cfg, nil
}

// PinnedSettings are what pgx needs of a session, whatever the DSN, the
// server, the database or the role sets (a DBA's defaults, say, for an
// older application sharing the database):
//
//   - client_encoding UTF8: pgx sends and reads Go strings as UTF-8 and
//     never says so. Under a LATIN1 client encoding (a LATIN1 database's
//     default) the server took the bytes of "Zürich€" for ten LATIN1
//     characters and stored them so; pgx read them back as sent, so only
//     every other client saw the corruption.
//   - DateStyle ISO: in the exec and simple_protocol query modes pgx reads
//     results as text and parses only ISO dates; under 'SQL, DMY' every
//     timestamp failed to decode.
//   - standard_conforming_strings on: pgx refuses to build a
//     simple_protocol query without it.
//
// Startup parameters, which PgBouncer passes on.
var PinnedSettings = [][2]string{{"client_encoding", "UTF8"}, {"DateStyle", "ISO"}, {"standard_conforming_strings", "on"}}

// PinSessionSettings sets PinnedSettings in cfg, replacing any spelling
// of their names (two would both reach the server, in no set order).
func PinSessionSettings(cfg *pgx.ConnConfig) {
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	for _, kv := range PinnedSettings {
		for k := range cfg.RuntimeParams {
			if strings.EqualFold(k, kv[0]) {
				delete(cfg.RuntimeParams, k)
			}
		}
		cfg.RuntimeParams[kv[0]] = kv[1]
	}
}

// parseError quotes the connection string as Redact masks it rather than
// as pgx does: redacting pgx's text again would also swallow the closing
// quote after an unquoted password.
type parseError struct{ pe *pgconn.ParseConfigError }

func (e *parseError) Error() string {
	// pgx's own text without the connection string is the reason alone.
	bare := *e.pe
	bare.ConnString = ""
	reason := strings.TrimPrefix(bare.Error(), "cannot parse ``: ")
	return "cannot parse `" + Redact(e.pe.ConnString) + "`: " + Redact(reason)
}

func (e *parseError) Unwrap() error { return e.pe }

// ConnConfig is the configuration of a single connection to s. A pgxpool
// DSN's pool_* parameters are dropped: pgx.ParseConfig would send them to
// the server as settings, which PostgreSQL refuses as unrecognized.
func ConnConfig(s string) (*pgx.ConnConfig, error) {
	cfg, err := ParseConfig(s)
	if err != nil {
		return nil, err
	}
	return cfg.ConnConfig, nil
}

// Connect opens a single connection to s (see ConnConfig).
func Connect(ctx context.Context, s string) (*pgx.Conn, error) {
	cfg, err := ConnConfig(s)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, Error(err)
	}
	return conn, nil
}

// ErrUnencodedAt is returned for a URL whose user information holds an
// unencoded "@". pgx splits such a URL at the first "@", so the rest of
// the password becomes part of the host name, and an error that names the
// host (a failed lookup) would show it.
var ErrUnencodedAt = errors.New(`the DSN's user or password holds an unencoded "@": percent-encode it as %40`)

// checkUserInfo refuses a URL DSN with more than one "@" before the path,
// without quoting any of it.
func checkUserInfo(s string) error {
	rest, ok := strings.CutPrefix(s, "postgres://")
	if !ok {
		if rest, ok = strings.CutPrefix(s, "postgresql://"); !ok {
			return nil
		}
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	if strings.Count(rest, "@") > 1 {
		return fmt.Errorf("cannot parse the DSN: %w", ErrUnencodedAt)
	}
	return nil
}

var (
	// pgconn names the user and the database of a failed connection:
	// "failed to connect to `user=app database=orders`".
	connectTarget = regexp.MustCompile(`\b(user|database|dbname|host|port)=[^\s` + "`" + `'"]*`)
	// Addresses: an IPv4 or bracketed IPv6 address, or a host name with a
	// port, as dial errors and pgconn show them.
	ipv4Addr = regexp.MustCompile(`\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b`)
	ipv6Addr = regexp.MustCompile(`\[[0-9A-Fa-f:.%a-z]*\](?::\d+)?`)
	hostPort = regexp.MustCompile(`\b[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*:\d{2,5}\b`)
)

// RedactDetails is Redact that also masks whom and where an error says it
// connected to: the user, the database, host names and addresses. It is
// for text shown to whoever can read a health endpoint or a status page,
// which must not learn the database's layout from an outage.
func RedactDetails(s string) string {
	s = Redact(s)
	s = connectTarget.ReplaceAllString(s, "${1}="+mask)
	s = ipv6Addr.ReplaceAllString(s, "[address]")
	s = ipv4Addr.ReplaceAllString(s, "address")
	return hostPort.ReplaceAllString(s, "address")
}
