package cli

import (
	"io"
	"log/slog"

	"github.com/spf13/pflag"
)

// logFlags are the --log-level and --log-format flags of the commands that
// run servers (node, ledger start).
type logFlags struct {
	level, format string
}

func (l *logFlags) add(f *pflag.FlagSet) {
	f.StringVar(&l.level, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&l.format, "log-format", "text", "text (key=value lines) or json (one JSON object a line, for log collectors)")
}

// logger makes the logger the flags ask for, writing to w; cmd names the
// command in usage errors.
func (l *logFlags) logger(cmd string, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usageError("%s: --log-level %q: want debug, info, warn or error", cmd, l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError("%s: --log-format %q: want text or json", cmd, l.format)
}
