package httpapi_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/jackc/pgx/v5/pgxpool"
)

// devDSN is the scratch cluster used until the shared test harness lands;
// newStore is the one place to swap for it.
const devDSN = "host=/tmp/devpg user=postgres dbname=postgres"

var dbSeq atomic.Int64

// newStore returns a Store on a fresh, migrated database that is dropped
// when the test ends.
func newStore(t testing.TB) *tracking.Store {
	t.Helper()
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, devDSN)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	name := fmt.Sprintf("httpapi_%d_%d", time.Now().UnixNano(), dbSeq.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		t.Fatalf("create database: %v", err)
	}
	cfg, err := pgxpool.ParseConfig(devDSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		if _, err := admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database: %v", err)
		}
		admin.Close()
	})
	if err := tracking.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return tracking.NewStore(pool, tracking.StoreOptions{})
}
