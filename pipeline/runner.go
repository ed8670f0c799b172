package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docpipe/docpipe/tracking"
)

// runner runs one stage: claimer → jobs channel → workers → results
// channel → committer.
type runner struct {
	e       *Engine
	cfg     StageConfig
	order   int // position in the engine's stages: tasks only run ahead into a later one
	hardCap int // most tasks claimed and not yet committed
	// budget bounds the stage's in-flight tasks once hand-offs are
	// counted: its hard cap, plus room for everything the stage before it
	// may have in flight, so an upstream stage is never starved by a small
	// downstream one.
	budget     int
	downstream atomic.Pointer[runner] // the local stage its chains go to next, once seen

	wakeCh   chan struct{} // a claim may find work
	slotCh   chan struct{} // capacity was freed
	inflight atomic.Int64
	jobs     chan *work
	results  chan *result
	// late returns run-ahead results whose fate was open when they came
	// (see runahead.go); parked counts them. Only the committer reads
	// late and parked.
	late   chan *result
	parked int

	// claimCtx ends claiming, workCtx cancels running work: set by
	// Engine.Run before the runners start (hand-offs use them too).
	claimCtx, workCtx context.Context
	jobsMu            sync.Mutex // held to send a hand-off and to close jobs
	closed            bool       // jobs is closed: no more hand-offs
}

// work is one claimed task on its way through the runner.
type work struct {
	c      tracking.Claimed
	group  *group
	ctx    context.Context
	cancel context.CancelCauseFunc
	job    Job   // what the stage is given (one allocation with the work)
	spec   *spec // set for a run-ahead task
}

// group is the tasks of one chunk taken by one claim: they are committed
// together. Only the committer goroutine touches it.
type group struct {
	size int
	done []*result
}

type resultKind int

const (
	kindDone     resultKind = iota // the attempt ended: record its outcome
	kindHandBack                   // not run or interrupted by shutdown: back to PENDING, uncounted
	kindDrop                       // revoked or lease lost: the row is no longer ours
)

type result struct {
	w       *work
	kind    resultKind
	out     *Output
	result  json.RawMessage
	err     error
	started time.Time // when the worker began it (zero if it never ran)
	ended   time.Time // when the worker finished it
	next    *spec     // the chain's next task, run ahead of this one's commit
}

// newRunner sizes the stage's channels. The claimer keeps up to Prefetch
// claimed tasks waiting for a worker, so that workers never wait for a
// claim (a whole chunk may be claimed even when it is larger). The jobs
// channel has room for those and for every task handed over by the
// previous stage within the budget (maxUpstream: the most tasks any stage
// holds in flight), so a hand-off never blocks the committer making it.
func newRunner(e *Engine, sc StageConfig, order, maxUpstream int) *runner {
	hardCap := 4 * (sc.Workers + sc.Prefetch)
	budget := hardCap + maxUpstream
	return &runner{
		e: e, cfg: sc, order: order, hardCap: hardCap, budget: budget,
		wakeCh:  make(chan struct{}, 1),
		slotCh:  make(chan struct{}, 1),
		jobs:    make(chan *work, sc.Prefetch+budget),
		results: make(chan *result, sc.Workers+sc.Prefetch),
		late:    make(chan *result, sc.Prefetch+budget),
	}
}

// signalSlot tells the claimer that there may be room for another claim.
func (r *runner) signalSlot() {
	select {
	case r.slotCh <- struct{}{}:
	default:
	}
}

func (r *runner) wake() {
	select {
	case r.wakeCh <- struct{}{}:
	default:
	}
}

func (r *runner) freed(n int) {
	if n == 0 {
		return
	}
	r.e.obs.Inflight(r.cfg.Stage, int(r.inflight.Add(-int64(n))))
	for _, o := range r.e.runners {
		o.signalSlot() // this stage's claimer, and any upstream one waiting for room here
	}
}

// run owns the stage's goroutines and returns when all have ended. The
// engine sets r.claimCtx and r.workCtx first.
func (r *runner) run(commitCtx context.Context) {
	claimCtx, workCtx := r.claimCtx, r.workCtx
	var workers sync.WaitGroup
	for range r.cfg.Workers {
		workers.Go(func() { r.work(claimCtx, workCtx) })
	}
	var committer sync.WaitGroup
	committer.Go(func() { r.commit(commitCtx) })

	r.claim(claimCtx, workCtx)
	r.jobsMu.Lock()
	r.closed = true
	close(r.jobs)
	r.jobsMu.Unlock()
	workers.Wait()
	close(r.results)
	committer.Wait()
}

// claim takes tasks while there is capacity and work, and otherwise waits
// for a wake-up, freed capacity or the poll interval.
func (r *runner) claim(ctx, workCtx context.Context) {
	poll := time.NewTimer(0)
	defer poll.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		default:
		}
		// Room: free places in the queue of tasks waiting for a worker,
		// unless finished tasks waiting for their chunk's commit have piled
		// up to the hard cap, or the next stage here has no room for what
		// this one would hand it (back-pressure: a stage does not run
		// ahead of the one after it; its tasks would only wait there).
		free := r.cfg.Prefetch - len(r.jobs)
		inflight := int(r.inflight.Load())
		if inflight >= r.hardCap {
			free = 0
		}
		if d := r.downstream.Load(); d != nil {
			free = min(free, d.budget-int(d.inflight.Load())-inflight)
		}
		n := min(free, r.e.cfg.ClaimMax)
		got := 0
		if n > 0 {
			// A claim in flight finishes even if ctx ends meanwhile, so no
			// row is left leased to nobody.
			var claimed []tracking.Claimed
			var start time.Time
			err := r.e.inSlot(ctx, func() (err error) {
				qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				defer cancel()
				start = time.Now()
				claimed, err = r.e.cfg.Queue.Claim(qctx, r.cfg.Stage, r.e.cfg.Owner, n, r.e.cfg.Lease)
				return err
			})
			if ctx.Err() != nil && len(claimed) == 0 {
				return
			}
			if err != nil {
				failures++
				r.e.obs.DBError("claim")
				r.e.log.Warn("claim failed; retrying", "stage", r.cfg.Stage, "err", err, "failures", failures)
				if !sleepCtx(ctx, tracking.RetryDelay(failures)) {
					return
				}
				continue
			}
			failures = 0
			got = len(claimed)
			if got > 0 {
				r.e.obs.Claimed(r.cfg.Stage, got, time.Since(start))
				r.e.obs.Inflight(r.cfg.Stage, int(r.inflight.Add(int64(got))))
				r.dispatch(claimed, workCtx)
			}
		}
		if got > 0 && got >= n {
			continue // there may be more waiting (a claim can exceed n: it completes chunks)
		}
		// Wait for work (a wake-up or the poll) or, when full, for capacity.
		var slot <-chan struct{}
		if n <= 0 {
			slot = r.slotCh
		}
		poll.Reset(r.e.cfg.PollInterval)
		select {
		case <-ctx.Done():
			return
		case <-r.wakeCh:
		case <-slot:
		case <-poll.C:
		}
	}
}

// dispatch groups claimed tasks by chunk and hands them to the workers. A
// claim larger than the queue's room (a whole chunk) blocks here until the
// workers take it; the tasks' leases are renewed meanwhile.
func (r *runner) dispatch(claimed []tracking.Claimed, workCtx context.Context) {
	type key struct {
		batch int64
		chunk int
	}
	if len(claimed) > 0 && claimed[0].NextStage() != "" {
		if next := r.e.runners[claimed[0].NextStage()]; next != nil {
			r.downstream.Store(next)
		}
	}
	groups := map[key]*group{}
	ws := make([]*work, len(claimed))
	for i := range claimed {
		c := claimed[i]
		k := key{c.BatchPK, c.ChunkIndex}
		if c.BatchPK == 0 {
			k = key{-c.ID, 0} // a chain alone is its own group
		}
		g := groups[k]
		if g == nil {
			g = &group{}
			groups[k] = g
		}
		g.size++
		ctx, cancel := context.WithCancelCause(workCtx)
		ws[i] = &work{c: c, group: g, ctx: ctx, cancel: cancel}
		r.e.register(ws[i])
	}
	for _, w := range ws {
		r.jobs <- w
	}
}

// work runs jobs until the jobs channel closes. Jobs that arrive after
// claiming stopped are handed back without running.
func (r *runner) work(claimCtx, workCtx context.Context) {
	for w := range r.jobs {
		r.signalSlot()
		if claimCtx.Err() != nil || w.ctx.Err() != nil {
			r.results <- r.interrupted(w)
			continue
		}
		res := r.execute(w)
		if res.kind == kindDone && res.err == nil {
			r.spawn(res) // before the result goes to the committer, so that it may be folded into the same commit
		}
		r.results <- res
	}
}

// interrupted is the result of a task cancelled from outside: dropped
// when its row is no longer ours, handed back on shutdown.
func (r *runner) interrupted(w *work) *result {
	cause := context.Cause(w.ctx)
	if errors.Is(cause, errRevoked) || errors.Is(cause, errLeaseLost) {
		return &result{w: w, kind: kindDrop, err: cause}
	}
	return &result{w: w, kind: kindHandBack}
}

func (r *runner) execute(w *work) (res *result) {
	c := &w.c
	job := &w.job
	*job = Job{
		TaskID: c.TaskID, Stage: c.Stage, StageIndex: c.StageIndex, Attempt: c.Attempt, MaxAttempts: c.MaxAttempts,
		ChainPK: c.ChainPK, ChainID: c.ChainID, BatchID: c.BatchID, Reader: r.e.cfg.Queue,
	}
	if w.spec != nil {
		job.Reader = aheadReader{w.spec, r.e.cfg.Queue}
	}
	switch {
	case c.ParsedInput != nil: // handed off by the chain's previous task
		job.Input = *c.ParsedInput
	case len(c.Input) > 0:
		in := new(tracking.ChainInput)
		if err := json.Unmarshal(c.Input, in); err != nil {
			return &result{w: w, kind: kindDone, err: tracking.Permanent(fmt.Errorf("chain input_data: %w", err))}
		}
		c.ParsedInput, job.Input = in, *in
	}
	job.Logger = taskLogger(r.e.log, c)
	ctx := w.ctx
	if r.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.cfg.Timeout)
		defer cancel()
	}
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			job.Logger.Error("stage panicked", "panic", p, "stack", string(debug.Stack()))
			res = &result{w: w, kind: kindDone, err: fmt.Errorf("stage panicked: %v", p)}
		}
		res.started, res.ended = start, time.Now()
		status := tracking.StatusSuccess
		if res.err != nil {
			status = tracking.StatusFailure
		}
		if res.kind == kindDone {
			r.e.obs.TaskDone(c.Stage, status, time.Since(start))
		}
	}()
	out, err := r.cfg.Run.Run(ctx, job)
	if err != nil {
		if w.ctx.Err() != nil {
			return r.interrupted(w) // revoked, lease lost or shutdown
		}
		if ctx.Err() == context.DeadlineExceeded && w.ctx.Err() == nil {
			err = fmt.Errorf("timed out after %s: %w", r.cfg.Timeout, err)
		}
		job.Logger.Warn("stage failed", "err", err, "permanent", tracking.IsPermanent(err))
		return &result{w: w, kind: kindDone, err: err}
	}
	if out == nil {
		out = &Output{}
	}
	b, err := marshalResult(out.Result)
	if err != nil {
		return &result{w: w, kind: kindDone, err: err}
	}
	return &result{w: w, kind: kindDone, out: out, result: b}
}

// commit gathers results and records them: as soon as one is ready, with
// everything else that is ready by then, in one transaction. A chunk's
// tasks from one claim are committed together. It returns once the
// workers are done and every run-ahead result it parked has come back.
func (r *runner) commit(ctx context.Context) {
	var ready []*result
	var handback []*result
	results := r.results
	add := func(res *result, late bool) {
		if late {
			r.parked--
		}
		if sp := res.w.spec; sp != nil {
			if !late && sp.park(res) {
				r.parked++
				return
			}
			switch sp.fate() {
			case specFolded: // recorded with its predecessor
				res.w.cancel(nil)
				r.freed(1)
				return
			case specDiscarded:
				r.drop(res)
				return
			}
			// Landed: an ordinary task of this stage.
		}
		g := res.w.group
		switch res.kind {
		case kindDrop:
			r.drop(res)
			g.size-- // the rest of its chunk no longer waits for it
		case kindHandBack:
			handback = append(handback, res)
			g.size--
		default:
			g.done = append(g.done, res)
		}
		if len(g.done) > 0 && len(g.done) == g.size {
			ready = append(ready, g.done...)
			g.done = nil
		}
	}
	for results != nil || r.parked > 0 {
		select {
		case res, ok := <-results:
			if !ok {
				results = nil
				continue
			}
			add(res, false)
		case res := <-r.late:
			add(res, true)
		}
	drain:
		for len(ready)+len(handback) < r.e.cfg.CommitMax {
			select {
			case res, ok := <-results:
				if !ok {
					results = nil
					break drain
				}
				add(res, false)
			case res := <-r.late:
				add(res, true)
			default:
				break drain
			}
		}
		if len(handback) > 0 {
			r.handBack(ctx, handback)
			handback = handback[:0]
		}
		if len(ready) > 0 {
			r.record(ctx, ready)
			ready = ready[:0]
		}
	}
	// Every job produced a result before the channel closed, so no group
	// is left waiting.
}

// drop forgets a result whose task is no longer this process's (revoked,
// lease lost, or a run-ahead task discarded), and discards what ran ahead
// of it.
func (r *runner) drop(res *result) {
	r.e.unregister(res.w.c.ID) // (a run-ahead task that never landed has id 0: nothing to remove)
	res.w.cancel(nil)
	r.freed(1)
	if res.next != nil {
		res.next.settle(specDiscarded)
	}
}

// record commits outcomes, retrying while the database is unreachable. If
// the commit itself is refused (a constraint the results break), each
// chunk is committed alone, and a chunk that still fails has its tasks
// recorded as failed attempts (RETRY) without their results.
func (r *runner) record(ctx context.Context, results []*result) {
	outcomes := make([]tracking.Outcome, len(results))
	ahead := false
	for i, res := range results {
		outcomes[i] = r.outcome(res)
		ahead = ahead || res.next != nil
	}
	h := &handoffs{from: r}
	h.prepare = func() {
		if ahead {
			r.planGroups(results, outcomes, h)
		}
		r.reserveNext(results, outcomes, h)
	}
	err := r.complete(ctx, outcomes, h)
	if h.prepare != nil {
		// Never got a slot (the engine is stopping): nothing was decided,
		// so what ran ahead is discarded.
		h.prepare = nil
		for _, res := range results {
			if res.next != nil {
				res.next.settle(specDiscarded)
			}
		}
	}
	if err != nil && ctx.Err() == nil {
		r.e.log.Error("commit refused; committing chunk by chunk", "stage", r.cfg.Stage, "tasks", len(outcomes), "err", err)
		r.isolate(ctx, results, outcomes, h)
	}
	for i := range h.plans {
		h.plans[i].settle(r.e, h.advanced, h.landed)
	}
	h.release()
	for _, res := range results {
		r.e.unregister(res.w.c.ID)
		res.w.cancel(nil)
	}
	r.freed(len(results))
}

func (r *runner) outcome(res *result) tracking.Outcome {
	o := tracking.Outcome{Task: &res.w.c, Err: res.err, Result: res.result, StartedAt: res.started, FinishedAt: res.ended}
	if res.out != nil {
		o.OCR = res.out.OCR
	}
	if res.err != nil {
		o.RetryAt = time.Now().Add(r.e.cfg.Backoff(res.w.c.Attempt))
	}
	return o
}

func (r *runner) isolate(ctx context.Context, results []*result, outcomes []tracking.Outcome, h *handoffs) {
	byGroup := map[*group][]tracking.Outcome{}
	var order []*group
	for i, res := range results {
		g := res.w.group
		if _, ok := byGroup[g]; !ok {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], outcomes[i])
	}
	for _, g := range order {
		outs := byGroup[g]
		err := r.complete(ctx, outs, h)
		if err == nil || ctx.Err() != nil {
			continue
		}
		r.e.log.Error("chunk commit refused; recording its tasks as failed attempts", "stage", r.cfg.Stage, "tasks", len(outs), "err", err)
		failed := make([]tracking.Outcome, len(outs))
		for i, o := range outs {
			failed[i] = tracking.Outcome{Task: o.Task, Err: fmt.Errorf("commit failed: %w", err),
				RetryAt: time.Now().Add(r.e.cfg.Backoff(o.Task.Attempt))}
			if o.Err != nil {
				failed[i].Err = o.Err
			}
		}
		if err := r.complete(ctx, failed, h); err != nil && ctx.Err() == nil {
			r.e.log.Error("cannot record failed attempts; their leases will expire and be rescued", "err", err)
		}
	}
}

// complete runs one Complete, retrying transient errors (the database
// restarting) with backoff until ctx ends, and hands the next tasks it
// started to their stages. It returns the first non-transient error.
func (r *runner) complete(ctx context.Context, outcomes []tracking.Outcome, h *handoffs) error {
	for attempt := 1; ; attempt++ {
		var res *tracking.CommitResult
		var start time.Time
		err := r.e.inSlot(ctx, func() (err error) {
			if h.prepare != nil {
				// Decided as late as possible, once the commit may run:
				// the longer a commit waits, the more tasks ran ahead
				// and finished meanwhile, to be folded into it.
				h.prepare()
				h.prepare = nil
			}
			start = time.Now()
			res, err = r.e.cfg.Queue.Complete(ctx, outcomes)
			return err
		})
		if err == nil {
			r.e.obs.Committed(r.cfg.Stage, res.Applied, time.Since(start))
			for st, n := range res.Folded {
				r.e.obs.Folded(st, n)
			}
			h.committed(res)
			h.deliver(ctx, res.Started)
			for st, n := range res.Enqueued {
				if n > 0 {
					r.e.Wake(st)
				}
			}
			for _, b := range res.BatchesEnded {
				r.e.log.Info("batch ended", "batch_id", b)
			}
			if len(res.Stale) > 0 {
				r.e.log.Info("dropped results of tasks no longer held (revoked or rescued)", "stage", r.cfg.Stage, "tasks", len(res.Stale))
			}
			return nil
		}
		if !tracking.IsTransient(err) || ctx.Err() != nil {
			return err
		}
		r.e.obs.DBError("commit")
		r.e.log.Warn("commit failed; retrying", "stage", r.cfg.Stage, "err", err, "attempt", attempt)
		if !sleepCtx(ctx, tracking.RetryDelay(attempt)) {
			return ctx.Err()
		}
	}
}

func (r *runner) handBack(ctx context.Context, results []*result) {
	refs := make([]tracking.TaskRef, len(results))
	for i, res := range results {
		refs[i] = res.w.c.Ref()
	}
	r.returnToQueue(ctx, refs)
	for _, res := range results {
		r.e.unregister(res.w.c.ID)
		res.w.cancel(nil)
	}
	r.freed(len(results))
}

// returnToQueue hands attempts of this stage back (PENDING, attempt not
// counted), retrying while the database is unreachable; tasks it cannot
// hand back keep their leases, which expire and are rescued.
func (r *runner) returnToQueue(ctx context.Context, refs []tracking.TaskRef) {
	for attempt := 1; ; attempt++ {
		n, err := r.e.cfg.Queue.HandBack(ctx, refs)
		if err == nil {
			r.e.log.Info("handed back unfinished tasks", "stage", r.cfg.Stage, "tasks", n)
			return
		}
		if !tracking.IsTransient(err) || ctx.Err() != nil {
			r.e.log.Error("cannot hand back tasks; their leases will expire and be rescued", "stage", r.cfg.Stage, "err", err)
			return
		}
		if !sleepCtx(ctx, tracking.RetryDelay(attempt)) {
			return
		}
	}
}

func refsOf(cs []tracking.Claimed) []tracking.TaskRef {
	refs := make([]tracking.TaskRef, len(cs))
	for i := range cs {
		refs[i] = cs[i].Ref()
	}
	return refs
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// handoffs tracks one commit's direct hand-offs: room reserved in the next
// stages' runners before the commit, and how much of it the commit used;
// and the run-ahead tasks it settles.
type handoffs struct {
	from     *runner
	reserved map[*runner]int
	plans    []plan
	landing  map[string]bool  // run-ahead tasks the plans create STARTED, by task_id
	advanced map[int64]bool   // tasks whose chain the commit advanced (with their folded tasks)
	landed   map[string]int64 // run-ahead tasks the commit created STARTED: id by task_id
	prepare  func()           // run once, in the first commit's slot: plans and reservations
}

// committed notes what a commit did to the run-ahead tasks, and takes
// those it created STARTED out of res.Started: they already run.
func (h *handoffs) committed(res *tracking.CommitResult) {
	if len(h.plans) == 0 {
		return
	}
	if h.advanced == nil {
		h.advanced, h.landed = map[int64]bool{}, map[string]int64{}
	}
	for id := range res.Advanced {
		h.advanced[id] = true
	}
	if len(h.landing) == 0 {
		return
	}
	for st, cs := range res.Started {
		kept := cs[:0]
		for _, c := range cs {
			if h.landing[c.TaskID] {
				h.landed[c.TaskID] = c.ID
			} else {
				kept = append(kept, c)
			}
		}
		res.Started[st] = kept
	}
}

// reserveNext marks the successes whose chain's next stage runs in this
// process, and has room for them, to be handed straight to it: the commit
// creates those tasks STARTED and leased to this process, and deliver
// dispatches them, so they are never claimed. A chunk's tasks going to the
// same stage are reserved together or not at all, so that they stay one
// commit group downstream. Without room (or while shutting down) the next
// task is created PENDING as usual. Successes whose next task already
// runs ahead are left alone; for those with folded tasks, the next task
// is the one after the last of them.
func (r *runner) reserveNext(results []*result, outcomes []tracking.Outcome, h *handoffs) {
	if r.claimCtx.Err() != nil {
		return
	}
	type key struct {
		g    *group
		next *runner
	}
	wanted := map[key][]int{}
	var order []key
	for i, res := range results {
		o := &outcomes[i]
		if res.err != nil || o.NextTaskID != "" {
			continue // failed, or its next task already runs
		}
		next := r.e.runners[res.w.c.StageAt(res.w.c.StageIndex+1+len(o.Folded))]
		if next == nil {
			continue
		}
		k := key{res.w.group, next}
		if _, ok := wanted[k]; !ok {
			order = append(order, k)
		}
		wanted[k] = append(wanted[k], i)
	}
	for _, k := range order {
		idx := wanted[k]
		if !k.next.reserve(len(idx)) {
			continue
		}
		if h.reserved == nil {
			h.reserved = map[*runner]int{}
		}
		h.reserved[k.next] += len(idx)
		for _, i := range idx {
			outcomes[i].NextOwner, outcomes[i].NextLease = r.e.cfg.Owner, r.e.cfg.Lease
		}
	}
}

// deliver dispatches the tasks a commit started to their stages.
func (h *handoffs) deliver(ctx context.Context, started map[tracking.Stage][]tracking.Claimed) {
	for st, cs := range started {
		if len(cs) == 0 {
			continue // all ran ahead
		}
		next := h.from.e.runners[st]
		h.reserved[next] -= len(cs) // now counted as the next stage's in-flight tasks
		if !next.handOff(cs) {
			next.returnToQueue(ctx, refsOf(cs))
			next.freed(len(cs))
		}
	}
}

// release returns the room reserved for tasks the commit did not start
// (their chain ended, was revoked, or the commit failed).
func (h *handoffs) release() {
	for next, n := range h.reserved {
		next.freed(n)
	}
}

// reserve takes room for n tasks handed over directly, if the stage's
// in-flight tasks stay within its budget.
func (r *runner) reserve(n int) bool {
	limit := int64(r.budget)
	for {
		cur := r.inflight.Load()
		if cur+int64(n) > limit {
			return false
		}
		if r.inflight.CompareAndSwap(cur, cur+int64(n)) {
			r.e.obs.Inflight(r.cfg.Stage, int(cur)+n)
			return true
		}
	}
}

// handOff dispatches tasks started for this stage by the previous stage's
// commit. It reports false if the stage no longer takes work (shutdown).
func (r *runner) handOff(cs []tracking.Claimed) bool {
	r.jobsMu.Lock()
	defer r.jobsMu.Unlock()
	if r.closed {
		return false
	}
	r.e.obs.HandedOff(r.cfg.Stage, len(cs))
	r.dispatch(cs, r.workCtx)
	return true
}
