package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func noop(context.Context, *pipeline.Job) (*pipeline.Output, error) {
	return &pipeline.Output{Result: map[string]bool{"ok": true}}, nil
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("DOCPIPE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// engineFor builds an engine running every document stage with fn.
func engineFor(t testing.TB, store *tracking.Store, workers int, fn pipeline.StageFunc, mod func(*pipeline.Config)) *pipeline.Engine {
	t.Helper()
	cfg := pipeline.Config{Queue: store, Notifications: tracking.NewListener(store, nil), Logger: testLogger(t),
		PollInterval: 50 * time.Millisecond, ShutdownTimeout: 5 * time.Second}
	for _, st := range append(tracking.DocumentStages, tracking.StageSummary) {
		cfg.Stages = append(cfg.Stages, pipeline.StageConfig{Stage: st, Run: fn, Workers: workers})
	}
	if mod != nil {
		mod(&cfg)
	}
	e, err := pipeline.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs e until the test ends (or stop is called) and checks Run returns nil.
func start(t testing.TB, e *pipeline.Engine) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var stopped atomic.Bool
	stop = func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("engine: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func submit(t testing.TB, store *tracking.Store, n, chunk int, mod func(*tracking.NewBatch)) *tracking.Batch {
	t.Helper()
	nb := tracking.NewBatch{Name: t.Name(), ChunkSize: chunk, Chains: make([]tracking.NewChain, n), OnFinish: tracking.StageSummary}
	for i := range nb.Chains {
		nb.Chains[i].Input.ImagePath = fmt.Sprintf("/images/%s/%d.png", t.Name(), i)
	}
	if mod != nil {
		mod(&nb)
	}
	b, err := store.CreateBatch(context.Background(), nb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitBatch polls until the batch has ended and its on_finish task (if
// any) has ended too, or the deadline passes.
func waitBatch(t testing.TB, pool *pgxpool.Pool, store *tracking.Store, batchID string, within time.Duration) *tracking.Batch {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := store.Batch(context.Background(), batchID)
		if err != nil {
			t.Fatal(err)
		}
		if b.Status.Terminal() {
			var open int
			if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM task_logs WHERE batch_execution_id = $1
				AND status NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')`, b.ID).Scan(&open); err != nil {
				t.Fatal(err)
			}
			if open == 0 {
				// Read it again: its on_finish task may have ended (and set
				// final_result) between the two queries.
				b, err = store.Batch(context.Background(), batchID)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s not finished after %s: %s", batchID, within, fmtBatch(b))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestThousandChains(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	e := engineFor(t, store, 8, noop, nil)
	start(t, e)
	b := submit(t, store, 1000, 10, nil)
	b = waitBatch(t, pool, store, b.BatchID, 2*time.Minute)
	if b.Status != tracking.StatusSuccess || b.CompletedImages != 1000 || b.FailedImages != 0 || b.CompletedChunks != 100 {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	var tasks, unfinished int
	if err := pool.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE started_at IS NULL OR finished_at IS NULL)
		FROM task_logs WHERE chain_execution_id IS NOT NULL`).Scan(&tasks, &unfinished); err != nil {
		t.Fatal(err)
	}
	if tasks != 4000 || unfinished != 0 {
		t.Fatalf("tasks %d, without times %d", tasks, unfinished)
	}
	if b.FinalResult == nil {
		t.Fatalf("summary task did not set final_result")
	}
	checkInvariants(t, pool)
}

var errFlaky = errors.New("flaky")

// fmtBatch shows a batch's status and counters (not its input).
func fmtBatch(b *tracking.Batch) string {
	return fmt.Sprintf("%s images %d/%d failed %d chunks %d/%d failed %d error %q final %s",
		b.Status, b.CompletedImages, b.TotalImages, b.FailedImages, b.CompletedChunks, b.TotalChunks, b.FailedChunks, b.ErrorMessage, b.FinalResult)
}

// claimSizes is an Observer that records how many tasks each claim, and
// each direct hand-off from the previous stage, took.
type claimSizes struct {
	mu       sync.Mutex
	sizes    map[tracking.Stage][]int
	handoffs map[tracking.Stage][]int
}

func newClaimSizes() *claimSizes {
	return &claimSizes{sizes: map[tracking.Stage][]int{}, handoffs: map[tracking.Stage][]int{}}
}

func (c *claimSizes) Claimed(st tracking.Stage, n int, _ time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sizes[st] = append(c.sizes[st], n)
}

func (c *claimSizes) HandedOff(st tracking.Stage, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handoffs[st] = append(c.handoffs[st], n)
}

func (*claimSizes) TaskDone(tracking.Stage, tracking.Status, time.Duration) {}
func (*claimSizes) Committed(tracking.Stage, int, time.Duration)            {}
func (*claimSizes) Inflight(tracking.Stage, int)                            {}
func (*claimSizes) Rescued(int)                                             {}
func (*claimSizes) DBError(string)                                          {}
func (*claimSizes) Folded(tracking.Stage, int)                              {}

// TestChunksAreClaimedAndCommittedTogether: with one worker that takes one
// task at a time, every stage still claims a chunk's tasks in one statement
// and commits them in one transaction (tasks of one commit share
// updated_at, the statement's clock reading). Tasks that run ahead are
// handed over one by one, as their predecessors end, and are still
// committed a chunk at a time.
func TestChunksAreClaimedAndCommittedTogether(t *testing.T) {
	for _, runAhead := range []bool{false, true} {
		t.Run(fmt.Sprintf("runAhead=%v", runAhead), func(t *testing.T) {
			pool := newPool(t)
			store := tracking.NewStore(pool, tracking.StoreOptions{})
			obs := newClaimSizes()
			e := engineFor(t, store, 1, noop, func(c *pipeline.Config) {
				c.Observer = obs
				c.NoRunAhead = !runAhead
				for i := range c.Stages {
					c.Stages[i].Prefetch = 1
				}
			})
			stop := start(t, e)
			b := submit(t, store, 20, 5, nil)
			waitBatch(t, pool, store, b.BatchID, time.Minute)
			stop()
			for _, st := range tracking.DocumentStages {
				total := 0
				for _, n := range slices.Concat(obs.sizes[st], obs.handoffs[st]) {
					if n%5 != 0 && !runAhead {
						t.Errorf("%s: a claim or hand-off took %d tasks, not whole chunks of 5 (claims %v, hand-offs %v)",
							st, n, obs.sizes[st], obs.handoffs[st])
					}
					total += n
				}
				if total < 20 {
					t.Errorf("%s: claims and hand-offs took %d tasks, want 20", st, total)
				}
			}
			rows, err := pool.Query(context.Background(), `
				SELECT c.chunk_index, t.task_name, count(DISTINCT t.updated_at), count(*)
				FROM task_logs t JOIN chain_executions c ON c.id = t.chain_execution_id
				GROUP BY 1, 2 ORDER BY 1, 2`)
			if err != nil {
				t.Fatal(err)
			}
			groups := 0
			for rows.Next() {
				var chunk, ends, n int
				var stage string
				if err := rows.Scan(&chunk, &stage, &ends, &n); err != nil {
					t.Fatal(err)
				}
				groups++
				if n != 5 || ends != 1 {
					t.Errorf("chunk %d %s: %d tasks in %d commits; want 5 in 1", chunk, stage, n, ends)
				}
			}
			if groups != 16 {
				t.Fatalf("%d chunk×stage groups, want 16", groups)
			}
			checkInvariants(t, pool)
		})
	}
}

// TestDirectHandOff: when a chain's next stage runs in the same process
// and has room, the commit creates the next task already started and hands
// it to that stage's workers: stages after the first are never claimed,
// every task ran once, and every counter holds.
func TestDirectHandOff(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	obs := newClaimSizes()
	var mu sync.Mutex
	seen := map[string][]string{} // chain_id → the image path each of its stages was given
	recording := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		mu.Lock()
		seen[j.ChainID] = append(seen[j.ChainID], j.Input.ImagePath)
		mu.Unlock()
		return noop(ctx, j)
	}
	e := engineFor(t, store, 2, recording, func(c *pipeline.Config) {
		c.Observer = obs
		c.PollInterval = time.Hour // only the first stage is woken (at start); the rest must be handed over
		for i := range c.Stages {
			c.Stages[i].Prefetch = 64 // room for the whole batch
		}
	})
	b := submit(t, store, 40, 10, nil)
	stop := start(t, e)
	waitBatch(t, pool, store, b.BatchID, time.Minute)
	stop()
	for i, st := range tracking.DocumentStages {
		claimed, handed := sum(obs.sizes[st]), sum(obs.handoffs[st])
		want := [2]int{0, 40}
		if i == 0 {
			want = [2]int{40, 0}
		}
		if got := [2]int{claimed, handed}; got != want {
			t.Errorf("%s: %d tasks claimed and %d handed off; want %d and %d", st, claimed, handed, want[0], want[1])
		}
	}
	var odd int
	if err := pool.QueryRow(context.Background(), `
		SELECT count(*) FROM task_logs WHERE chain_execution_id IS NOT NULL
			AND (status <> 'SUCCESS' OR attempt <> 1 OR retries <> 0 OR owner <> $1
				OR started_at IS NULL OR finished_at < started_at OR lease_expires_at IS NOT NULL)`, e.Owner()).Scan(&odd); err != nil {
		t.Fatal(err)
	}
	if odd != 0 {
		t.Errorf("%d tasks not SUCCESS after exactly one attempt by this engine", odd)
	}
	// A handed-off task gets its chain's input without it being read or
	// decoded again: every stage saw the chain's own image path.
	rows, err := pool.Query(context.Background(), `SELECT chain_id, input_data->>'image_path' FROM chain_executions`)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ ID, Path string }])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range want {
		got := seen[c.ID]
		if len(got) != len(tracking.DocumentStages) || slices.ContainsFunc(got, func(p string) bool { return p != c.Path }) {
			t.Errorf("chain %s: its stages were given image paths %q; want %q each", c.ID, got, c.Path)
		}
	}
	checkInvariants(t, pool)
}

// TestBackPressure: a stage does not run ahead of a slower stage after it
// in the same process. With the second stage stuck, the first stops
// claiming once the second's budget is full (every task it finished was
// handed over, none left PENDING); released, everything completes.
func TestBackPressure(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	release := make(chan struct{})
	var released sync.Once
	t.Cleanup(func() { released.Do(func() { close(release) }) })
	stuck := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		if j.Stage == tracking.StageLLM {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return noop(ctx, j)
	}
	e := engineFor(t, store, 1, stuck, nil) // 1 worker, prefetch 1: a budget of 16 in flight per stage
	b := submit(t, store, 200, 1, nil)
	stop := start(t, e)
	count := func(stage tracking.Stage, statuses ...string) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM task_logs WHERE task_name = $1 AND status = ANY($2)`,
			string(stage), statuses).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Let the first stage run as far as it will.
	prev := -1
	for deadline := time.Now().Add(30 * time.Second); ; {
		time.Sleep(300 * time.Millisecond)
		n := count(tracking.StageOCR, "SUCCESS")
		if n == prev {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first stage never settled (%d done)", n)
		}
		prev = n
	}
	done := count(tracking.StageOCR, "SUCCESS")
	t.Logf("first stage finished %d tasks while the second was stuck", done)
	if done == 0 || done > 40 {
		t.Errorf("first stage finished %d of 200 tasks while the second was stuck; want a bounded few (budget 16)", done)
	}
	if pending := count(tracking.StageLLM, "PENDING", "RETRY"); pending != 0 {
		t.Errorf("%d second-stage tasks PENDING; want every one handed over", pending)
	}
	released.Do(func() { close(release) })
	waitBatch(t, pool, store, b.BatchID, time.Minute)
	stop()
	checkInvariants(t, pool)
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// TestNoPollNeeded: with the poll effectively off and no listener, an
// engine still drains a queued batch: after a claim that found work (a
// whole chunk may be more than it asked for) it claims again at once, and
// each commit wakes the next stage.
func TestNoPollNeeded(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	b := submit(t, store, 40, 5, nil)
	e := engineFor(t, store, 1, noop, func(c *pipeline.Config) {
		c.PollInterval = time.Hour
		c.Notifications = nil
		for i := range c.Stages {
			c.Stages[i].Prefetch = 1
		}
	})
	start(t, e)
	b = waitBatch(t, pool, store, b.BatchID, 30*time.Second)
	if b.Status != tracking.StatusSuccess {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	checkInvariants(t, pool)
}

// TestStartedAtIsWhenTheWorkerBegan: a task claimed with its chunk waits
// for the one worker, and the chunk commits when its last task ends; yet
// started_at and finished_at are when the worker began and ended it (SPEC:
// STARTED means began), so finished_at - started_at is the stage's own
// duration.
func TestStartedAtIsWhenTheWorkerBegan(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	const work = 100 * time.Millisecond
	slow := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		if j.Stage == tracking.StageOCR {
			time.Sleep(work)
		}
		return noop(ctx, j)
	}
	start(t, engineFor(t, store, 1, slow, func(c *pipeline.Config) {
		for i := range c.Stages {
			c.Stages[i].Prefetch = 1
		}
	}))
	b := submit(t, store, 5, 5, nil)
	waitBatch(t, pool, store, b.BatchID, time.Minute)
	var longest float64
	if err := pool.QueryRow(context.Background(), `SELECT max(extract(epoch FROM finished_at - started_at))
		FROM task_logs WHERE task_name = $1`, string(tracking.StageOCR)).Scan(&longest); err != nil {
		t.Fatal(err)
	}
	// Claimed together, run one after another, committed together: from
	// claim to commit, every task would have taken 5 × 100 ms.
	if time.Duration(longest*float64(time.Second)) > 3*work {
		t.Fatalf("an OCR task lasted %.0f ms from started_at: started_at is the claim, not the start", longest*1000)
	}
	checkInvariants(t, pool)
}

// concurrencyQueue is a store that records how many claims and commits
// ran at once, at most.
type concurrencyQueue struct {
	*tracking.Store
	now, most atomic.Int64
}

func (q *concurrencyQueue) enter() func() {
	n := q.now.Add(1)
	for m := q.most.Load(); n > m && !q.most.CompareAndSwap(m, n); m = q.most.Load() {
	}
	time.Sleep(time.Millisecond) // widen the window an overlap would need
	return func() { q.now.Add(-1) }
}

func (q *concurrencyQueue) Claim(ctx context.Context, st tracking.Stage, owner string, limit int, lease time.Duration) ([]tracking.Claimed, error) {
	defer q.enter()()
	return q.Store.Claim(ctx, st, owner, limit, lease)
}

func (q *concurrencyQueue) Complete(ctx context.Context, outcomes []tracking.Outcome) (*tracking.CommitResult, error) {
	defer q.enter()()
	return q.Store.Complete(ctx, outcomes)
}

// TestTransactionsLimit checks that the engine runs at most
// Config.Transactions claims and commits at once over all its stages, and
// that a limit of one still finishes a batch.
func TestTransactionsLimit(t *testing.T) {
	for _, limit := range []int{1, 2} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			pool := newPool(t)
			store := tracking.NewStore(pool, tracking.StoreOptions{})
			q := &concurrencyQueue{Store: store}
			start(t, engineFor(t, store, 4, noop, func(c *pipeline.Config) {
				c.Queue, c.Transactions = q, limit
			}))
			b := submit(t, store, 200, 5, nil)
			if b = waitBatch(t, pool, store, b.BatchID, time.Minute); b.Status != tracking.StatusSuccess {
				t.Fatalf("batch %s", fmtBatch(b))
			}
			if most := q.most.Load(); most != int64(limit) {
				t.Fatalf("at most %d claims and commits ran at once, want %d", most, limit)
			}
			checkInvariants(t, pool)
		})
	}
}
