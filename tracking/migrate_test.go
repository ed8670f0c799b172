package tracking_test

import (
	"context"
	"errors"
	"io/fs"
	"sync"
	"testing"

	"github.com/docpipe/docpipe/migrations"
	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"
)

// migrationCount is the number of embedded migrations.
func migrationCount(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations embedded: %v", err)
	}
	return len(files)
}

// schemaSnapshot describes every column, index, constraint, trigger and
// function of the public schema (goose's table excepted), one sorted line each.
func schemaSnapshot(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var s *string
	err := pool.QueryRow(t.Context(), `
		SELECT string_agg(x, E'\n' ORDER BY x) FROM (
			SELECT format('column %s.%s %s(%s) null=%s default=%s', table_name, column_name, data_type,
			              character_maximum_length, is_nullable, column_default) AS x
			FROM information_schema.columns
			WHERE table_schema = 'public' AND table_name <> 'goose_db_version'
			UNION ALL
			SELECT format('index %s', indexdef) FROM pg_indexes
			WHERE schemaname = 'public' AND tablename <> 'goose_db_version'
			UNION ALL
			SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) FROM pg_constraint
			WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'goose_db_version'
			UNION ALL
			SELECT format('trigger %s', pg_get_triggerdef(oid)) FROM pg_trigger WHERE NOT tgisinternal
			UNION ALL
			SELECT format('function %s', oid::regprocedure) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
			UNION ALL
			SELECT format('reloptions %s %s', oid::regclass, reloptions) FROM pg_class
			WHERE relnamespace = 'public'::regnamespace AND reloptions IS NOT NULL
		) s`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		return ""
	}
	return *s
}

// leftovers lists what the migrations could have left in the public
// schema: relations (tables, sequences, views, indexes), functions and
// types, goose's own table excepted.
func leftovers(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `
		SELECT relkind::text || ' ' || relname FROM pg_class
		WHERE relnamespace = 'public'::regnamespace AND relname NOT LIKE 'goose_db_version%'
		UNION ALL
		SELECT 'function ' || oid::regprocedure FROM pg_proc WHERE pronamespace = 'public'::regnamespace
		UNION ALL
		SELECT 'type ' || typname FROM pg_type
		WHERE typnamespace = 'public'::regnamespace AND typrelid = 0 AND typelem = 0
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func newMigrator(t *testing.T, pool *pgxpool.Pool) *tracking.Migrator {
	t.Helper()
	m, err := tracking.NewMigrator(pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMigrateUpDownUp(t *testing.T) {
	pool := pgtest.Connect(t, pgtest.NewEmptyDSN(t))
	m := newMigrator(t, pool)
	ctx := t.Context()
	want := migrationCount(t)

	if got := leftovers(t, pool); len(got) != 0 {
		t.Fatalf("the empty database is not empty: %v", got)
	}
	n, err := m.Up(ctx)
	if err != nil || n != want {
		t.Fatalf("Up: applied %d, %v; want %d", n, err, want)
	}
	up := schemaSnapshot(t, pool)
	if up == "" {
		t.Fatal("Up created nothing")
	}
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied {
			t.Errorf("migration %d (%s) not applied after Up", s.Version, s.Name)
		}
	}
	if n, err := m.Up(ctx); err != nil || n != 0 {
		t.Errorf("second Up: applied %d, %v; want 0, nil", n, err)
	}

	// Down one at a time, to nothing.
	for i := range want {
		if err := m.Down(ctx); err != nil {
			t.Fatalf("Down %d: %v", i+1, err)
		}
	}
	if err := m.Down(ctx); !errors.Is(err, goose.ErrNoNextVersion) {
		t.Errorf("Down with nothing applied: got %v, want ErrNoNextVersion", err)
	}
	if v, err := m.Version(ctx); err != nil || v != 0 {
		t.Errorf("Version after Down: %d, %v; want 0", v, err)
	}
	if got := leftovers(t, pool); len(got) != 0 {
		t.Errorf("Down left behind: %v", got)
	}

	if n, err := m.Up(ctx); err != nil || n != want {
		t.Fatalf("Up again: applied %d, %v; want %d", n, err, want)
	}
	if again := schemaSnapshot(t, pool); again != up {
		t.Errorf("schema after up, down, up differs from the first up:\nfirst:\n%s\nagain:\n%s", up, again)
	}
	if err := m.DownTo(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := leftovers(t, pool); len(got) != 0 {
		t.Errorf("DownTo(0) left behind: %v", got)
	}
}

// Two daemons starting at once on an empty database: both succeed and
// every migration is applied exactly once.
func TestConcurrentMigrateUp(t *testing.T) {
	for range 3 {
		dsn := pgtest.NewEmptyDSN(t)
		pools := []*pgxpool.Pool{pgtest.Connect(t, dsn), pgtest.Connect(t, dsn)}
		for _, p := range pools {
			if err := p.Ping(t.Context()); err != nil { // connected before the start line
				t.Fatal(err)
			}
		}
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, len(pools))
		)
		for i, p := range pools {
			wg.Go(func() {
				<-start
				errs[i] = tracking.Migrate(context.Background(), p)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("migrate %d: %v", i, err)
			}
		}

		rows, err := pools[0].Query(t.Context(), `
			SELECT version_id, count(*) FROM goose_db_version
			WHERE version_id > 0 GROUP BY version_id ORDER BY version_id`)
		if err != nil {
			t.Fatal(err)
		}
		type applied struct{ Version, Count int64 }
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[applied])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != migrationCount(t) {
			t.Errorf("%d migrations recorded, want %d: %v", len(got), migrationCount(t), got)
		}
		for _, a := range got {
			if a.Count != 1 {
				t.Errorf("migration %d recorded %d times", a.Version, a.Count)
			}
		}
	}
}
