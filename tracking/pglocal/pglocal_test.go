package pglocal

import (
	"bufio"
	"context"
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// testDir returns a fresh directory that the postgres OS user can reach
// when the tests run as root (t.TempDir's parent is 0700).
func testDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "pglocal-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// start starts a Fast cluster in dir and stops it at the end of the test.
func start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	opts.Fast = true
	c, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

func query(t *testing.T, dsn, sql string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(t.Context(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func execSQL(t *testing.T, dsn, sql string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestStartStopRestartKeepsData(t *testing.T) {
	dir := testDir(t)
	c := start(t, Options{Dir: dir})
	dsn := c.DSN("postgres")
	if got := query(t, dsn, "SELECT current_user"); got != Superuser {
		t.Errorf("current_user = %q, want %q", got, Superuser)
	}
	if got := query(t, dsn, "SELECT setting FROM pg_settings WHERE name = 'fsync'"); got != "off" {
		t.Errorf("fsync = %s, want off (Fast)", got)
	}
	if got := query(t, dsn, "SELECT setting FROM pg_settings WHERE name = 'listen_addresses'"); got != "" {
		t.Errorf("listen_addresses = %q, want none", got)
	}
	if got := query(t, dsn, "SELECT setting FROM pg_settings WHERE name = 'max_connections'"); got != "200" {
		t.Errorf("max_connections = %s, want 200", got)
	}
	if got := query(t, dsn, "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate FROM pg_database WHERE datname = 'postgres'"); got != "UTF8 C" {
		t.Errorf("encoding, collation = %q, want UTF8 C", got)
	}
	execSQL(t, dsn, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('first run')")

	// Stop, then the method Start: same socket, same DSN.
	if err := c.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if _, err := pgx.Connect(t.Context(), dsn); err == nil {
		t.Fatal("connected to a stopped cluster")
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if got := query(t, dsn, "SELECT v FROM kept"); got != "first run" {
		t.Errorf("after restart: %q", got)
	}
	if err := c.Stop(t.Context()); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	// A new Start on the same directory reuses the cluster, durable this time.
	c2, err := Start(t.Context(), Options{Dir: dir})
	if err != nil {
		t.Fatalf("Start again: %v", err)
	}
	defer c2.Stop(context.Background())
	if got := query(t, c2.DSN("postgres"), "SELECT v FROM kept"); got != "first run" {
		t.Errorf("after second Start: %q", got)
	}
	if got := query(t, c2.DSN("postgres"), "SELECT setting FROM pg_settings WHERE name = 'fsync'"); got != "on" {
		t.Errorf("fsync = %s, want on (not Fast)", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "postgres.log")); err != nil {
		t.Errorf("no server log: %v", err)
	}
}

func TestSecondOwnerIsRefused(t *testing.T) {
	dir := testDir(t)
	start(t, Options{Dir: dir})
	_, err := Start(t.Context(), Options{Dir: dir, Fast: true})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Start: got %v, want ErrInUse", err)
	}
}

func TestStaleServerIsReplaced(t *testing.T) {
	dir := testDir(t)
	old, err := Start(t.Context(), Options{Dir: dir, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Stop(context.Background()) })
	execSQL(t, old.DSN("postgres"), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')")
	// The owner "dies": its lock goes, its server stays.
	old.mu.Lock()
	old.lock.Close()
	old.lock = nil
	old.mu.Unlock()

	c := start(t, Options{Dir: dir})
	select {
	case <-old.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stale server still runs")
	}
	if got := query(t, c.DSN("postgres"), "SELECT v FROM kept"); got != "x" {
		t.Errorf("data after replacing the stale server: %q", got)
	}
}

func TestStalePidFileIsIgnored(t *testing.T) {
	dir := testDir(t)
	c := start(t, Options{Dir: dir})
	if err := c.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A postmaster.pid naming a live process that is not postgres (a reused pid).
	pidFile := filepath.Join(dir, "data", "postmaster.pid")
	if err := os.WriteFile(pidFile, []byte("1\n"+dir+"/data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("Start over a stale postmaster.pid: %v", err)
	}
}

func TestLongDirGetsShortSocketDir(t *testing.T) {
	dir := filepath.Join(testDir(t), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	c := start(t, Options{Dir: dir})
	sock := c.SocketDir()
	if !strings.HasPrefix(sock, "/tmp/") || len(sock) > 60 {
		t.Errorf("socket dir %q, want a short one under /tmp", sock)
	}
	query(t, c.DSN("postgres"), "SELECT 'ok'")
	if err := c.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir %s left after Stop: %v", sock, err)
	}
}

func TestUnreachableDirIsExplained(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to another OS user")
	}
	parent := testDir(t)
	if err := os.Chmod(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Start(t.Context(), Options{Dir: filepath.Join(parent, "pg"), Fast: true})
	if err == nil || !strings.Contains(err.Error(), "not searchable") {
		t.Fatalf("got %v, want an error naming the unreachable directory", err)
	}
}

func TestNotInstalledNamesThePackage(t *testing.T) {
	_, err := findBinaries("", "", "/nonexistent/postgresql/*/bin", 0)
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Fatalf("got %v, want ErrNotInstalled naming the package", err)
	}
	_, err = findBinaries(t.TempDir(), "", debianBinGlob, 0)
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("empty BinDir: got %v, want ErrNotInstalled", err)
	}
}

func TestFindsDebianBinaries(t *testing.T) {
	b, err := findBinaries("", "", debianBinGlob, 0)
	if err != nil {
		t.Fatalf("no PostgreSQL under %s: %v", debianBinGlob, err)
	}
	if !strings.HasPrefix(b.dir, "/usr/lib/postgresql/") || b.major < 12 {
		t.Errorf("found %+v", b)
	}
	if _, err := findBinaries("", "", debianBinGlob, 9); err == nil || !strings.Contains(err.Error(), "postgresql-9") {
		t.Errorf("asking for version 9: got %v, want an error naming postgresql-9", err)
	}
}

// ownerDirEnv makes the test binary, run again by TestServerStopsWhenOwnerDies,
// start a cluster in the named directory and wait to be killed.
const ownerDirEnv = "PGLOCAL_TEST_OWNER_DIR"

func TestOwnerProcess(t *testing.T) {
	dir := os.Getenv(ownerDirEnv)
	if dir == "" {
		t.Skip("run by TestServerStopsWhenOwnerDies")
	}
	if _, err := Start(context.Background(), Options{Dir: dir, Fast: true}); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready\n")
	select {}
}

// A daemon (or test binary) killed with SIGKILL runs no cleanup: the
// server must still go away, not linger on as an orphan.
func TestServerStopsWhenOwnerDies(t *testing.T) {
	dir := testDir(t)
	cmd := osexec.Command(os.Args[0], "-test.run=^TestOwnerProcess$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), ownerDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("owner process: %q, %v", line, err)
	}
	pid, err := readPid(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if !isPostgres(pid) {
		t.Fatalf("pid %d is not a running postgres", pid)
	}
	cmd.Process.Kill() // SIGKILL
	cmd.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for isPostgres(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGQUIT)
			t.Fatalf("postgres (pid %d) still runs after its owner died", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The next owner starts it again cleanly.
	c := start(t, Options{Dir: dir})
	query(t, c.DSN("postgres"), "SELECT 'ok'")
}

// A server that dies on its own is seen by Done and comes back with Start.
// Fast with synchronous_commit on survives a server crash (fsync=off only
// risks an OS crash); synchronous_commit=off would lose the last commits.
func TestStartAfterServerCrash(t *testing.T) {
	c := start(t, Options{Dir: testDir(t), Settings: map[string]string{"synchronous_commit": "on"}})
	execSQL(t, c.DSN("postgres"), "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x')")
	pid, err := readPid(filepath.Join(c.Dir(), "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the server died")
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("Start after a crash: %v", err)
	}
	if got := query(t, c.DSN("postgres"), "SELECT v FROM kept"); got != "x" {
		t.Errorf("after crash recovery: %q", got)
	}
}
