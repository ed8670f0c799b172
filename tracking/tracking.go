// Package tracking is docpipe's domain and its only door to PostgreSQL.
//
// It owns the statuses and their allowed transitions, the stages of a
// workflow, the Batch/Chain/Task/OCR types, and every SQL statement the
// daemon runs (Store, over a pgxpool). Other packages of docpipe import
// tracking; tracking imports none of them.
package tracking

import (
	"errors"
	"fmt"
)

// Status is the state of a batch, a chain or a task. The seven values and
// their spelling are fixed by the tables that existing reports read.
type Status string

// The statuses shared by batches, chains and tasks.
const (
	StatusPending Status = "PENDING" // waiting to run
	StatusStarted Status = "STARTED" // claimed by a worker / first task began
	StatusRunning Status = "RUNNING" // in progress: a batch some of whose chains have ended (chains and tasks stay STARTED until they end)
	StatusSuccess Status = "SUCCESS" // ended well (terminal)
	StatusFailure Status = "FAILURE" // ended badly (terminal)
	StatusRetry   Status = "RETRY"   // an attempt failed; will run again after its backoff
	StatusRevoked Status = "REVOKED" // cancelled (terminal)
)

// Statuses lists every status, in the order of a task's life.
var Statuses = [...]Status{StatusPending, StatusStarted, StatusRunning, StatusRetry, StatusSuccess, StatusFailure, StatusRevoked}

// Terminal reports whether nothing may leave s except an explicit, recorded re-run.
func (s Status) Terminal() bool {
	return s == StatusSuccess || s == StatusFailure || s == StatusRevoked
}

// Valid reports whether s is one of the seven statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// transitions is the single place that says which status may follow which.
// A re-run of a terminal chain is not a transition: it creates a new task row.
var transitions = map[Status][]Status{
	StatusPending: {StatusStarted, StatusRevoked},
	// STARTED -> PENDING is a graceful hand-back at shutdown (the attempt is not counted).
	StatusStarted: {StatusRunning, StatusSuccess, StatusFailure, StatusRetry, StatusRevoked, StatusPending},
	StatusRunning: {StatusRunning, StatusSuccess, StatusFailure, StatusRetry, StatusRevoked, StatusPending},
	StatusRetry:   {StatusStarted, StatusRevoked},
}

// CanTransition reports whether a row in status from may move to status to.
func CanTransition(from, to Status) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// TransitionError says a status change was refused.
type TransitionError struct {
	From, To Status
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("status %s cannot move to %s", e.From, e.To)
}

// Sentinel errors returned by Store methods.
var (
	// ErrNotFound is returned when the asked-for batch, chain or task does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a write would break a uniqueness rule
	// (e.g. a batch_id that already exists).
	ErrConflict = errors.New("conflict")
)

// Stage is a task_name: one step of a chain.
type Stage string

// The four stages of docpipe's document workflow, in order, plus the
// batch-level summary that runs once every chain of a batch has ended.
const (
	StageOCR     Stage = "pipeline.ocr_stage"
	StageLLM     Stage = "pipeline.llm_stage"
	StageLayout  Stage = "pipeline.layout_stage"
	StageExcel   Stage = "pipeline.excel_stage"
	StageSummary Stage = "pipeline.summary_stage"
)

// DocumentStages is the default workflow: OCR → extraction → layout → Excel.
var DocumentStages = []Stage{StageOCR, StageLLM, StageLayout, StageExcel}

// DefaultWorkflow is the chain_name of DocumentStages.
const DefaultWorkflow = "cr_extract_workflow"

// DefaultChunkSize is the number of images per chunk when a batch does not say.
const DefaultChunkSize = 10

// DefaultMaxAttempts is how many times a task runs before it fails for good.
const DefaultMaxAttempts = 3

// MaxErrorLen is the width of task_logs.error; longer messages are cut.
const MaxErrorLen = 512

// PermanentError marks a stage error that no retry can fix (bad input): the
// task fails for good on its first attempt.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError (nil stays nil).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or an error it wraps, is a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}
