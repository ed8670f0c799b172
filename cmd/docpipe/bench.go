package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
	"github.com/jackc/pgx/v5/pgxpool"
)

// benchConfig is docpipe bench's settings.
type benchConfig struct {
	common
	Chains       int
	BatchSize    int
	Workers      int
	Transactions int
	RunAhead     bool
	Prefetch     int
	LowRate      int
	LowDuration  time.Duration
	Soak         time.Duration
	SoakRate     int
	Rescue       bool
	Fast         bool
	OCR          string
	CPUProfile   string
	MemProfile   string
	Runs         int
}

func benchCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c benchConfig
	fs := newFlagSet("bench", "bench [flags]", stderr)
	c.register(fs, getenv)
	fs.IntVar(&c.Chains, "chains", 20000, "chains (4 stage tasks each) in the throughput run")
	fs.IntVar(&c.Runs, "runs", 3, "throughput runs (each on emptied tables); the median is reported")
	fs.IntVar(&c.BatchSize, "batch", 1000, "chains per submitted batch in the throughput run")
	fs.IntVar(&c.Workers, "workers", 8, "workers per stage (no-op stages)")
	fs.IntVar(&c.Transactions, "transactions", pipeline.DefaultTransactions(), "most claim and commit transactions the engine runs at once")
	fs.IntVar(&c.Prefetch, "prefetch", 256, "tasks claimed ahead per stage")
	fs.BoolVar(&c.RunAhead, "run-ahead", true, "start a chain's next task before its predecessor's commit (see serve -run-ahead)")
	fs.IntVar(&c.LowRate, "low-rate", 50, "chains per second submitted in the pickup-latency run")
	fs.DurationVar(&c.LowDuration, "low-duration", 10*time.Second, "length of the pickup-latency run")
	fs.DurationVar(&c.Soak, "soak", 0, "length of a steady-load run that reports table bloat (e.g. 10m); 0 skips it")
	fs.IntVar(&c.SoakRate, "soak-rate", 1000, "chains per second submitted during the soak run")
	fs.BoolVar(&c.Rescue, "rescue", false, "also measure how long a dead process's tasks take to be rescued with default leases (~40 s)")
	fs.BoolVar(&c.Fast, "fast", false, "run the private cluster with fsync off (default: durable settings)")
	fs.StringVar(&c.OCR, "ocr", "", "also benchmark the OCR stage against the tesseract CLI on the images in this directory")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a Go CPU profile of the throughput run to this file")
	fs.StringVar(&c.MemProfile, "memprofile", "", "write a Go allocation profile, taken after the throughput run, to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if c.Chains <= 0 || c.BatchSize <= 0 || c.Workers <= 0 || c.LowRate <= 0 || c.Runs <= 0 {
		return fmt.Errorf("%w: -chains, -batch, -workers, -low-rate and -runs must be positive", errUsage)
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	if c.DatabaseURL == "" && getenv("DOCPIPE_DATA_DIR") == "" && !flagSet(fs, "data-dir") {
		// A throwaway cluster, not the user's data directory.
		dir, err := os.MkdirTemp(benchTempBase(), "docpipe-bench-")
		if err != nil {
			return err
		}
		_ = os.Chmod(dir, 0o755)
		defer os.RemoveAll(dir)
		c.DataDir = dir
	}
	db, err := c.openDatabase(ctx, log, 24, c.Fast)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrateUp(ctx, db.Pool, log); err != nil {
		return err
	}
	b := &bench{cfg: c, pool: db.Pool, store: tracking.NewStore(db.Pool, tracking.StoreOptions{}), out: stdout, log: log,
		obs: &benchObserver{}}
	fmt.Fprintf(stdout, "docpipe bench: %d chains, %d workers/stage, prefetch %d, %d transactions, Go %s, %d CPUs, cluster fsync=%v\n",
		c.Chains, c.Workers, c.Prefetch, c.Transactions, goVersion(), numCPU(), !c.Fast || c.DatabaseURL != "")
	if err := b.run(ctx); err != nil {
		return err
	}
	if c.OCR != "" {
		return benchOCR(ctx, c.OCR, db.Pool, stdout, log)
	}
	return nil
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

// benchTempBase is a directory the cluster's OS user can reach.
func benchTempBase() string {
	if os.Geteuid() == 0 {
		return "/tmp"
	}
	return os.TempDir()
}

type bench struct {
	cfg   benchConfig
	pool  *pgxpool.Pool
	store *tracking.Store
	out   io.Writer
	log   *slog.Logger
	obs   *benchObserver
}

// benchObserver counts the tasks handed over by the previous stage's
// commit (the others were claimed).
type benchObserver struct {
	handedOff atomic.Int64
	folded    atomic.Int64
}

func (*benchObserver) Claimed(tracking.Stage, int, time.Duration)              {}
func (o *benchObserver) HandedOff(_ tracking.Stage, n int)                     { o.handedOff.Add(int64(n)) }
func (*benchObserver) Committed(tracking.Stage, int, time.Duration)            {}
func (*benchObserver) TaskDone(tracking.Stage, tracking.Status, time.Duration) {}
func (*benchObserver) Inflight(tracking.Stage, int)                            {}
func (*benchObserver) Rescued(int)                                             {}
func (*benchObserver) DBError(string)                                          {}
func (o *benchObserver) Folded(_ tracking.Stage, n int)                        { o.folded.Add(int64(n)) }

// lowRate submits single-chain batches at a low rate and reports pickup
// and chain latency.
func (b *bench) lowRate(ctx context.Context, tw io.Writer, runAhead bool) error {
	if err := truncateAll(ctx, b.pool); err != nil {
		return err
	}
	e, err := b.engine(30*time.Second, runAhead)
	if err != nil {
		return err
	}
	stop := runEngine(ctx, e)
	tick := time.NewTicker(time.Second / time.Duration(b.cfg.LowRate))
	end := time.Now().Add(b.cfg.LowDuration)
	submitted := 0
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			tick.Stop()
			stop()
			return ctx.Err()
		case <-tick.C:
		}
		if _, err := b.store.CreateBatch(ctx, benchBatch(1, "low-rate")); err != nil {
			tick.Stop()
			stop()
			return err
		}
		e.Wake(tracking.StageOCR)
		submitted++
	}
	tick.Stop()
	if err := waitAllEnded(ctx, b.pool); err != nil {
		stop()
		return err
	}
	stop()
	pick, err := percentiles(ctx, b.pool, `SELECT extract(epoch FROM n.started_at - p.finished_at)
		FROM task_logs n JOIN task_logs p ON p.chain_execution_id = n.chain_execution_id AND p.stage_index = n.stage_index - 1
		WHERE n.stage_index > 0 AND n.status = 'SUCCESS' AND p.status = 'SUCCESS'`)
	if err != nil {
		return err
	}
	what, how := "pickup latency p50/p99", "stage N's end to stage N+1's start, commit included"
	if runAhead {
		what, how = "pickup latency, run ahead, p50/p99", "stage N's end to stage N+1's start, which runs ahead of N's commit"
	}
	fmt.Fprintf(tw, "%s\t%s / %s\t%s, %d chains at %d/s (target <= 5 ms / 25 ms)\n",
		what, ms(pick[0]), ms(pick[1]), how, submitted, b.cfg.LowRate)
	lat, err := percentiles(ctx, b.pool, `SELECT extract(epoch FROM finished_at - created_at) FROM chain_executions WHERE status = 'SUCCESS'`)
	if err != nil {
		return err
	}
	what = "chain latency at low rate p50/p99"
	if runAhead {
		what = "chain latency at low rate, run ahead, p50/p99"
	}
	fmt.Fprintf(tw, "%s\t%s / %s\tsubmission to last stage committed\n", what, ms(lat[0]), ms(lat[1]))
	return nil
}

func (b *bench) engine(lease time.Duration, runAhead bool) (*pipeline.Engine, error) {
	noop := pipeline.StageFunc(func(context.Context, *pipeline.Job) (*pipeline.Output, error) {
		return &pipeline.Output{}, nil
	})
	cfg := pipeline.Config{Queue: b.store, Notifications: tracking.NewListener(b.store, b.log), Logger: b.log,
		Lease: lease, ClaimMax: 1000, CommitMax: 2000, Transactions: b.cfg.Transactions, Observer: b.obs,
		NoRunAhead: !runAhead}
	for _, st := range tracking.DocumentStages {
		cfg.Stages = append(cfg.Stages, pipeline.StageConfig{Stage: st, Run: noop, Workers: b.cfg.Workers, Prefetch: b.cfg.Prefetch})
	}
	return pipeline.New(cfg)
}

// runEngine runs e until stop is called; stop waits for it to end.
func runEngine(ctx context.Context, e *pipeline.Engine) (stop func()) {
	ectx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = e.Run(ectx); close(done) }() // owned: stop waits for done
	return func() { cancel(); <-done }
}

func (b *bench) run(ctx context.Context) error {
	before, err := tableStats(ctx, b.pool)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(b.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tvalue\tnote")

	// 1. Throughput: the whole run queued first, then drained; repeated,
	// each run on emptied tables, and reported as the median (and range):
	// a shared VM's CPU time per unit of work varies by ±10% from run to run.
	var runs []throughputRun
	for i := range b.cfg.Runs {
		if i > 0 {
			if err := truncateAll(ctx, b.pool); err != nil {
				return err
			}
		}
		r, err := b.throughput(ctx, i == 0)
		if err != nil {
			return err
		}
		b.log.Info("throughput run", "run", i+1, "tasks_per_s", r.perSec, "cpu_us_per_task", r.cpu)
		runs = append(runs, r)
	}
	tasks := 4 * b.cfg.Chains
	med := func(f func(throughputRun) float64) (m, lo, hi float64) {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2], v[0], v[len(v)-1]
	}
	rng := func(format string, lo, hi float64) string {
		if len(runs) == 1 {
			return ""
		}
		return fmt.Sprintf(" (runs: "+format+"–"+format+")", lo, hi)
	}
	runsNote := fmt.Sprintf("median of %d runs of %d stage tasks", len(runs), tasks)
	v, lo, hi := med(func(r throughputRun) float64 { return r.perSec })
	fmt.Fprintf(tw, "stage tasks/s\t%.0f%s\t%s (target >= 10000)\n", v, rng("%.0f", lo, hi), runsNote)
	v, lo, hi = med(func(r throughputRun) float64 { return r.cpu })
	self, _, _ := med(func(r throughputRun) float64 { return r.self })
	pg, _, _ := med(func(r throughputRun) float64 { return r.pg })
	fmt.Fprintf(tw, "CPU per stage task\t%.1f µs%s\tdocpipe %.1f µs + postgres %.1f µs, medians (target <= 100)\n", v, rng("%.1f", lo, hi), self, pg)
	var kinds []string
	for k := range runs[0].kinds {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var split []string
	for _, k := range kinds {
		v, _, _ := med(func(r throughputRun) float64 { return r.kinds[k] })
		split = append(split, fmt.Sprintf("%s %.1f", k, v))
	}
	fmt.Fprintf(tw, "postgres CPU by process	%s µs	medians; a process that exited during a run (a pooled connection) counts in its postmaster\n", strings.Join(split, ", "))
	v, _, _ = med(func(r throughputRun) float64 { return r.wal })
	fpi, _, _ := med(func(r throughputRun) float64 { return r.fpi })
	fmt.Fprintf(tw, "WAL per stage task\t%.0f bytes\twrite volume: what the tables and indexes cost per task; %.0f full-page images in a run\n", v, fpi)
	v, _, _ = med(func(r throughputRun) float64 { return r.handedOff })
	fmt.Fprintf(tw, "tasks handed off directly\t%.0f%%\tthe rest claimed; run ahead of the commit before them, or created STARTED by it\n", 100*v)
	v, _, _ = med(func(r throughputRun) float64 { return r.folded })
	fmt.Fprintf(tw, "tasks folded\t%.0f%%\tran ahead and recorded by the commit before them (created SUCCESS, no commit of their own)\n", 100*v)
	p50, _, _ := med(func(r throughputRun) float64 { return r.lat[0] })
	p99, _, _ := med(func(r throughputRun) float64 { return r.lat[1] })
	fmt.Fprintf(tw, "chain latency under load p50/p99\t%s / %s\tfirst stage start to last stage end, queue drained at full speed\n", ms(p50), ms(p99))

	// 2. Pickup latency at a low submit rate: as configured, and without
	// running ahead, where each stage starts only after the commit of the
	// one before it.
	if err := b.lowRate(ctx, tw, b.cfg.RunAhead); err != nil {
		return err
	}
	if b.cfg.RunAhead {
		if err := b.lowRate(ctx, tw, false); err != nil {
			return err
		}
	}

	// 3. Rescue of a dead process's tasks with the default lease.
	if b.cfg.Rescue {
		if _, err := b.store.CreateBatch(ctx, benchBatch(10, "rescue")); err != nil {
			return err
		}
		if _, err := b.store.Claim(ctx, tracking.StageOCR, "dead-process", 10, 30*time.Second); err != nil {
			return err
		}
		e, err := pipeline.New(pipeline.Config{Queue: b.store, Logger: b.log, Stages: []pipeline.StageConfig{{Stage: tracking.StageOCR,
			Run: pipeline.StageFunc(func(context.Context, *pipeline.Job) (*pipeline.Output, error) { return nil, nil })}}})
		if err != nil {
			return err
		}
		t0 := time.Now()
		stop := runEngine(ctx, e)
		for {
			var left int
			if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM task_logs WHERE owner = 'dead-process' AND status IN ('STARTED', 'RUNNING')`).Scan(&left); err != nil {
				stop()
				return err
			}
			if left == 0 {
				break
			}
			if !sleep(ctx, 100*time.Millisecond) {
				stop()
				return ctx.Err()
			}
		}
		stop()
		fmt.Fprintf(tw, "dead process's tasks rescued after\t%s\tdefault lease 30 s, rescue every 10 s (target <= 60 s)\n", time.Since(t0).Round(100*time.Millisecond))
	}

	// 4. Steady load: does the queue table stay bounded?
	if b.cfg.Soak > 0 {
		if err := b.soak(ctx, tw); err != nil {
			return err
		}
	}
	after, err := tableStats(ctx, b.pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "task_logs size before/after\t%s / %s\tdead tuples %d / %d\n", mb(before.size), mb(after.size), before.dead, after.dead)
	return tw.Flush()
}

// soak submits chains at a steady rate for the soak duration and prints the
// queue table's size and dead tuples every minute.
func (b *bench) soak(ctx context.Context, tw *tabwriter.Writer) error {
	e, err := b.engine(30*time.Second, b.cfg.RunAhead)
	if err != nil {
		return err
	}
	stop := runEngine(ctx, e)
	defer stop()
	const perBatch = 100
	tick := time.NewTicker(time.Second * perBatch / time.Duration(b.cfg.SoakRate))
	defer tick.Stop()
	start := time.Now()
	report := start.Add(time.Minute)
	first, err := tableStats(ctx, b.pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(b.out, "soak: %d chains/s for %s\n", b.cfg.SoakRate, b.cfg.Soak)
	fmt.Fprintf(b.out, "  %6s  %10s  %10s  %10s  %12s  %10s\n", "min", "task_logs", "live rows", "dead", "claimable", "claim idx")
	for time.Since(start) < b.cfg.Soak {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if _, err := b.store.CreateBatch(ctx, benchBatch(perBatch, "soak")); err != nil {
			return err
		}
		if time.Now().After(report) {
			report = report.Add(time.Minute)
			st, err := tableStats(ctx, b.pool)
			if err != nil {
				return err
			}
			fmt.Fprintf(b.out, "  %6.0f  %10s  %10d  %10d  %12d  %10s\n", time.Since(start).Minutes(), mb(st.size), st.live, st.dead, st.claimable, mb(st.claimIdx))
		}
	}
	if err := waitAllEnded(ctx, b.pool); err != nil {
		return err
	}
	last, err := tableStats(ctx, b.pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(tw, "soak %s: claimable-index size start/end\t%s / %s\ttask_logs dead tuples %d / %d\n", b.cfg.Soak, mb(first.claimIdx), mb(last.claimIdx), first.dead, last.dead)
	return nil
}

func benchBatch(n int, name string) tracking.NewBatch {
	nb := tracking.NewBatch{Name: name, Chains: make([]tracking.NewChain, n)}
	for i := range nb.Chains {
		nb.Chains[i].Input.ImagePath = "/bench/" + strconv.Itoa(i) + ".png"
	}
	return nb
}

// waitAllEnded waits until every batch has ended. It reads the small
// batch table, not the queue, so that watching costs the run nothing.
func waitAllEnded(ctx context.Context, pool *pgxpool.Pool) error {
	for {
		var open int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM batch_executions WHERE status NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')`).Scan(&open); err != nil {
			return fmt.Errorf("progress: %w", err)
		}
		if open == 0 {
			return nil
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// percentiles returns the p50 and p99 of a query's single float column (seconds).
func percentiles(ctx context.Context, pool *pgxpool.Pool, q string) ([2]float64, error) {
	rows, err := pool.Query(ctx, q)
	if err != nil {
		return [2]float64{}, fmt.Errorf("percentiles: %w", err)
	}
	var vals []float64
	for rows.Next() {
		var v float64
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return [2]float64{}, err
		}
		vals = append(vals, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return [2]float64{}, err
	}
	if len(vals) == 0 {
		return [2]float64{}, errors.New("percentiles: no rows")
	}
	slices.Sort(vals)
	at := func(p float64) float64 { return vals[min(len(vals)-1, int(p*float64(len(vals))))] }
	return [2]float64{at(0.50), at(0.99)}, nil
}

func goVersion() string { return runtime.Version() }
func numCPU() int       { return runtime.NumCPU() }

func ms(sec float64) string { return fmt.Sprintf("%.2f ms", sec*1000) }
func mb(b int64) string     { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

type stats struct {
	size, claimIdx        int64
	live, dead, claimable int64
}

func tableStats(ctx context.Context, pool *pgxpool.Pool) (stats, error) {
	var s stats
	err := pool.QueryRow(ctx, `SELECT pg_total_relation_size('task_logs'), pg_relation_size('task_logs_claimable_idx'),
		coalesce((SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'task_logs'), 0),
		coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'task_logs'), 0),
		(SELECT count(*) FROM task_logs WHERE status IN ('PENDING', 'RETRY'))`).Scan(&s.size, &s.claimIdx, &s.live, &s.dead, &s.claimable)
	if err != nil {
		return s, fmt.Errorf("table stats: %w", err)
	}
	return s, nil
}

// cpuTimes is CPU used so far by this process and by every PostgreSQL
// server process on the machine (those running, plus the exited children
// the postmaster has reaped), the latter also per kind of process.
type cpuTimes struct {
	self, postgres time.Duration
	kinds          map[string]time.Duration // pgKind → CPU
}

// pgKind names a PostgreSQL process by the title it sets itself
// ("postgres: walwriter", "postgres: user db [local] idle", …). The
// postmaster's own figure includes its exited children: autovacuum
// workers, mostly.
func pgKind(cmdline []byte) string {
	title, ok := strings.CutPrefix(string(cmdline), "postgres: ")
	if !ok {
		return "postmaster + exited children"
	}
	switch {
	case strings.HasPrefix(title, "autovacuum worker"):
		return "autovacuum"
	case strings.HasPrefix(title, "walwriter"), strings.HasPrefix(title, "checkpointer"),
		strings.HasPrefix(title, "background writer"), strings.HasPrefix(title, "autovacuum launcher"),
		strings.HasPrefix(title, "logical replication launcher"), strings.HasPrefix(title, "stats collector"):
		return "background"
	}
	return "backends"
}

func readCPU() (cpuTimes, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuTimes{}, fmt.Errorf("getrusage: %w", err)
	}
	t := cpuTimes{self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), kinds: map[string]time.Duration{}}
	procs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return t, err
	}
	const tick = 10 * time.Millisecond // USER_HZ = 100 on Linux
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		s := string(b)
		open, closeIdx := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closeIdx < open {
			continue
		}
		if comm := s[open+1 : closeIdx]; comm != "postgres" {
			continue
		}
		f := strings.Fields(s[closeIdx+2:])
		// Fields after comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
		if len(f) < 15 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		cu, _ := strconv.ParseInt(f[13], 10, 64)
		cs, _ := strconv.ParseInt(f[14], 10, 64)
		d := time.Duration(u+st+cu+cs) * tick
		t.postgres += d
		cmdline, _ := os.ReadFile(strings.TrimSuffix(p, "stat") + "cmdline")
		t.kinds[pgKind(cmdline)] += d
	}
	return t, nil
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func truncateAll(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, `TRUNCATE ocr_text_boxes, ocr_executions, task_logs, chain_executions, batch_chunks, batch_executions`)
	return err
}

// throughputRun is what one drain of a queued run measured.
type throughputRun struct {
	perSec, cpu, self, pg float64 // tasks/s; CPU µs per task: total, docpipe, postgres
	wal, fpi, handedOff   float64 // WAL bytes per task; full-page images; share of tasks handed off
	folded                float64 // share of tasks folded into an earlier task's commit
	lat                   [2]float64
	kinds                 map[string]float64 // postgres CPU µs per task, per pgKind
}

// throughput queues b.cfg.Chains chains, drains them with a fresh engine
// and measures. The first run may write the CPU and memory profiles.
func (b *bench) throughput(ctx context.Context, profile bool) (throughputRun, error) {
	var r throughputRun
	for i := 0; i < b.cfg.Chains; i += b.cfg.BatchSize {
		n := min(b.cfg.BatchSize, b.cfg.Chains-i)
		if _, err := b.store.CreateBatch(ctx, benchBatch(n, fmt.Sprintf("bench-%d", i))); err != nil {
			return r, err
		}
	}
	b.obs.handedOff.Store(0)
	b.obs.folded.Store(0)
	e, err := b.engine(30*time.Second, b.cfg.RunAhead)
	if err != nil {
		return r, err
	}
	cpu0, err := readCPU()
	if err != nil {
		return r, err
	}
	var lsn0 string
	var fpi0 float64
	if err := b.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, wal_fpi FROM pg_stat_wal`).Scan(&lsn0, &fpi0); err != nil {
		return r, err
	}
	if profile && b.cfg.CPUProfile != "" {
		f, err := os.Create(b.cfg.CPUProfile)
		if err != nil {
			return r, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return r, err
		}
	}
	t0 := time.Now()
	stop := runEngine(ctx, e)
	if err := waitAllEnded(ctx, b.pool); err != nil {
		stop()
		return r, err
	}
	elapsed := time.Since(t0)
	if profile && b.cfg.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	if profile && b.cfg.MemProfile != "" {
		if err := writeHeapProfile(b.cfg.MemProfile); err != nil {
			stop()
			return r, err
		}
	}
	cpu1, _ := readCPU()
	stop()
	var wal, fpi float64
	if err := b.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn), wal_fpi FROM pg_stat_wal`, lsn0).Scan(&wal, &fpi); err != nil {
		return r, err
	}
	tasks := float64(4 * b.cfg.Chains)
	self, pg := cpu1.self-cpu0.self, cpu1.postgres-cpu0.postgres
	r.perSec = tasks / elapsed.Seconds()
	r.self, r.pg = float64(self.Microseconds())/tasks, float64(pg.Microseconds())/tasks
	r.cpu = r.self + r.pg
	r.kinds = map[string]float64{}
	for k, d := range cpu1.kinds {
		r.kinds[k] = float64((d - cpu0.kinds[k]).Microseconds()) / tasks
	}
	r.wal, r.fpi = wal/tasks, fpi-fpi0
	r.handedOff = float64(b.obs.handedOff.Load()) / tasks
	r.folded = float64(b.obs.folded.Load()) / tasks
	r.lat, err = percentiles(ctx, b.pool, `SELECT extract(epoch FROM finished_at - started_at) FROM chain_executions WHERE status = 'SUCCESS'`)
	return r, err
}
