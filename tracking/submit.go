package tracking

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// NewChain is one image of a submission.
type NewChain struct {
	// ChainID may be set by the caller (e.g. to store an upload under it
	// first); a UUID is generated when empty.
	ChainID string
	Input   ChainInput
}

// NewBatch is a submission of images to run through a workflow.
type NewBatch struct {
	BatchID     string          // generated when empty
	Name        string          // batch_name
	InitiatedBy string          // initiated_by
	ChunkSize   int             // default DefaultChunkSize
	Workflow    string          // chain_name; default DefaultWorkflow
	Stages      []Stage         // default DocumentStages
	MaxAttempts int             // per task; default DefaultMaxAttempts
	Options     json.RawMessage // the pipeline options; copied into each chain's input
	InputData   json.RawMessage // batch input_data; default {"images": [...paths]}
	OnFinish    Stage           // batch-level stage enqueued when every chain has ended; "" for none
	Chains      []NewChain
}

// ValidationError says a submission is malformed; nothing was written.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }

func (nb *NewBatch) normalize() error {
	if len(nb.Chains) == 0 {
		return &ValidationError{"a batch needs at least one image"}
	}
	if nb.BatchID == "" {
		nb.BatchID = NewID()
	}
	if len(nb.BatchID) > 255 || len(nb.Name) > 255 || len(nb.InitiatedBy) > 100 || len(nb.Workflow) > 255 {
		return &ValidationError{"batch_id and batch_name are at most 255 characters, initiated_by at most 100"}
	}
	if nb.ChunkSize == 0 {
		nb.ChunkSize = DefaultChunkSize
	}
	if nb.ChunkSize < 0 {
		return &ValidationError{fmt.Sprintf("chunk_size must be positive, got %d", nb.ChunkSize)}
	}
	if nb.Workflow == "" {
		nb.Workflow = DefaultWorkflow
	}
	if len(nb.Stages) == 0 {
		nb.Stages = DocumentStages
	}
	if nb.MaxAttempts == 0 {
		nb.MaxAttempts = DefaultMaxAttempts
	}
	if nb.MaxAttempts < 0 {
		return &ValidationError{fmt.Sprintf("max_attempts must be positive, got %d", nb.MaxAttempts)}
	}
	if len(nb.Options) > 0 && !json.Valid(nb.Options) {
		return &ValidationError{"options is not valid JSON"}
	}
	seen := make(map[string]bool, len(nb.Chains))
	for i := range nb.Chains {
		c := &nb.Chains[i]
		if c.ChainID == "" {
			c.ChainID = NewID()
		}
		if len(c.ChainID) > 255 {
			return &ValidationError{"chain_id is at most 255 characters"}
		}
		if seen[c.ChainID] {
			return &ValidationError{fmt.Sprintf("chain_id %q appears twice", c.ChainID)}
		}
		seen[c.ChainID] = true
		if c.Input.ImagePath == "" {
			return &ValidationError{fmt.Sprintf("image %d has no path", i+1)}
		}
		if len(c.Input.Options) == 0 {
			c.Input.Options = nb.Options
		}
	}
	if len(nb.InputData) == 0 {
		paths := make([]string, len(nb.Chains))
		for i, c := range nb.Chains {
			paths[i] = c.Input.ImagePath
		}
		b, _ := json.Marshal(map[string]any{"images": paths})
		nb.InputData = b
	}
	return nil
}

const insertBatchSQL = `
INSERT INTO batch_executions (batch_id, batch_name, status, total_images, total_chunks, chunk_size,
	initiated_by, input_data, options, on_finish, created_at, updated_at)
VALUES ($1, NULLIF($2, ''), 'PENDING', $3, $4, $5, NULLIF($6, ''), $7, $8, NULLIF($9, ''), $10, $10)
RETURNING id`

const insertChunksSQL = `
INSERT INTO batch_chunks (batch_execution_id, chunk_index, total_images, created_at, updated_at)
SELECT $1, i, least($3, $2 - i * $3), $4, $4 FROM generate_series(0, $5 - 1) AS i`

// insertFirstTasksSQL creates each new chain's first task; its task_id is
// the chain's celery_task_id.
const insertFirstTasksSQL = `
INSERT INTO task_logs (task_id, task_name, status, chain_execution_id, batch_execution_id,
	stage_index, max_attempts, run_after, created_at, updated_at)
SELECT c.celery_task_id, c.stages[1], 'PENDING', c.id, c.batch_execution_id, 0, $2, $3, $3, $3
FROM chain_executions c WHERE c.chain_id = ANY($1)`

// CreateBatch writes a batch, its chunks, its chains and each chain's first
// task in one transaction, and wakes the first stage's claimers. It returns
// the batch as stored. A duplicate batch_id is ErrConflict; a malformed
// submission is a *ValidationError.
func (s *Store) CreateBatch(ctx context.Context, nb NewBatch) (*Batch, error) {
	if err := nb.normalize(); err != nil {
		return nil, err
	}
	now := s.now()
	chunks := (len(nb.Chains) + nb.ChunkSize - 1) / nb.ChunkSize
	var batchPK int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, insertBatchSQL, nb.BatchID, nb.Name, len(nb.Chains), chunks, nb.ChunkSize,
			nb.InitiatedBy, nb.InputData, nullJSON(nb.Options), string(nb.OnFinish), now).Scan(&batchPK); err != nil {
			return fmt.Errorf("insert batch: %w", err)
		}
		if _, err := tx.Exec(ctx, insertChunksSQL, batchPK, len(nb.Chains), nb.ChunkSize, now, chunks); err != nil {
			return fmt.Errorf("insert chunks: %w", err)
		}
		return s.insertChains(ctx, tx, &batchPK, nb.BatchID, nb, now)
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "batch_executions_batch_id_key" {
			return nil, fmt.Errorf("batch %q: %w", nb.BatchID, ErrConflict)
		}
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			return nil, fmt.Errorf("create batch: %s: %w", pgErr.Detail, ErrConflict)
		}
		return nil, fmt.Errorf("create batch: %w", err)
	}
	return s.Batch(ctx, nb.BatchID)
}

// CreateChain submits one image alone, as a chain with no batch, and
// returns the chain as stored.
func (s *Store) CreateChain(ctx context.Context, nb NewBatch) (*Chain, error) {
	if len(nb.Chains) != 1 {
		return nil, &ValidationError{"a chain is exactly one image"}
	}
	if err := nb.normalize(); err != nil {
		return nil, err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return s.insertChains(ctx, tx, nil, "", nb, s.now())
	})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			return nil, fmt.Errorf("create chain: %s: %w", pgErr.Detail, ErrConflict)
		}
		return nil, fmt.Errorf("create chain: %w", err)
	}
	return s.Chain(ctx, nb.Chains[0].ChainID)
}

func (s *Store) insertChains(ctx context.Context, tx pgx.Tx, batchPK *int64, batchID string, nb NewBatch, now time.Time) error {
	stages := make([]string, len(nb.Stages))
	for i, st := range nb.Stages {
		stages[i] = string(st)
	}
	var bid any
	if batchID != "" {
		bid = batchID
	}
	rows := make([][]any, len(nb.Chains))
	ids := make([]string, len(nb.Chains))
	for i, c := range nb.Chains {
		in, err := json.Marshal(c.Input)
		if err != nil {
			return fmt.Errorf("chain input: %w", err)
		}
		ids[i] = c.ChainID
		rows[i] = []any{c.ChainID, NewID(), nb.Workflow, bid, batchPK, i / nb.ChunkSize,
			stages, len(stages), nullStr(nb.InitiatedBy), in, now, now}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"chain_executions"},
		[]string{"chain_id", "celery_task_id", "chain_name", "batch_id", "batch_execution_id", "chunk_index",
			"stages", "total_tasks", "initiated_by", "input_data", "created_at", "updated_at"},
		pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("insert chains: %w", err)
	}
	if _, err := tx.Exec(ctx, insertFirstTasksSQL, ids, nb.MaxAttempts, now); err != nil {
		return fmt.Errorf("insert first tasks: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, WakeChannel, s.wakePayload(nb.Stages[0])); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	return nil
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullJSON(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
