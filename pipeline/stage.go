// Package pipeline is docpipe's engine: one Runner per stage claims tasks
// from PostgreSQL (FOR UPDATE SKIP LOCKED), feeds a pool of worker
// goroutines through a bounded channel, and commits finished tasks in
// batched transactions. It does not know what a stage does: stages are
// small adapters (pipeline/ocr, pipeline/extract, pipeline/layout,
// pipeline/excel) that cmd/docpipe wires in.
package pipeline

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/docpipe/docpipe/tracking"
)

// Stage is the work of one task_name. Run is called concurrently from the
// stage's workers; it must honour ctx (cancelled on revoke, lease loss and
// shutdown). An error wrapped with tracking.Permanent fails the task at
// once; any other error is retried with backoff until the task's
// max_attempts.
type Stage interface {
	Run(ctx context.Context, job *Job) (*Output, error)
}

// StageFunc adapts a function to Stage.
type StageFunc func(ctx context.Context, job *Job) (*Output, error)

// Run calls f.
func (f StageFunc) Run(ctx context.Context, job *Job) (*Output, error) { return f(ctx, job) }

// Job is one claimed task as a stage sees it.
type Job struct {
	TaskID      string
	Stage       tracking.Stage
	StageIndex  int
	Attempt     int // 1 on the first run
	MaxAttempts int
	ChainPK     int64  // chain_executions.id; 0 for a batch-level task
	ChainID     string // empty for a batch-level task
	BatchID     string // empty for a chain submitted alone
	Input       tracking.ChainInput
	Logger      *slog.Logger // tagged with batch_id, chain_id, task_id, stage, attempt
	Reader      Reader       // the chain's (or batch's) earlier work
}

// Options decodes the batch's pipeline options (Input.Options) into v.
// Missing options leave v as it is.
func (j *Job) Options(v any) error {
	if len(j.Input.Options) == 0 || string(j.Input.Options) == "null" {
		return nil
	}
	if err := json.Unmarshal(j.Input.Options, v); err != nil {
		return tracking.Permanent(err)
	}
	return nil
}

// Reader is what a stage may read of earlier work. The engine passes its
// tracking.Store.
type Reader interface {
	// StageResult returns the result a stage of the chain committed, or
	// tracking.ErrNotFound when that stage has not succeeded.
	StageResult(ctx context.Context, chainPK int64, stage tracking.Stage) (json.RawMessage, error)
	// OCRResult returns the chain's OCR execution with its boxes in reading
	// order, or tracking.ErrNotFound.
	OCRResult(ctx context.Context, chainID string) (*tracking.OCRResult, error)
	// BatchChains calls fn for every chain of the batch, in submission
	// order, with its status, input, final_result and error (not its tasks).
	BatchChains(ctx context.Context, batchID string, fn func(*tracking.Chain) error) error
}

// Output is what a stage returns on success.
type Output struct {
	// Result is stored as the task's result (jsonb); the last stage's
	// Result becomes the chain's final_result and a batch-level task's
	// Result the batch's final_result. It is marshalled with encoding/json
	// unless it is already a json.RawMessage.
	Result any
	// OCR, when set, is written to ocr_executions/ocr_text_boxes in the
	// same transaction that marks the task SUCCESS (boxes by COPY).
	OCR *tracking.OCRResult
}
