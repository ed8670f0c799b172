package pipeline_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// checkInvariants fails the test if any counter differs from what the rows
// say, if a chain ran a stage to SUCCESS twice, or if a chain has more
// than one OCR execution. Each query returns the offending rows.
func checkInvariants(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	checks := []struct{ name, sql string }{
		{"chain counters equal their tasks", `
			SELECT c.chain_id, c.completed_tasks, c.failed_tasks, count(t.*) FILTER (WHERE t.status = 'SUCCESS'), count(t.*) FILTER (WHERE t.status = 'FAILURE')
			FROM chain_executions c LEFT JOIN task_logs t ON t.chain_execution_id = c.id
			GROUP BY c.id HAVING c.completed_tasks <> count(t.*) FILTER (WHERE t.status = 'SUCCESS')
				OR c.failed_tasks <> count(t.*) FILTER (WHERE t.status = 'FAILURE')`},
		{"chain status agrees with counters", `
			SELECT chain_id, status, completed_tasks, failed_tasks, total_tasks FROM chain_executions
			WHERE (status = 'SUCCESS') <> (completed_tasks = total_tasks)
				OR (status = 'FAILURE') <> (failed_tasks > 0)
				OR (status IN ('SUCCESS', 'FAILURE', 'REVOKED')) <> (finished_at IS NOT NULL)`},
		{"one success per stage of a chain", `
			SELECT chain_execution_id, stage_index, count(*) FROM task_logs WHERE status = 'SUCCESS' AND chain_execution_id IS NOT NULL
			GROUP BY 1, 2 HAVING count(*) > 1`},
		{"one live task per running chain", `
			SELECT c.chain_id, count(t.*) FROM chain_executions c JOIN task_logs t ON t.chain_execution_id = c.id
			WHERE t.status IN ('PENDING', 'RETRY', 'STARTED', 'RUNNING') GROUP BY c.id
			HAVING count(t.*) > 1 OR bool_or(c.status IN ('SUCCESS', 'FAILURE', 'REVOKED'))`},
		{"ended tasks have times", `
			SELECT task_id, status FROM task_logs WHERE status IN ('SUCCESS', 'FAILURE') AND (started_at IS NULL OR finished_at IS NULL)`},
		{"chunk counters equal their chains", `
			SELECT k.batch_execution_id, k.chunk_index FROM batch_chunks k
			JOIN batch_executions b ON b.id = k.batch_execution_id
			LEFT JOIN chain_executions c ON c.batch_id = b.batch_id AND c.chunk_index = k.chunk_index
			GROUP BY k.batch_execution_id, k.chunk_index, k.completed_images, k.failed_images, k.total_images
			HAVING k.completed_images <> count(c.*) FILTER (WHERE c.status = 'SUCCESS')
				OR k.failed_images <> count(c.*) FILTER (WHERE c.status IN ('FAILURE', 'REVOKED'))
				OR k.total_images <> count(c.*)`},
		{"batch counters equal their chains and chunks", `
			SELECT b.batch_id FROM batch_executions b
			WHERE b.completed_images <> (SELECT count(*) FROM chain_executions c WHERE c.batch_id = b.batch_id AND c.status = 'SUCCESS')
				OR b.failed_images <> (SELECT count(*) FROM chain_executions c WHERE c.batch_id = b.batch_id AND c.status IN ('FAILURE', 'REVOKED'))
				OR b.total_images <> (SELECT count(*) FROM chain_executions c WHERE c.batch_id = b.batch_id)
				OR b.completed_chunks <> (SELECT count(*) FROM batch_chunks k WHERE k.batch_execution_id = b.id AND k.status = 'SUCCESS')
				OR b.failed_chunks <> (SELECT count(*) FROM batch_chunks k WHERE k.batch_execution_id = b.id AND k.status = 'FAILURE')`},
		{"ended batches", `
			SELECT batch_id, status FROM batch_executions
			WHERE (completed_images + failed_images = total_images) <> (status IN ('SUCCESS', 'FAILURE', 'REVOKED'))
				AND status <> 'REVOKED'`},
		{"one OCR execution per chain", `
			SELECT chain_id, count(*) FROM ocr_executions GROUP BY chain_id HAVING count(*) > 1`},
	}
	ctx := context.Background()
	for _, c := range checks {
		rows, err := pool.Query(ctx, c.sql)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		n := 0
		for rows.Next() {
			vals, _ := rows.Values()
			if n < 5 {
				t.Errorf("invariant %q broken: %v", c.name, vals)
			}
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if n > 5 {
			t.Errorf("invariant %q broken in %d rows", c.name, n)
		}
	}
}
