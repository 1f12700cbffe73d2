package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	toxiclient "github.com/Shopify/toxiproxy/v2/client"
)

// DefaultURL is where docker-compose's toxiproxy service answers.
const DefaultURL = "http://127.0.0.1:8474"

// shutdownTimeout bounds the graceful shutdown of the in-process HTTP API.
const shutdownTimeout = 5 * time.Second

// Toxiproxy is a running Toxiproxy server, driven through its HTTP API with
// the toxiproxy client package: either an in-process one (StartServer) or an
// external one (Connect). It is safe for concurrent use.
type Toxiproxy struct {
	url    string
	client *toxiclient.Client
	logger *slog.Logger

	// In-process only.
	api    *toxiproxy.ApiServer
	srv    *http.Server
	served chan struct{} // closed when srv.Serve has returned

	mu      sync.Mutex
	proxies map[string]*Proxy // created through this handle, by name
	closed  bool
}

// StartServer starts an in-process Toxiproxy server whose HTTP API listens on
// a free 127.0.0.1 port. Toxiproxy's own (zerolog) logs go to logger at debug
// level; a nil logger discards everything. Close stops the API, every proxy
// and their connections.
func StartServer(ctx context.Context, logger *slog.Logger) (*Toxiproxy, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("chaos: start toxiproxy: %w", err)
	}
	logger = orDiscard(logger)
	rerouteGlobalZerolog()

	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerologTo(logger))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("chaos: start toxiproxy: listen: %w", err)
	}
	srv := &http.Server{
		Handler:           api.Routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	// Without keep-alives the client package (which uses net/http's shared
	// default transport and cannot be given another) keeps no idle
	// connection, hence no goroutine, to this server once a call returns.
	srv.SetKeepAlivesEnabled(false)

	t := &Toxiproxy{
		url:     "http://" + ln.Addr().String(),
		logger:  logger,
		api:     api,
		srv:     srv,
		served:  make(chan struct{}),
		proxies: make(map[string]*Proxy),
	}
	t.client = toxiclient.NewClient(t.url)
	t.client.UserAgent = "pgfallback-chaos"
	go func() {
		defer close(t.served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("chaos: toxiproxy API server stopped", "err", err)
		}
	}()

	if _, err := t.client.Version(); err != nil {
		return nil, errors.Join(fmt.Errorf("chaos: start toxiproxy: API does not answer: %w", err), t.Close())
	}
	logger.Debug("chaos: toxiproxy started", "url", t.url, "version", toxiproxy.Version)
	return t, nil
}

// Connect drives an external Toxiproxy server (such as docker-compose's
// toxiproxy service, DefaultURL) and checks that it answers. Close deletes
// the proxies created through the returned handle and leaves the server
// running.
func Connect(url string) (*Toxiproxy, error) {
	return ConnectLogger(url, nil)
}

// ConnectLogger is Connect with a logger for the package's own messages.
func ConnectLogger(rawURL string, logger *slog.Logger) (*Toxiproxy, error) {
	if rawURL == "" {
		return nil, errors.New("chaos: connect: empty toxiproxy URL")
	}
	if !strings.Contains(rawURL, "://") {
		rawURL = "http://" + rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("chaos: connect: bad toxiproxy URL %q", rawURL)
	}
	t := &Toxiproxy{
		url:     strings.TrimRight(rawURL, "/"),
		logger:  orDiscard(logger),
		proxies: make(map[string]*Proxy),
	}
	t.client = toxiclient.NewClient(t.url)
	t.client.UserAgent = "pgfallback-chaos"
	if _, err := t.client.Version(); err != nil {
		closeIdleDefaultTransport()
		return nil, fmt.Errorf("chaos: connect to toxiproxy at %s: %w", t.url, err)
	}
	return t, nil
}

// URL is the base URL of the Toxiproxy HTTP API, e.g. http://127.0.0.1:8474.
func (t *Toxiproxy) URL() string { return t.url }

// InProcess reports whether the server runs in this process (StartServer).
func (t *Toxiproxy) InProcess() bool { return t.api != nil }

// Close releases the handle; later calls return nil. For an in-process server
// it stops the HTTP API and every proxy, which closes all their connections
// and so ends all the goroutines the server started. For an external server
// it deletes the proxies created through this handle.
func (t *Toxiproxy) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	proxies := make([]*Proxy, 0, len(t.proxies))
	for _, p := range t.proxies {
		proxies = append(proxies, p)
	}
	t.proxies = map[string]*Proxy{}
	t.mu.Unlock()

	var errs []error
	if t.api == nil {
		for _, p := range proxies {
			if err := p.delete(); err != nil {
				errs = append(errs, err)
			}
		}
		closeIdleDefaultTransport()
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if err := t.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("chaos: close: shut down API: %w", err))
			_ = t.srv.Close()
		}
		cancel()
		<-t.served
		// Stops every proxy: closes its listener (waiting for the accept
		// loop) and all its connections, which ends their link goroutines.
		if err := t.api.Collection.Clear(); err != nil {
			errs = append(errs, fmt.Errorf("chaos: close: stop proxies: %w", err))
		}
	}
	t.logger.Debug("chaos: toxiproxy closed", "url", t.url)
	return errors.Join(errs...)
}

// Proxy creates a proxy named name that listens on a free 127.0.0.1 port (of
// the Toxiproxy's host) and forwards to upstream (host:port, as seen from the
// Toxiproxy). An existing proxy of that name is deleted first, toxics and
// all.
//
// The toxiproxy client has no context support: ctx is checked between the
// HTTP calls, each of which is bounded by the client's 30 s timeout.
func (t *Toxiproxy) Proxy(ctx context.Context, name, upstream string) (*Proxy, error) {
	return t.ProxyListen(ctx, name, "127.0.0.1:0", upstream)
}

// ProxyListen is Proxy with an explicit listen address (host:port as seen by
// the Toxiproxy; port 0 picks a free one). Use it with an external Toxiproxy
// in a container, e.g. listen "0.0.0.0:25432" with that port published and
// upstream "postgres:5432": Addr then reports the host of the Toxiproxy URL.
func (t *Toxiproxy) ProxyListen(ctx context.Context, name, listen, upstream string) (*Proxy, error) {
	wrap := func(err error) error {
		return fmt.Errorf("chaos: create proxy %q: %w", name, err)
	}
	if name == "" {
		return nil, wrap(errors.New("empty name"))
	}
	if _, _, err := net.SplitHostPort(upstream); err != nil {
		return nil, wrap(fmt.Errorf("upstream must be host:port: %w", err))
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return nil, wrap(fmt.Errorf("listen must be host:port: %w", err))
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, wrap(errors.New("toxiproxy handle is closed"))
	}
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}

	// Recreate: delete any proxy of that name (not found is fine).
	old := t.client.NewProxy()
	old.Name = name
	if err := old.Delete(); err != nil && !isNotFound(err) {
		return nil, wrap(fmt.Errorf("delete existing: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	cp, err := t.client.CreateProxy(name, listen, upstream)
	if err != nil {
		return nil, wrap(err)
	}
	addr, err := t.dialAddr(cp.Listen)
	if err != nil {
		_ = cp.Delete()
		return nil, wrap(err)
	}
	p := &Proxy{t: t, name: name, upstream: upstream, addr: addr, cp: cp}

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errors.Join(wrap(errors.New("toxiproxy handle closed meanwhile")), p.delete())
	}
	t.proxies[name] = p
	t.mu.Unlock()
	t.logger.Info("chaos: proxy created", "proxy", name, "addr", addr, "upstream", upstream)
	return p, nil
}

// dialAddr turns the listen address reported by Toxiproxy into one the
// application can dial: an unspecified host (0.0.0.0, ::) becomes the host
// of the Toxiproxy URL.
func (t *Toxiproxy) dialAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("toxiproxy reported listen address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		u, err := url.Parse(t.url)
		if err != nil {
			return "", err
		}
		host = u.Hostname()
	}
	return net.JoinHostPort(host, port), nil
}

func (t *Toxiproxy) forget(p *Proxy) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.proxies[p.name] == p {
		delete(t.proxies, p.name)
	}
}

// isNotFound reports whether err is Toxiproxy's 404 (proxy or toxic not
// found).
func isNotFound(err error) bool {
	var apiErr *toxiclient.ApiError
	return errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound
}

// closeIdleDefaultTransport drops the idle keep-alive connections (and their
// goroutines) that the toxiproxy client, which always uses net/http's default
// transport, left to an external server. Only idle connections are closed;
// other users of the default transport just dial again.
func closeIdleDefaultTransport() {
	if tr, ok := http.DefaultTransport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
