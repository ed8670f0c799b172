package pipeline_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
)

// TestPostgresRestartMidBatch stops PostgreSQL while a batch runs and
// starts it again: the engine logs, waits, reconnects and finishes the
// batch with nothing lost or counted twice.
func TestPostgresRestartMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a cluster")
	}
	cluster, dsn := pgtest.NewCluster(t)
	pool := pgtest.Connect(t, dsn)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	sleepy := func(ctx context.Context, j *pipeline.Job) (*pipeline.Output, error) {
		select {
		case <-time.After(time.Duration(1+rand.IntN(3)) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return noop(ctx, j)
	}
	start(t, engineFor(t, store, 4, sleepy, nil))
	b := submit(t, store, 400, 10, nil)

	// Let it get going, then take the database away mid-batch.
	deadline := time.Now().Add(time.Minute)
	for {
		var done int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM task_logs WHERE status = 'SUCCESS'`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done >= 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no progress before the restart")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx := context.Background()
	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the engine keeps failing to claim and commit meanwhile
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b = waitBatch(t, pool, store, b.BatchID, 2*time.Minute)
	if b.Status != tracking.StatusSuccess || b.CompletedImages != 400 {
		t.Fatalf("batch %s", fmtBatch(b))
	}
	checkInvariants(t, pool)
}
