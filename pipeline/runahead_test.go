package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// slowQueue is a store whose commits of one stage (or of all, if stage is
// "") wait: for delay, or until the test lets them go (gate), announcing
// themselves on entered.
type slowQueue struct {
	*tracking.Store
	stage   tracking.Stage
	delay   time.Duration
	entered chan struct{} // nil: no gate
	gate    chan struct{}
}

func (q *slowQueue) Complete(ctx context.Context, outcomes []tracking.Outcome) (*tracking.CommitResult, error) {
	if len(outcomes) > 0 && (q.stage == "" || outcomes[0].Task.Stage == q.stage) {
		if q.entered != nil {
			q.entered <- struct{}{}
			<-q.gate
		}
		time.Sleep(q.delay)
	}
	return q.Store.Complete(ctx, outcomes)
}

// folds counts folded tasks per stage.
type folds struct {
	claimSizes
	mu sync.Mutex
	n  map[tracking.Stage]int
}

func (f *folds) Folded(st tracking.Stage, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n[st] += n
}

// TestRunAheadFoldsFastStages: while the first stage's commits are slow,
// the chains' later (instant) stages run ahead and are recorded by those
// commits, created directly SUCCESS, and every counter still equals the
// rows. With run-ahead off, nothing is folded.
func TestRunAheadFoldsFastStages(t *testing.T) {
	for _, runAhead := range []bool{true, false} {
		t.Run(fmt.Sprintf("runAhead=%v", runAhead), func(t *testing.T) {
			pool := newPool(t)
			store := tracking.NewStore(pool, tracking.StoreOptions{})
			obs := &folds{claimSizes: *newClaimSizes(), n: map[tracking.Stage]int{}}
			q := &slowQueue{Store: store, stage: tracking.StageOCR, delay: 20 * time.Millisecond}
			start(t, engineFor(t, store, 4, noop, func(c *pipeline.Config) {
				c.Queue, c.Observer, c.Transactions, c.NoRunAhead = q, obs, 1, !runAhead
			}))
			b := submit(t, store, 60, 5, nil)
			if b = waitBatch(t, pool, store, b.BatchID, time.Minute); b.Status != tracking.StatusSuccess {
				t.Fatalf("batch %s", fmtBatch(b))
			}
			checkInvariants(t, pool)
			// A folded task's row was inserted SUCCESS by its predecessor's
			// commit: created and updated by that one statement.
			var rows, byRows int
			if err := pool.QueryRow(context.Background(), `
				SELECT count(*) FILTER (WHERE t.created_at = t.updated_at AND t.status = 'SUCCESS'),
					count(*) FILTER (WHERE t.created_at = t.updated_at AND t.status = 'SUCCESS' AND t.updated_at = p.updated_at)
				FROM task_logs t JOIN task_logs p ON p.chain_execution_id = t.chain_execution_id AND p.stage_index = t.stage_index - 1
				WHERE t.stage_index > 0`).Scan(&rows, &byRows); err != nil {
				t.Fatal(err)
			}
			obs.mu.Lock()
			n := obs.n[tracking.StageLLM] + obs.n[tracking.StageLayout] + obs.n[tracking.StageExcel]
			obs.mu.Unlock()
			t.Logf("folded: %v; rows created SUCCESS: %d", obs.n, rows)
			if !runAhead {
				if n != 0 || rows != 0 {
					t.Fatalf("run-ahead off: %d tasks folded, %d rows created SUCCESS", n, rows)
				}
				return
			}
			if n == 0 || rows != n || byRows != n {
				t.Fatalf("%d tasks folded, %d rows created SUCCESS, %d of them by their predecessor's commit; want them equal and > 0", n, rows, byRows)
			}
		})
	}
}

// TestRunAheadReadsCommittedWork: a stage that reads its predecessor's
// result runs ahead of that result's commit, so its read must wait for
// the commit. Each stage adds one to the previous stage's result; the
// chains end with 4, and never fail with a missing result.
func TestRunAheadReadsCommittedWork(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	var reads atomic.Int64
	count := func(ctx context.Context, job *pipeline.Job) (*pipeline.Output, error) {
		n := 0
		if job.StageIndex > 0 {
			raw, err := job.Reader.StageResult(ctx, job.ChainPK, tracking.DocumentStages[job.StageIndex-1])
			if err != nil {
				return nil, tracking.Permanent(fmt.Errorf("read %s: %w", tracking.DocumentStages[job.StageIndex-1], err))
			}
			if err := json.Unmarshal(raw, &n); err != nil {
				return nil, tracking.Permanent(err)
			}
			reads.Add(1)
		}
		return &pipeline.Output{Result: n + 1}, nil
	}
	q := &slowQueue{Store: store, delay: 30 * time.Millisecond}
	start(t, engineFor(t, store, 4, count, func(c *pipeline.Config) {
		c.Queue = q
		c.Stages = c.Stages[:4] // no summary
	}))
	b := submit(t, store, 40, 5, func(nb *tracking.NewBatch) { nb.OnFinish = "" })
	if b = waitBatch(t, pool, store, b.BatchID, time.Minute); b.Status != tracking.StatusSuccess {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	var wrong int
	if err := pool.QueryRow(context.Background(),
		`SELECT count(*) FROM chain_executions WHERE batch_id = $1 AND final_result::text <> '4'`, b.BatchID).Scan(&wrong); err != nil {
		t.Fatal(err)
	}
	if wrong != 0 || reads.Load() < 120 {
		t.Fatalf("%d chains did not end with 4; %d reads", wrong, reads.Load())
	}
	checkInvariants(t, pool)
}

// TestRunAheadOfARevokedTask: a chain revoked while its first task's
// commit is on its way has that commit find the task revoked; what ran
// ahead of it is then discarded, never recorded, and the chain ends
// REVOKED with nothing after its first task.
func TestRunAheadOfARevokedTask(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	var ahead atomic.Int64
	fn := func(ctx context.Context, job *pipeline.Job) (*pipeline.Output, error) {
		if job.StageIndex > 0 {
			ahead.Add(1)
		}
		return noop(ctx, job)
	}
	q := &slowQueue{Store: store, stage: tracking.StageOCR, entered: make(chan struct{}), gate: make(chan struct{})}
	start(t, engineFor(t, store, 2, fn, func(c *pipeline.Config) { c.Queue = q }))
	b := submit(t, store, 1, 1, nil)
	select {
	case <-q.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the first stage never committed")
	}
	// The commit is held: let the chain's later stages run ahead, then revoke.
	deadline := time.Now().Add(10 * time.Second)
	for ahead.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if ahead.Load() < 3 {
		t.Fatalf("%d later stages ran ahead of the held commit, want 3", ahead.Load())
	}
	var chainID string
	if err := pool.QueryRow(context.Background(), `SELECT chain_id FROM chain_executions WHERE batch_id = $1`, b.BatchID).Scan(&chainID); err != nil {
		t.Fatal(err)
	}
	if _, err := store.RevokeChain(context.Background(), chainID, "test"); err != nil {
		t.Fatal(err)
	}
	close(q.gate)
	if b = waitBatch(t, pool, store, b.BatchID, time.Minute); b.Status != tracking.StatusRevoked && b.Status != tracking.StatusFailure {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	var tasks int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM task_logs WHERE chain_execution_id IS NOT NULL`).Scan(&tasks); err != nil {
		t.Fatal(err)
	}
	if tasks != 1 {
		t.Fatalf("%d chain tasks recorded, want only the revoked first one", tasks)
	}
	checkInvariants(t, pool)
}
