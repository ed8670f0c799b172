package httpapi_test

import (
	"testing"

	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newStore returns a Store on a fresh, migrated database of the test's own.
func newStore(t testing.TB) *tracking.Store {
	t.Helper()
	return tracking.NewStore(pgtest.New(t), tracking.StoreOptions{})
}
