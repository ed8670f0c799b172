package pipeline_test

import (
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"go.uber.org/goleak"
)

// TestEngineLeavesNoGoroutines: after Run returns, every goroutine the
// engine started (claimers, workers, committers, lease renewal, rescuer,
// listener) has ended.
func TestEngineLeavesNoGoroutines(t *testing.T) {
	pool := newPool(t)
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	before := goleak.IgnoreCurrent() // the pool's own goroutines live until the test ends
	e := engineFor(t, store, 4, noop, nil)
	stop := start(t, e)
	b := submit(t, store, 50, 10, nil)
	waitBatch(t, pool, store, b.BatchID, time.Minute)
	stop()
	goleak.VerifyNone(t, before)
}
