package pipeline_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Environment of a child engine process (the test binary re-executed).
const (
	envChild  = "DOCPIPE_TEST_CHILD"
	envDSN    = "DOCPIPE_TEST_CHILD_DSN"
	envOwner  = "DOCPIPE_TEST_CHILD_OWNER"
	envStages = "DOCPIPE_TEST_CHILD_STAGES" // comma-separated task names; empty: all
	envNoPoll = "DOCPIPE_TEST_CHILD_NOPOLL" // "1": poll once an hour, so only NOTIFY wakes it
)

func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(runChild())
	}
	pgtest.Main(m)
}

// runChild runs an engine with short-sleeping no-op stages until SIGTERM
// (graceful: exit 0) or SIGKILL.
func runChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv(envDSN))
	if err != nil {
		return 3
	}
	defer pool.Close()
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	sleepy := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		select {
		case <-time.After(time.Duration(500+rand.IntN(1500)) * time.Microsecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &pipeline.Output{Result: map[string]any{"by": os.Getenv(envOwner), "attempt": j.Attempt}}, nil
	}
	cfg := pipeline.Config{Queue: store, Notifications: tracking.NewListener(store, nil), Owner: os.Getenv(envOwner),
		Lease: time.Second, RescueEvery: 200 * time.Millisecond, PollInterval: 100 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second, Backoff: func(int) time.Duration { return 50 * time.Millisecond }}
	if os.Getenv(envNoPoll) == "1" {
		cfg.PollInterval = time.Hour
	}
	if os.Getenv("DOCPIPE_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("owner", cfg.Owner)
	}
	only := os.Getenv(envStages)
	for _, st := range append(tracking.DocumentStages, tracking.StageSummary) {
		if only != "" && !strings.Contains(","+only+",", ","+string(st)+",") {
			continue
		}
		cfg.Stages = append(cfg.Stages, pipeline.StageConfig{Stage: st, Run: pipeline.StageFunc(sleepy), Workers: 4})
	}
	e, err := pipeline.New(cfg)
	if err != nil {
		return 4
	}
	if err := e.Run(ctx); err != nil {
		return 5
	}
	return 0
}

// startChild starts a child engine on the test's database, with extra
// environment (envStages, envNoPoll) if given.
func startChild(t *testing.T, pool *pgxpool.Pool, owner string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), envChild+"=1", envDSN+"="+pool.Config().ConnString(), envOwner+"="+owner), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// TestCrashRecovery kills engine processes with SIGKILL at random moments,
// twelve times during one batch, restarting each time; at the end every
// chain has ended exactly once, no stage result was committed twice, and
// every counter equals its rows.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test is long")
	}
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	b := submit(t, store, 3000, 10, nil)
	const kills = 12
	for i := range kills {
		cmd := startChild(t, pool, "crashing-"+strconv.Itoa(i))
		time.Sleep(time.Duration(150+rand.IntN(250)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if got, _ := store.Batch(context.Background(), b.BatchID); got.Status.Terminal() {
			t.Fatalf("batch ended after only %d kills: make it bigger", i+1)
		}
	}
	var leased, done int
	pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE status IN ('STARTED', 'RUNNING')),
		count(*) FILTER (WHERE status = 'SUCCESS') FROM task_logs`).Scan(&leased, &done)
	t.Logf("after %d kills: %d tasks done, %d left leased by dead processes", kills, done, leased)
	if done == 0 {
		t.Fatal("no progress between kills")
	}
	final := startChild(t, pool, "survivor")
	b = waitBatch(t, pool, store, b.BatchID, 3*time.Minute)
	_ = final.Process.Signal(syscall.SIGTERM)
	if err := final.Wait(); err != nil {
		t.Errorf("survivor did not exit cleanly: %v", err)
	}
	if b.Status != tracking.StatusSuccess || b.CompletedImages != 3000 {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	var rescued int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM task_logs WHERE retries > 0`).Scan(&rescued)
	t.Logf("%d tasks were rescued after their process was killed", rescued)
	checkInvariants(t, pool)
}

// TestTwoProcessesShareABatch: two engine processes on one database split
// a batch's work; no task is committed by both; SIGTERM exits 0.
func TestTwoProcessesShareABatch(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	a := startChild(t, pool, "proc-a")
	bproc := startChild(t, pool, "proc-b")
	b := submit(t, store, 1000, 10, nil)
	b = waitBatch(t, pool, store, b.BatchID, 2*time.Minute)
	for _, c := range []*exec.Cmd{a, bproc} {
		_ = c.Process.Signal(syscall.SIGTERM)
		if err := c.Wait(); err != nil {
			t.Errorf("graceful exit: %v", err)
		}
	}
	if b.Status != tracking.StatusSuccess {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	var byA, byB, other int
	pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE owner = 'proc-a'), count(*) FILTER (WHERE owner = 'proc-b'),
		count(*) FILTER (WHERE owner NOT IN ('proc-a', 'proc-b') OR result->>'by' <> owner)
		FROM task_logs WHERE status = 'SUCCESS'`).Scan(&byA, &byB, &other)
	t.Logf("proc-a committed %d tasks, proc-b %d", byA, byB)
	if byA < 400 || byB < 400 || other != 0 {
		t.Fatalf("work not split between the two processes: a=%d b=%d other=%d", byA, byB, other)
	}
	checkInvariants(t, pool)
}

// TestStagesSplitAcrossProcesses: one process runs only OCR, another the
// other stages, and neither polls: every hand-off between them travels by
// LISTEN/NOTIFY, and each stage's tasks are committed by its process only.
func TestStagesSplitAcrossProcesses(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	rest := []string{string(tracking.StageLLM), string(tracking.StageLayout), string(tracking.StageExcel), string(tracking.StageSummary)}
	ocrProc := startChild(t, pool, "ocr-only", envStages+"="+string(tracking.StageOCR), envNoPoll+"=1")
	restProc := startChild(t, pool, "the-rest", envStages+"="+strings.Join(rest, ","), envNoPoll+"=1")
	time.Sleep(500 * time.Millisecond) // both are listening
	b := submit(t, store, 200, 10, nil)
	b = waitBatch(t, pool, store, b.BatchID, time.Minute)
	for _, c := range []*exec.Cmd{ocrProc, restProc} {
		_ = c.Process.Signal(syscall.SIGTERM)
		if err := c.Wait(); err != nil {
			t.Errorf("graceful exit: %v", err)
		}
	}
	if b.Status != tracking.StatusSuccess {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	var wrong int
	pool.QueryRow(context.Background(), `SELECT count(*) FROM task_logs WHERE status = 'SUCCESS'
		AND (task_name = $1) <> (owner = 'ocr-only')`, string(tracking.StageOCR)).Scan(&wrong)
	if wrong != 0 {
		t.Fatalf("%d tasks committed by the process that does not run their stage", wrong)
	}
	checkInvariants(t, pool)
}
