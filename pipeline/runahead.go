package pipeline

import (
	"context"
	"encoding/json"
	"slices"
	"sync"

	"github.com/docpipe/docpipe/tracking"
)

// Running ahead. When a task succeeds and its chain's next stage runs in
// this process, a later stage in the engine's order, the next task starts
// at once, before the commit that records its predecessor has created its
// row: a run-ahead task (a spec). The predecessor's committer settles its
// fate when it commits:
//
//   - folded: it finished, successfully, before that commit was built, so
//     the commit records it too, created directly SUCCESS (and the task
//     after it, if that one also finished, and so on);
//   - landed: the commit creates it STARTED, leased to this process, and
//     it goes on as an ordinary task of its stage;
//   - discarded: the predecessor's outcome was not recorded (revoked,
//     lease lost, commit refused): it is cancelled and forgotten.
//
// A fast stage (no-op, a quick transform) so costs one row version
// instead of three and no commit of its own, and no stage waits for the
// commit before it to start. A stage that reads earlier work (Job.Reader)
// waits, in the read, for its predecessor's commit to land, so it always
// reads committed results; it is then not folded. Nothing is visible in
// the database of a run-ahead task until its fate is settled, which is a
// commit away; if the process dies first, the predecessor's lease expires
// and the chain resumes from the predecessor, as it would without running
// ahead.

// specState is a run-ahead task's fate.
type specState int

const (
	specRunning   specState = iota // open: its predecessor's commit has not been built
	specFolding                    // its result is in its predecessor's commit
	specLanding                    // its predecessor's commit creates it STARTED
	specFolded                     // recorded with its predecessor
	specLanded                     // created STARTED: an ordinary task from now on
	specDiscarded                  // its predecessor was not recorded: cancelled
)

// spec is a run-ahead task.
type spec struct {
	w  *work   // its work; w.c.ID is set when it lands
	in *runner // the stage it runs in

	mu     sync.Mutex
	state  specState
	parked *result       // its result, when it reached its committer before its fate was settled
	done   chan struct{} // closed once the fate is settled
}

// fate returns the spec's state.
func (sp *spec) fate() specState {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.state
}

// park keeps res, the spec's result, until its fate is settled, if it is
// not yet: the predecessor's committer then sends it back through the
// stage's late channel. It reports whether it kept it.
func (sp *spec) park(res *result) bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.state != specRunning && sp.state != specLanding {
		return false
	}
	sp.parked = res
	return true
}

// foldable reports whether the spec's result is parked, successful, and
// its fate still open: whether it can be recorded with its predecessor.
func (sp *spec) foldable() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	p := sp.parked
	return sp.state == specRunning && p != nil && p.kind == kindDone && p.err == nil
}

// decide sets an open fate to st (specFolding or specLanding) and returns
// the parked result. Only the predecessor's committer decides, so a spec
// found foldable is still foldable here.
func (sp *spec) decide(st specState) *result {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.state = st
	return sp.parked
}

// settle ends the spec's fate as st (folded, landed or discarded) and
// returns its parked result to its committer.
func (sp *spec) settle(st specState) {
	sp.mu.Lock()
	if sp.state >= specFolded {
		sp.mu.Unlock()
		return
	}
	sp.state = st
	p := sp.parked
	sp.parked = nil
	close(sp.done)
	sp.mu.Unlock()
	if st == specDiscarded {
		sp.w.cancel(errRevoked)
	}
	if p != nil {
		sp.in.late <- p // never blocks: room for every task in flight
	}
}

// spawn starts the chain's next task ahead of res's commit, if it runs in
// a later stage of this engine with room for it. It sets res.next.
func (r *runner) spawn(res *result) {
	c := &res.w.c
	next := r.e.runners[c.NextStage()]
	if next == nil || next.order <= r.order || r.e.cfg.NoRunAhead || r.claimCtx.Err() != nil {
		return
	}
	if sp := res.w.spec; sp != nil && sp.fate() == specDiscarded {
		return
	}
	if !next.reserve(1) {
		return
	}
	sp := &spec{in: next, done: make(chan struct{})}
	w := &work{group: &group{size: 1}, spec: sp, c: tracking.Claimed{
		TaskID: tracking.NewID(), Stage: c.NextStage(), StageIndex: c.StageIndex + 1, Attempt: 1, MaxAttempts: c.MaxAttempts,
		ChainPK: c.ChainPK, ChainID: c.ChainID, BatchPK: c.BatchPK, BatchID: c.BatchID, ChunkIndex: c.ChunkIndex,
		Input: c.Input, ParsedInput: c.ParsedInput, Stages: c.Stages,
	}}
	w.ctx, w.cancel = context.WithCancelCause(next.workCtx)
	sp.w = w
	if !next.enqueueAhead(w) {
		w.cancel(nil)
		next.freed(1)
		return
	}
	res.next = sp
}

// enqueueAhead gives a run-ahead task to the stage's workers, unless the
// stage no longer takes work or its queue is full (it never waits: the
// worker calling it may be what frees the queue).
func (r *runner) enqueueAhead(w *work) bool {
	r.jobsMu.Lock()
	defer r.jobsMu.Unlock()
	if r.closed {
		return false
	}
	select {
	case r.jobs <- w:
		r.e.obs.HandedOff(r.cfg.Stage, 1)
		return true
	default:
		return false
	}
}

// line is one chain's run-ahead tasks that a commit settles.
type line struct {
	taskID  int64   // the committed task
	folded  []*spec // recorded with it, if it is recorded
	landing *spec   // created STARTED by its commit
}

// plan is the run-ahead tasks of one commit group (a chunk) that its
// commit settles.
type plan struct {
	lines []line
}

// planAhead decides, for the successes of one commit group (a chunk), what
// their commit does with the tasks that ran ahead of them, stage by stage,
// for the whole chunk at once (SPEC: a chunk is committed together): if
// every chain's next task finished successfully, they are all folded into
// the commit and the same is decided for the tasks after them; otherwise
// they are all created STARTED (landing), to be committed together as one
// group of their stage. If some chains' next task could not run ahead (no
// room), the others' are discarded and the whole chunk's next tasks go the
// ordinary way.
func (r *runner) planAhead(results []*result, outcomes []*tracking.Outcome) plan {
	p := plan{lines: make([]line, len(results))}
	cur := slices.Clone(results) // each chain's latest task in the plan
	open := make([]int, len(results))
	for i, res := range results {
		p.lines[i].taskID = res.w.c.ID
		open[i] = i
	}
	for len(open) > 0 {
		// Chains that go on past their current task, and whether all of
		// them have their next task running ahead and done.
		going := open[:0]
		all, foldable := true, true
		for _, i := range open {
			c := &cur[i].w.c
			if c.StageAt(c.StageIndex+1) == "" {
				continue // the chain ends here
			}
			going = append(going, i)
			if sp := cur[i].next; sp == nil {
				all = false
			} else if foldable && !sp.foldable() {
				foldable = false
			}
		}
		open = going
		switch {
		case len(open) == 0:
		case !all:
			for _, i := range open {
				if sp := cur[i].next; sp != nil {
					sp.settle(specDiscarded)
				}
			}
			open = nil
		case foldable:
			for _, i := range open {
				sp := cur[i].next
				done := sp.decide(specFolding)
				f := tracking.FoldedTask{TaskID: done.w.c.TaskID, Stage: done.w.c.Stage, Result: done.result,
					StartedAt: done.started, FinishedAt: done.ended, Owner: r.e.cfg.Owner}
				if done.out != nil {
					f.OCR = done.out.OCR
				}
				outcomes[i].Folded = append(outcomes[i].Folded, f)
				p.lines[i].folded = append(p.lines[i].folded, sp)
				cur[i] = done
			}
		default:
			for _, i := range open {
				sp := cur[i].next
				sp.decide(specLanding)
				outcomes[i].NextTaskID, outcomes[i].NextOwner, outcomes[i].NextLease = sp.w.c.TaskID, r.e.cfg.Owner, r.e.cfg.Lease
				p.lines[i].landing = sp
			}
			open = nil
		}
	}
	return p
}

// planGroups plans, per commit group, what the commit of results does with
// the tasks that ran ahead of them (see planAhead), into h.
func (r *runner) planGroups(results []*result, outcomes []tracking.Outcome, h *handoffs) {
	type succ struct {
		rs    []*result
		os    []*tracking.Outcome
		ahead bool
	}
	byGroup := map[*group]*succ{} // successes by commit group
	var groups []*group
	for i, res := range results {
		if res.kind != kindDone || res.err != nil {
			continue
		}
		sc := byGroup[res.w.group]
		if sc == nil {
			sc = &succ{}
			byGroup[res.w.group] = sc
			groups = append(groups, res.w.group)
		}
		sc.rs, sc.os = append(sc.rs, res), append(sc.os, &outcomes[i])
		sc.ahead = sc.ahead || res.next != nil
	}
	for _, g := range groups {
		sc := byGroup[g]
		if !sc.ahead {
			continue
		}
		p := r.planAhead(sc.rs, sc.os)
		for _, l := range p.lines {
			if l.landing != nil {
				if h.landing == nil {
					h.landing = map[string]bool{}
				}
				h.landing[l.landing.w.c.TaskID] = true
			}
		}
		h.plans = append(h.plans, p)
	}
}

// settle settles the plan's tasks once its commit is over: advanced holds
// the committed tasks whose chain advanced (their folded tasks were
// recorded), landed the ids of the tasks the commit created STARTED, by
// task_id. The tasks that landed make one commit group in their stage.
func (p *plan) settle(e *Engine, advanced map[int64]bool, landed map[string]int64) {
	var arrived []*spec
	for i := range p.lines {
		l := &p.lines[i]
		if !advanced[l.taskID] {
			for _, sp := range l.folded {
				sp.settle(specDiscarded)
			}
			if l.landing != nil {
				l.landing.settle(specDiscarded)
			}
			continue
		}
		for _, sp := range l.folded {
			sp.settle(specFolded)
		}
		if sp := l.landing; sp != nil {
			id, ok := landed[sp.w.c.TaskID]
			if !ok {
				sp.settle(specDiscarded)
				continue
			}
			sp.w.c.ID = id
			e.register(sp.w)
			arrived = append(arrived, sp)
		}
	}
	// Settled only once their group is complete: their committer sees
	// their group as soon as they are settled.
	g := &group{size: len(arrived)}
	for _, sp := range arrived {
		sp.w.group = g
	}
	for _, sp := range arrived {
		sp.settle(specLanded)
	}
}

// aheadReader is the Reader of a run-ahead task: it waits for the task's
// predecessor to be committed before reading.
type aheadReader struct {
	sp *spec
	Reader
}

func (r aheadReader) wait(ctx context.Context) error {
	select {
	case <-r.sp.done:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if r.sp.fate() == specDiscarded {
		return errRevoked
	}
	return nil
}

func (r aheadReader) StageResult(ctx context.Context, chainPK int64, stage tracking.Stage) (json.RawMessage, error) {
	if err := r.wait(ctx); err != nil {
		return nil, err
	}
	return r.Reader.StageResult(ctx, chainPK, stage)
}

func (r aheadReader) OCRResult(ctx context.Context, chainID string) (*tracking.OCRResult, error) {
	if err := r.wait(ctx); err != nil {
		return nil, err
	}
	return r.Reader.OCRResult(ctx, chainID)
}

func (r aheadReader) BatchChains(ctx context.Context, batchID string, fn func(*tracking.Chain) error) error {
	if err := r.wait(ctx); err != nil {
		return err
	}
	return r.Reader.BatchChains(ctx, batchID, fn)
}
