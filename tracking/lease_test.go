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

// TestLeaseRenewalNeverDeadlocksWithCommits renews the leases of every
// claimed task, in shuffled order and over and over, while four committers
// finish the same tasks in shuffled chunks: no statement may fail (a
// deadlock is an error), and every task ends SUCCESS.
func TestLeaseRenewalNeverDeadlocksWithCommits(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t)
	s := tracking.NewStore(pool, tracking.StoreOptions{})
	nb := tracking.NewBatch{Stages: []tracking.Stage{tracking.StageOCR}, ChunkSize: 1000, Chains: images(800)}
	if _, err := s.CreateBatch(ctx, nb); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.Claim(ctx, tracking.StageOCR, "me", 1000, time.Minute)
	if err != nil || len(claimed) != 800 {
		t.Fatalf("claim: %v %d", err, len(claimed))
	}
	rand.Shuffle(len(claimed), func(i, j int) { claimed[i], claimed[j] = claimed[j], claimed[i] })

	stop := make(chan struct{})
	errs := make(chan error, 100)
	var renewers sync.WaitGroup
	for range 2 {
		renewers.Go(func() {
			refs := make([]tracking.TaskRef, len(claimed))
			for i, c := range claimed {
				refs[i] = tracking.TaskRef{ID: c.ID, Attempt: c.Attempt}
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				rand.Shuffle(len(refs), func(i, j int) { refs[i], refs[j] = refs[j], refs[i] })
				if _, err := s.ExtendLeases(ctx, refs, time.Minute); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var committers sync.WaitGroup
	for w := range 4 {
		committers.Go(func() {
			mine := claimed[w*200 : (w+1)*200]
			for len(mine) > 0 {
				n := min(len(mine), 10+rand.IntN(30))
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
	committers.Wait()
	close(stop)
	renewers.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent renewal and commit: %v", err)
	}
	var done int
	pool.QueryRow(ctx, `SELECT count(*) FROM task_logs WHERE status = 'SUCCESS'`).Scan(&done)
	if done != 800 {
		t.Fatalf("%d tasks SUCCESS, want 800", done)
	}
}
