// Package pglocal runs a private PostgreSQL cluster from the server
// binaries installed on the machine (Debian's postgresql package).
//
// The docpipe daemon uses it when it is given no database URL: the cluster
// lives under the daemon's data directory, is created on first use, reused
// on every later start and stopped when the daemon exits. The test harness
// (tracking/pgtest) uses it for throwaway clusters with durability off.
//
// The server listens only on a unix socket (listen_addresses is empty), so
// a private cluster never clashes with another server's TCP port and is
// reachable only from this machine. When the process runs as root the
// cluster is owned and run by the postgres OS user, because PostgreSQL
// refuses to run as root.
package pglocal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Defaults for the zero Options.
const (
	DefaultPort           = 5432
	DefaultMaxConnections = 200
	DefaultStartTimeout   = 2 * time.Minute
	DefaultUser           = "postgres" // the OS user that runs the cluster when we are root
)

// Superuser is the database superuser the cluster is created with; DSN connects as it.
const Superuser = "postgres"

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes with its NUL); the server also creates "<socket>.lock" beside it.
const maxSocketPath = 107

// ErrInUse is returned (wrapped) by Start when another live process already
// runs the cluster in the same directory.
var ErrInUse = errors.New("cluster directory is in use by another process")

// Options says where the cluster lives and how it runs. The zero value of
// every field but Dir is a durable cluster with sensible settings.
type Options struct {
	// Dir holds the cluster: data/ (its PGDATA), postgres.log (the server's
	// output) and pglocal.lock. It is created if missing. Required.
	Dir string
	// Fast turns durability off (fsync, synchronous_commit and
	// full_page_writes off, initdb without sync): for tests only. A crash
	// of the machine can corrupt a Fast cluster.
	Fast bool
	// MaxConnections is the server's max_connections (0: DefaultMaxConnections).
	MaxConnections int
	// Port names the socket file (.s.PGSQL.<port>); nothing listens on TCP.
	// 0: DefaultPort.
	Port int
	// SocketDir is the directory of the unix socket. Empty: Dir when its
	// path is short enough for a socket path, else a new directory under
	// /tmp that Stop removes.
	SocketDir string
	// Settings are extra server settings, passed as -c name=value.
	Settings map[string]string
	// BinDir, when set, is the only directory searched for initdb and
	// postgres. Empty: PATH, then /usr/lib/postgresql/*/bin, newest first.
	BinDir string
	// User is the OS user that owns and runs the cluster when this process
	// runs as root (empty: DefaultUser). Ignored when not root.
	User string
	// StartTimeout bounds the wait for the server to accept connections,
	// crash recovery included (0: DefaultStartTimeout).
	StartTimeout time.Duration
	// Logger receives a line when a cluster is created or a stale server is
	// stopped. Nil: discarded.
	Logger *slog.Logger
}

// Cluster is a PostgreSQL cluster in a directory. It is started by Start,
// stopped by Stop and may be started again by its Start method, keeping
// the same socket so that DSNs handed out stay valid. Its methods are safe
// for concurrent use.
type Cluster struct {
	opts    Options
	bin     *binaries
	dataDir string
	logPath string
	cred    *syscall.Credential // nil unless we run as root

	mu         sync.Mutex
	sockDir    string
	ownSockDir bool // sockDir was made by us under /tmp: removed by Stop
	lock       *os.File
	logFile    *os.File
	cmd        *exec.Cmd
	done       chan struct{} // closed when cmd has exited
	waitErr    error
}

// Start returns a running cluster in opts.Dir: it runs initdb when the
// directory has no cluster yet (trust authentication for local sockets,
// superuser "postgres", UTF8, locale C), then starts the server and waits
// until it accepts connections.
//
// A server left running in Dir by a process that died (its postmaster.pid
// is alive but nobody holds Dir's lock) is shut down cleanly and started
// again with this call's settings; its data is kept. When another live
// process holds Dir, Start returns ErrInUse. When no server binaries are
// installed it returns ErrNotInstalled.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("pglocal: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pglocal: %w", err)
	}
	opts.Dir = dir
	if opts.Port == 0 {
		opts.Port = DefaultPort
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	if opts.User == "" {
		opts.User = DefaultUser
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{
		opts:    opts,
		dataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "postgres.log"),
	}
	if os.Geteuid() == 0 {
		if c.cred, err = lookupCredential(opts.User); err != nil {
			return nil, fmt.Errorf("pglocal: %w", err)
		}
	}
	if err := c.prepareDir(); err != nil {
		return nil, fmt.Errorf("pglocal: %w", err)
	}
	want, err := clusterVersion(c.dataDir)
	if err != nil {
		return nil, fmt.Errorf("pglocal: %w", err)
	}
	if c.bin, err = findBinaries(opts.BinDir, os.Getenv("PATH"), debianBinGlob, want); err != nil {
		return nil, fmt.Errorf("pglocal: %w", err)
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Start starts a stopped cluster again (Stop, then Start: a restart), or
// one whose server exited on its own (see Done), which then runs its crash
// recovery. It does nothing when the server is running.
func (c *Cluster) Start(ctx context.Context) (err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		select {
		case <-c.done: // exited on its own: start it again
			c.release()
		default:
			return nil
		}
	}
	defer func() {
		if err != nil {
			c.release()
			err = fmt.Errorf("pglocal: start cluster in %s: %w", c.opts.Dir, err)
		}
	}()
	if err := c.acquireLock(); err != nil {
		return err
	}
	if err := c.stopStale(ctx); err != nil {
		return err
	}
	if c.logFile, err = os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	if err := c.chown(c.logPath); err != nil {
		return err
	}
	if err := c.initdb(ctx); err != nil {
		return err
	}
	if err := c.makeSocketDir(); err != nil {
		return err
	}
	// A server killed outright leaves its children running for a moment,
	// attached to its shared memory, and a new server refuses to start
	// until they have gone (they see their parent's death within
	// milliseconds; longer on a loaded machine). Try again meanwhile.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.spawn(ctx)
		if err == nil || !strings.Contains(err.Error(), "pre-existing shared memory block") || time.Now().After(deadline) {
			return err
		}
		c.opts.Logger.Info("the previous server's processes still hold its shared memory; starting again", "dir", c.opts.Dir)
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// Stop shuts the server down ("fast" shutdown: sessions are disconnected,
// a checkpoint is written) and waits for it to exit. When ctx ends first
// the server is told to quit at once (crash recovery will run on its next
// start) and ctx's error is returned. Stop on a stopped cluster does
// nothing.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return nil
	}
	err := c.shutdown(ctx)
	c.release()
	if err != nil {
		return fmt.Errorf("pglocal: stop cluster in %s: %w", c.opts.Dir, err)
	}
	return nil
}

// DSN returns a pgx connection string for database dbname over the
// cluster's unix socket, as the superuser.
func (c *Cluster) DSN(dbname string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		quoteDSN(c.sockDir), c.opts.Port, Superuser, quoteDSN(dbname))
}

// Dir returns the cluster's directory (Options.Dir, made absolute).
func (c *Cluster) Dir() string { return c.opts.Dir }

// SocketDir returns the directory of the server's unix socket.
func (c *Cluster) SocketDir() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sockDir
}

// LogPath returns the file that receives the server's output.
func (c *Cluster) LogPath() string { return c.logPath }

// Done returns a channel closed when the running server exits, whether by
// Stop or on its own. It returns a closed channel when the cluster is stopped.
func (c *Cluster) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return c.done
}

// prepareDir creates Dir, gives it to the cluster's OS user and checks that
// the user can reach it.
func (c *Cluster) prepareDir() error {
	if err := os.MkdirAll(c.opts.Dir, 0o700); err != nil {
		return fmt.Errorf("create cluster directory: %w", err)
	}
	if c.cred == nil {
		return nil
	}
	if err := c.chown(c.opts.Dir); err != nil {
		return err
	}
	return checkReachable(c.opts.Dir, c.opts.User, c.cred)
}

// acquireLock takes Dir's lock file for as long as this process runs the
// cluster. The kernel drops it when the process dies, so a server found
// running without a lock holder was left by a dead process.
func (c *Cluster) acquireLock() error {
	f, err := os.OpenFile(filepath.Join(c.opts.Dir, "pglocal.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return ErrInUse
		}
		return fmt.Errorf("lock: %w", err)
	}
	c.lock = f
	return nil
}

// stopStale shuts down a server that a dead process left running in Dir,
// and removes a postmaster.pid whose process is gone (or is not a
// postgres: a reused pid), which the server would otherwise refuse.
//
// Reusing the stale server instead was considered and rejected: it runs
// with the dead process's settings (perhaps Fast, perhaps another socket
// directory), and nobody would be left to own its lifetime.
func (c *Cluster) stopStale(ctx context.Context) error {
	pidFile := filepath.Join(c.dataDir, "postmaster.pid")
	pid, err := readPid(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !isPostgres(pid) {
		if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale postmaster.pid: %w", err)
		}
		return nil
	}
	c.opts.Logger.Info("stopping a server left running by a previous process", "dir", c.opts.Dir, "pid", pid)
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop stale server (pid %d): %w", pid, err)
	}
	deadline := time.Now().Add(time.Minute)
	for isPostgres(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("stale server (pid %d) did not stop within a minute", pid)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("wait for stale server (pid %d) to stop: %w", pid, err)
		}
	}
	return nil
}

// initdb creates the cluster when Dir has none. It builds it in a
// temporary directory and renames it into place, so an initdb that was
// interrupted never leaves a half-made cluster behind.
func (c *Cluster) initdb(ctx context.Context) error {
	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	if _, err := os.Stat(c.dataDir); err == nil {
		return fmt.Errorf("%s exists but holds no cluster (no PG_VERSION): move it away", c.dataDir)
	}
	tmp := c.dataDir + ".initdb"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove leftover %s: %w", tmp, err)
	}
	args := []string{"-D", tmp, "-U", Superuser, "--auth=trust", "-E", "UTF8", "--locale=C"}
	if c.opts.Fast {
		args = append(args, "--no-sync")
	}
	c.opts.Logger.Info("creating PostgreSQL cluster", "dir", c.opts.Dir, "version", c.bin.major)
	cmd := exec.CommandContext(ctx, c.bin.initdb, args...)
	c.setupCmd(cmd)
	start := c.logSize()
	if err := cmd.Run(); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("initdb: %w%s", err, c.logTail(start))
	}
	if err := os.Rename(tmp, c.dataDir); err != nil {
		return fmt.Errorf("move new cluster into place: %w", err)
	}
	return nil
}

// makeSocketDir picks (first start) or re-creates (restart) the socket directory.
func (c *Cluster) makeSocketDir() error {
	socketName := fmt.Sprintf("/.s.PGSQL.%d.lock", c.opts.Port)
	switch {
	case c.sockDir != "":
		// A restart: same directory, so DSNs handed out stay valid.
	case c.opts.SocketDir != "":
		c.sockDir = c.opts.SocketDir
	case len(c.opts.Dir)+len(socketName) <= maxSocketPath:
		c.sockDir = c.opts.Dir
	default:
		d, err := os.MkdirTemp("/tmp", "pglocal-")
		if err != nil {
			return fmt.Errorf("create socket directory: %w", err)
		}
		c.sockDir, c.ownSockDir = d, true
	}
	if len(c.sockDir)+len(socketName) > maxSocketPath {
		return fmt.Errorf("socket directory %s is too long for a unix socket path", c.sockDir)
	}
	if err := os.MkdirAll(c.sockDir, 0o700); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if c.ownSockDir || c.sockDir == c.opts.Dir {
		return c.chown(c.sockDir)
	}
	return nil
}

// spawn starts the server as our child and waits until it accepts connections.
func (c *Cluster) spawn(ctx context.Context) error {
	settings := map[string]string{
		"listen_addresses":        "",
		"unix_socket_directories": c.sockDir,
		"port":                    strconv.Itoa(c.opts.Port),
		"max_connections":         strconv.Itoa(c.opts.MaxConnections),
	}
	if c.opts.Fast {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	maps.Copy(settings, c.opts.Settings)
	args := []string{"-D", c.dataDir}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	cmd := exec.Command(c.bin.postgres, args...)
	c.setupCmd(cmd)
	start := c.logSize()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		c.waitErr = cmd.Wait()
		close(done)
	}(c.done)

	if err := c.waitReady(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.shutdown(stopCtx)
		return fmt.Errorf("%w%s", err, c.logTail(start))
	}
	return nil
}

// waitReady polls the socket until the server accepts a connection.
func (c *Cluster) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable connect_timeout=2",
		quoteDSN(c.sockDir), c.opts.Port, Superuser)
	for {
		select {
		case <-c.done:
			return fmt.Errorf("postgres exited while starting: %v", c.waitErr)
		default:
		}
		conn, err := pgconn.Connect(ctx, dsn)
		if err == nil {
			return conn.Close(ctx)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("postgres did not accept connections: %w", err)
		}
	}
}

// shutdown asks the server for a fast shutdown and waits; when ctx ends
// first it asks for an immediate one, then kills. Called with c.mu held.
func (c *Cluster) shutdown(ctx context.Context) error {
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal postgres: %w", err)
	}
	select {
	case <-c.done:
		if c.waitErr != nil {
			return fmt.Errorf("postgres: %w", c.waitErr)
		}
		return nil
	case <-ctx.Done():
	}
	_ = c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	return fmt.Errorf("fast shutdown: %w", ctx.Err())
}

// release drops what a start holds. Called with c.mu held, the server stopped.
func (c *Cluster) release() {
	c.cmd = nil
	if c.logFile != nil {
		c.logFile.Close()
		c.logFile = nil
	}
	if c.lock != nil {
		c.lock.Close() // closing the descriptor drops the flock
		c.lock = nil
	}
	if c.ownSockDir {
		os.RemoveAll(c.sockDir)
	}
}

// setupCmd makes cmd run as the cluster's user, out of our process group
// (a ^C in the terminal must reach docpipe, which then stops the server in
// its own time), dying with us, writing to the log.
func (c *Cluster) setupCmd(cmd *exec.Cmd) {
	cmd.Dir = c.opts.Dir
	cmd.Env = childEnv(os.Environ())
	cmd.Stdout, cmd.Stderr = c.logFile, c.logFile
	cmd.SysProcAttr = sysProcAttr(c.cred)
}

func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("give %s to %s: %w", path, c.opts.User, err)
	}
	return nil
}

func (c *Cluster) logSize() int64 {
	fi, err := os.Stat(c.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logTail returns the end of what the server logged since offset, for errors.
func (c *Cluster) logTail(offset int64) string {
	f, err := os.Open(c.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 2000
	if fi, err := f.Stat(); err == nil && fi.Size()-offset > max {
		offset = fi.Size() - max
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	return "\n" + c.logPath + ":\n" + s
}

// childEnv drops the PG* variables (PGDATA, PGPORT, ...) that would steer
// initdb or postgres away from our arguments.
func childEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
}

// clusterVersion returns the major version of the cluster in dataDir (0 when there is none).
func clusterVersion(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read cluster version: %w", err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s/PG_VERSION: %w", dataDir, err)
	}
	return v, nil
}

// readPid returns the postmaster's pid from the first line of postmaster.pid.
func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: bad pid %q", path, first)
	}
	return pid, nil
}

// isPostgres reports whether pid is a live postgres process. Where /proc
// is missing it settles for "alive".
func isPostgres(pid int) bool {
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err == nil {
		return strings.TrimSpace(string(comm)) == "postgres"
	}
	if _, err := os.Stat("/proc/self"); err == nil {
		return false // /proc works: the process is gone
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("running as root, the cluster runs as OS user %q (`%s` creates it): %w", name, InstallHint, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid of %s: %w", name, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid of %s: %w", name, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// checkReachable reports an error naming the first parent of dir that the
// cluster's user cannot search (a 0700 temporary directory, /root, ...).
func checkReachable(dir, name string, cred *syscall.Credential) error {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			perm := fi.Mode().Perm()
			var can bool
			switch {
			case st.Uid == cred.Uid:
				can = perm&0o100 != 0
			case st.Gid == cred.Gid:
				can = perm&0o010 != 0
			default:
				can = perm&0o001 != 0
			}
			if !can {
				return fmt.Errorf("OS user %s cannot reach %s: %s is not searchable by it (chmod o+x it, or put the cluster elsewhere)", name, dir, d)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// quoteDSN quotes a keyword/value connection string value.
func quoteDSN(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
