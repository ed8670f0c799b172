package tracking_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestPlanShapes holds the queue's statements to "Plan shapes" (queue.go):
// whatever the statistics say — taken when the table was empty, or fresh —
// and for custom and generic plans alike, the work of every plan node stays
// proportional to the tasks the statement handles, not to the tasks queued
// or running. Each case would fail on a plan that scans every queued task
// (a claim once did: 15,000 rows to claim 10) or compares every pair of a
// commit's tasks.
func TestPlanShapes(t *testing.T) {
	const queued = 6000
	for _, stats := range []string{"stale", "fresh"} {
		t.Run(stats, func(t *testing.T) {
			ctx := context.Background()
			pool := pgtest.New(t)
			s := tracking.NewStore(pool, tracking.StoreOptions{})
			if _, err := pool.Exec(ctx, `
				ALTER TABLE task_logs SET (autovacuum_enabled = false);
				ALTER TABLE chain_executions SET (autovacuum_enabled = false);
				ANALYZE task_logs, chain_executions`); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < queued; i += 1000 {
				chains := make([]tracking.NewChain, 1000)
				for j := range chains {
					chains[j].Input.ImagePath = fmt.Sprintf("/img/%d.png", i+j)
				}
				if _, err := s.CreateBatch(ctx, tracking.NewBatch{ChunkSize: 10, Chains: chains}); err != nil {
					t.Fatal(err)
				}
			}
			// Many tasks running, as under load: STARTED rows to confuse a
			// status-driven plan.
			running, err := s.Claim(ctx, tracking.StageOCR, "other", 2000, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if stats == "fresh" {
				if _, err := pool.Exec(ctx, `ANALYZE task_logs, chain_executions`); err != nil {
					t.Fatal(err)
				}
			}
			for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
				conn, err := pool.Acquire(ctx)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(conn.Release)
				c := conn.Conn()
				// Seq scans priced out, as on a table of millions of rows (on
				// this small one a scan is cheap, and rightly chosen).
				if _, err := c.Exec(ctx, "SET enable_seqscan = off; SET plan_cache_mode = "+mode); err != nil {
					t.Fatal(err)
				}
				now := time.Now()
				// Claim 15 of the 4,000 still queued: the second chunk's other
				// 5 tasks are looked up by chunk.
				w, rows := planWork(t, c, tracking.ClaimSQLForTest, "text, timestamptz, int, timestamptz, text", string(tracking.StageOCR), now, 15, now.Add(time.Hour), "me")
				checkWork(t, mode+" claim", w, rows)

				// Commit 300 of the running tasks; fail 100 others; renew 300 leases.
				batch := running[:300]
				running = running[300:]
				ids, atts := make([]int64, len(batch)), make([]int32, len(batch))
				res, next, owners := make([]string, len(batch)), make([]string, len(batch)), make([]*string, len(batch))
				times, leases := make([]*time.Time, len(batch)), make([]*time.Time, len(batch))
				folded, last := make([]int32, len(batch)), make([]*string, len(batch))
				for i, c := range batch {
					ids[i], atts[i], res[i], next[i] = c.ID, int32(c.Attempt), "{}", tracking.NewID()
					if i%2 == 0 { // half of them with a task folded
						folded[i], last[i] = 1, &res[i]
					}
				}
				w, rows = planWork(t, c, tracking.SucceedSQLForTest, "bigint[], int[], text[], timestamptz, text[], timestamptz[], timestamptz[], text[], timestamptz[], int[], text[]",
					ids, atts, res, now, next, times, times, owners, leases, folded, last)
				checkWork(t, mode+" succeed", w, rows)

				batch = running[:100]
				running = running[100:]
				ids, atts = make([]int64, len(batch)), make([]int32, len(batch))
				errs, finals, after := make([]string, len(batch)), make([]bool, len(batch)), make([]time.Time, len(batch))
				for i, c := range batch {
					ids[i], atts[i], errs[i], after[i] = c.ID, int32(c.Attempt), "boom", now
				}
				w, rows = planWork(t, c, tracking.FailSQLForTest, "bigint[], int[], text[], bool[], timestamptz[], timestamptz, timestamptz[], timestamptz[]", ids, atts, errs, finals, after, now, times[:100], times[:100])
				checkWork(t, mode+" fail", w, rows)

				ids, atts = make([]int64, 300), make([]int32, 300)
				for i, c := range running[:300] {
					ids[i], atts[i] = c.ID, int32(c.Attempt)
				}
				w, rows = planWork(t, c, tracking.ExtendSQLForTest, "bigint[], int[], timestamptz, timestamptz", ids, atts, now.Add(time.Hour), now)
				checkWork(t, mode+" extend", w, rows)
			}
		})
	}
}

// planWork runs sql as a prepared statement (parameter types types)
// under EXPLAIN ANALYZE and returns the largest number of rows any plan
// node touched (returned, filtered out, or rejected by a join, over all its
// loops), and the rows the statement returned.
func planWork(t *testing.T, c *pgx.Conn, sql, types string, args ...any) (work, rows int) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Exec(ctx, "PREPARE q("+types+") AS "+sql); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = c.Exec(ctx, "DEALLOCATE q") }()
	// EXECUTE takes no bind parameters: the arguments go in as literals.
	lits := make([]string, len(args))
	for i, typ := range strings.Split(types, ",") {
		typ = strings.TrimSpace(typ)
		var lit string
		if err := c.QueryRow(ctx, "SELECT quote_nullable($1::"+typ+"::text) || '::"+typ+"'", args[i]).Scan(&lit); err != nil {
			t.Fatal(err)
		}
		lits[i] = lit
	}
	var out []byte
	if err := c.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE q("+strings.Join(lits, ", ")+")").Scan(&out); err != nil {
		t.Fatal(err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("DOCPIPE_TEST_PLANS") != "" {
		t.Logf("%s", out)
	}
	return plans[0].Plan.work(), int(plans[0].Plan.Rows)
}

type planNode struct {
	Type          string     `json:"Node Type"`
	Rows          float64    `json:"Actual Rows"`
	Loops         float64    `json:"Actual Loops"`
	RemovedFilter float64    `json:"Rows Removed by Filter"`
	RemovedJoin   float64    `json:"Rows Removed by Join Filter"`
	Plans         []planNode `json:"Plans"`
}

func (n planNode) work() int {
	w := int((n.Rows + n.RemovedFilter + n.RemovedJoin) * n.Loops)
	for _, c := range n.Plans {
		w = max(w, c.work())
	}
	return w
}

func checkWork(t *testing.T, what string, work, rows int) {
	t.Helper()
	if rows == 0 {
		t.Errorf("%s: did nothing", what)
	}
	if limit := 10*rows + 200; work > limit {
		t.Errorf("%s: a plan node touched %d rows for %d handled (limit %d): the plan scans what it should look up", what, work, rows, limit)
	}
}
