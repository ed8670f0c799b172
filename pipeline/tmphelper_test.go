package pipeline_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/jackc/pgx/v5/pgxpool"
)

var dbSeq atomic.Int64

func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, os.Getenv("DEV_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("t_%d_%d", time.Now().UnixNano(), dbSeq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, os.Getenv("DEV_DATABASE_URL")+" dbname="+name)
	if err != nil {
		t.Fatal(err)
	}
	if err := tracking.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close(); admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); admin.Close() })
	return pool
}

func otherPool(t testing.TB, p *pgxpool.Pool) *pgxpool.Pool {
	t.Helper()
	q, err := pgxpool.NewWithConfig(context.Background(), p.Config().Copy())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}
