package pipeline

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/docpipe/docpipe/tracking"
)

func TestTaskLogger(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	task := &tracking.Claimed{Stage: tracking.StageOCR, TaskID: "t1", ChainID: "c1", BatchID: "b1", Attempt: 2}
	log := taskLogger(base.With("component", "engine"), task)

	if log.Enabled(t.Context(), slog.LevelDebug) {
		t.Error("debug enabled although the base handler is at info")
	}
	log.Debug("hidden")
	log.Info("one", "k", "v")
	log.With("extra", 1).WithGroup("g").Info("two", "k", "v")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	tests := []struct{ line, want string }{
		{lines[0], `msg=one component=engine stage=pipeline.ocr_stage task_id=t1 chain_id=c1 batch_id=b1 attempt=2 k=v`},
		{lines[1], `msg=two component=engine stage=pipeline.ocr_stage task_id=t1 chain_id=c1 batch_id=b1 attempt=2 extra=1 g.k=v`},
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
