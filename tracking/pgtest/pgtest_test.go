package pgtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { Main(m) }

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	var ok bool
	err := current.admin.QueryRow(t.Context(), "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func tableCount(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	err := pool.QueryRow(t.Context(), "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('batch_executions', 'chain_executions', 'task_logs', 'ocr_executions', 'ocr_text_boxes')").Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEachTestGetsItsOwnMigratedDatabaseDroppedAfter(t *testing.T) {
	var names [2]string
	for i := range names {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			pool := New(t)
			if err := pool.QueryRow(t.Context(), "SELECT current_database()").Scan(&names[i]); err != nil {
				t.Fatal(err)
			}
			if n := tableCount(t, pool); n != 5 {
				t.Errorf("%d of the 5 SPEC.md tables, want a migrated database", n)
			}
			// Writes stay in this test's database.
			if _, err := pool.Exec(t.Context(), "INSERT INTO batch_executions (batch_id) VALUES ('b1')"); err != nil {
				t.Fatal(err)
			}
			// A session still open at the end must not stop the drop.
			conn, err := pgx.Connect(t.Context(), WithDatabase(current.adminDSN, names[i]))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })
		})
	}
	if names[0] == names[1] {
		t.Fatalf("two tests shared database %s", names[0])
	}
	for _, name := range names {
		if databaseExists(t, name) {
			t.Errorf("database %s not dropped after its test", name)
		}
	}
}

func TestParallelTests(t *testing.T) {
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			pool := New(t)
			if _, err := pool.Exec(t.Context(), "INSERT INTO batch_executions (batch_id) VALUES ('same-id-everywhere')"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewEmptyDSNHasNoSchema(t *testing.T) {
	pool := Connect(t, NewEmptyDSN(t))
	if n := tableCount(t, pool); n != 0 {
		t.Errorf("%d docpipe tables in an empty database", n)
	}
}

func TestNewClusterSurvivesRestart(t *testing.T) {
	c, dsn := NewCluster(t)
	pool := Connect(t, dsn)
	if n := tableCount(t, pool); n != 5 {
		t.Fatalf("%d of the 5 SPEC.md tables, want a migrated database", n)
	}
	if err := c.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(t.Context()); err == nil {
		t.Fatal("ping succeeded with the cluster stopped")
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The same pool reconnects to the restarted server.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if n := tableCount(t, pool); n != 5 {
		t.Fatalf("after restart: %d tables", n)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"postgres://u:p@h:5433/old?sslmode=disable", "postgres://u:p@h:5433/new?sslmode=disable"},
		{"postgresql:///old?host=/tmp/s", "postgresql:///new?host=/tmp/s"},
		{"postgres://h", "postgres://h/new"},
		{"host=/tmp/s dbname=old", "host=/tmp/s dbname=old dbname='new'"},
	}
	for _, tt := range tests {
		got := WithDatabase(tt.dsn, "new")
		if got != tt.want {
			t.Errorf("WithDatabase(%q) = %q, want %q", tt.dsn, got, tt.want)
		}
		cfg, err := pgx.ParseConfig(got)
		if err != nil {
			t.Errorf("%q: %v", got, err)
			continue
		}
		if cfg.Database != "new" {
			t.Errorf("%q connects to %q", got, cfg.Database)
		}
	}
}
