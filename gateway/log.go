package gateway

import (
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
)

// NewLogger returns the gateway's logger: JSON lines, or a human-readable
// console format, at the given minimum level.
func NewLogger(w io.Writer, format, level string) (zerolog.Logger, error) {
	lvl, err := parseLogLevel(level)
	if err != nil {
		return zerolog.Nop(), err
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func parseLogLevel(s string) (zerolog.Level, error) {
	switch s {
	case "debug":
		return zerolog.DebugLevel, nil
	case "info":
		return zerolog.InfoLevel, nil
	case "warn":
		return zerolog.WarnLevel, nil
	case "error":
		return zerolog.ErrorLevel, nil
	}
	return zerolog.NoLevel, fmt.Errorf("want debug, info, warn or error, got %q", s)
}

// fasthttpLogger routes the fasthttp server's own messages (mostly broken
// client connections) to debug level: they are the caller's problem, and the
// ones that matter are already counted in metrics.
type fasthttpLogger struct{ log zerolog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug().Msgf(format, args...)
}
