// Package integration holds pgfallback's failover drill suite: every
// scenario of package drill run against a real PostgreSQL (integration/pgtest)
// behind Toxiproxy (integration/chaos), through the fallback layer, with its
// bounds checked. Run it with
//
//	go test ./integration/...
//
// Its subpackages are useful on their own in an application's integration
// tests: pgtest gives a real server, chaos breaks the network to it, drill
// rehearses an outage.
package integration
