package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
)

// Toxic names set by the verbs. Each verb owns its names, so calling it
// again replaces its own toxics and leaves the other verbs' toxics alone.
const (
	toxicPrefix = "chaos_"
	upstream    = "upstream"   // client → server
	downstream  = "downstream" // server → client
)

// Proxy is one Toxiproxy proxy between the application and a server. Its
// verbs are safe for concurrent use; toxics of different verbs combine
// (e.g. Latency and Bandwidth), Down/Up is independent of toxics, and Clear
// undoes everything.
type Proxy struct {
	t        *Toxiproxy
	name     string
	upstream string
	addr     string

	mu sync.Mutex // serializes the verbs, guards cp (Save rewrites it)
	cp *toxiclient.Proxy
}

// Name is the proxy's name in Toxiproxy.
func (p *Proxy) Name() string { return p.name }

// Upstream is the host:port the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Addr is the host:port the application should connect to.
func (p *Proxy) Addr() string { return p.addr }

// DSN rewrites a postgres:// (or postgresql://) URL so that it connects
// through the proxy: its host:port (one or several) becomes Addr, and host,
// hostaddr and port query parameters, which would bypass the proxy, are
// removed. Everything else (user, password, database, options) is kept.
func (p *Proxy) DSN(dsn string) (string, error) {
	u, err := parsePostgresURL(dsn)
	if err != nil {
		return "", fmt.Errorf("chaos: proxy %q: DSN: %w", p.name, err)
	}
	u.Host = p.addr
	q := u.Query()
	if q.Has("host") || q.Has("hostaddr") || q.Has("port") {
		q.Del("host")
		q.Del("hostaddr")
		q.Del("port")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// DSNHostPort returns the host:port a postgres:// URL connects to (host
// defaults to localhost and port to 5432), e.g. to use as a proxy's upstream.
// A URL with several hosts is refused.
func DSNHostPort(dsn string) (string, error) {
	u, err := parsePostgresURL(dsn)
	if err != nil {
		return "", fmt.Errorf("chaos: DSNHostPort: %w", err)
	}
	if strings.Contains(u.Host, ",") {
		return "", fmt.Errorf("chaos: DSNHostPort: several hosts in %q", u.Redacted())
	}
	host, port := u.Hostname(), u.Port()
	if h := u.Query().Get("host"); h != "" {
		host = h
	}
	if pt := u.Query().Get("port"); pt != "" {
		port = pt
	}
	if host == "" {
		host = "localhost"
	}
	if strings.HasPrefix(host, "/") {
		return "", fmt.Errorf("chaos: DSNHostPort: %q is a Unix socket directory, not a TCP host", host)
	}
	if port == "" {
		port = "5432"
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("chaos: DSNHostPort: bad port %q", port)
	}
	return net.JoinHostPort(host, port), nil
}

func parsePostgresURL(dsn string) (*url.URL, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, errors.New("not a URL DSN") // url errors would echo the password
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return nil, errors.New("want a postgres:// or postgresql:// URL DSN")
	}
	return u, nil
}

// Down disables the proxy: it stops listening, so new connections are
// refused, and every existing connection is closed.
func (p *Proxy) Down() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.setEnabled(false); err != nil {
		return p.errorf("Down", err)
	}
	p.log("Down")
	return nil
}

// Up enables the proxy again (same port). It does not remove toxics.
func (p *Proxy) Up() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.setEnabled(true); err != nil {
		return p.errorf("Up", err)
	}
	p.log("Up")
	return nil
}

// Blackhole makes the proxy accept connections and never answer: the
// timeout toxic with timeout 0 on both directions drops all data and never
// closes a connection by itself. Clients only get out through their own
// deadlines. It applies to existing connections too. Removing it (Clear)
// closes every connection that was open while it was in place.
func (p *Proxy) Blackhole() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	attrs := toxiclient.Attributes{"timeout": 0}
	for _, stream := range []string{upstream, downstream} {
		if err := p.setToxic("timeout", stream, attrs); err != nil {
			return p.errorf("Blackhole", err)
		}
	}
	p.log("Blackhole")
	return nil
}

// Latency delays every chunk of data from the server to the client by d,
// plus or minus a uniformly random jitter (millisecond resolution). A query
// round trip takes at least d; establishing a connection takes several.
func (p *Proxy) Latency(d, jitter time.Duration) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d < 0 || jitter < 0 {
		return p.errorf("Latency", fmt.Errorf("negative latency %v or jitter %v", d, jitter))
	}
	attrs := toxiclient.Attributes{"latency": d.Milliseconds(), "jitter": jitter.Milliseconds()}
	if err := p.setToxic("latency", downstream, attrs); err != nil {
		return p.errorf("Latency", err)
	}
	p.log("Latency", "latency", d, "jitter", jitter)
	return nil
}

// ResetPeer cuts connections. Every connection open now is closed at once
// (the proxy is disabled and enabled again, on the same port), and from now
// on every new connection is reset as soon as data flows (the reset_peer
// toxic with timeout 0 on both directions; Toxiproxy sets SO_LINGER 0 on
// connections made while it is in place, so they see a TCP RST). Clear
// restores service; for a one-off cut that leaves the proxy working, use
// CutConnections.
func (p *Proxy) ResetPeer() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	attrs := toxiclient.Attributes{"timeout": 0}
	for _, stream := range []string{upstream, downstream} {
		if err := p.setToxic("reset_peer", stream, attrs); err != nil {
			return p.errorf("ResetPeer", err)
		}
	}
	if err := p.bounce(); err != nil {
		return p.errorf("ResetPeer", err)
	}
	p.log("ResetPeer")
	return nil
}

// CutConnections closes every connection open now (the proxy is disabled and
// enabled again, on the same port) and changes nothing else: new
// connections work as before. It does nothing to a proxy that is Down.
func (p *Proxy) CutConnections() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.bounce(); err != nil {
		return p.errorf("CutConnections", err)
	}
	p.log("CutConnections")
	return nil
}

// Bandwidth limits both directions to kbps kilobytes (1024 bytes) per
// second. kbps must be positive.
func (p *Proxy) Bandwidth(kbps int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if kbps <= 0 {
		return p.errorf("Bandwidth", fmt.Errorf("rate %d KB/s: must be positive", kbps))
	}
	attrs := toxiclient.Attributes{"rate": kbps}
	for _, stream := range []string{upstream, downstream} {
		if err := p.setToxic("bandwidth", stream, attrs); err != nil {
			return p.errorf("Bandwidth", err)
		}
	}
	p.log("Bandwidth", "kbps", kbps)
	return nil
}

// Clear removes every toxic of the proxy (its own and any other) and brings
// it Up.
func (p *Proxy) Clear() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	toxics, err := p.cp.Toxics()
	if err != nil {
		return p.errorf("Clear", err)
	}
	for _, tx := range toxics {
		if err := p.cp.RemoveToxic(tx.Name); err != nil && !isNotFound(err) {
			return p.errorf("Clear", fmt.Errorf("remove toxic %q: %w", tx.Name, err))
		}
	}
	if err := p.setEnabled(true); err != nil {
		return p.errorf("Clear", err)
	}
	p.log("Clear")
	return nil
}

// Toxics lists the proxy's toxics, as Toxiproxy reports them.
func (p *Proxy) Toxics() (toxiclient.Toxics, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	toxics, err := p.cp.Toxics()
	if err != nil {
		return nil, p.errorf("Toxics", err)
	}
	return toxics, nil
}

// Delete removes the proxy from Toxiproxy, closing its connections. Deleting
// a proxy that is already gone is not an error.
func (p *Proxy) Delete() error {
	if err := p.delete(); err != nil {
		return err
	}
	p.t.forget(p)
	p.log("Delete")
	return nil
}

func (p *Proxy) delete() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.cp.Delete(); err != nil && !isNotFound(err) {
		return p.errorf("Delete", err)
	}
	return nil
}

// setEnabled saves the enabled state; a no-op call still round-trips so a
// proxy changed behind our back is brought to the wanted state.
func (p *Proxy) setEnabled(enabled bool) error {
	if enabled {
		return p.cp.Enable()
	}
	return p.cp.Disable()
}

// bounce disables and re-enables an enabled proxy, which closes every
// connection it holds.
func (p *Proxy) bounce() error {
	cur, err := p.t.client.Proxy(p.name) // the current state, not our last view
	if err != nil {
		return err
	}
	if !cur.Enabled {
		return nil
	}
	if err := p.cp.Disable(); err != nil {
		return err
	}
	return p.cp.Enable()
}

// setToxic makes the proxy hold the toxic chaos_<type>_<stream> with exactly
// attrs and toxicity 1. An identical one is left alone (so repeating a verb
// does not disturb connections); a different one is removed and added again.
// It does not update in place: Toxiproxy decodes an update straight into the
// toxic that running connections read, a data race.
func (p *Proxy) setToxic(typ, stream string, attrs toxiclient.Attributes) error {
	name := toxicPrefix + typ + "_" + stream
	toxics, err := p.cp.Toxics()
	if err != nil {
		return err
	}
	for _, tx := range toxics {
		if tx.Name != name {
			continue
		}
		if tx.Type == typ && tx.Stream == stream && tx.Toxicity == 1 && sameAttrs(tx.Attributes, attrs) {
			return nil
		}
		if err := p.cp.RemoveToxic(name); err != nil && !isNotFound(err) {
			return fmt.Errorf("replace toxic %q: %w", name, err)
		}
	}
	if _, err := p.cp.AddToxic(name, typ, stream, 1, attrs); err != nil {
		return fmt.Errorf("toxic %q: %w", name, err)
	}
	return nil
}

// sameAttrs compares attributes through their JSON form, since those read
// back from Toxiproxy hold float64 numbers.
func sameAttrs(a, b toxiclient.Attributes) bool {
	norm := func(x toxiclient.Attributes) string {
		raw, err := json.Marshal(x)
		if err != nil {
			return ""
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return ""
		}
		out, _ := json.Marshal(m)
		return string(out)
	}
	na, nb := norm(a), norm(b)
	return na != "" && na == nb
}

func (p *Proxy) errorf(verb string, err error) error {
	return fmt.Errorf("chaos: proxy %q: %s: %w", p.name, verb, err)
}

func (p *Proxy) log(verb string, args ...any) {
	p.t.logger.Info("chaos: "+verb, append([]any{"proxy", p.name, "addr", p.addr}, args...)...)
}
