package tracking

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
)

const batchColumns = `id, batch_id, coalesce(batch_name, ''), status, total_images, completed_images, failed_images,
	total_chunks, completed_chunks, failed_chunks, chunk_size, started_at, finished_at, coalesce(initiated_by, ''),
	input_data, options, final_result, coalesce(error_message, ''), created_at, updated_at`

func scanBatch(row pgx.Row) (*Batch, error) {
	var b Batch
	err := row.Scan(&b.ID, &b.BatchID, &b.BatchName, &b.Status, &b.TotalImages, &b.CompletedImages, &b.FailedImages,
		&b.TotalChunks, &b.CompletedChunks, &b.FailedChunks, &b.ChunkSize, &b.StartedAt, &b.FinishedAt, &b.InitiatedBy,
		&b.InputData, &b.Options, &b.FinalResult, &b.ErrorMessage, &b.CreatedAt, &b.UpdatedAt)
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// Batch returns the batch with batch_id batchID, or ErrNotFound.
func (s *Store) Batch(ctx context.Context, batchID string) (*Batch, error) {
	b, err := scanBatch(s.pool.QueryRow(ctx, `SELECT `+batchColumns+` FROM batch_executions WHERE batch_id = $1`, batchID))
	if err != nil {
		return nil, fmt.Errorf("batch %s: %w", batchID, notFound(err))
	}
	return b, nil
}

// BatchFilter selects batches for ListBatches. The zero value lists the newest.
type BatchFilter struct {
	Status Status // "" for any
	Name   string // batch_name; "" for any
	Limit  int    // default 100, at most 1000
	Offset int
}

// ListBatches returns batches, newest first.
func (s *Store) ListBatches(ctx context.Context, f BatchFilter) ([]Batch, error) {
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT `+batchColumns+` FROM batch_executions
		WHERE ($1 = '' OR status = $1) AND ($2 = '' OR batch_name = $2)
		ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4`, string(f.Status), f.Name, limit, max(f.Offset, 0))
	if err != nil {
		return nil, fmt.Errorf("list batches: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Batch, error) {
		b, err := scanBatch(r)
		if err != nil {
			return Batch{}, err
		}
		return *b, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list batches: %w", err)
	}
	return out, nil
}

const chainColumns = `id, chain_id, coalesce(celery_task_id, ''), coalesce(chain_name, ''), coalesce(batch_id, ''), chunk_index,
	stages, status, total_tasks, completed_tasks, failed_tasks, started_at, finished_at, coalesce(initiated_by, ''),
	input_data, final_result, coalesce(error_message, ''), created_at, updated_at`

func scanChain(row pgx.Row) (*Chain, error) {
	var c Chain
	var stages []string
	err := row.Scan(&c.ID, &c.ChainID, &c.CeleryTaskID, &c.ChainName, &c.BatchID, &c.ChunkIndex,
		&stages, &c.Status, &c.TotalTasks, &c.CompletedTasks, &c.FailedTasks, &c.StartedAt, &c.FinishedAt, &c.InitiatedBy,
		&c.InputData, &c.FinalResult, &c.ErrorMessage, &c.CreatedAt, &c.UpdatedAt)
	if err != nil {
		return nil, err
	}
	c.Stages = make([]Stage, len(stages))
	for i, st := range stages {
		c.Stages[i] = Stage(st)
	}
	return &c, nil
}

const taskColumns = `id, task_id, task_name, status, coalesce(error, ''), started_at, finished_at, retries,
	chain_execution_id, stage_index, attempt, max_attempts, run_after, lease_expires_at, coalesce(owner, ''), result,
	created_at, updated_at`

func scanTask(row pgx.Row) (Task, error) {
	var t Task
	err := row.Scan(&t.ID, &t.TaskID, &t.TaskName, &t.Status, &t.Error, &t.StartedAt, &t.FinishedAt, &t.Retries,
		&t.ChainExecutionID, &t.StageIndex, &t.Attempt, &t.MaxAttempts, &t.RunAfter, &t.LeaseExpiresAt, &t.Owner, &t.Result,
		&t.CreatedAt, &t.UpdatedAt)
	return t, err
}

// Chain returns the chain with chain_id chainID and its tasks (ordered by
// started_at, tasks not yet started last), or ErrNotFound.
func (s *Store) Chain(ctx context.Context, chainID string) (*Chain, error) {
	c, err := scanChain(s.pool.QueryRow(ctx, `SELECT `+chainColumns+` FROM chain_executions WHERE chain_id = $1`, chainID))
	if err != nil {
		return nil, fmt.Errorf("chain %s: %w", chainID, notFound(err))
	}
	rows, err := s.pool.Query(ctx, `SELECT `+taskColumns+` FROM task_logs WHERE chain_execution_id = $1
		ORDER BY started_at NULLS LAST, id`, c.ID)
	if err != nil {
		return nil, fmt.Errorf("chain %s tasks: %w", chainID, err)
	}
	c.Tasks, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Task, error) { return scanTask(r) })
	if err != nil {
		return nil, fmt.Errorf("chain %s tasks: %w", chainID, err)
	}
	return c, nil
}

// History returns chains newest first, without their tasks.
func (s *Store) History(ctx context.Context, limit, offset int) ([]Chain, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT `+chainColumns+` FROM chain_executions
		ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2`, limit, max(offset, 0))
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Chain, error) {
		c, err := scanChain(r)
		if err != nil {
			return Chain{}, err
		}
		return *c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return out, nil
}

// BatchChains calls fn for every chain of the batch in submission order,
// streaming rows (a 10,000-chain batch is never held in memory at once).
func (s *Store) BatchChains(ctx context.Context, batchID string, fn func(*Chain) error) error {
	rows, err := s.pool.Query(ctx, `SELECT `+chainColumns+` FROM chain_executions WHERE batch_id = $1 ORDER BY id`, batchID)
	if err != nil {
		return fmt.Errorf("batch %s chains: %w", batchID, err)
	}
	defer rows.Close()
	for rows.Next() {
		c, err := scanChain(rows)
		if err != nil {
			return fmt.Errorf("batch %s chains: %w", batchID, err)
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("batch %s chains: %w", batchID, err)
	}
	return nil
}

// StageResult returns the result the chain's stage committed, or
// ErrNotFound when that stage has not succeeded.
func (s *Store) StageResult(ctx context.Context, chainPK int64, stage Stage) (json.RawMessage, error) {
	var res json.RawMessage
	err := s.pool.QueryRow(ctx, `SELECT coalesce(result, 'null'::jsonb) FROM task_logs
		WHERE chain_execution_id = $1 AND task_name = $2 AND status = 'SUCCESS' ORDER BY id DESC LIMIT 1`,
		chainPK, string(stage)).Scan(&res)
	if err != nil {
		return nil, fmt.Errorf("%s result of chain %d: %w", stage, chainPK, notFound(err))
	}
	return res, nil
}

// OCRResult returns the chain's newest OCR execution with its boxes in
// reading order (page, seq), or ErrNotFound.
func (s *Store) OCRResult(ctx context.Context, chainID string) (*OCRResult, error) {
	var r OCRResult
	var width, height *int
	err := s.pool.QueryRow(ctx, `SELECT id, coalesce(chain_id, ''), image_path, coalesce(public_path, ''), status,
		coalesce(error, ''), pages, width, height FROM ocr_executions WHERE chain_id = $1 ORDER BY id DESC LIMIT 1`, chainID).
		Scan(&r.ID, &r.ChainID, &r.ImagePath, &r.PublicPath, &r.Status, &r.Error, &r.Pages, &width, &height)
	if err != nil {
		return nil, fmt.Errorf("ocr of chain %s: %w", chainID, notFound(err))
	}
	if width != nil {
		r.Width = *width
	}
	if height != nil {
		r.Height = *height
	}
	rows, err := s.pool.Query(ctx, `SELECT id, coalesce(text, ''), coalesce(confidence, 0), bbox, page, level, seq
		FROM ocr_text_boxes WHERE ocr_execution_id = $1 ORDER BY page, seq, id`, r.ID)
	if err != nil {
		return nil, fmt.Errorf("ocr boxes of chain %s: %w", chainID, err)
	}
	r.Boxes, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (TextBox, error) {
		var b TextBox
		var bbox []byte
		if err := row.Scan(&b.ID, &b.Text, &b.Confidence, &bbox, &b.Page, &b.Level, &b.Seq); err != nil {
			return b, err
		}
		if len(bbox) > 0 {
			if err := json.Unmarshal(bbox, &b.BBox); err != nil {
				return b, fmt.Errorf("box %d bbox: %w", b.ID, err)
			}
		}
		return b, nil
	})
	if err != nil {
		return nil, fmt.Errorf("ocr boxes of chain %s: %w", chainID, err)
	}
	return &r, nil
}

// QueueDepth returns, per stage, how many tasks are waiting (PENDING or
// RETRY) and how many are leased (STARTED or RUNNING).
func (s *Store) QueueDepth(ctx context.Context) (map[Stage][2]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT task_name,
		count(*) FILTER (WHERE status IN ('PENDING', 'RETRY')), count(*) FILTER (WHERE status IN ('STARTED', 'RUNNING'))
		FROM task_logs WHERE status IN ('PENDING', 'RETRY', 'STARTED', 'RUNNING') GROUP BY task_name`)
	if err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	out := map[Stage][2]int{}
	var name string
	var waiting, leased int
	_, err = pgx.ForEachRow(rows, []any{&name, &waiting, &leased}, func() error {
		out[Stage(name)] = [2]int{waiting, leased}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queue depth: %w", err)
	}
	return out, nil
}

// BatchCounts returns how many batches are in each status.
func (s *Store) BatchCounts(ctx context.Context) (map[Status]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT status, count(*) FROM batch_executions GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("batch counts: %w", err)
	}
	out := map[Status]int{}
	var st string
	var n int
	if _, err := pgx.ForEachRow(rows, []any{&st, &n}, func() error { out[Status(st)] = n; return nil }); err != nil {
		return nil, fmt.Errorf("batch counts: %w", err)
	}
	return out, nil
}

// KnownChains returns which of ids are chain_ids of stored chains.
func (s *Store) KnownChains(ctx context.Context, ids []string) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT chain_id FROM chain_executions WHERE chain_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("known chains: %w", err)
	}
	known := make(map[string]bool, len(ids))
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { known[id] = true; return nil }); err != nil {
		return nil, fmt.Errorf("known chains: %w", err)
	}
	return known, nil
}
