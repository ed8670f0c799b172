package tracking

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Notification channels docpipe processes LISTEN on.
const (
	// WakeChannel carries "<stage> <origin>" when tasks of that stage became
	// claimable; origin names the Store that sent it.
	WakeChannel = "docpipe_wake"
	// RevokeChannel carries comma-separated task_logs ids whose running
	// attempt must be cancelled.
	RevokeChannel = "docpipe_revoke"
)

// Plan shapes. A statement that works on rows it names (by id, by chain,
// by chunk) must reach them through that key whatever the statistics say:
// task statuses churn far faster than ANALYZE sees them, and a plan built
// on a stale count once made every claim scan every queued task (42 ms to
// claim 10 with 15,000 waiting), and a commit compare every pair of its
// tasks. So in those statements only the intended key is written in a
// form an index can serve: the other conditions on the row are written so
// that no index matches them (a status as NOT IN the other statuses,
// which the CHECK constraint makes equivalent; a name as IS NOT DISTINCT
// FROM), ids come as = ANY(array) or as lateral lookups the planner cannot
// reorder, and results are returned as lists, not joined. TestPlanShapes
// holds them to it.

// Claimed is a task leased to a worker by Claim.
type Claimed struct {
	ID          int64 // task_logs.id
	TaskID      string
	Stage       Stage
	StageIndex  int
	Attempt     int // this attempt, 1-based
	MaxAttempts int
	ChainPK     int64 // 0 for a batch-level task
	ChainID     string
	BatchPK     int64 // 0 for a chain with no batch
	BatchID     string
	ChunkIndex  int
	Input       json.RawMessage // the chain's input_data
	Stages      []Stage         // the chain's stages (nil for a batch task)
	// ParsedInput is Input decoded, when whoever ran the task decoded it;
	// a task handed off by the commit carries its predecessor's, so a
	// chain's input is decoded once per process, not once per stage.
	ParsedInput *ChainInput
}

// claimSQL leases claimable tasks of stage $1 by whole chunks: it picks up
// to $3 of the oldest, skipping rows other claimers hold, then adds the
// other claimable tasks of the picked tasks' chunks (same batch, chunk and
// stage), so that a chunk's tasks are claimed — and then committed —
// together. Claiming counts the attempt, so an attempt that crashes its
// process is counted too. The first task of a chain moves the chain, and
// its batch, from PENDING to STARTED.
const claimSQL = `
WITH picked AS (
	SELECT id, chain_execution_id FROM task_logs
	WHERE task_name = $1 AND status IN ('PENDING', 'RETRY') AND run_after <= $2
	ORDER BY run_after, id
	LIMIT $3
	FOR UPDATE SKIP LOCKED
), chunks AS (
	SELECT DISTINCT c.batch_id, c.chunk_index FROM chain_executions c
	WHERE c.id = ANY(ARRAY(SELECT chain_execution_id FROM picked)) AND c.batch_id IS NOT NULL
), mates AS (
	-- Lookups by construction (see "Plan shapes"): the chunks' chains by
	-- (batch_id, chunk_index), then each chain's claimable task by
	-- (chain_execution_id, status).
	SELECT t.id FROM chunks k
	CROSS JOIN LATERAL (
		SELECT c.id FROM chain_executions c WHERE c.batch_id = k.batch_id AND c.chunk_index = k.chunk_index
		OFFSET 0
	) c
	CROSS JOIN LATERAL (
		SELECT t.id FROM task_logs t
		WHERE t.chain_execution_id = c.id AND t.run_after <= $2 AND t.task_name IS NOT DISTINCT FROM $1
			AND t.status NOT IN ('STARTED', 'RUNNING', 'SUCCESS', 'FAILURE', 'REVOKED') -- PENDING, RETRY
		FOR UPDATE SKIP LOCKED
	) t
	WHERE t.id NOT IN (SELECT id FROM picked)
), claimed AS (
	UPDATE task_logs t
	SET status = 'STARTED', attempt = t.attempt + 1, started_at = $2, finished_at = NULL,
		lease_expires_at = $4, owner = $5, updated_at = $2
	WHERE t.id = ANY(ARRAY(SELECT id FROM picked UNION ALL SELECT id FROM mates))
	RETURNING t.id, t.task_id, t.stage_index, t.attempt, t.max_attempts, t.chain_execution_id, t.batch_execution_id
), started_chains AS (
	UPDATE chain_executions c SET status = 'STARTED', started_at = $2, updated_at = $2
	WHERE c.id = ANY(ARRAY(SELECT chain_execution_id FROM claimed WHERE stage_index = 0))
		AND c.status NOT IN ('STARTED', 'RUNNING', 'SUCCESS', 'FAILURE', 'RETRY', 'REVOKED') -- PENDING
), started_batches AS (
	UPDATE batch_executions b SET status = 'STARTED', started_at = $2, updated_at = $2
	WHERE b.id IN (SELECT batch_execution_id FROM claimed WHERE stage_index = 0) AND b.status = 'PENDING'
)
SELECT cl.id, cl.task_id, cl.stage_index, cl.attempt, cl.max_attempts,
	coalesce(cl.chain_execution_id, 0), coalesce(c.chain_id, ''), coalesce(cl.batch_execution_id, 0),
	coalesce(c.batch_id, b.batch_id, ''), coalesce(c.chunk_index, 0), c.input_data,
	c.stages
FROM claimed cl
LEFT JOIN chain_executions c ON c.id = cl.chain_execution_id
LEFT JOIN batch_executions b ON cl.chain_execution_id IS NULL AND b.id = cl.batch_execution_id
ORDER BY cl.id`

// Claim leases claimable tasks of stage to owner until now+lease: up to
// limit of them, plus the rest of their chunks (so it may return more than
// limit, by less than a chunk per chunk it touched). It holds row locks
// only for the statement.
func (s *Store) Claim(ctx context.Context, stage Stage, owner string, limit int, lease time.Duration) ([]Claimed, error) {
	now := s.now()
	rows, err := s.pool.Query(ctx, claimSQL, string(stage), now, limit, now.Add(lease), owner)
	if err != nil {
		return nil, fmt.Errorf("claim %s: %w", stage, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Claimed, error) {
		c := Claimed{Stage: stage}
		err := r.Scan(&c.ID, &c.TaskID, &c.StageIndex, &c.Attempt, &c.MaxAttempts, &c.ChainPK, &c.ChainID,
			&c.BatchPK, &c.BatchID, &c.ChunkIndex, (*[]byte)(&c.Input), &c.Stages)
		// (*[]byte: into a json.RawMessage pgx would run json.Unmarshal,
		// 9% of docpipe's CPU per task with the decoding in execute.)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim %s: %w", stage, err)
	}
	return out, nil
}

// StageAt is the chain's stage at index i, or "" past its last.
func (c *Claimed) StageAt(i int) Stage {
	if i < 0 || i >= len(c.Stages) {
		return ""
	}
	return c.Stages[i]
}

// NextStage is the chain's stage after this task's; "" for its last (or a
// batch task).
func (c *Claimed) NextStage() Stage { return c.StageAt(c.StageIndex + 1) }

// Outcome is how one attempt of a claimed task ended.
type Outcome struct {
	Task *Claimed
	// Err is nil on success.
	Err error
	// Result is the stage's result (JSON) on success.
	Result json.RawMessage
	// OCR, on success, is written with the task in the same transaction.
	OCR *OCRResult
	// RetryAt is when a failed, retryable attempt runs again; zero means
	// now + Backoff(attempt).
	RetryAt time.Time
	// StartedAt and FinishedAt are when a worker began and ended the
	// attempt: started_at replaces the claim time (a claimed task may wait
	// for a worker) and finished_at is not the commit time (a chunk commits
	// when its last task ends). Zero keeps the claim and commit times.
	StartedAt, FinishedAt time.Time
	// NextOwner, on a success whose chain goes on, hands the chain's next
	// task straight to a worker: it is created STARTED (attempt 1), leased
	// to NextOwner until the commit time plus NextLease, and returned in
	// CommitResult.Started for the caller to run without claiming it. It
	// saves the next task a row version (PENDING) and a claim. Empty: the
	// next task is created PENDING for any claimer.
	NextOwner string
	NextLease time.Duration
	// Folded, on a success, are the chain's next tasks that already ran in
	// this process (they started when this attempt ended, before its
	// commit) and succeeded, in stage order. They are recorded by the same
	// transaction, each created directly SUCCESS (attempt 1), and the chain
	// advances past all of them; NextOwner and NextTaskID then apply to
	// the task after the last one.
	Folded []FoldedTask
	// NextTaskID, if set, is the task_id the chain's next task is created
	// with (a task that already runs in this process under that id).
	NextTaskID string
}

// FoldedTask is a successful attempt recorded with its predecessor's
// outcome (see Outcome.Folded).
type FoldedTask struct {
	TaskID                string
	Stage                 Stage
	Result                json.RawMessage
	OCR                   *OCRResult
	StartedAt, FinishedAt time.Time
	Owner                 string
}

// final reports whether a failed outcome ends the task for good.
func (o *Outcome) final() bool {
	return IsPermanent(o.Err) || o.Task.Attempt >= o.Task.MaxAttempts
}

// CommitResult says what a Complete did.
type CommitResult struct {
	Applied      int                 // outcomes whose attempt still held its task and were recorded
	Stale        []int64             // task ids whose attempt no longer held the task (revoked, rescued): nothing recorded
	Succeeded    int                 // tasks SUCCESS
	Retried      int                 // tasks RETRY
	Failed       int                 // tasks FAILURE
	Enqueued     map[Stage]int       // next tasks created PENDING, per stage (claimers to wake)
	Started      map[Stage][]Claimed // next tasks created STARTED for their NextOwner (direct hand-off), per stage
	ChainsEnd    map[Status]int      // chains that ended, per final status
	BatchesEnded []string            // batch_ids that ended
	// Advanced holds the successes whose chain advanced (with their
	// Folded tasks, which are recorded exactly when their predecessor is
	// in Advanced), by task id.
	Advanced map[int64]bool
	Folded   map[Stage]int // tasks recorded as Folded, per stage
}

// Complete records finished attempts in one transaction: each task's
// status (SUCCESS, RETRY with backoff, FAILURE), its OCR rows, the next
// stage's task, the chain's counters and status, and when chains end
// their chunk's and batch's counters. An outcome is applied only if its
// attempt still holds the task (a late finisher whose task was revoked or
// rescued changes nothing). Claimers of the enqueued stages in other
// processes are woken by NOTIFY at commit.
func (s *Store) Complete(ctx context.Context, outcomes []Outcome) (*CommitResult, error) {
	var res *CommitResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		res, err = s.complete(ctx, tx, outcomes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("commit %d outcomes: %w", len(outcomes), err)
	}
	return res, nil
}

// succeedSQL marks successful attempts SUCCESS, advances their chains
// (past the folded tasks recorded with them, $10 per attempt; $11 is the
// last one's result) and inserts each chain's next task with the id the
// caller chose ($5: time-ordered ids keep the task_id index append-only):
// PENDING, or STARTED and leased to next_owner when the caller runs it at
// once (a direct hand-off). It returns one row per applied task, with the
// next task's id and status. The folded tasks' rows are inserted by
// foldSQL for the chains that advanced.
const succeedSQL = `
WITH u AS (
	SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $5::text[], $6::timestamptz[], $7::timestamptz[],
		$8::text[], $9::timestamptz[], $10::int[], $11::text[])
		AS u(id, attempt, result, next_id, started, finished, next_owner, next_lease, folded, last)
), t AS (
	UPDATE task_logs t
	SET status = 'SUCCESS', started_at = coalesce(u.started, t.started_at), finished_at = coalesce(u.finished, $4), result = u.result::jsonb,
		error = NULL, lease_expires_at = NULL, updated_at = $4
	FROM u WHERE t.id = u.id AND t.attempt = u.attempt AND t.status NOT IN ('PENDING', 'RETRY', 'SUCCESS', 'FAILURE', 'REVOKED') -- STARTED, RUNNING
	RETURNING t.id, t.chain_execution_id, t.batch_execution_id, t.stage_index + u.folded AS stage_index, t.max_attempts,
		coalesce(u.last::jsonb, t.result) AS result, u.next_id, u.next_owner, u.next_lease, u.folded
), ch AS (
	-- A chain stays STARTED until it ends: only its counters move, so the
	-- update is HOT (no indexed column changes).
	UPDATE chain_executions c
	SET completed_tasks = c.completed_tasks + 1 + t.folded,
		status = CASE WHEN c.completed_tasks + 1 + t.folded >= c.total_tasks THEN 'SUCCESS' ELSE c.status END,
		finished_at = CASE WHEN c.completed_tasks + 1 + t.folded >= c.total_tasks THEN $4 ELSE c.finished_at END,
		final_result = CASE WHEN c.completed_tasks + 1 + t.folded >= c.total_tasks THEN t.result ELSE c.final_result END,
		updated_at = $4
	FROM t WHERE c.id = t.chain_execution_id AND c.status NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')
	RETURNING c.id, c.status, c.stages, c.batch_execution_id, c.chunk_index, t.stage_index, t.max_attempts, t.next_id,
		t.next_owner, t.next_lease
), next AS (
	INSERT INTO task_logs (task_id, task_name, status, chain_execution_id, batch_execution_id, stage_index,
		max_attempts, run_after, attempt, started_at, lease_expires_at, owner, created_at, updated_at)
	SELECT ch.next_id, ch.stages[ch.stage_index + 2], CASE WHEN ch.next_owner IS NULL THEN 'PENDING' ELSE 'STARTED' END,
		ch.id, ch.batch_execution_id, ch.stage_index + 1, ch.max_attempts, $4,
		CASE WHEN ch.next_owner IS NULL THEN 0 ELSE 1 END, CASE WHEN ch.next_owner IS NOT NULL THEN $4::timestamptz END,
		ch.next_lease, ch.next_owner, $4, $4
	FROM ch WHERE ch.status <> 'SUCCESS' AND ch.stage_index + 2 <= cardinality(ch.stages)
	RETURNING id, chain_execution_id, status, task_id
)
-- Three lists instead of a join: the CTEs' row estimates are guesses, and
-- a nested loop over two of them is quadratic in the batch.
SELECT 't', t.id, coalesce(t.chain_execution_id, 0), '', 0, 0, '' FROM t
UNION ALL
SELECT 'c', ch.id, ch.id, ch.status, coalesce(ch.batch_execution_id, 0), ch.chunk_index,
	coalesce(CASE WHEN ch.status <> 'SUCCESS' THEN ch.stages[ch.stage_index + 2] END, '')
FROM ch
UNION ALL
SELECT 'n', n.id, n.chain_execution_id, n.status, 0, 0, n.task_id FROM next n`

// foldSQL inserts folded tasks (see Outcome.Folded): SUCCESS, attempt 1,
// with their results and times. Only for chains succeedSQL advanced in
// the same transaction.
const foldSQL = `
INSERT INTO task_logs (task_id, task_name, status, chain_execution_id, batch_execution_id, stage_index, max_attempts,
	run_after, attempt, started_at, finished_at, result, owner, created_at, updated_at)
SELECT f.task_id, f.task_name, 'SUCCESS', f.chain, nullif(f.batch, 0), f.stage_index, f.max_attempts,
	$1, 1, coalesce(f.started, $1), coalesce(f.finished, $1), f.result::jsonb, f.owner, $1, $1
FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::int[], $7::int[], $8::text[], $9::timestamptz[],
	$10::timestamptz[], $11::text[]) AS f(task_id, task_name, chain, batch, stage_index, max_attempts, result, started, finished, owner)`

// failSQL records failed attempts: RETRY (counting a retry) or FAILURE,
// and fails the chains of tasks that failed for good.
const failSQL = `
WITH u AS (
	SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::bool[], $5::timestamptz[], $7::timestamptz[], $8::timestamptz[]) AS u(id, attempt, err, final, run_after, started, finished)
), t AS (
	UPDATE task_logs t
	SET status = CASE WHEN u.final THEN 'FAILURE' ELSE 'RETRY' END,
		started_at = coalesce(u.started, t.started_at),
		retries = t.retries + CASE WHEN u.final THEN 0 ELSE 1 END,
		error = left(u.err, 512),
		finished_at = CASE WHEN u.final THEN coalesce(u.finished, $6::timestamptz) END,
		run_after = u.run_after, lease_expires_at = NULL, updated_at = $6
	FROM u WHERE t.id = u.id AND t.attempt = u.attempt AND t.status NOT IN ('PENDING', 'RETRY', 'SUCCESS', 'FAILURE', 'REVOKED') -- STARTED, RUNNING
	RETURNING t.id, t.chain_execution_id, t.task_name, u.final, u.err
), ch AS (
	UPDATE chain_executions c
	SET failed_tasks = c.failed_tasks + 1, status = 'FAILURE', finished_at = $6,
		error_message = t.task_name || ' failed: ' || t.err, updated_at = $6
	FROM t WHERE t.final AND c.id = t.chain_execution_id AND c.status NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')
	RETURNING c.id, c.batch_execution_id, c.chunk_index
)
SELECT t.id, t.final, coalesce(ch.id, 0), coalesce(ch.batch_execution_id, 0), coalesce(ch.chunk_index, 0)
FROM t LEFT JOIN ch ON ch.id = t.chain_execution_id`

// batchTaskSQL records the outcome of batch-level tasks (no chain): the
// task's status, and on success the batch's final_result.
const batchTaskSQL = `
WITH u AS (
	SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bool[], $6::timestamptz[]) AS u(id, attempt, result, err, final, run_after)
), t AS (
	UPDATE task_logs t
	SET status = CASE WHEN u.err IS NULL THEN 'SUCCESS' WHEN u.final THEN 'FAILURE' ELSE 'RETRY' END,
		retries = t.retries + CASE WHEN u.err IS NOT NULL AND NOT u.final THEN 1 ELSE 0 END,
		result = u.result::jsonb, error = left(u.err, 512),
		finished_at = CASE WHEN u.err IS NULL OR u.final THEN $7::timestamptz END,
		run_after = u.run_after, lease_expires_at = NULL, updated_at = $7
	FROM u WHERE t.id = u.id AND t.attempt = u.attempt AND t.status NOT IN ('PENDING', 'RETRY', 'SUCCESS', 'FAILURE', 'REVOKED') -- STARTED, RUNNING
	RETURNING t.id, t.batch_execution_id, t.task_name, t.status, u.result, u.err
), b AS (
	UPDATE batch_executions b
	SET final_result = CASE WHEN t.status = 'SUCCESS' THEN t.result::jsonb
			ELSE coalesce(b.final_result, '{}'::jsonb) || jsonb_build_object('error', t.task_name || ' failed: ' || t.err) END,
		updated_at = $7
	FROM t WHERE b.id = t.batch_execution_id AND t.status IN ('SUCCESS', 'FAILURE')
)
SELECT t.id, t.status FROM t`

// endedChain is a chain that ended in this transaction, for its chunk and batch counters.
type endedChain struct {
	batchPK int64
	chunk   int
	ok      bool
}

func (s *Store) complete(ctx context.Context, tx pgx.Tx, outcomes []Outcome) (*CommitResult, error) {
	now := s.now()
	res := &CommitResult{Enqueued: map[Stage]int{}, ChainsEnd: map[Status]int{}}
	// Lock order everywhere: task rows, then chain rows, then chunk rows,
	// then batch rows, each in id order, so concurrent committers cannot
	// deadlock on the rows they share.
	sorted := make([]*Outcome, len(outcomes))
	for i := range outcomes {
		sorted[i] = &outcomes[i]
	}
	slices.SortFunc(sorted, func(a, b *Outcome) int { return cmp.Compare(a.Task.ID, b.Task.ID) })

	var (
		n                    = len(sorted)
		sIDs                 = make([]int64, 0, n)
		sAtt                 = make([]int32, 0, n)
		sRes, sNext          = make([]string, 0, n), make([]string, 0, n)
		sOwner               = make([]*string, 0, n)
		sLease               = make([]pgtype.Timestamptz, 0, n)
		sStart, sEnd         = make([]pgtype.Timestamptz, 0, n), make([]pgtype.Timestamptz, 0, n)
		sFolded              = make([]int32, 0, n)
		sLast                = make([]*string, 0, n)
		anyFolded            bool
		owner                *string // shared by the outcomes with the same NextOwner
		fIDs, bIDs           []int64
		fAtt, bAtt           []int32
		fStart, fEnd         []pgtype.Timestamptz
		fErr                 []string
		fFinal, bFinal       []bool
		fRunAfter, bRunAfter []time.Time
		bRes                 []*string
		bErr                 []*string
		byID                 = make(map[int64]*Outcome, n)
	)
	for _, o := range sorted {
		byID[o.Task.ID] = o
		if o.Task.ChainPK == 0 {
			bIDs = append(bIDs, o.Task.ID)
			bAtt = append(bAtt, int32(o.Task.Attempt))
			if o.Err == nil {
				r := string(resultOrNull(o.Result))
				bRes, bErr = append(bRes, &r), append(bErr, nil)
				bFinal, bRunAfter = append(bFinal, false), append(bRunAfter, now)
			} else {
				e := truncate(o.Err.Error(), MaxErrorLen)
				bRes, bErr = append(bRes, nil), append(bErr, &e)
				bFinal, bRunAfter = append(bFinal, o.final()), append(bRunAfter, o.retryAt(now))
			}
			continue
		}
		if o.Err == nil {
			sIDs = append(sIDs, o.Task.ID)
			sAtt = append(sAtt, int32(o.Task.Attempt))
			sRes = append(sRes, string(resultOrNull(o.Result)))
			if o.NextTaskID != "" {
				sNext = append(sNext, o.NextTaskID)
			} else {
				sNext = append(sNext, NewID())
			}
			sFolded = append(sFolded, int32(len(o.Folded)))
			if k := len(o.Folded); k > 0 {
				last := string(resultOrNull(o.Folded[k-1].Result))
				sLast = append(sLast, &last)
				anyFolded = true
			} else {
				sLast = append(sLast, nil)
			}
			if o.NextOwner != "" {
				if owner == nil || *owner != o.NextOwner {
					owner = &o.NextOwner
				}
				sOwner, sLease = append(sOwner, owner), append(sLease, timestamptz(now.Add(o.NextLease)))
			} else {
				sOwner, sLease = append(sOwner, nil), append(sLease, pgtype.Timestamptz{})
			}
			sStart, sEnd = append(sStart, timestamptz(o.StartedAt)), append(sEnd, timestamptz(o.FinishedAt))
		} else {
			fIDs = append(fIDs, o.Task.ID)
			fAtt = append(fAtt, int32(o.Task.Attempt))
			fErr = append(fErr, truncate(o.Err.Error(), MaxErrorLen))
			fFinal = append(fFinal, o.final())
			fRunAfter = append(fRunAfter, o.retryAt(now))
			fStart, fEnd = append(fStart, timestamptz(o.StartedAt)), append(fEnd, timestamptz(o.FinishedAt))
		}
	}

	applied := make(map[int64]bool, len(sorted))
	var ended []endedChain
	var ocrs []*OCRResult
	if len(sIDs) > 0 {
		rows, err := tx.Query(ctx, succeedSQL, sIDs, sAtt, sRes, now, sNext, sStart, sEnd, sOwner, sLease, sFolded, sLast)
		if err != nil {
			return nil, fmt.Errorf("record successes: %w", err)
		}
		type chainRow struct {
			status, next string
			batchPK      int64
			chunk        int
		}
		var applyOrder []int64
		chains := make(map[int64]chainRow, len(sIDs))
		type nextRow struct {
			id             int64
			status, taskID string
		}
		nexts := make(map[int64]nextRow, len(sIDs))
		var kind, status, next string
		var id, chainPK, batchPK int64
		var chunk int
		_, err = pgx.ForEachRow(rows, []any{&kind, &id, &chainPK, &status, &batchPK, &chunk, &next}, func() error {
			switch kind {
			case "t":
				applyOrder = append(applyOrder, id)
			case "c":
				chains[chainPK] = chainRow{status: status, next: next, batchPK: batchPK, chunk: chunk}
			case "n":
				nexts[chainPK] = nextRow{id, status, next} // an "n" row carries the new task_id in that column
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("record successes: %w", err)
		}
		if owner != nil {
			res.Started = map[Stage][]Claimed{}
		}
		var fold *foldRows
		if anyFolded {
			fold = &foldRows{}
			res.Folded = map[Stage]int{}
		}
		res.Advanced = make(map[int64]bool, len(applyOrder))
		for _, id := range applyOrder {
			applied[id] = true
			res.Succeeded++
			o := byID[id]
			if o.OCR != nil {
				ocrs = append(ocrs, o.OCR)
			}
			c, ok := chains[o.Task.ChainPK]
			if !ok {
				continue // the chain had already ended
			}
			res.Advanced[id] = true
			for i := range o.Folded {
				f := &o.Folded[i]
				fold.add(o.Task, i, f)
				res.Folded[f.Stage]++
				res.Succeeded++
				if f.OCR != nil {
					ocrs = append(ocrs, f.OCR)
				}
			}
			n := nexts[o.Task.ChainPK]
			switch Status(n.status) {
			case StatusPending:
				res.Enqueued[Stage(c.next)]++
			case StatusStarted:
				t := o.Task
				res.Started[Stage(c.next)] = append(res.Started[Stage(c.next)], Claimed{ID: n.id, TaskID: n.taskID, Stage: Stage(c.next),
					StageIndex: t.StageIndex + 1 + len(o.Folded), Attempt: 1, MaxAttempts: t.MaxAttempts, ChainPK: t.ChainPK,
					ChainID: t.ChainID, BatchPK: t.BatchPK, BatchID: t.BatchID, ChunkIndex: t.ChunkIndex,
					Input: t.Input, ParsedInput: t.ParsedInput, Stages: t.Stages})
			}
			if c.status == string(StatusSuccess) {
				res.ChainsEnd[StatusSuccess]++
				if c.batchPK != 0 {
					ended = append(ended, endedChain{c.batchPK, c.chunk, true})
				}
			}
		}
		if fold != nil && len(fold.taskID) > 0 {
			if _, err := tx.Exec(ctx, foldSQL, now, fold.taskID, fold.name, fold.chain, fold.batch, fold.stageIndex,
				fold.maxAttempts, fold.result, fold.started, fold.finished, fold.owner); err != nil {
				return nil, fmt.Errorf("record folded tasks: %w", err)
			}
		}
	}
	if len(fIDs) > 0 {
		rows, err := tx.Query(ctx, failSQL, fIDs, fAtt, fErr, fFinal, fRunAfter, now, fStart, fEnd)
		if err != nil {
			return nil, fmt.Errorf("record failures: %w", err)
		}
		var id, chainPK, batchPK int64
		var final bool
		var chunk int
		_, err = pgx.ForEachRow(rows, []any{&id, &final, &chainPK, &batchPK, &chunk}, func() error {
			applied[id] = true
			if !final {
				res.Retried++
				return nil
			}
			res.Failed++
			if chainPK != 0 {
				res.ChainsEnd[StatusFailure]++
				if batchPK != 0 {
					ended = append(ended, endedChain{batchPK, chunk, false})
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("record failures: %w", err)
		}
	}
	if len(bIDs) > 0 {
		rows, err := tx.Query(ctx, batchTaskSQL, bIDs, bAtt, bRes, bErr, bFinal, bRunAfter, now)
		if err != nil {
			return nil, fmt.Errorf("record batch tasks: %w", err)
		}
		var id int64
		var status string
		_, err = pgx.ForEachRow(rows, []any{&id, &status}, func() error {
			applied[id] = true
			switch Status(status) {
			case StatusSuccess:
				res.Succeeded++
			case StatusRetry:
				res.Retried++
			default:
				res.Failed++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("record batch tasks: %w", err)
		}
	}
	if len(ocrs) > 0 {
		if err := s.insertOCR(ctx, tx, ocrs, now); err != nil {
			return nil, err
		}
	}
	endedBatches, finish, err := s.endChains(ctx, tx, ended, now, 0, "")
	if err != nil {
		return nil, err
	}
	res.BatchesEnded = endedBatches
	for st, n := range finish {
		res.Enqueued[st] += n // notified by endChains; listed so the caller wakes its claimers
	}
	for _, o := range sorted {
		if !applied[o.Task.ID] {
			res.Stale = append(res.Stale, o.Task.ID)
		}
	}
	res.Applied = len(applied)
	if err := s.notifyStages(ctx, tx, res.Enqueued); err != nil {
		return nil, err
	}
	return res, nil
}

// foldRows are foldSQL's arguments.
type foldRows struct {
	taskID, name, result, owner []string
	chain, batch                []int64
	stageIndex, maxAttempts     []int32
	started, finished           []pgtype.Timestamptz
}

// add appends the i-th task folded into parent's outcome.
func (f *foldRows) add(parent *Claimed, i int, t *FoldedTask) {
	f.taskID = append(f.taskID, t.TaskID)
	f.name = append(f.name, string(t.Stage))
	f.result = append(f.result, string(resultOrNull(t.Result)))
	f.owner = append(f.owner, t.Owner)
	f.chain = append(f.chain, parent.ChainPK)
	f.batch = append(f.batch, parent.BatchPK)
	f.stageIndex = append(f.stageIndex, int32(parent.StageIndex+1+i))
	f.maxAttempts = append(f.maxAttempts, int32(parent.MaxAttempts))
	f.started = append(f.started, timestamptz(t.StartedAt))
	f.finished = append(f.finished, timestamptz(t.FinishedAt))
}

// timestamptz is t as a parameter: NULL when zero.
func timestamptz(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

func (o *Outcome) retryAt(now time.Time) time.Time {
	if !o.RetryAt.IsZero() {
		return o.RetryAt
	}
	return now.Add(Backoff(o.Task.Attempt))
}

func resultOrNull(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return b
}

func (s *Store) notifyStages(ctx context.Context, tx pgx.Tx, stages map[Stage]int) error {
	for st, n := range stages {
		if n == 0 {
			continue
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, WakeChannel, s.wakePayload(st)); err != nil {
			return fmt.Errorf("notify %s: %w", st, err)
		}
	}
	return nil
}

// endChainsSQL counts ended chains into their chunks and batches. A chunk
// (a batch) ends when its last chain ends: SUCCESS if none failed, else
// FAILURE (a REVOKED batch stays REVOKED). A batch that ends enqueues its
// on_finish task. Returns the batch_ids that ended.
const endChainsSQL = `
WITH u AS (
	SELECT batch_pk, chunk, sum(ok)::int AS ok, sum(bad)::int AS bad
	FROM unnest($1::bigint[], $2::int[], $3::int[], $4::int[]) AS u(batch_pk, chunk, ok, bad)
	GROUP BY batch_pk, chunk
), k AS (
	UPDATE batch_chunks k
	SET completed_images = k.completed_images + u.ok, failed_images = k.failed_images + u.bad,
		status = CASE WHEN k.completed_images + u.ok + k.failed_images + u.bad >= k.total_images
			THEN CASE WHEN k.failed_images + u.bad = 0 THEN 'SUCCESS' ELSE 'FAILURE' END
			ELSE 'RUNNING' END,
		updated_at = $5
	FROM u WHERE k.batch_execution_id = u.batch_pk AND k.chunk_index = u.chunk
	RETURNING k.batch_execution_id, u.ok, u.bad,
		(k.completed_images + k.failed_images >= k.total_images
			AND k.completed_images + k.failed_images - u.ok - u.bad < k.total_images) AS ended_now,
		k.failed_images = 0 AS chunk_ok
), agg AS (
	SELECT batch_execution_id AS batch_pk, sum(ok)::int AS ok, sum(bad)::int AS bad,
		count(*) FILTER (WHERE ended_now AND chunk_ok)::int AS chunks_ok,
		count(*) FILTER (WHERE ended_now AND NOT chunk_ok)::int AS chunks_bad
	FROM k GROUP BY batch_execution_id
), b AS (
	UPDATE batch_executions b
	SET completed_images = b.completed_images + agg.ok,
		failed_images = b.failed_images + agg.bad,
		completed_chunks = b.completed_chunks + agg.chunks_ok,
		failed_chunks = b.failed_chunks + agg.chunks_bad,
		status = CASE
			WHEN b.status = 'REVOKED' OR b.id = $7 THEN 'REVOKED'
			WHEN b.completed_images + agg.ok + b.failed_images + agg.bad >= b.total_images
				THEN CASE WHEN b.failed_images + agg.bad = 0 THEN 'SUCCESS' ELSE 'FAILURE' END
			ELSE 'RUNNING' END,
		finished_at = CASE WHEN b.completed_images + agg.ok + b.failed_images + agg.bad >= b.total_images
			THEN coalesce(b.finished_at, $5) ELSE b.finished_at END,
		error_message = CASE
			WHEN b.id = $7 THEN $8
			WHEN b.status <> 'REVOKED' AND b.failed_images + agg.bad > 0
				AND b.completed_images + agg.ok + b.failed_images + agg.bad >= b.total_images
			THEN (b.failed_images + agg.bad) || ' of ' || b.total_images || ' images failed'
			ELSE b.error_message END,
		updated_at = $5
	FROM agg WHERE b.id = agg.batch_pk
	RETURNING b.id, b.batch_id, b.on_finish,
		(b.completed_images + b.failed_images >= b.total_images
			AND b.completed_images + b.failed_images - agg.ok - agg.bad < b.total_images) AS ended_now
), fin AS (
	INSERT INTO task_logs (task_id, task_name, status, batch_execution_id, stage_index, max_attempts, run_after, created_at, updated_at)
	SELECT gen_random_uuid()::text, b.on_finish, 'PENDING', b.id, 0, $6, $5, $5, $5
	FROM b WHERE b.ended_now AND b.on_finish IS NOT NULL
	RETURNING task_name
)
SELECT b.batch_id, coalesce(b.on_finish, '') FROM b WHERE b.ended_now`

// lockEndedSQL locks the chunks ($1, $2) and then the batches of chains
// that ended, each in key order (the lock order of "complete").
const lockEndedSQL = `
SELECT count(*) FROM (
	SELECT 1 FROM batch_chunks k JOIN unnest($1::bigint[], $2::int[]) AS u(batch_pk, chunk)
		ON k.batch_execution_id = u.batch_pk AND k.chunk_index = u.chunk
	ORDER BY k.batch_execution_id, k.chunk_index
	FOR UPDATE OF k
) k
UNION ALL
SELECT count(*) FROM (SELECT 1 FROM batch_executions b WHERE b.id = ANY($1::bigint[]) ORDER BY b.id FOR UPDATE OF b) b`

// endChains counts ended chains into chunks and batches. revokedBatch (if
// not 0) is a batch being revoked: it ends REVOKED with revokeMsg.
func (s *Store) endChains(ctx context.Context, tx pgx.Tx, ended []endedChain, now time.Time, revokedBatch int64, revokeMsg string) ([]string, map[Stage]int, error) {
	if len(ended) == 0 {
		return nil, nil, nil
	}
	slices.SortFunc(ended, func(a, b endedChain) int {
		if c := cmp.Compare(a.batchPK, b.batchPK); c != 0 {
			return c
		}
		return a.chunk - b.chunk
	})
	batchPKs := make([]int64, len(ended))
	chunks := make([]int32, len(ended))
	oks := make([]int32, len(ended))
	bads := make([]int32, len(ended))
	for i, e := range ended {
		batchPKs[i], chunks[i] = e.batchPK, int32(e.chunk)
		if e.ok {
			oks[i] = 1
		} else {
			bads[i] = 1
		}
	}
	if first, last := ended[0], ended[len(ended)-1]; first.batchPK != last.batchPK || first.chunk != last.chunk {
		// More than one chunk: lock them, then their batches, in order
		// first. endChainsSQL's UPDATEs lock rows in whatever order its
		// plan meets them, and two commits ending chains of the same
		// batches (which run-ahead makes common: any stage's commit may
		// end a chain) deadlocked on them. A single chunk and batch are in
		// that order already.
		if _, err := tx.Exec(ctx, lockEndedSQL, batchPKs, chunks); err != nil {
			return nil, nil, fmt.Errorf("lock chunks and batches: %w", err)
		}
	}
	rows, err := tx.Query(ctx, endChainsSQL, batchPKs, chunks, oks, bads, now, DefaultMaxAttempts, revokedBatch, revokeMsg)
	if err != nil {
		return nil, nil, fmt.Errorf("count ended chains: %w", err)
	}
	var out []string
	finish := map[Stage]int{}
	var batchID, onFinish string
	_, err = pgx.ForEachRow(rows, []any{&batchID, &onFinish}, func() error {
		out = append(out, batchID)
		if onFinish != "" {
			finish[Stage(onFinish)]++
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("count ended chains: %w", err)
	}
	if err := s.notifyStages(ctx, tx, finish); err != nil {
		return nil, nil, err
	}
	return out, finish, nil
}

// TaskRef names one attempt of a task.
type TaskRef struct {
	ID      int64
	Attempt int
}

// Ref names this attempt of the task.
func (c *Claimed) Ref() TaskRef { return TaskRef{ID: c.ID, Attempt: c.Attempt} }

func refArrays(refs []TaskRef) ([]int64, []int32) {
	ids := make([]int64, len(refs))
	atts := make([]int32, len(refs))
	for i, r := range refs {
		ids[i], atts[i] = r.ID, int32(r.Attempt)
	}
	return ids, atts
}

// extendSQL renews leases without ever waiting: which attempts still hold
// their tasks is read from the statement's snapshot (cur); the renewal
// takes the rows in id order and skips any a committer is finishing right
// now, so it cannot deadlock with a commit that locks the same rows in
// another order.
const extendSQL = `
WITH cur AS (
	SELECT t.id, t.attempt FROM task_logs t
	JOIN unnest($1::bigint[], $2::int[]) AS u(id, attempt) ON t.id = u.id AND t.attempt = u.attempt
	WHERE t.status NOT IN ('PENDING', 'RETRY', 'SUCCESS', 'FAILURE', 'REVOKED') -- STARTED, RUNNING
), locked AS (
	SELECT t.id FROM task_logs t JOIN cur ON t.id = cur.id
	WHERE t.attempt = cur.attempt AND t.status NOT IN ('PENDING', 'RETRY', 'SUCCESS', 'FAILURE', 'REVOKED') -- STARTED, RUNNING
	ORDER BY t.id FOR UPDATE OF t SKIP LOCKED
), renewed AS (
	UPDATE task_logs t SET lease_expires_at = $3, updated_at = $4 FROM locked WHERE t.id = locked.id
)
SELECT id FROM cur`

// ExtendLeases renews the leases of the given attempts until now+lease. It
// writes only lease_expires_at, which no index covers, so renewals are HOT
// updates. It returns the ids of the tasks the attempts still hold; a task
// missing from the answer was revoked or taken over, and its work should
// stop. It never waits for a row lock.
func (s *Store) ExtendLeases(ctx context.Context, refs []TaskRef, lease time.Duration) (map[int64]bool, error) {
	if len(refs) == 0 {
		return map[int64]bool{}, nil
	}
	now := s.now()
	ids, atts := refArrays(refs)
	rows, err := s.pool.Query(ctx, extendSQL, ids, atts, now.Add(lease), now)
	if err != nil {
		return nil, fmt.Errorf("extend leases: %w", err)
	}
	held := make(map[int64]bool, len(refs))
	var id int64
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { held[id] = true; return nil }); err != nil {
		return nil, fmt.Errorf("extend leases: %w", err)
	}
	return held, nil
}

// HandBack returns unfinished attempts to the queue as PENDING without
// counting them (a graceful shutdown): another worker picks them up at once.
func (s *Store) HandBack(ctx context.Context, refs []TaskRef) (int, error) {
	if len(refs) == 0 {
		return 0, nil
	}
	now := s.now()
	ids, atts := refArrays(refs)
	var stages []string
	rows, err := s.pool.Query(ctx, `
		UPDATE task_logs t SET status = 'PENDING', attempt = t.attempt - 1, started_at = NULL,
			lease_expires_at = NULL, owner = NULL, run_after = $3, updated_at = $3
		FROM unnest($1::bigint[], $2::int[]) AS u(id, attempt)
		WHERE t.id = u.id AND t.attempt = u.attempt AND t.status NOT IN ('PENDING', 'RETRY', 'SUCCESS', 'FAILURE', 'REVOKED') -- STARTED, RUNNING
		RETURNING t.task_name`, ids, atts, now)
	if err != nil {
		return 0, fmt.Errorf("hand back: %w", err)
	}
	stages, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("hand back: %w", err)
	}
	wake := map[Stage]int{}
	for _, st := range stages {
		wake[Stage(st)]++
	}
	for st := range wake {
		// Best effort: the poll finds them anyway.
		_, _ = s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, WakeChannel, s.wakePayload(st))
	}
	return len(stages), nil
}

// expiredSQL locks tasks whose lease ran out (their process died or lost
// the database): the attempt is over and counted.
const expiredSQL = `
SELECT t.id, t.task_id, t.task_name, t.stage_index, t.attempt, t.max_attempts,
	coalesce(t.chain_execution_id, 0), coalesce(c.chain_id, ''), coalesce(t.batch_execution_id, 0),
	coalesce(c.chunk_index, 0), coalesce(t.owner, '')
FROM task_logs t LEFT JOIN chain_executions c ON c.id = t.chain_execution_id
WHERE t.status IN ('STARTED', 'RUNNING') AND t.lease_expires_at < $1
ORDER BY t.id
LIMIT $2
FOR UPDATE OF t SKIP LOCKED`

// RescueExpired ends up to limit attempts whose lease expired: each goes
// to RETRY (with backoff) or, past its max attempts, to FAILURE, exactly as
// if it had failed. It returns how many it rescued.
func (s *Store) RescueExpired(ctx context.Context, limit int) (*CommitResult, error) {
	var res *CommitResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, expiredSQL, s.now(), limit)
		if err != nil {
			return fmt.Errorf("find expired leases: %w", err)
		}
		var outcomes []Outcome
		_, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct{}, error) {
			var c Claimed
			var owner string
			if err := r.Scan(&c.ID, &c.TaskID, &c.Stage, &c.StageIndex, &c.Attempt, &c.MaxAttempts, &c.ChainPK,
				&c.ChainID, &c.BatchPK, &c.ChunkIndex, &owner); err != nil {
				return struct{}{}, err
			}
			outcomes = append(outcomes, Outcome{Task: &c,
				Err: fmt.Errorf("lease expired: worker %s was lost during attempt %d of %d", owner, c.Attempt, c.MaxAttempts)})
			return struct{}{}, nil
		})
		if err != nil {
			return fmt.Errorf("find expired leases: %w", err)
		}
		if len(outcomes) == 0 {
			res = &CommitResult{}
			return nil
		}
		res, err = s.complete(ctx, tx, outcomes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rescue: %w", err)
	}
	return res, nil
}

// RevokeResult says what a revoke did.
type RevokeResult struct {
	Chains  int     // chains that became REVOKED
	Tasks   int     // tasks that became REVOKED
	Running []int64 // task ids that were running: their workers are told to stop
}

// RevokeChain cancels a chain: its waiting and running tasks and the chain
// become REVOKED, its chunk and batch count it as failed, and the workers
// running it are told (NOTIFY) to stop. Revoking an ended chain is
// ErrConflict; an unknown one ErrNotFound.
func (s *Store) RevokeChain(ctx context.Context, chainID, reason string) (*RevokeResult, error) {
	var res *RevokeResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var pk int64
		var status Status
		// Locked, so that the chain cannot end between this check and the revoke.
		if err := tx.QueryRow(ctx, `SELECT id, status FROM chain_executions WHERE chain_id = $1 FOR UPDATE`, chainID).Scan(&pk, &status); err != nil {
			return notFound(err)
		}
		if status.Terminal() {
			return fmt.Errorf("chain is already %s: %w", status, ErrConflict)
		}
		var err error
		res, err = s.revoke(ctx, tx, `t.chain_execution_id = $1`, `c.id = $1`, pk, reason, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke chain %s: %w", chainID, err)
	}
	return res, nil
}

// RevokeBatch cancels every chain of a batch that has not ended, and the
// batch itself (REVOKED). Revoking an ended batch is ErrConflict.
func (s *Store) RevokeBatch(ctx context.Context, batchID, reason string) (*RevokeResult, error) {
	var res *RevokeResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var pk int64
		var status Status
		if err := tx.QueryRow(ctx, `SELECT id, status FROM batch_executions WHERE batch_id = $1 FOR UPDATE`, batchID).Scan(&pk, &status); err != nil {
			return notFound(err)
		}
		if status.Terminal() {
			return fmt.Errorf("batch is already %s: %w", status, ErrConflict)
		}
		var err error
		res, err = s.revoke(ctx, tx, `t.chain_execution_id IN (SELECT id FROM chain_executions WHERE batch_execution_id = $1)`,
			`c.batch_execution_id = $1`, pk, reason, pk)
		if err != nil {
			return err
		}
		// ... then the batch, unless the last chains' end already ended it.
		_, err = tx.Exec(ctx, `UPDATE batch_executions SET status = 'REVOKED', finished_at = coalesce(finished_at, $2),
			error_message = $3, updated_at = $2 WHERE id = $1 AND status NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')`,
			pk, s.now(), revokeMessage(reason))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("revoke batch %s: %w", batchID, err)
	}
	return res, nil
}

// revoke ends the chains chainWhere selects (REVOKED, counted as failed in
// their chunks and batch) and then their live tasks. Chains go first: the
// task statement then runs with a newer snapshot (READ COMMITTED), so a
// next task that a concurrent commit inserted for one of these chains is
// revoked too, not left PENDING under a REVOKED chain. Callers retry on
// deadlock (revoke takes chains then tasks, commits take tasks then chains).
func (s *Store) revoke(ctx context.Context, tx pgx.Tx, taskWhere, chainWhere string, pk int64, reason string, revokedBatch int64) (*RevokeResult, error) {
	now := s.now()
	msg := revokeMessage(reason)
	res := &RevokeResult{}
	rows, err := tx.Query(ctx, `
		UPDATE chain_executions c SET status = 'REVOKED', finished_at = $2, error_message = $3, updated_at = $2
		WHERE `+chainWhere+` AND c.status NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')
		RETURNING coalesce(c.batch_execution_id, 0), c.chunk_index`, pk, now, msg)
	if err != nil {
		return nil, fmt.Errorf("revoke chains: %w", err)
	}
	var ended []endedChain
	var batchPK int64
	var chunk int
	if _, err := pgx.ForEachRow(rows, []any{&batchPK, &chunk}, func() error {
		res.Chains++
		if batchPK != 0 {
			ended = append(ended, endedChain{batchPK, chunk, false})
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("revoke chains: %w", err)
	}
	rows, err = tx.Query(ctx, `
		UPDATE task_logs t SET status = 'REVOKED', finished_at = $2, error = left($3, 512), lease_expires_at = NULL, updated_at = $2
		FROM (SELECT id, status AS old FROM task_logs t WHERE `+taskWhere+`
			AND status IN ('PENDING', 'RETRY', 'STARTED', 'RUNNING') ORDER BY id FOR UPDATE) o
		WHERE t.id = o.id
		RETURNING t.id, o.old IN ('STARTED', 'RUNNING')`, pk, now, msg)
	if err != nil {
		return nil, fmt.Errorf("revoke tasks: %w", err)
	}
	var id int64
	var running bool
	if _, err := pgx.ForEachRow(rows, []any{&id, &running}, func() error {
		res.Tasks++
		if running {
			res.Running = append(res.Running, id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("revoke tasks: %w", err)
	}
	if _, _, err := s.endChains(ctx, tx, ended, now, revokedBatch, msg); err != nil {
		return nil, err
	}
	if err := notifyRevoked(ctx, tx, res.Running); err != nil {
		return nil, err
	}
	return res, nil
}

// inTx runs fn in a transaction, again (up to five times) when it fails
// with a deadlock or serialization error.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		var pgErr *pgconn.PgError
		if err == nil || attempt == 5 || !errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "40001") {
			return err
		}
	}
}

func revokeMessage(reason string) string {
	if reason == "" {
		return "revoked"
	}
	return "revoked: " + reason
}

// notifyRevoked tells every process which running tasks to cancel, in
// payloads under NOTIFY's 8000-byte limit.
func notifyRevoked(ctx context.Context, tx pgx.Tx, ids []int64) error {
	var b strings.Builder
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, RevokeChannel, b.String())
		b.Reset()
		return err
	}
	for _, id := range ids {
		if b.Len() > 7000 {
			if err := flush(); err != nil {
				return fmt.Errorf("notify revoke: %w", err)
			}
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	if err := flush(); err != nil {
		return fmt.Errorf("notify revoke: %w", err)
	}
	return nil
}

func (s *Store) wakePayload(st Stage) string { return string(st) + " " + s.origin }

// ParseWake parses a WakeChannel payload into its stage and origin.
func ParseWake(payload string) (stage Stage, origin string) {
	st, origin, _ := strings.Cut(payload, " ")
	return Stage(st), origin
}

// ParseRevoked parses a RevokeChannel payload.
func ParseRevoked(payload string) []int64 {
	var out []int64
	for _, f := range strings.Split(payload, ",") {
		if id, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64); err == nil {
			out = append(out, id)
		}
	}
	return out
}
