package pipeline

import (
	"context"
	"log/slog"

	"github.com/docpipe/docpipe/tracking"
)

// lazyHandler adds a task's ids to a handler only when a record is
// logged: every task gets a logger tagged with them, and most never log,
// so building the attributes, and the handler's WithAttrs (which formats
// them up front), is saved for the few that do.
type lazyHandler struct {
	base  slog.Handler
	task  *tracking.Claimed
	attrs []slog.Attr // added by WithAttrs, after the task's
}

func (h *lazyHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.base.Enabled(ctx, l) }

func (h *lazyHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.resolve().Handle(ctx, r)
}

func (h *lazyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &lazyHandler{base: h.base, task: h.task, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], as...)}
}

func (h *lazyHandler) WithGroup(name string) slog.Handler { return h.resolve().WithGroup(name) }

func (h *lazyHandler) resolve() slog.Handler {
	c := h.task
	return h.base.WithAttrs(append([]slog.Attr{slog.String("stage", string(c.Stage)), slog.String("task_id", c.TaskID),
		slog.String("chain_id", c.ChainID), slog.String("batch_id", c.BatchID), slog.Int("attempt", c.Attempt)}, h.attrs...))
}

// taskLogger returns log tagged with the task's stage, ids and attempt,
// formatted only if it logs.
func taskLogger(log *slog.Logger, task *tracking.Claimed) *slog.Logger {
	return slog.New(&lazyHandler{base: log.Handler(), task: task})
}
