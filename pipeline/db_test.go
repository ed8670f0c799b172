package pipeline_test

import (
	"testing"

	"github.com/docpipe/docpipe/tracking/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// newPool returns a pool on a fresh, migrated database of the test's own.
func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return pgtest.New(t)
}

// otherPool opens a second pool on p's database, as another process would.
func otherPool(t testing.TB, p *pgxpool.Pool) *pgxpool.Pool {
	t.Helper()
	return pgtest.Connect(t, p.Config().ConnString())
}
