package pipeline

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestTaskLogger(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log := taskLogger(base.With("component", "engine"), slog.String("task_id", "t1"), slog.Int("attempt", 2))

	if log.Enabled(t.Context(), slog.LevelDebug) {
		t.Error("debug enabled although the base handler is at info")
	}
	log.Debug("hidden")
	log.Info("one", "k", "v")
	log.With("extra", 1).WithGroup("g").Info("two", "k", "v")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	tests := []struct{ line, want string }{
		{lines[0], `msg=one component=engine task_id=t1 attempt=2 k=v`},
		{lines[1], `msg=two component=engine task_id=t1 attempt=2 extra=1 g.k=v`},
	}
	if len(lines) != len(tests) {
		t.Fatalf("logged %d lines, want %d:\n%s", len(lines), len(tests), buf.String())
	}
	for _, tt := range tests {
		if !strings.Contains(tt.line, tt.want) {
			t.Errorf("logged %q, want it to contain %q", tt.line, tt.want)
		}
	}
}
