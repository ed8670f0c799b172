package pipeline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/docpipe/docpipe/tracking"
)

// Queue is what the engine needs of the store. *tracking.Store has it.
type Queue interface {
	Reader
	Claim(ctx context.Context, stage tracking.Stage, owner string, limit int, lease time.Duration) ([]tracking.Claimed, error)
	Complete(ctx context.Context, outcomes []tracking.Outcome) (*tracking.CommitResult, error)
	ExtendLeases(ctx context.Context, refs []tracking.TaskRef, lease time.Duration) (map[int64]bool, error)
	HandBack(ctx context.Context, refs []tracking.TaskRef) (int, error)
	RescueExpired(ctx context.Context, limit int) (*tracking.CommitResult, error)
}

// Notifications is a source of LISTEN/NOTIFY messages from other processes.
// Listen runs until ctx ends, calling wake for WakeChannel payloads (and
// wake("") — every stage — whenever it starts listening, to catch up) and
// revoke for RevokeChannel payloads; it reconnects by itself.
type Notifications interface {
	Listen(ctx context.Context, wake func(tracking.Stage), revoke func([]int64)) error
}

// StageConfig is how one stage runs in this process.
type StageConfig struct {
	Stage   tracking.Stage
	Run     Stage
	Workers int // concurrent tasks; default 1
	// Prefetch is how many tasks may wait claimed beyond the running ones
	// (default Workers): enough to keep workers busy between claims, small
	// enough that other processes get work too.
	Prefetch int
	Timeout  time.Duration // per attempt; 0 for none
}

// Observer receives the engine's events, for metrics. All methods must be
// safe for concurrent use and fast. A nil Observer is allowed.
type Observer interface {
	Claimed(stage tracking.Stage, n int, took time.Duration)
	HandedOff(stage tracking.Stage, n int) // tasks given straight to the stage's workers (no claim): run ahead, or started by the previous stage's commit
	Folded(stage tracking.Stage, n int)    // tasks that ran ahead and were recorded by the commit of an earlier task of their chain
	TaskDone(stage tracking.Stage, status tracking.Status, took time.Duration)
	Committed(stage tracking.Stage, n int, took time.Duration)
	Inflight(stage tracking.Stage, n int)
	Rescued(n int)
	DBError(op string)
}

// Config configures an Engine. Zero values take the documented defaults.
type Config struct {
	Queue         Queue
	Notifications Notifications // nil: other processes are only seen by polling
	Stages        []StageConfig
	Owner         string        // lease owner; default host:pid:random
	Lease         time.Duration // default 30s; renewed every Lease/3 while a task runs
	PollInterval  time.Duration // fallback claim poll; default 1s
	RescueEvery   time.Duration // how often expired leases are rescued; default Lease/3
	ClaimMax      int           // most tasks one claim takes; default 500
	CommitMax     int           // most outcomes one commit records; default 1000
	// Transactions is the most claim and commit transactions the engine
	// runs at once, over all its stages; default DefaultTransactions.
	// They write the same index pages (the newest ids, the SUCCESS end of
	// the status index), so beyond the database's cores more of them only
	// wait for each other's page locks, at a CPU price: with one per stage
	// (four) on 2 cores, PostgreSQL spent 15% more CPU per task than with
	// two, for the same throughput. Results that wait for a slot join the
	// next commit, which only grows the batches.
	Transactions int
	// Backoff is the wait before retrying a task after its attempt-th
	// attempt failed; default tracking.Backoff (1 s doubling, ±20% jitter).
	Backoff func(attempt int) time.Duration
	// ShutdownTimeout is how long running tasks may finish after the
	// engine's context ends before their contexts are cancelled and they are
	// handed back; default 30s.
	ShutdownTimeout time.Duration
	// NoRunAhead starts a chain's next task only after the commit that
	// records the task before it (see runahead.go). By default a task that
	// succeeds has its chain's next task started at once, when that stage
	// runs here, after this one in Stages: a fast stage is then recorded
	// in its predecessor's commit, at a third of the database writes.
	NoRunAhead bool
	Logger     *slog.Logger
	Observer   Observer
}

// DefaultTransactions is Config.Transactions' default: the number of CPUs,
// at least 2.
func DefaultTransactions() int { return max(2, runtime.NumCPU()) }

// Engine runs the stages configured for this process.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	obs     Observer
	runners map[tracking.Stage]*runner
	txSlots chan struct{} // one per claim or commit transaction running

	mu      sync.Mutex
	running map[int64]*work // claimed and not yet committed, by task id
}

// New validates cfg and returns an Engine. Nothing runs until Run.
func New(cfg Config) (*Engine, error) {
	if cfg.Queue == nil {
		return nil, errors.New("pipeline: no queue")
	}
	if cfg.Owner == "" {
		cfg.Owner = defaultOwner()
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.RescueEvery <= 0 {
		cfg.RescueEvery = cfg.Lease / 3
	}
	if cfg.ClaimMax <= 0 {
		cfg.ClaimMax = 500
	}
	if cfg.CommitMax <= 0 {
		cfg.CommitMax = 1000
	}
	if cfg.Transactions <= 0 {
		cfg.Transactions = DefaultTransactions()
	}
	if cfg.Backoff == nil {
		cfg.Backoff = tracking.Backoff
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	obs := cfg.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	e := &Engine{cfg: cfg, log: log.With("component", "engine"), obs: obs,
		runners: map[tracking.Stage]*runner{}, running: map[int64]*work{}, txSlots: make(chan struct{}, cfg.Transactions)}
	var stages []StageConfig
	for _, sc := range cfg.Stages {
		if sc.Run == nil {
			return nil, fmt.Errorf("pipeline: stage %s has no implementation", sc.Stage)
		}
		if slices.ContainsFunc(stages, func(o StageConfig) bool { return o.Stage == sc.Stage }) {
			return nil, fmt.Errorf("pipeline: stage %s configured twice", sc.Stage)
		}
		if sc.Workers <= 0 {
			sc.Workers = 1
		}
		if sc.Prefetch <= 0 {
			sc.Prefetch = sc.Workers
		}
		stages = append(stages, sc)
	}
	maxUpstream := 0
	for _, sc := range stages {
		maxUpstream = max(maxUpstream, 4*(sc.Workers+sc.Prefetch))
	}
	for i, sc := range stages {
		e.runners[sc.Stage] = newRunner(e, sc, i, maxUpstream)
	}
	return e, nil
}

// Owner is the name this engine's leases carry.
func (e *Engine) Owner() string { return e.cfg.Owner }

// Wake tells the stage's claimer that tasks may be waiting (e.g. after a
// submission in this process); "" wakes every stage. Unknown stages are
// ignored.
func (e *Engine) Wake(stage tracking.Stage) {
	if stage == "" {
		for _, r := range e.runners {
			r.wake()
		}
		return
	}
	if r := e.runners[stage]; r != nil {
		r.wake()
	}
}

// Cancel cancels the running attempts of the given tasks in this process
// (their rows were revoked). Unknown ids are ignored.
func (e *Engine) Cancel(ids []int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range ids {
		if w := e.running[id]; w != nil {
			w.cancel(errRevoked)
		}
	}
}

var (
	errRevoked   = errors.New("task revoked")
	errLeaseLost = errors.New("lease lost")
	errShutdown  = errors.New("shutting down")
)

// Run runs the engine until ctx ends, then shuts down gracefully: it stops
// claiming, lets running tasks finish for up to ShutdownTimeout, cancels
// the rest and hands them back to the queue (PENDING, attempt not
// counted), commits what finished, and returns nil.
func (e *Engine) Run(ctx context.Context) error {
	// claimCtx ends claiming; workCtx cancels running work; commitCtx bounds
	// the final commits and hand-backs when the database is gone.
	claimCtx := ctx
	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelWork(nil)
	commitCtx, cancelCommit := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCommit()

	for _, r := range e.runners {
		r.claimCtx, r.workCtx = claimCtx, workCtx // before any committer hands work to it
	}
	var wg sync.WaitGroup
	for _, r := range e.runners {
		wg.Go(func() { r.run(commitCtx) })
	}
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var bg sync.WaitGroup
	bg.Go(func() { e.extendLeases(bgCtx) })
	bg.Go(func() { e.rescue(bgCtx) })
	if e.cfg.Notifications != nil {
		bg.Go(func() {
			if err := e.cfg.Notifications.Listen(bgCtx, e.Wake, e.Cancel); err != nil && bgCtx.Err() == nil {
				e.log.Error("notifications stopped", "err", err)
			}
		})
	}
	e.log.Info("engine started", "owner", e.cfg.Owner, "stages", len(e.runners))

	<-ctx.Done()
	e.log.Info("engine stopping: no new claims; waiting for running tasks", "timeout", e.cfg.ShutdownTimeout)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }() // owned: waited for below
	timer := time.NewTimer(e.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		e.log.Warn("shutdown timeout: cancelling running tasks and handing them back")
		cancelWork(errShutdown)
		hard := time.NewTimer(e.cfg.ShutdownTimeout)
		defer hard.Stop()
		select {
		case <-done:
		case <-hard.C:
			e.log.Error("database unreachable at shutdown: abandoning final commits; leases will expire and be rescued")
			cancelCommit()
			<-done
		}
	}
	stopBG()
	bg.Wait()
	e.log.Info("engine stopped")
	return nil
}

// inSlot runs fn, a claim or commit transaction, once fewer than
// Transactions others run. Waiting ends with ctx.
func (e *Engine) inSlot(ctx context.Context, fn func() error) error {
	select {
	case e.txSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-e.txSlots }()
	return fn()
}

func (e *Engine) register(w *work) {
	e.mu.Lock()
	e.running[w.c.ID] = w
	e.mu.Unlock()
}

func (e *Engine) unregister(id int64) {
	e.mu.Lock()
	delete(e.running, id)
	e.mu.Unlock()
}

// extendLeases renews the lease of every task this process holds, every
// Lease/3, and cancels the work of tasks it no longer holds.
func (e *Engine) extendLeases(ctx context.Context) {
	t := time.NewTicker(e.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		refs := make([]tracking.TaskRef, 0, len(e.running))
		for _, w := range e.running {
			refs = append(refs, w.c.Ref())
		}
		e.mu.Unlock()
		if len(refs) == 0 {
			continue
		}
		held, err := e.cfg.Queue.ExtendLeases(ctx, refs, e.cfg.Lease)
		if err != nil {
			if ctx.Err() == nil {
				e.obs.DBError("extend_leases")
				e.log.Warn("cannot renew leases", "tasks", len(refs), "err", err)
			}
			continue
		}
		e.mu.Lock()
		for _, ref := range refs {
			if w := e.running[ref.ID]; w != nil && !held[ref.ID] {
				w.cancel(errLeaseLost)
			}
		}
		e.mu.Unlock()
	}
}

// rescue returns tasks whose lease expired (their process died) to the
// queue, every RescueEvery.
func (e *Engine) rescue(ctx context.Context) {
	t := time.NewTicker(e.cfg.RescueEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			var res *tracking.CommitResult
			err := e.inSlot(ctx, func() (err error) {
				res, err = e.cfg.Queue.RescueExpired(ctx, 1000)
				return err
			})
			if err != nil {
				if ctx.Err() == nil {
					e.obs.DBError("rescue")
					e.log.Warn("rescue failed", "err", err)
				}
				break
			}
			if res.Applied > 0 {
				e.obs.Rescued(res.Applied)
				e.log.Info("rescued tasks with expired leases", "retried", res.Retried, "failed", res.Failed)
			}
			if res.Applied < 1000 {
				break
			}
		}
	}
}

func defaultOwner() string {
	host, _ := os.Hostname()
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

func marshalResult(v any) (json.RawMessage, error) {
	switch r := v.(type) {
	case nil:
		return json.RawMessage("null"), nil
	case json.RawMessage:
		if len(r) == 0 {
			return json.RawMessage("null"), nil
		}
		if !json.Valid(r) {
			return nil, errors.New("stage returned invalid JSON")
		}
		return r, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal stage result: %w", err)
	}
	return b, nil
}

type nopObserver struct{}

func (nopObserver) Claimed(tracking.Stage, int, time.Duration)              {}
func (nopObserver) TaskDone(tracking.Stage, tracking.Status, time.Duration) {}
func (nopObserver) Committed(tracking.Stage, int, time.Duration)            {}
func (nopObserver) Inflight(tracking.Stage, int)                            {}
func (nopObserver) HandedOff(tracking.Stage, int)                           {}
func (nopObserver) Folded(tracking.Stage, int)                              {}
func (nopObserver) Rescued(int)                                             {}
func (nopObserver) DBError(string)                                          {}
