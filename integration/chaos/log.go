package chaos

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/rs/zerolog"
	zlog "github.com/rs/zerolog/log"
)

// zerologTo returns the zerolog logger handed to Toxiproxy: every event,
// whatever its zerolog level, becomes a debug record of logger (Toxiproxy is
// chatty: it logs each accepted connection at info and each closed one at
// warn). Nothing is written anywhere else.
func zerologTo(logger *slog.Logger) zerolog.Logger {
	return zerolog.New(slogWriter{func() *slog.Logger { return logger }}).Level(zerolog.DebugLevel)
}

var rerouteGlobal sync.Once

// rerouteGlobalZerolog points zerolog's global logger (package
// github.com/rs/zerolog/log), which writes to stderr and which Toxiproxy's
// bandwidth toxic uses, at slog.Default() at debug level (so it is silent
// unless the default slog logger has debug enabled). zerolog enables trace
// level globally, so without this every removal of a bandwidth toxic from a
// live connection prints a line on stderr. Done once, before the first
// in-process server, so that no toxic reads the variable while it changes.
func rerouteGlobalZerolog() {
	rerouteGlobal.Do(func() {
		zlog.Logger = zerolog.New(slogWriter{slog.Default}).Level(zerolog.DebugLevel)
	})
}

// slogWriter receives zerolog's JSON events, one per Write.
type slogWriter struct{ logger func() *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	ctx := context.Background()
	logger := w.logger()
	if !logger.Enabled(ctx, slog.LevelDebug) {
		return len(p), nil
	}
	var fields map[string]any
	if err := json.Unmarshal(p, &fields); err != nil {
		logger.Debug("toxiproxy", "raw", string(p))
		return len(p), nil
	}
	msg, _ := fields[zerolog.MessageFieldName].(string)
	delete(fields, zerolog.MessageFieldName)
	attrs := make([]slog.Attr, 0, len(fields)+1)
	if lvl, ok := fields[zerolog.LevelFieldName].(string); ok {
		attrs = append(attrs, slog.String("toxiproxy_level", lvl))
		delete(fields, zerolog.LevelFieldName)
	}
	for k, v := range fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	if msg == "" {
		msg = "toxiproxy"
	} else {
		msg = "toxiproxy: " + msg
	}
	logger.LogAttrs(ctx, slog.LevelDebug, msg, attrs...)
	return len(p), nil
}
