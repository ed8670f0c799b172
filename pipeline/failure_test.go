package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

func fastBackoff(c *pipeline.Config) {
	c.Backoff = func(int) time.Duration { return 20 * time.Millisecond }
}

func TestRetriesThenSucceeds(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	var calls sync.Map // task id -> attempts seen
	flakyLLM := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		if j.Stage == tracking.StageLLM && j.Attempt < 3 {
			n, _ := calls.LoadOrStore(j.TaskID, new(atomic.Int32))
			n.(*atomic.Int32).Add(1)
			return nil, fmt.Errorf("attempt %d: %w", j.Attempt, errFlaky)
		}
		return noop(ctx, j)
	}
	const backoff = 150 * time.Millisecond
	e := engineFor(t, store, 4, flakyLLM, func(c *pipeline.Config) {
		c.Backoff = func(int) time.Duration { return backoff }
	})
	start(t, e)
	b := submit(t, store, 5, 10, nil)
	b = waitBatch(t, pool, store, b.BatchID, time.Minute)
	if b.Status != tracking.StatusSuccess {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	rows, err := pool.Query(context.Background(), `SELECT status, retries, attempt, coalesce(error, '') FROM task_logs WHERE task_name = $1`, string(tracking.StageLLM))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var status string
		var retries, attempt int
		var msg string
		if err := rows.Scan(&status, &retries, &attempt, &msg); err != nil {
			t.Fatal(err)
		}
		n++
		if status != "SUCCESS" || retries != 2 || attempt != 3 || msg != "" {
			t.Errorf("llm task: status %s retries %d attempt %d error %q; want SUCCESS 2 3 ''", status, retries, attempt, msg)
		}
	}
	if n != 5 {
		t.Fatalf("%d llm tasks", n)
	}
	checkInvariants(t, pool)
}

func TestBackoffIsRespected(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	var mu sync.Mutex
	var starts []time.Time
	fail := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		if j.Stage == tracking.StageOCR {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			if j.Attempt == 1 {
				return nil, errFlaky
			}
		}
		return noop(ctx, j)
	}
	const backoff = 400 * time.Millisecond
	e := engineFor(t, store, 1, fail, func(c *pipeline.Config) { c.Backoff = func(int) time.Duration { return backoff } })
	start(t, e)
	b := submit(t, store, 1, 10, nil)
	waitBatch(t, pool, store, b.BatchID, time.Minute)
	mu.Lock()
	defer mu.Unlock()
	if len(starts) != 2 {
		t.Fatalf("%d OCR attempts, want 2", len(starts))
	}
	if gap := starts[1].Sub(starts[0]); gap < backoff {
		t.Fatalf("retried after %s, before the %s backoff", gap, backoff)
	}
}

func TestPermanentFailureAndMaxAttempts(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	var attempts sync.Map
	stage := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		n, _ := attempts.LoadOrStore(j.TaskID, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		switch {
		case j.Stage == tracking.StageOCR && j.Input.ImagePath == "/bad/permanent.png":
			return nil, tracking.Permanent(errors.New("not an image"))
		case j.Stage == tracking.StageLayout && j.Input.ImagePath == "/bad/always.png":
			return nil, errFlaky
		}
		return noop(ctx, j)
	}
	e := engineFor(t, store, 2, stage, fastBackoff)
	start(t, e)
	b := submit(t, store, 4, 2, func(nb *tracking.NewBatch) {
		nb.Chains[1].Input.ImagePath = "/bad/permanent.png"
		nb.Chains[3].Input.ImagePath = "/bad/always.png"
	})
	b = waitBatch(t, pool, store, b.BatchID, time.Minute)
	if b.Status != tracking.StatusFailure || b.FailedImages != 2 || b.CompletedImages != 2 || b.ErrorMessage != "2 of 4 images failed" {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	if b.FailedChunks != 2 || b.CompletedChunks != 0 { // each chunk holds one bad image
		t.Fatalf("chunks: %s", fmtBatch(b))
	}
	check := func(path string, wantStage tracking.Stage, wantAttempts int, wantMsg string) {
		t.Helper()
		var chainID string
		if err := pool.QueryRow(context.Background(), `SELECT chain_id FROM chain_executions WHERE input_data->>'image_path' = $1`, path).Scan(&chainID); err != nil {
			t.Fatal(err)
		}
		c, err := store.Chain(context.Background(), chainID)
		if err != nil {
			t.Fatal(err)
		}
		if c.Status != tracking.StatusFailure || c.FailedTasks != 1 || c.ErrorMessage != wantMsg {
			t.Errorf("%s: chain %s failed_tasks %d error %q; want FAILURE 1 %q", path, c.Status, c.FailedTasks, c.ErrorMessage, wantMsg)
		}
		last := c.Tasks[len(c.Tasks)-1]
		if last.TaskName != wantStage || last.Status != tracking.StatusFailure || last.Attempt != wantAttempts || last.Retries != wantAttempts-1 {
			t.Errorf("%s: last task %s %s attempt %d retries %d; want %s FAILURE %d %d", path, last.TaskName, last.Status, last.Attempt, last.Retries, wantStage, wantAttempts, wantAttempts-1)
		}
		for _, task := range c.Tasks {
			if task.StageIndex > last.StageIndex {
				t.Errorf("%s: a later stage ran: %s", path, task.TaskName)
			}
		}
	}
	check("/bad/permanent.png", tracking.StageOCR, 1, "pipeline.ocr_stage failed: not an image")
	check("/bad/always.png", tracking.StageLayout, tracking.DefaultMaxAttempts, "pipeline.layout_stage failed: flaky")
	checkInvariants(t, pool)
}

func TestStagePanicIsAFailedAttempt(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	stage := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		if j.Stage == tracking.StageExcel {
			panic("boom")
		}
		return noop(ctx, j)
	}
	start(t, engineFor(t, store, 1, stage, fastBackoff))
	b := submit(t, store, 1, 1, nil)
	b = waitBatch(t, pool, store, b.BatchID, time.Minute)
	if b.Status != tracking.StatusFailure {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	checkInvariants(t, pool)
}

// TestRescueExpiredLease: a process claims tasks and dies (never
// completes them). Another engine rescues them once the lease expires,
// counts the lost attempt, and finishes the chains.
func TestRescueExpiredLease(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	b := submit(t, store, 3, 10, nil)
	dead, err := store.Claim(context.Background(), tracking.StageOCR, "dead-process", 10, 300*time.Millisecond)
	if err != nil || len(dead) != 3 {
		t.Fatalf("claim: %v %d", err, len(dead))
	}
	e := engineFor(t, store, 2, noop, func(c *pipeline.Config) {
		c.Lease = 300 * time.Millisecond
		c.RescueEvery = 100 * time.Millisecond
		fastBackoff(c)
	})
	start(t, e)
	b = waitBatch(t, pool, store, b.BatchID, time.Minute)
	if b.Status != tracking.StatusSuccess {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	var attempt, retries int
	var owner string
	for _, d := range dead {
		if err := pool.QueryRow(context.Background(), `SELECT attempt, retries, owner FROM task_logs WHERE id = $1`, d.ID).Scan(&attempt, &retries, &owner); err != nil {
			t.Fatal(err)
		}
		if attempt != 2 || retries != 1 || owner != e.Owner() {
			t.Errorf("rescued task: attempt %d retries %d owner %s; want 2 1 %s", attempt, retries, owner, e.Owner())
		}
	}
	// A late finisher (the "dead" process waking up) changes nothing.
	res, err := store.Complete(context.Background(), []tracking.Outcome{{Task: &dead[0]}})
	if err != nil || res.Applied != 0 || len(res.Stale) != 1 {
		t.Fatalf("late completion: %v %+v", err, res)
	}
	checkInvariants(t, pool)
}

// TestRescueCountsCrashesToFailure: a task whose process dies on every
// attempt (a poison input) fails for good after max_attempts.
func TestRescueCountsCrashesToFailure(t *testing.T) {
	pool := newPool(t)
	now := time.Now()
	var clock atomic.Int64
	clock.Store(now.UnixNano())
	store := tracking.NewStore(pool, tracking.StoreOptions{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	b := submit(t, store, 1, 10, nil)
	ctx := context.Background()
	for attempt := 1; attempt <= tracking.DefaultMaxAttempts; attempt++ {
		cl, err := store.Claim(ctx, tracking.StageOCR, "crashing", 1, time.Minute)
		if err != nil || len(cl) != 1 || cl[0].Attempt != attempt {
			t.Fatalf("attempt %d: claim %v %+v", attempt, err, cl)
		}
		clock.Add(int64(2 * time.Minute)) // the lease expires
		if _, err := store.RescueExpired(ctx, 10); err != nil {
			t.Fatal(err)
		}
		clock.Add(int64(time.Hour)) // past any backoff
	}
	b, err := store.Batch(ctx, b.BatchID)
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != tracking.StatusFailure || b.FailedImages != 1 {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	if cl, _ := store.Claim(ctx, tracking.StageOCR, "crashing", 1, time.Minute); len(cl) != 0 {
		t.Fatalf("a failed task was claimed again")
	}
	checkInvariants(t, pool)
}

// blockingStage blocks every task of stage until its context ends, and
// reports each start on started.
func blockingStage(stage tracking.Stage, started chan<- string, causes chan<- error) pipeline.StageFunc {
	return func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		if j.Stage != stage {
			return noop(ctx, j)
		}
		started <- j.ChainID
		<-ctx.Done()
		if causes != nil {
			causes <- context.Cause(ctx)
		}
		return nil, ctx.Err()
	}
}

func TestRevokeRunningChain(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	started := make(chan string, 10)
	causes := make(chan error, 10)
	start(t, engineFor(t, store, 2, blockingStage(tracking.StageLLM, started, causes), nil))
	b := submit(t, store, 2, 10, nil)
	chainID := <-started
	other := <-started
	res, err := store.RevokeChain(context.Background(), chainID, "user asked")
	if err != nil || res.Chains != 1 || len(res.Running) != 1 {
		t.Fatalf("revoke: %v %+v", err, res)
	}
	select {
	case cause := <-causes:
		if cause == nil || cause.Error() != "task revoked" {
			t.Fatalf("cause %v", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("running task was not cancelled")
	}
	c, _ := store.Chain(context.Background(), chainID)
	if c.Status != tracking.StatusRevoked || c.ErrorMessage != "revoked: user asked" {
		t.Fatalf("chain %+v", c)
	}
	if _, err := store.RevokeChain(context.Background(), chainID, ""); !errors.Is(err, tracking.ErrConflict) {
		t.Fatalf("second revoke: %v", err)
	}
	if _, err := store.RevokeChain(context.Background(), "nope", ""); !errors.Is(err, tracking.ErrNotFound) {
		t.Fatalf("unknown revoke: %v", err)
	}
	// Revoking the other ends the batch; nothing of either runs again.
	if _, err := store.RevokeChain(context.Background(), other, ""); err != nil {
		t.Fatal(err)
	}
	b = waitBatch(t, pool, store, b.BatchID, 30*time.Second)
	if b.Status != tracking.StatusFailure || b.FailedImages != 2 {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	checkInvariants(t, pool)
}

func TestRevokeBatch(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	started := make(chan string, 100)
	start(t, engineFor(t, store, 2, blockingStage(tracking.StageOCR, started, nil), nil))
	b := submit(t, store, 20, 5, nil)
	<-started
	<-started
	res, err := store.RevokeBatch(context.Background(), b.BatchID, "wrong files")
	if err != nil || res.Chains != 20 || len(res.Running) < 2 { // leased: running, or claimed and queued
		t.Fatalf("revoke: %v %+v", err, res)
	}
	b = waitBatch(t, pool, store, b.BatchID, 30*time.Second)
	if b.Status != tracking.StatusRevoked || b.FailedImages != 20 || b.FailedChunks != 4 || b.ErrorMessage != "revoked: wrong files" {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	var live int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM task_logs WHERE status NOT IN ('REVOKED', 'SUCCESS', 'FAILURE')`).Scan(&live)
	if live != 0 {
		t.Fatalf("%d tasks still live", live)
	}
	checkInvariants(t, pool)
}

// TestGracefulShutdownHandsBack: tasks still running when the shutdown
// timeout passes are cancelled and handed back PENDING with the attempt not
// counted; a new engine then finishes them.
func TestGracefulShutdownHandsBack(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	started := make(chan string, 10)
	e := engineFor(t, store, 2, blockingStage(tracking.StageOCR, started, nil), func(c *pipeline.Config) {
		c.ShutdownTimeout = 200 * time.Millisecond
	})
	stop := start(t, e)
	b := submit(t, store, 3, 10, nil)
	<-started
	<-started
	stop()
	var pending, attempts, retries int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE status = 'PENDING'), sum(attempt), sum(retries)
		FROM task_logs WHERE task_name = $1`, string(tracking.StageOCR)).Scan(&pending, &attempts, &retries); err != nil {
		t.Fatal(err)
	}
	if pending != 3 || attempts != 0 || retries != 0 {
		t.Fatalf("after shutdown: %d pending, attempts %d, retries %d; want 3 0 0", pending, attempts, retries)
	}
	start(t, engineFor(t, store, 2, noop, nil))
	b = waitBatch(t, pool, store, b.BatchID, 30*time.Second)
	if b.Status != tracking.StatusSuccess {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	checkInvariants(t, pool)
}

// TestGracefulShutdownLetsTasksFinish: tasks that finish within the
// shutdown timeout are committed, not handed back.
func TestGracefulShutdownLetsTasksFinish(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	started := make(chan string, 10)
	slow := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		if j.Stage == tracking.StageOCR {
			started <- j.ChainID
			time.Sleep(300 * time.Millisecond) // ignores ctx: it is not cancelled before the timeout
		}
		return noop(ctx, j)
	}
	stop := start(t, engineFor(t, store, 2, slow, nil))
	submit(t, store, 2, 10, nil)
	<-started
	<-started
	stop()
	var ok int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM task_logs WHERE task_name = $1 AND status = 'SUCCESS'`, string(tracking.StageOCR)).Scan(&ok)
	if ok != 2 {
		t.Fatalf("%d OCR tasks committed at shutdown, want 2", ok)
	}
	checkInvariants(t, pool)
}

// TestNoLostUpdates: two engines (separate pools, as two processes would
// have) with many workers finish the tasks of one chunk and one batch at
// once.
func TestNoLostUpdates(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	pool2 := otherPool(t, pool)
	store2 := tracking.NewStore(pool2, tracking.StoreOptions{})
	start(t, engineFor(t, store, 32, noop, nil))
	start(t, engineFor(t, store2, 32, noop, nil))
	b := submit(t, store, 600, 300, nil)
	b = waitBatch(t, pool, store, b.BatchID, 2*time.Minute)
	if b.CompletedImages != 600 || b.CompletedChunks != 2 || b.Status != tracking.StatusSuccess {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	checkInvariants(t, pool)
}

// TestChunkCommitIsAtomic injects a failure in the middle of a chunk's OCR
// commit: the sixth document's boxes break a CHECK constraint after the
// first five documents' executions and boxes were written. The whole
// chunk's commit rolls back — no execution and no box of that chunk stays —
// and its tasks go to RETRY; on the next attempt they all succeed, with
// exactly one execution each.
func TestChunkCommitIsAtomic(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	var poisoned atomic.Bool
	ocrStage := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		if j.Stage != tracking.StageOCR {
			return noop(ctx, j)
		}
		conf := 0.9
		if strings.HasSuffix(j.Input.ImagePath, "/5.png") && j.Attempt == 1 {
			conf = 1.5 // violates ocr_text_boxes_confidence_check
			poisoned.Store(true)
		}
		boxes := make([]tracking.TextBox, 50)
		for i := range boxes {
			boxes[i] = tracking.TextBox{Text: fmt.Sprint("w", i), Confidence: 0.9, BBox: tracking.Rect(0, 0, 10, 10), Seq: i}
		}
		boxes[25].Confidence = conf // half-way through this document's boxes
		return &pipeline.Output{Result: map[string]int{"words": len(boxes)},
			OCR: &tracking.OCRResult{ChainID: j.ChainID, ImagePath: j.Input.ImagePath, Status: tracking.OCRSuccess, Boxes: boxes}}, nil
	}
	// One worker per stage and no prefetch beyond the chunk: the ten tasks
	// are claimed together and committed together.
	e := engineFor(t, store, 10, ocrStage, func(c *pipeline.Config) {
		c.Backoff = func(int) time.Duration { return time.Hour } // hold the retries so the state can be checked
	})
	stop := start(t, e)
	b := submit(t, store, 10, 10, nil)

	deadline := time.Now().Add(30 * time.Second)
	for {
		var retry int
		pool.QueryRow(context.Background(), `SELECT count(*) FROM task_logs WHERE task_name = $1 AND status = 'RETRY'`, string(tracking.StageOCR)).Scan(&retry)
		if retry == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d OCR tasks in RETRY, want the whole chunk (10)", retry)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if !poisoned.Load() {
		t.Fatal("the failure was not injected")
	}
	var execs, boxes int
	pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM ocr_executions), (SELECT count(*) FROM ocr_text_boxes)`).Scan(&execs, &boxes)
	if execs != 0 || boxes != 0 {
		t.Fatalf("after the failed commit: %d executions and %d boxes stayed, want none", execs, boxes)
	}
	var msg string
	pool.QueryRow(context.Background(), `SELECT error FROM task_logs WHERE task_name = $1 LIMIT 1`, string(tracking.StageOCR)).Scan(&msg)
	if !strings.Contains(msg, "commit failed") || !strings.Contains(msg, "ocr_text_boxes_confidence_check") {
		t.Fatalf("task error %q does not say why", msg)
	}

	// The retries run now and succeed: one execution of 50 boxes per chain.
	if _, err := pool.Exec(context.Background(), `UPDATE task_logs SET run_after = now() WHERE status = 'RETRY'`); err != nil {
		t.Fatal(err)
	}
	start(t, engineFor(t, store, 10, ocrStage, nil))
	b = waitBatch(t, pool, store, b.BatchID, time.Minute)
	if b.Status != tracking.StatusSuccess {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM ocr_executions), (SELECT count(*) FROM ocr_text_boxes)`).Scan(&execs, &boxes)
	if execs != 10 || boxes != 500 {
		t.Fatalf("after the retry: %d executions, %d boxes; want 10 and 500", execs, boxes)
	}
	checkInvariants(t, pool)
}

// TestRevokeUnderLoad revokes random chains at random moments while an
// engine runs their stages (from a second pool, as another process
// would): whatever the interleaving, no task stays live under a revoked
// chain and every counter equals its rows.
func TestRevokeUnderLoad(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	other := tracking.NewStore(otherPool(t, pool), tracking.StoreOptions{})
	sleepy := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		select {
		case <-time.After(time.Duration(rand.IntN(2000)) * time.Microsecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return noop(ctx, j)
	}
	start(t, engineFor(t, store, 8, sleepy, nil))
	b := submit(t, store, 600, 10, nil)
	var ids []string
	if err := store.BatchChains(context.Background(), b.BatchID, func(c *tracking.Chain) error {
		ids = append(ids, c.ChainID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	revoked := 0
	for _, id := range ids[:150] {
		time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		_, err := other.RevokeChain(context.Background(), id, "stress")
		switch {
		case err == nil:
			revoked++
		case errors.Is(err, tracking.ErrConflict): // it had already ended
		default:
			t.Fatalf("revoke %s: %v", id, err)
		}
	}
	b = waitBatch(t, pool, store, b.BatchID, 2*time.Minute)
	t.Logf("revoked %d chains mid-run: %s", revoked, fmtBatch(b))
	if revoked == 0 {
		t.Fatal("every chain had ended before its revoke: the test raced nothing")
	}
	var n int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM chain_executions WHERE status = 'REVOKED'`).Scan(&n)
	if n != revoked {
		t.Fatalf("%d chains REVOKED, %d revokes succeeded", n, revoked)
	}
	checkInvariants(t, pool)
}
