package tracking_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
)

// backendCPU is the CPU time a local server process has used so far.
func backendCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Skipf("PostgreSQL's backend is not a local process: %v", err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// BenchmarkStatements times the engine's claim and commit statements
// alone: one session, no concurrency, 160 tasks a statement, every chain
// through its four stages by direct hand-off. It reports PostgreSQL's CPU
// per stage task (the backend's own accounting), the floor that the
// engine's concurrent transactions add their contention to. An op is one
// chain; batch creation is not timed.
func BenchmarkStatements(b *testing.B) {
	ctx := context.Background()
	pool := pgtest.Connect(b, pgtest.NewDSN(b)+" pool_max_conns=1")
	var pid int
	if err := pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		b.Fatal(err)
	}
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	const per = 160
	n := b.N
	for i := 0; i < n; i += 1000 {
		nb := tracking.NewBatch{Name: "bench", Chains: images(min(1000, n-i))}
		if _, err := store.CreateBatch(ctx, nb); err != nil {
			b.Fatal(err)
		}
	}
	const owner = "bench:1:000000"
	b.ResetTimer()
	cpu0 := backendCPU(b, pid)
	var cur []tracking.Claimed
	for len(cur) < n {
		cs, err := store.Claim(ctx, tracking.DocumentStages[0], owner, per, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if len(cs) == 0 {
			b.Fatalf("claimed %d of %d tasks", len(cur), n)
		}
		cur = append(cur, cs...)
	}
	tasks := len(cur)
	for len(cur) > 0 {
		var next []tracking.Claimed
		for i := 0; i < len(cur); i += per {
			part := cur[i:min(i+per, len(cur))]
			outs := make([]tracking.Outcome, len(part))
			for j := range part {
				outs[j] = tracking.Outcome{Task: &part[j], NextOwner: owner, NextLease: time.Minute}
			}
			res, err := store.Complete(ctx, outs)
			if err != nil {
				b.Fatal(err)
			}
			if res.Applied != len(part) {
				b.Fatalf("commit applied %d of %d", res.Applied, len(part))
			}
			for _, cs := range res.Started {
				next = append(next, cs...)
			}
		}
		tasks += len(next)
		cur = next
	}
	b.StopTimer()
	if want := n * len(tracking.DocumentStages); tasks != want {
		b.Fatalf("ran %d stage tasks, want %d", tasks, want)
	}
	b.ReportMetric(float64((backendCPU(b, pid)-cpu0).Microseconds())/float64(tasks), "pg-µs/task")
}
