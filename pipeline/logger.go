package pipeline

import (
	"context"
	"log/slog"
)

// lazyHandler adds attributes to a handler only when a record is logged:
// every task gets a logger tagged with its ids, and most never log, so the
// handler's WithAttrs (which formats the attributes up front) is saved for
// the few that do.
type lazyHandler struct {
	base  slog.Handler
	attrs []slog.Attr
}

func (h *lazyHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.base.Enabled(ctx, l) }

func (h *lazyHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.base.WithAttrs(h.attrs).Handle(ctx, r)
}

func (h *lazyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &lazyHandler{base: h.base, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], as...)}
}

func (h *lazyHandler) WithGroup(name string) slog.Handler {
	return h.base.WithAttrs(h.attrs).WithGroup(name)
}

// taskLogger returns log tagged with attrs, formatted only if it logs.
func taskLogger(log *slog.Logger, attrs ...slog.Attr) *slog.Logger {
	return slog.New(&lazyHandler{base: log.Handler(), attrs: attrs})
}
