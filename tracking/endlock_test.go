package tracking_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
)

// TestConcurrentChainEndsNeverDeadlock: committers that each end chains
// of the same batches and chunks, in shuffled order and at once, must
// never deadlock (a deadlock costs the database's deadlock_timeout and a
// retry of the whole commit), and every chunk and batch counter ends equal
// to its chains.
func TestConcurrentChainEndsNeverDeadlock(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t)
	s := tracking.NewStore(pool, tracking.StoreOptions{})
	var claimed []tracking.Claimed
	for range 8 {
		nb := tracking.NewBatch{Stages: []tracking.Stage{tracking.StageOCR}, ChunkSize: 2, Chains: images(240)}
		if _, err := s.CreateBatch(ctx, nb); err != nil {
			t.Fatal(err)
		}
	}
	for len(claimed) < 1920 {
		cl, err := s.Claim(ctx, tracking.StageOCR, "me", 500, time.Hour)
		if err != nil || len(cl) == 0 {
			t.Fatalf("claim: %v, %d", err, len(cl))
		}
		claimed = append(claimed, cl...)
	}
	// Each committer takes every 4th task, so that all of them end chains
	// of every batch, and chunks are shared between committers.
	rand.Shuffle(len(claimed), func(i, j int) { claimed[i], claimed[j] = claimed[j], claimed[i] })
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 4 {
		wg.Go(func() {
			var mine []tracking.Claimed
			for i := w; i < len(claimed); i += 4 {
				mine = append(mine, claimed[i])
			}
			for len(mine) > 0 {
				n := min(len(mine), 1+rand.IntN(100))
				outs := make([]tracking.Outcome, n)
				for i := range outs {
					outs[i] = tracking.Outcome{Task: &mine[i], Result: json.RawMessage(`{}`)}
				}
				if _, err := s.Complete(ctx, outs); err != nil {
					errs <- err
					return
				}
				mine = mine[n:]
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent commits: %v", err)
	}
	var bad int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM batch_executions WHERE status <> 'SUCCESS' OR completed_images <> 240 OR completed_chunks <> 120`).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Fatalf("%d batches not SUCCESS with every chain and chunk counted", bad)
	}
}
