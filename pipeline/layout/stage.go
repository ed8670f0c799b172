package layout

import (
	"context"
	"errors"
	"fmt"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// Stage is pipeline.layout_stage: it reads the chain's OCR result and
// returns its Layout as the task result. It holds no state besides its
// options and is safe for concurrent use.
type Stage struct {
	opts Options
}

var _ pipeline.Stage = (*Stage)(nil)

// NewStage returns the layout stage; the zero Options give the defaults.
func NewStage(opts Options) *Stage {
	return &Stage{opts: opts}
}

// Run analyses the OCR boxes of job's chain. A missing or failed OCR result
// is a permanent error (no retry can make it appear); a read error is
// returned as is, to be retried.
func (s *Stage) Run(ctx context.Context, job *pipeline.Job) (*pipeline.Output, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if job.ChainID == "" {
		return nil, tracking.Permanent(errors.New("layout: job has no chain"))
	}
	res, err := job.Reader.OCRResult(ctx, job.ChainID)
	if errors.Is(err, tracking.ErrNotFound) {
		return nil, tracking.Permanent(fmt.Errorf("layout: OCR result of chain %s: %w", job.ChainID, err))
	}
	if err != nil {
		return nil, fmt.Errorf("layout: read OCR result of chain %s: %w", job.ChainID, err)
	}
	if res.Status == tracking.OCRFailed {
		return nil, tracking.Permanent(fmt.Errorf("layout: OCR of chain %s failed: %s", job.ChainID, res.Error))
	}
	return &pipeline.Output{Result: AnalyzeWith(res.Boxes, s.opts)}, nil
}
