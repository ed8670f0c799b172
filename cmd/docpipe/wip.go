package main

import (
	"context"
	"errors"
	"io"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

func serveCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return errors.New("not yet")
}
func excelStages(s *stageFlags, want map[tracking.Stage]bool) ([]pipeline.StageConfig, error) {
	return nil, errors.New("not yet")
}
