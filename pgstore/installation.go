package pgstore

import "strconv"

// Several installations in one database.
//
// A database may hold more than one installation of pgfallback: services
// that share a database with a schema each, each migrated into its own
// (migrations.Up installs in the first schema of the owner's search_path).
// Each has its own change log, so each needs its own waker, channel and
// pruning lock. With one channel and one waker's lock for the whole
// database, the first installation's waker was the only one: the second's
// followers had no waker of their own, heard the first's notifications,
// which they cannot open (sealed under another log_id, broadcast.go), and
// woke at each into a read of their own log. Their changes were seen at
// the pace of the other service's heartbeats and commits (in a test, 370
// ms after the commit at the median, up to 680 ms, where one installation
// wakes its followers in a few), and each of their followers read its log
// for every commit of the other service. Pruning one log held off
// pruning the other.
//
// An installation is named by the OID of its pgfallback_changes, found
// through the session's search_path as pgstore's queries find it. The one
// in schema public keeps ChangeChannel, ChangeWakerLockKey and
// ChangePruneLockKey, so that a database with one installation, and an
// earlier version's instances beside this one's, keep one waker; any
// other gets a channel and keys of its own.
type installation int64 // 0: schema public (or no log yet); else the log's OID

// installationSQL is the session's installation, and logSchemaSQL the
// schema of its change log ("" when there is none), as SQL expressions.
const (
	installationSQL = `coalesce((SELECT CASE relnamespace::regnamespace::text WHEN 'public' THEN 0 ELSE oid::bigint END
		FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass('pgfallback_changes')), 0)`
	logSchemaSQL = `coalesce((SELECT relnamespace::regnamespace::text
		FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass('pgfallback_changes')), '')`
)

// channel is the installation's LISTEN/NOTIFY channel.
func (i installation) channel() string {
	if i == 0 {
		return ChangeChannel
	}
	return ChangeChannel + "_" + strconv.FormatInt(int64(i), 10)
}

// wakerKey is the session advisory lock of the installation's waker: the
// OID in the low 32 bits, which ChangePruneLockKey's high bits keep apart.
func (i installation) wakerKey() int64 { return ChangeWakerLockKey ^ int64(i) }
