package tracking_test

// These tests read the migrated schema back from the catalogs
// (information_schema, pg_index, pg_constraint) and exercise it with SQL,
// to prove it is what SPEC.md says. They never read the migration's text.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestMain runs this package's tests with pgtest's PostgreSQL harness. It
// is the tracking package's only TestMain: tests that need a database are
// written in package tracking_test and call pgtest.New.
func TestMain(m *testing.M) { pgtest.Main(m) }

// The SPEC.md tables.
var specTables = []string{"batch_executions", "chain_executions", "task_logs", "ocr_executions", "ocr_text_boxes"}

// Column types as information_schema spells them.
const (
	varchar = "character varying"
	integer = "integer"
	tstz    = "timestamp with time zone"
	jsonb   = "jsonb"
	text    = "text"
	float   = "double precision"
)

// column is a SPEC.md column. nullable is "NO" (must be NOT NULL) or ""
// (SPEC.md does not say); def is the default with casts removed ("" none
// required).
type column struct {
	table, name string
	typ         string
	length      int // character_maximum_length; 0: not a string
	nullable    string
	def         string
}

func specColumns() []column {
	var cols []column
	add := func(table string, cs ...column) {
		for _, c := range cs {
			c.table = table
			cols = append(cols, c)
		}
	}
	str := func(name string, n int) column { return column{name: name, typ: varchar, length: n} }
	counter := func(name string) column { return column{name: name, typ: integer, nullable: "NO", def: "0"} }
	ts := func(name string) column { return column{name: name, typ: tstz} }
	js := func(name string) column { return column{name: name, typ: jsonb} }
	status := column{name: "status", typ: varchar, length: 20, nullable: "NO", def: "'PENDING'"}
	stamps := []column{
		{name: "created_at", typ: tstz, nullable: "NO", def: "now()"},
		{name: "updated_at", typ: tstz, nullable: "NO", def: "now()"},
	}

	add("batch_executions", str("batch_id", 255), str("batch_name", 255), status,
		counter("total_images"), counter("completed_images"), counter("failed_images"),
		counter("total_chunks"), counter("completed_chunks"), counter("failed_chunks"),
		column{name: "chunk_size", typ: integer, nullable: "NO", def: "10"},
		ts("started_at"), ts("finished_at"), str("initiated_by", 100),
		js("input_data"), js("options"), js("final_result"), column{name: "error_message", typ: text})
	add("chain_executions", str("chain_id", 255), str("celery_task_id", 255), str("chain_name", 255),
		str("batch_id", 255), status,
		counter("total_tasks"), counter("completed_tasks"), counter("failed_tasks"),
		ts("started_at"), ts("finished_at"), str("initiated_by", 100),
		js("input_data"), js("final_result"), column{name: "error_message", typ: text})
	add("task_logs", str("task_id", 255), str("task_name", 255), str("status", 50), str("error", 512),
		ts("started_at"), ts("finished_at"),
		column{name: "retries", typ: integer, nullable: "NO", def: "0"},
		column{name: "chain_execution_id", typ: "bigint"})
	add("ocr_executions", str("chain_id", 255), str("image_path", 255), str("public_path", 255),
		str("status", 50), column{name: "error", typ: text})
	add("ocr_text_boxes", column{name: "ocr_execution_id", typ: "bigint", nullable: "NO"},
		column{name: "text", typ: text}, column{name: "confidence", typ: float}, js("bbox"))
	for _, t := range specTables {
		add(t, append([]column{{name: "id", typ: "bigint", nullable: "NO"}}, stamps...)...)
	}
	return cols
}

// stripCasts turns "'PENDING'::character varying" into "'PENDING'".
func stripCasts(def string) string {
	if i := strings.Index(def, "::"); i >= 0 {
		return def[:i]
	}
	return def
}

func TestSpecColumns(t *testing.T) {
	pool := pgtest.New(t)
	for _, c := range specColumns() {
		t.Run(c.table+"."+c.name, func(t *testing.T) {
			var typ, nullable string
			var length *int
			var def *string
			err := pool.QueryRow(t.Context(), `
				SELECT data_type, character_maximum_length, is_nullable, column_default
				FROM information_schema.columns
				WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2`,
				c.table, c.name).Scan(&typ, &length, &nullable, &def)
			if errors.Is(err, pgx.ErrNoRows) {
				t.Fatalf("column %s.%s is missing", c.table, c.name)
			}
			if err != nil {
				t.Fatal(err)
			}
			if typ != c.typ {
				t.Errorf("type %s, want %s", typ, c.typ)
			}
			if gotLen := deref(length); gotLen != c.length {
				t.Errorf("length %d, want %d", gotLen, c.length)
			}
			if c.nullable != "" && nullable != c.nullable {
				t.Errorf("is_nullable %s, want %s", nullable, c.nullable)
			}
			if gotDef := stripCasts(deref(def)); c.def != "" && gotDef != c.def {
				t.Errorf("default %q, want %q", gotDef, c.def)
			}
		})
	}
}

// Every table, SPEC.md's and docpipe's own, has created_at and updated_at.
func TestEveryTableHasTimestamps(t *testing.T) {
	pool := pgtest.New(t)
	for _, table := range tables(t, pool) {
		for _, name := range []string{"created_at", "updated_at"} {
			var typ, nullable string
			var def *string
			err := pool.QueryRow(t.Context(), `
				SELECT data_type, is_nullable, column_default FROM information_schema.columns
				WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2`,
				table, name).Scan(&typ, &nullable, &def)
			if err != nil {
				t.Errorf("%s.%s: %v", table, name, err)
				continue
			}
			if typ != tstz || nullable != "NO" || deref(def) != "now()" {
				t.Errorf("%s.%s is %s, nullable %s, default %q; want %s NOT NULL DEFAULT now()", table, name, typ, nullable, deref(def), tstz)
			}
		}
	}
}

func TestPrimaryKeys(t *testing.T) {
	pool := pgtest.New(t)
	for _, table := range specTables {
		var cols []string
		err := pool.QueryRow(t.Context(), `
			SELECT array_agg(a.attname::text ORDER BY a.attnum)
			FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
			WHERE c.conrelid = $1::regclass AND c.contype = 'p'`, table).Scan(&cols)
		if err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		if !slices.Equal(cols, []string{"id"}) {
			t.Errorf("%s primary key %v, want (id)", table, cols)
		}
	}
}

func TestForeignKeys(t *testing.T) {
	pool := pgtest.New(t)
	tests := []struct {
		table, column, refTable, refColumn string
		onDelete                           string // pg_constraint.confdeltype; "" any
	}{
		{"chain_executions", "batch_id", "batch_executions", "batch_id", ""},
		{"task_logs", "chain_execution_id", "chain_executions", "id", "n"},  // SET NULL
		{"ocr_text_boxes", "ocr_execution_id", "ocr_executions", "id", "c"}, // CASCADE
	}
	for _, tt := range tests {
		t.Run(tt.table+"."+tt.column, func(t *testing.T) {
			var onDelete string
			err := pool.QueryRow(t.Context(), `
				SELECT c.confdeltype::text
				FROM pg_constraint c
				JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
				JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1]
				WHERE c.contype = 'f' AND c.conrelid = $1::regclass AND cardinality(c.conkey) = 1
				  AND a.attname = $2 AND c.confrelid = $3::regclass AND r.attname = $4`,
				tt.table, tt.column, tt.refTable, tt.refColumn).Scan(&onDelete)
			if errors.Is(err, pgx.ErrNoRows) {
				t.Fatalf("no foreign key %s.%s -> %s.%s", tt.table, tt.column, tt.refTable, tt.refColumn)
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.onDelete != "" && onDelete != tt.onDelete {
				t.Errorf("ON DELETE %q, want %q (pg_constraint.confdeltype)", onDelete, tt.onDelete)
			}
		})
	}
}

// index is a btree key column list, a column optionally followed by " DESC".
type index struct {
	name    string
	columns []string
	unique  bool
}

// indexes returns table's non-partial indexes with their key columns in order.
func indexes(t *testing.T, pool *pgxpool.Pool, table string) []index {
	t.Helper()
	rows, err := pool.Query(t.Context(), `
		SELECT i.indexrelid::regclass::text, i.indisunique,
		       array(SELECT pg_get_indexdef(i.indexrelid, k, true) ||
		                    CASE WHEN i.indoption[k - 1] & 1 = 1 THEN ' DESC' ELSE '' END
		             FROM generate_series(1, i.indnkeyatts) k ORDER BY k)
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
		WHERE i.indrelid = $1::regclass AND i.indpred IS NULL AND am.amname = 'btree'`, table)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (index, error) {
		var x index
		err := r.Scan(&x.name, &x.unique, &x.columns)
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// servedBy returns the index whose leading key columns are exactly cols
// (a partial index does not count: it cannot serve every query). A column
// given without a direction is served in either direction, as btrees are
// read both ways.
func servedBy(idx []index, cols []string, unique bool) (string, bool) {
	for _, x := range idx {
		if len(x.columns) < len(cols) || (unique && (!x.unique || len(x.columns) != len(cols))) {
			continue
		}
		match := true
		for i, c := range cols {
			got := x.columns[i]
			if !strings.HasSuffix(c, " DESC") {
				got = strings.TrimSuffix(got, " DESC")
			}
			if got != c {
				match = false
			}
		}
		if match {
			return x.name, true
		}
	}
	return "", false
}

func TestSpecIndexes(t *testing.T) {
	pool := pgtest.New(t)
	tests := []struct {
		table   string
		columns string // comma-separated
	}{
		{"batch_executions", "batch_id"},
		{"batch_executions", "batch_name"},
		{"batch_executions", "status"},
		{"batch_executions", "status, started_at"},
		{"batch_executions", "batch_name, status"},
		{"chain_executions", "chain_id"},
		{"chain_executions", "celery_task_id"},
		{"chain_executions", "chain_name"},
		{"chain_executions", "batch_id"},
		{"chain_executions", "status, started_at"},
		{"chain_executions", "chain_name, status"},
		{"task_logs", "task_id"},
		{"task_logs", "task_name"},
		{"task_logs", "status"},
		{"task_logs", "started_at"},
		{"task_logs", "task_name, status"},
		{"task_logs", "started_at DESC"},
		{"task_logs", "chain_execution_id, status"},
		{"task_logs", "chain_execution_id"}, // a foreign key's referencing side, for ON DELETE SET NULL
		{"ocr_executions", "chain_id"},
		{"ocr_executions", "image_path"},
		{"ocr_executions", "public_path"},
		{"ocr_executions", "status"},
		{"ocr_text_boxes", "ocr_execution_id"},
		{"ocr_text_boxes", "confidence"},
	}
	byTable := map[string][]index{}
	for _, tt := range tests {
		t.Run(tt.table+"("+tt.columns+")", func(t *testing.T) {
			if _, ok := byTable[tt.table]; !ok {
				byTable[tt.table] = indexes(t, pool, tt.table)
			}
			if name, ok := servedBy(byTable[tt.table], strings.Split(tt.columns, ", "), false); !ok {
				t.Errorf("no index on %s leads with (%s); indexes: %v", tt.table, tt.columns, byTable[tt.table])
			} else {
				t.Logf("served by %s", name)
			}
		})
	}
}

func TestUniqueConstraints(t *testing.T) {
	pool := pgtest.New(t)
	tests := []struct{ table, column string }{
		{"batch_executions", "batch_id"},
		{"task_logs", "task_id"},
		{"ocr_executions", "image_path"},
		{"ocr_executions", "public_path"},
	}
	for _, tt := range tests {
		t.Run(tt.table+"."+tt.column, func(t *testing.T) {
			if _, ok := servedBy(indexes(t, pool, tt.table), []string{tt.column}, true); !ok {
				t.Errorf("%s.%s is not unique", tt.table, tt.column)
			}
		})
	}
}

// fixture inserts one row in every table, parents first, and returns the
// UPDATE that changes one ordinary column of each table's row.
func fixture(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	_, err := pool.Exec(t.Context(), `
		WITH b AS (INSERT INTO batch_executions (batch_id) VALUES ('b1') RETURNING id, batch_id),
		     k AS (INSERT INTO batch_chunks (batch_execution_id, chunk_index, total_images) SELECT id, 0, 1 FROM b),
		     c AS (INSERT INTO chain_executions (chain_id, batch_id, total_tasks) SELECT 'c1', batch_id, 4 FROM b RETURNING id),
		     tl AS (INSERT INTO task_logs (task_id, task_name, chain_execution_id) SELECT 't1', 'pipeline.ocr_stage', id FROM c),
		     o AS (INSERT INTO ocr_executions (chain_id, image_path, public_path, status) VALUES ('c1', '/in/1.png', '/pub/1.png', 'success') RETURNING id)
		INSERT INTO ocr_text_boxes (ocr_execution_id, text, confidence, bbox)
		SELECT id, 'word', 0.9, '[[0,0],[1,0],[1,1],[0,1]]' FROM o`)
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	updates := map[string]string{
		"batch_executions": "UPDATE batch_executions SET batch_name = 'renamed'",
		"batch_chunks":     "UPDATE batch_chunks SET completed_images = 1",
		"chain_executions": "UPDATE chain_executions SET chain_name = 'renamed'",
		"task_logs":        "UPDATE task_logs SET retries = retries + 1",
		"ocr_executions":   "UPDATE ocr_executions SET error = 'e'",
		"ocr_text_boxes":   "UPDATE ocr_text_boxes SET text = 'changed'",
	}
	for _, table := range tables(t, pool) {
		if _, ok := updates[table]; !ok {
			t.Fatalf("table %s has no fixture: add it to fixture()", table)
		}
	}
	return updates
}

func TestUpdatedAtMovesOnEveryUpdate(t *testing.T) {
	pool := pgtest.New(t)
	updates := fixture(t, pool)
	for table, update := range updates {
		t.Run(table, func(t *testing.T) {
			stamp := func() (created, updated string) {
				t.Helper()
				// As text: microseconds, exactly.
				err := pool.QueryRow(t.Context(), fmt.Sprintf("SELECT created_at::text, updated_at::text FROM %s", table)).Scan(&created, &updated)
				if err != nil {
					t.Fatal(err)
				}
				return created, updated
			}
			moved := func(how, sql string) {
				t.Helper()
				created0, before := stamp()
				var txTime string
				err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(t.Context(), sql); err != nil {
						return err
					}
					return tx.QueryRow(t.Context(), "SELECT now()::text").Scan(&txTime)
				})
				if err != nil {
					t.Fatalf("%s: %v", sql, err)
				}
				created, after := stamp()
				if after == before || after != txTime {
					t.Errorf("%s: updated_at %s -> %s, want the updating transaction's time %s", how, before, after, txTime)
				}
				if created != created0 {
					t.Errorf("%s: created_at moved %s -> %s", how, created0, created)
				}
			}
			moved("UPDATE not setting updated_at", update)
			moved("UPDATE setting updated_at = now()", update+", updated_at = now()")
			moved("UPDATE changing nothing", fmt.Sprintf("UPDATE %s SET created_at = created_at", table))
		})
	}
}

func TestInvalidStatusIsRejected(t *testing.T) {
	pool := pgtest.New(t)
	fixture(t, pool)
	task := make([]string, 0, len(tracking.Statuses))
	for _, s := range tracking.Statuses {
		task = append(task, string(s))
	}
	type statusColumn struct {
		table        string
		valid, wrong []string
	}
	tests := []statusColumn{
		{"batch_executions", task, []string{"BOGUS", "pending", "", "SUCCESS "}},
		{"batch_chunks", task, []string{"BOGUS", "pending"}},
		{"chain_executions", task, []string{"BOGUS", "pending"}},
		{"task_logs", task, []string{"BOGUS", "pending", "PROGRESS"}},
		{"ocr_executions", []string{tracking.OCRSuccess, tracking.OCRFailed}, []string{"SUCCESS", "PENDING", "bogus"}},
	}
	// Every status column of the schema is covered.
	var statusTables []string
	err := pool.QueryRow(t.Context(), `
		SELECT array_agg(table_name::text ORDER BY table_name) FROM information_schema.columns
		WHERE table_schema = 'public' AND column_name = 'status'`).Scan(&statusTables)
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range statusTables {
		if !slices.ContainsFunc(tests, func(tt statusColumn) bool { return tt.table == table }) {
			t.Errorf("%s.status is not covered by this test", table)
		}
	}
	for _, tt := range tests {
		t.Run(tt.table, func(t *testing.T) {
			for _, s := range tt.valid {
				if _, err := pool.Exec(t.Context(), fmt.Sprintf("UPDATE %s SET status = $1", tt.table), s); err != nil {
					t.Errorf("status %q refused: %v", s, err)
				}
			}
			for _, s := range tt.wrong {
				_, err := pool.Exec(t.Context(), fmt.Sprintf("UPDATE %s SET status = $1", tt.table), s)
				var pgErr *pgconn.PgError
				if !errors.As(err, &pgErr) || pgErr.Code != "23514" {
					t.Errorf("status %q: got %v, want a check violation (23514)", s, err)
				}
			}
		})
	}
}

func TestDeletingAChainKeepsItsTasks(t *testing.T) {
	pool := pgtest.New(t)
	fixture(t, pool)
	if _, err := pool.Exec(t.Context(), "DELETE FROM chain_executions WHERE chain_id = 'c1'"); err != nil {
		t.Fatal(err)
	}
	var n int
	var chain *int64
	if err := pool.QueryRow(t.Context(), "SELECT count(*), max(chain_execution_id) FROM task_logs").Scan(&n, &chain); err != nil {
		t.Fatal(err)
	}
	if n != 1 || chain != nil {
		t.Errorf("after deleting the chain: %d tasks, chain_execution_id %v; want 1 task with NULL", n, chain)
	}
}

func TestDeletingAnOCRExecutionDeletesItsBoxes(t *testing.T) {
	pool := pgtest.New(t)
	fixture(t, pool)
	if _, err := pool.Exec(t.Context(), "DELETE FROM ocr_executions"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM ocr_text_boxes").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d boxes left after deleting their OCR execution", n)
	}
}

// tables lists the schema's tables, goose's excepted.
func tables(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT table_name::text FROM information_schema.tables
		WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> 'goose_db_version'
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

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
