// Package chaos injects network faults between an application and
// PostgreSQL with Toxiproxy (github.com/Shopify/toxiproxy/v2), for
// integration tests and failover drills.
//
// A Toxiproxy is either started in this process (StartServer: Toxiproxy's
// server on a free 127.0.0.1 port, no binary or container needed) or an
// external one (Connect, e.g. docker-compose's toxiproxy service at
// DefaultURL). Either way it is driven through Toxiproxy's HTTP API with its
// client package. A Proxy listens on its own port, forwards to the server,
// and has the verbs a drill needs:
//
//   - Down / Up: the port is closed (connections refused, open ones closed)
//     and opened again.
//   - Blackhole: connections are accepted and nothing ever comes back; only
//     the client's own deadline gets it out.
//   - Latency(d, jitter): every answer from the server is late by d.
//   - ResetPeer: open connections are cut now, and new ones are reset as soon
//     as they send (CutConnections cuts once and leaves the proxy working).
//   - Bandwidth(kbps): a slow link.
//   - Clear: no toxics, proxy up.
//
// Each verb replaces its own earlier toxics; toxics of different verbs
// combine. Errors name the proxy and the verb and wrap the cause.
//
// Usage in a test (pgtest gives the real server):
//
//	func TestSurvivesOutage(t *testing.T) {
//		ctx := context.Background()
//		tp, err := chaos.StartServer(ctx, slog.Default())
//		if err != nil {
//			t.Fatal(err)
//		}
//		defer tp.Close()
//
//		dsn := pgtest.NewDatabase(t)
//		upstream, _ := chaos.DSNHostPort(dsn)
//		proxy, err := tp.Proxy(ctx, "postgres", upstream)
//		if err != nil {
//			t.Fatal(err)
//		}
//		proxied, _ := proxy.DSN(dsn) // hand this one to the code under test
//		... start the application on proxied ...
//
//		proxy.Blackhole() // the database stops answering
//		... assert that calls return within their deadline ...
//		proxy.Clear()     // recovery
//	}
//
// Logging goes to the *slog.Logger given to StartServer (nil discards it):
// the package's verbs at info, Toxiproxy's own zerolog output (one line per
// accepted and closed connection, per API call) at debug. Nothing is written
// to stdout or stderr. To that end the first StartServer also points
// zerolog's global logger (github.com/rs/zerolog/log.Logger, stderr by
// default), which Toxiproxy's bandwidth toxic logs through, at
// slog.Default() at debug level.
//
// Close stops everything the handle started. For an in-process server that
// is the HTTP API and every proxy with its connections, so all the
// goroutines end (asynchronously, within milliseconds: they notice their
// closed connections). One limit of Toxiproxy itself: a connection closed
// while a bandwidth (or latency) toxic still holds data for it can leave a
// couple of that link's goroutines blocked for good; clear toxics and let
// traffic drain before Close where that matters.
package chaos
