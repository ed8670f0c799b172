package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docpipe/docpipe/httpapi"
	"github.com/docpipe/docpipe/metrics"
	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type serveConfig struct {
	common
	stageFlags
	Listen          string
	Migrate         bool
	Lease           time.Duration
	ShutdownTimeout time.Duration
	PollInterval    time.Duration
	Transactions    int
	RunAhead        bool
	InputDirs       string
}

func serveCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c serveConfig
	fs := newFlagSet("serve", "serve [flags]", stderr)
	c.common.register(fs, getenv)
	c.stageFlags.register(fs, getenv, true)
	fs.StringVar(&c.Listen, "listen", envDefault(getenv, "DOCPIPE_LISTEN", ":8080"), "HTTP address for the API, /metrics and health (env DOCPIPE_LISTEN)")
	fs.BoolVar(&c.Migrate, "migrate", envDefault(getenv, "DOCPIPE_MIGRATE", "true") == "true", "apply pending migrations at start (env DOCPIPE_MIGRATE)")
	fs.DurationVar(&c.Lease, "lease", envDuration(getenv, "DOCPIPE_LEASE", 30*time.Second), "task lease; a dead process's tasks are rescued after it (env DOCPIPE_LEASE)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", envDuration(getenv, "DOCPIPE_SHUTDOWN_TIMEOUT", 30*time.Second),
		"on SIGTERM, how long running tasks may finish before they are handed back (env DOCPIPE_SHUTDOWN_TIMEOUT)")
	fs.DurationVar(&c.PollInterval, "poll", envDuration(getenv, "DOCPIPE_POLL", time.Second), "fallback queue poll when no notification arrives (env DOCPIPE_POLL)")
	fs.IntVar(&c.Transactions, "transactions", envInt(getenv, "DOCPIPE_TRANSACTIONS", pipeline.DefaultTransactions()),
		"most claim and commit transactions the engine runs at once; the database's cores (env DOCPIPE_TRANSACTIONS)")
	fs.BoolVar(&c.RunAhead, "run-ahead", envDefault(getenv, "DOCPIPE_RUN_AHEAD", "true") == "true",
		"start a chain's next task as soon as its predecessor succeeds, before that is committed; fast stages are then recorded with it (env DOCPIPE_RUN_AHEAD)")
	fs.StringVar(&c.InputDirs, "input-dirs", getenv("DOCPIPE_INPUT_DIRS"),
		"comma-separated directories whose files clients may submit by server path; empty: only uploads (env DOCPIPE_INPUT_DIRS)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: serve takes no arguments, got %q", errUsage, fs.Args())
	}
	inputDirs, err := parseInputDirs(c.InputDirs)
	if err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	c.OutDir = filepath.Join(c.DataDir, "workbooks")
	stages, closeStages, err := c.stageFlags.build(log)
	if err != nil {
		return err
	}
	defer closeStages()
	// The listener first: a taken port is a one-line error before anything starts.
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()

	db, err := c.openDatabase(ctx, log, 8+2*len(stages), false)
	if err != nil {
		return err
	}
	defer db.Close()
	if c.Migrate {
		if err := migrateUp(ctx, db.Pool, log); err != nil {
			return err
		}
	}
	store := tracking.NewStore(db.Pool, tracking.StoreOptions{})

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	reg.MustRegister(metrics.NewQueueCollector(metrics.QueueOptions{Depth: store.QueueDepth, Batches: store.BatchCounts}))

	var engine *pipeline.Engine
	if len(stages) > 0 {
		engine, err = pipeline.New(pipeline.Config{Queue: store, Notifications: tracking.NewListener(store, log), Stages: stages,
			Lease: c.Lease, PollInterval: c.PollInterval, Transactions: c.Transactions, ShutdownTimeout: c.ShutdownTimeout,
			NoRunAhead: !c.RunAhead, Logger: log, Observer: m})
		if err != nil {
			return err
		}
	}
	api := httpapi.Options{Store: store, Logger: log, Metrics: m, Gatherer: reg, DataDir: c.DataDir, Ready: store.Ping, InputDirs: inputDirs}
	if engine != nil {
		api.Wake = engine.Wake
	}
	srv := &http.Server{Handler: httpapi.New(api), ReadHeaderTimeout: 10 * time.Second}

	// The engine and the server run until ctx ends or one of them fails;
	// then both stop, the server first (no new submissions), and the
	// pool and the private cluster close last (deferred above).
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	if engine != nil {
		wg.Go(func() {
			if err := engine.Run(runCtx); err != nil {
				errs <- fmt.Errorf("engine: %w", err)
			}
			cancel()
		})
	}
	wg.Go(func() {
		// Upload directories of submissions a crash cut short (stored
		// files, no batch), left from earlier runs.
		n, err := httpapi.SweepUploads(runCtx, c.DataDir, store, time.Hour)
		switch {
		case err != nil && runCtx.Err() == nil:
			log.Warn("sweeping orphaned uploads", "err", err)
		case n > 0:
			log.Info("removed orphaned upload directories", "count", n)
		}
	})
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("http: %w", err)
		}
		cancel()
	})
	fmt.Fprintf(stdout, "docpipe: listening on http://%s (stages: %s)\n", ln.Addr(), c.Stages)
	log.Info("docpipe serving", "addr", ln.Addr().String(), "stages", len(stages), "data_dir", c.DataDir)

	<-runCtx.Done()
	shutdownCtx, stop := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer stop()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	log.Info("docpipe stopped")
	return nil
}

// parseInputDirs splits -input-dirs: absolute paths of existing directories.
func parseInputDirs(list string) ([]string, error) {
	var dirs []string
	for d := range strings.SplitSeq(list, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("%w: -input-dirs: %q is not an absolute path", errUsage, d)
		}
		st, err := os.Stat(d)
		if err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%w: -input-dirs: %q is not a directory", errUsage, d)
		}
		dirs = append(dirs, d)
	}
	return dirs, nil
}
