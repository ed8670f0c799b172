package tracking_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
)

// TestCompleteFolded records a success together with the chain's next
// tasks that already ran (Outcome.Folded): they are inserted SUCCESS with
// their results and times, the chain advances past them (and ends when
// they reach its last stage), the next task gets the caller's task_id and
// index, and a stale attempt records none of its folded tasks.
func TestCompleteFolded(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t)
	s := tracking.NewStore(pool, tracking.StoreOptions{})
	if _, err := s.CreateBatch(ctx, tracking.NewBatch{Name: "fold", ChunkSize: 10, Chains: images(4)}); err != nil {
		t.Fatal(err)
	}
	cl, err := s.Claim(ctx, tracking.StageOCR, "me", 10, time.Minute)
	if err != nil || len(cl) != 4 {
		t.Fatalf("claim: %v, %d tasks", err, len(cl))
	}
	if got := cl[0].Stages; len(got) != 4 || got[3] != tracking.StageExcel || cl[0].NextStage() != tracking.StageLLM {
		t.Fatalf("claimed stages %v, next %q", got, cl[0].NextStage())
	}
	t0 := time.Now().Add(-time.Second).Truncate(time.Microsecond)
	folded := func(n int) []tracking.FoldedTask {
		var out []tracking.FoldedTask
		for i := range n {
			out = append(out, tracking.FoldedTask{TaskID: tracking.NewID(), Stage: tracking.DocumentStages[1+i],
				Result: json.RawMessage(`{"stage":` + string(rune('1'+i)) + `}`), StartedAt: t0, FinishedAt: t0.Add(time.Millisecond), Owner: "me"})
		}
		return out
	}
	// Revoke chain 3 first: its attempt is stale, so nothing of it is recorded.
	if _, err := s.RevokeChain(ctx, cl[3].ChainID, "test"); err != nil {
		t.Fatal(err)
	}
	nextID := tracking.NewID()
	outs := []tracking.Outcome{
		{Task: &cl[0], Result: json.RawMessage(`{"stage":0}`)},                                        // plain
		{Task: &cl[1], Result: json.RawMessage(`{"stage":0}`), Folded: folded(2), NextTaskID: nextID}, // two folded, next PENDING with our id
		{Task: &cl[2], Result: json.RawMessage(`{"stage":0}`), Folded: folded(3)},                     // folded to the end
		{Task: &cl[3], Result: json.RawMessage(`{"stage":0}`), Folded: folded(3)},                     // stale
	}
	res, err := s.Complete(ctx, outs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Succeeded != 1+3+4 || len(res.Stale) != 1 || !res.Advanced[cl[1].ID] || !res.Advanced[cl[2].ID] || res.Advanced[cl[3].ID] {
		t.Fatalf("result %+v", res)
	}
	if res.Folded[tracking.StageLLM] != 2 || res.Folded[tracking.StageLayout] != 2 || res.Folded[tracking.StageExcel] != 1 {
		t.Fatalf("folded per stage %v", res.Folded)
	}
	type row struct {
		chain                         int
		stages, statuses, results     string
		completed, total              int
		chainStatus, final, nextTask  string
		unset, foldedWrong, indexGaps int
	}
	for i, want := range []row{
		{0, names(2), "SUCCESS,PENDING", `{"stage": 0}`, 1, 4, "STARTED", "", "", 0, 0, 0},
		{1, names(4), "SUCCESS,SUCCESS,SUCCESS,PENDING", `{"stage": 0},{"stage": 1},{"stage": 2}`, 3, 4, "STARTED", "", nextID, 0, 0, 0},
		{2, names(4), "SUCCESS,SUCCESS,SUCCESS,SUCCESS", `{"stage": 0},{"stage": 1},{"stage": 2},{"stage": 3}`, 4, 4, "SUCCESS", `{"stage": 3}`, "", 0, 0, 0},
		{3, names(1), "REVOKED", "", 0, 4, "REVOKED", "", "", 0, 0, 0},
	} {
		var got row
		got.chain = i
		err := pool.QueryRow(ctx, `
			SELECT string_agg(t.task_name, ',' ORDER BY t.stage_index), string_agg(t.status, ',' ORDER BY t.stage_index),
				coalesce(string_agg(t.result::text, ',' ORDER BY t.stage_index) FILTER (WHERE t.status = 'SUCCESS'), ''),
				c.completed_tasks, c.total_tasks, c.status, coalesce(c.final_result::text, ''),
				coalesce(max(t.task_id) FILTER (WHERE t.status = 'PENDING' AND t.stage_index = 3), ''),
				count(*) FILTER (WHERE t.status = 'SUCCESS' AND (t.started_at IS NULL OR t.finished_at IS NULL)),
				count(*) FILTER (WHERE t.stage_index > 0 AND t.status = 'SUCCESS' AND (t.attempt <> 1 OR t.owner <> 'me'
					OR t.started_at <> $2 OR t.finished_at <> $2 + interval '1 ms')),
				max(t.stage_index) + 1 - count(*)
			FROM chain_executions c JOIN task_logs t ON t.chain_execution_id = c.id
			WHERE c.chain_id = $1 GROUP BY c.id`, cl[i].ChainID, t0).Scan(&got.stages, &got.statuses, &got.results,
			&got.completed, &got.total, &got.chainStatus, &got.final, &got.nextTask, &got.unset, &got.foldedWrong, &got.indexGaps)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("chain %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	b, err := s.Batch(ctx, cl[0].BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if b.CompletedImages != 1 || b.FailedImages != 1 || b.Status != tracking.StatusRunning {
		t.Fatalf("batch %+v", b)
	}
}

// names is the first n document stages, comma-separated.
func names(n int) string {
	var out []string
	for _, st := range tracking.DocumentStages[:n] {
		out = append(out, string(st))
	}
	return strings.Join(out, ",")
}
