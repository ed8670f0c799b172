// Package pgtest gives tests real, migrated PostgreSQL databases.
//
// A package that uses it runs its tests through Main:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Then each test calls New (a pool) or NewDSN (a connection string, for
// child processes or tests that build their own pools) and gets a database
// of its own, created from a template migrated once per test binary and
// dropped when the test ends.
//
// The server is the one TEST_DATABASE_URL points at (PostgreSQL 13 or
// newer; its user must be allowed to create databases) when that variable
// is set. Otherwise Main's harness starts one throwaway cluster for the
// test binary with pglocal, with durability off, when the first test asks
// for a database, and stops it and removes its files after the tests, even
// when they fail. Template and database names carry a random per-binary
// prefix, so test binaries that `go test ./...` runs in parallel never
// clash on a shared server.
//
// Without an installed PostgreSQL (and no TEST_DATABASE_URL) every test
// that asks for a database fails, naming the package to install.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pglocal"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvURL names the variable that points the harness at an existing server.
const EnvURL = "TEST_DATABASE_URL"

// ClusterDatabase is the migrated database NewCluster creates.
const ClusterDatabase = "docpipe"

// setupTimeout bounds starting the cluster and migrating the template.
const setupTimeout = 3 * time.Minute

// current is the harness of the running test binary, set by Main before
// any test runs. Package-level state is tolerated here, in test support
// only, because Go's testing gives TestMain no other way to reach tests.
var current *harness

// harness is one test binary's server and template.
type harness struct {
	once sync.Once
	err  error // from setup, reported by every test that asks for a database

	dir      string           // the throwaway cluster's directory ("" with TEST_DATABASE_URL)
	cluster  *pglocal.Cluster // nil with TEST_DATABASE_URL
	adminDSN string           // the maintenance database
	admin    *pgxpool.Pool    // creates and drops databases
	prefix   string           // pgtest_<random>: this binary's database names
	template string           // migrated once, copied for each test
	n        atomic.Int64     // numbers the databases
}

// Main runs m's tests with a PostgreSQL harness, tears the harness down
// (drops this binary's databases, or stops and removes its cluster) and
// exits with the tests' code. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	h := &harness{}
	current = h
	code := m.Run()
	if err := h.teardown(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// New returns a pool on a fresh database of the test's own, migrated to
// the newest schema. The pool is closed and the database dropped when the
// test ends.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return Connect(t, NewDSN(t))
}

// NewDSN returns the connection string of a fresh database of the test's
// own, migrated to the newest schema, dropped (its sessions terminated)
// when the test ends.
func NewDSN(t testing.TB) string {
	t.Helper()
	h := get(t)
	return h.createDatabase(t, h.template)
}

// NewEmptyDSN returns the connection string of a fresh database with no
// docpipe schema (for migration tests), dropped when the test ends.
func NewEmptyDSN(t testing.TB) string {
	t.Helper()
	return get(t).createDatabase(t, "template0")
}

// Connect opens a pool on dsn, closed when the test ends (before the
// database is dropped, when dsn came from this package).
func Connect(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatalf("pgtest: open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// NewCluster starts a dedicated throwaway cluster for one test, for tests
// that stop, kill or restart PostgreSQL while they run; restarting it
// (Stop or a crash, then Start) keeps its socket, so dsn and pools made
// from it stay valid. Unlike the shared harness it commits synchronously,
// so a killed server loses no acknowledged commit.
// dsn points at ClusterDatabase, migrated to the newest schema. The
// cluster is stopped and its files removed when the test ends. It needs
// the PostgreSQL binaries even when TEST_DATABASE_URL is set.
func NewCluster(t testing.TB) (c *pglocal.Cluster, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	dir, err := tempDir()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Fast, but with synchronous_commit on: a test that kills the server
	// must find every acknowledged commit after the restart, as in
	// production (fsync=off loses data only when the OS crashes).
	c, err = pglocal.Start(ctx, pglocal.Options{Dir: dir, Fast: true, Settings: map[string]string{"synchronous_commit": "on"}})
	if err != nil {
		t.Fatalf("pgtest: %v", explain(err))
	}
	t.Cleanup(func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.Stop(stopCtx); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	if err := createMigrated(ctx, c.DSN("postgres"), ClusterDatabase, c.DSN(ClusterDatabase)); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return c, c.DSN(ClusterDatabase)
}

// get returns the running harness, set up on first use.
func get(t testing.TB) *harness {
	t.Helper()
	h := current
	if h == nil {
		t.Fatal("pgtest: no harness: add `func TestMain(m *testing.M) { pgtest.Main(m) }` to the package's tests")
	}
	h.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		h.err = h.setup(ctx)
	})
	if h.err != nil {
		t.Fatalf("pgtest: %v", h.err)
	}
	return h
}

func (h *harness) setup(ctx context.Context) error {
	h.adminDSN = os.Getenv(EnvURL)
	if h.adminDSN == "" {
		dir, err := tempDir()
		if err != nil {
			return err
		}
		h.dir = dir
		if h.cluster, err = pglocal.Start(ctx, pglocal.Options{Dir: dir, Fast: true}); err != nil {
			return explain(err)
		}
		h.adminDSN = h.cluster.DSN("postgres")
	}
	var err error
	if h.admin, err = pgxpool.New(ctx, h.adminDSN); err != nil {
		return fmt.Errorf("connect to %s: %w", EnvURL, err)
	}
	if err := h.admin.Ping(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("random prefix: %w", err)
	}
	h.prefix = "pgtest_" + hex.EncodeToString(b[:])
	h.template = h.prefix + "_tmpl"
	return createMigrated(ctx, h.adminDSN, h.template, WithDatabase(h.adminDSN, h.template))
}

// teardown drops what the harness made on a shared server, or stops and
// removes its own cluster.
func (h *harness) teardown() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if h.admin != nil {
		if h.cluster == nil {
			errs = append(errs, h.dropAll(ctx))
		}
		h.admin.Close()
	}
	if h.cluster != nil {
		errs = append(errs, h.cluster.Stop(ctx))
	}
	if h.dir != "" {
		errs = append(errs, os.RemoveAll(h.dir))
	}
	return errors.Join(errs...)
}

// dropAll drops the template and any database of this binary a test left.
func (h *harness) dropAll(ctx context.Context) error {
	rows, err := h.admin.Query(ctx, "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", h.prefix+"_")
	if err != nil {
		return fmt.Errorf("list test databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list test databases: %w", err)
	}
	var errs []error
	for _, name := range names {
		errs = append(errs, dropDatabase(ctx, h.admin, name))
	}
	return errors.Join(errs...)
}

// createDatabase makes a database from template for t, dropped when t ends.
func (h *harness) createDatabase(t testing.TB, template string) string {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("%s_%d", h.prefix, h.n.Add(1))
	sql := fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", pgx.Identifier{name}.Sanitize(), pgx.Identifier{template}.Sanitize())
	if _, err := h.admin.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: create database for %s: %v", t.Name(), err)
	}
	t.Cleanup(func() {
		if err := dropDatabase(context.Background(), h.admin, name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	// Named after the test, for whoever inspects a server a test binary crashed on.
	comment := fmt.Sprintf("COMMENT ON DATABASE %s IS '%s'", pgx.Identifier{name}.Sanitize(), strings.ReplaceAll(t.Name(), "'", "''"))
	if _, err := h.admin.Exec(ctx, comment); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return WithDatabase(h.adminDSN, name)
}

// createMigrated creates database name through adminDSN and migrates it
// through dsn (which points at it).
func createMigrated(ctx context.Context, adminDSN, name, dsn string) error {
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", name, err)
	}
	// Closed before any copy: a template with sessions cannot be copied.
	defer pool.Close()
	if err := tracking.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrate %s: %w", name, err)
	}
	return nil
}

// dropDatabase drops name, terminating its sessions first.
func dropDatabase(ctx context.Context, admin *pgxpool.Pool, name string) error {
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// WithDatabase returns dsn (a URL or keyword/value connection string)
// pointed at database name instead.
func WithDatabase(dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.Path, u.RawPath = "/"+name, ""
			q := u.Query()
			if q.Has("dbname") {
				q.Set("dbname", name)
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
	}
	// In keyword/value form the last setting of a keyword wins.
	return dsn + " dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(name) + "'"
}

// tempDir makes a directory for a throwaway cluster that the postgres OS
// user can reach when the tests run as root.
func tempDir() (string, error) {
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return "", fmt.Errorf("cluster directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("cluster directory: %w", err)
	}
	return dir, nil
}

// explain adds the ways out to a failure to start a cluster.
func explain(err error) error {
	if errors.Is(err, pglocal.ErrNotInstalled) {
		return fmt.Errorf("%w (or set %s to a PostgreSQL server's URL; `make deps` installs everything)", err, EnvURL)
	}
	return err
}
