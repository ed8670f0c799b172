package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pglocal"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errHelp is returned when -h was asked for: exit 0.
var errHelp = errors.New("help")

// common holds the settings every command shares.
type common struct {
	DatabaseURL string
	DataDir     string
	LogFormat   string
	LogLevel    string
}

// envDefault returns getenv(key), or def when it is empty.
func envDefault(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func envInt(getenv func(string) string, key string, def int) int {
	if v := getenv(key); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

func envDuration(getenv func(string) string, key string, def time.Duration) time.Duration {
	if v := getenv(key); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// defaultDataDir is where docpipe keeps its private PostgreSQL, uploads and
// workbooks: /var/lib/docpipe for root (the cluster's postgres user must
// reach it, and /root is private), else $XDG_DATA_HOME/docpipe or
// ~/.local/share/docpipe.
func defaultDataDir(getenv func(string) string) string {
	if os.Geteuid() == 0 {
		return "/var/lib/docpipe"
	}
	if x := getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "docpipe")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "docpipe")
	}
	return ".docpipe"
}

// register adds the shared flags to fs, defaulted from the environment.
func (c *common) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&c.DatabaseURL, "database-url", getenv("DATABASE_URL"),
		"PostgreSQL connection string (env DATABASE_URL); empty: a private cluster under the data directory")
	fs.StringVar(&c.DataDir, "data-dir", envDefault(getenv, "DOCPIPE_DATA_DIR", defaultDataDir(getenv)),
		"directory for the private PostgreSQL, uploads and workbooks (env DOCPIPE_DATA_DIR)")
	fs.StringVar(&c.LogFormat, "log-format", envDefault(getenv, "DOCPIPE_LOG_FORMAT", "text"), "log format: text or json (env DOCPIPE_LOG_FORMAT)")
	fs.StringVar(&c.LogLevel, "log-level", envDefault(getenv, "DOCPIPE_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env DOCPIPE_LOG_LEVEL)")
}

// parse parses args into fs, allowing flags after positional arguments
// ("migrate up -database-url ..."). Positional arguments are then
// fs.Args(). -h becomes errHelp, mistakes errUsage.
func parse(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return errHelp
			}
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			positional = append(positional, rest[1:]...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Parse once more with only the positional arguments so fs.Args() holds them.
	return fs.Parse(append([]string{"--"}, positional...))
}

func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: docpipe %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("%w: -log-level %q: want debug, info, warn or error", errUsage, c.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("%w: -log-format %q: want text or json", errUsage, c.LogFormat)
}

// database is an open database: a pool, and the private cluster behind it
// when docpipe started one.
type database struct {
	Pool    *pgxpool.Pool
	cluster *pglocal.Cluster
}

// Close closes the pool, then stops the private cluster.
func (d *database) Close() {
	d.Pool.Close()
	d.stopCluster()
}

// openDatabase connects to DATABASE_URL or, when it is empty, starts (or
// reuses) the private cluster under DataDir/postgres. maxConns sizes the
// pool unless the URL says pool_max_conns.
func (c *common) openDatabase(ctx context.Context, log *slog.Logger, maxConns int, fast bool) (*database, error) {
	db := &database{}
	dsn := c.DatabaseURL
	if dsn == "" {
		if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		cl, err := pglocal.Start(ctx, pglocal.Options{Dir: filepath.Join(c.DataDir, "postgres"), Fast: fast, Logger: log})
		if errors.Is(err, pglocal.ErrInUse) {
			return nil, fmt.Errorf("the private PostgreSQL in %s is in use by another docpipe process: give this one its own -data-dir, or run PostgreSQL yourself and point every docpipe at it with DATABASE_URL", c.DataDir)
		}
		if err != nil {
			return nil, fmt.Errorf("start private PostgreSQL: %w", err)
		}
		db.cluster = cl
		dsn = cl.DSN("postgres")
		log.Info("using private PostgreSQL", "dir", cl.Dir(), "log", cl.LogPath())
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		db.stopCluster()
		return nil, fmt.Errorf("database URL: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") && maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		db.stopCluster()
		return nil, fmt.Errorf("connect: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		db.stopCluster()
		return nil, fmt.Errorf("connect to %s: %w", redact(cfg), err)
	}
	db.Pool = pool
	return db, nil
}

// stopCluster stops the private cluster, if any.
func (d *database) stopCluster() {
	if d.cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = d.cluster.Stop(ctx)
	}
}

// redact names a database without its password.
func redact(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// migrateUp applies pending migrations (safe with several processes: goose
// holds an advisory lock).
func migrateUp(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	m, err := tracking.NewMigrator(pool)
	if err != nil {
		return err
	}
	defer m.Close()
	n, err := m.Up(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		log.Info("applied migrations", "count", n)
	}
	return nil
}
