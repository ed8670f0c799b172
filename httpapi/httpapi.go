// Package httpapi is docpipe's HTTP transport: routes, handlers, error
// mapping and middleware over a standard library ServeMux.
//
// It serves the two routes the old clients use (GET /pipeline/status/{id}
// and GET /pipeline/history, whose JSON shapes SPEC.md fixes) and the REST
// API beside them: submitting batches (uploads or server paths), reading
// and cancelling batches and chains, OCR boxes, workbooks, images, health,
// readiness and metrics. It reads and writes only through Store; it never
// talks to the engine except through the Wake callback.
package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"

	"github.com/docpipe/docpipe/metrics"
	"github.com/docpipe/docpipe/tracking"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is what the HTTP API needs of the database. *tracking.Store has it.
type Store interface {
	CreateBatch(ctx context.Context, nb tracking.NewBatch) (*tracking.Batch, error)
	Batch(ctx context.Context, batchID string) (*tracking.Batch, error)
	ListBatches(ctx context.Context, f tracking.BatchFilter) ([]tracking.Batch, error)
	BatchChains(ctx context.Context, batchID string, fn func(*tracking.Chain) error) error
	Chain(ctx context.Context, chainID string) (*tracking.Chain, error)
	History(ctx context.Context, limit, offset int) ([]tracking.Chain, error)
	RevokeChain(ctx context.Context, chainID, reason string) (*tracking.RevokeResult, error)
	RevokeBatch(ctx context.Context, batchID, reason string) (*tracking.RevokeResult, error)
	OCRResult(ctx context.Context, chainID string) (*tracking.OCRResult, error)
}

// Default upload limits.
const (
	DefaultMaxUploadBytes  = 50 << 20  // per file
	DefaultMaxRequestBytes = 500 << 20 // per request
	DefaultMaxUploadFiles  = 10000     // per request
)

// Options configures the handler New returns. Store is required; every
// other field has a safe zero value.
type Options struct {
	// Store is the database; required.
	Store Store
	// Logger receives access lines and errors; default: discard.
	Logger *slog.Logger
	// Metrics, when set, counts requests per route pattern and status.
	Metrics *metrics.Metrics
	// Gatherer, when set, is served at GET /metrics.
	Gatherer prometheus.Gatherer
	// DataDir is where uploads are stored (DataDir/uploads/<chain_id>/<name>)
	// and the only tree images, workbooks and summaries are served from.
	// Default: "data".
	DataDir string
	// InputDirs are the directories whose files may be submitted by server
	// path (a JSON submission); a path is checked after its symbolic links
	// are resolved. Empty: server paths are refused (403) — the daemon
	// reads, stores and serves what it is given, so without a list any
	// client could have it copy out any file it can read.
	InputDirs []string
	// MaxUploadBytes is the largest uploaded file; default DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// MaxRequestBytes is the largest request body; default DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// MaxUploadFiles is the most images one request may submit; default
	// DefaultMaxUploadFiles.
	MaxUploadFiles int
	// Wake, when set, is called with the first stage after a batch is
	// submitted, so that an engine in this process claims it at once.
	Wake func(tracking.Stage)
	// Ready reports whether the process can serve (the database answers);
	// GET /readyz calls it with a 2 s timeout. Nil means always ready.
	Ready func(ctx context.Context) error
}

// api holds the validated options; its methods are the handlers.
type api struct {
	store       Store
	log         *slog.Logger
	metrics     *metrics.Metrics
	dataDir     string // absolute
	maxFile     int64
	maxRequest  int64
	maxFiles    int
	wake        func(tracking.Stage)
	ready       func(ctx context.Context) error
	firstStage  tracking.Stage
	uploadsRoot string   // dataDir/uploads
	inputDirs   []string // resolved InputDirs
}

// New returns the HTTP API as a handler, wrapped in its middleware
// (request id, access log, panic recovery, metrics). It panics if
// opts.Store is nil.
func New(opts Options) http.Handler {
	if opts.Store == nil {
		panic("httpapi: Options.Store is nil")
	}
	a := &api{
		store:      opts.Store,
		log:        opts.Logger,
		metrics:    opts.Metrics,
		maxFile:    opts.MaxUploadBytes,
		maxRequest: opts.MaxRequestBytes,
		maxFiles:   opts.MaxUploadFiles,
		wake:       opts.Wake,
		ready:      opts.Ready,
		firstStage: tracking.DocumentStages[0],
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("component", "httpapi")
	dir := opts.DataDir
	if dir == "" {
		dir = "data"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = filepath.Clean(dir)
	}
	a.dataDir = abs
	a.uploadsRoot = filepath.Join(abs, "uploads")
	for _, d := range opts.InputDirs {
		if real, err := filepath.EvalSymlinks(d); err == nil {
			d = real
		}
		if d, err := filepath.Abs(d); err == nil {
			a.inputDirs = append(a.inputDirs, d)
		}
	}
	if a.maxFile <= 0 {
		a.maxFile = DefaultMaxUploadBytes
	}
	if a.maxRequest <= 0 {
		a.maxRequest = DefaultMaxRequestBytes
	}
	if a.maxFiles <= 0 {
		a.maxFiles = DefaultMaxUploadFiles
	}

	mux := http.NewServeMux()
	// The routes the old clients use (SPEC.md).
	mux.HandleFunc("GET /pipeline/status/{chain_id}", a.chainStatus)
	mux.HandleFunc("GET /pipeline/history", a.history)
	// Batches.
	mux.HandleFunc("POST /batches", a.submitBatch)
	mux.HandleFunc("GET /batches", a.listBatches)
	mux.HandleFunc("GET /batches/{batch_id}", a.getBatch)
	mux.HandleFunc("POST /batches/{batch_id}/cancel", a.cancelBatch)
	mux.HandleFunc("GET /batches/{batch_id}/summary", a.batchSummary)
	// Chains.
	mux.HandleFunc("POST /chains/{chain_id}/cancel", a.cancelChain)
	mux.HandleFunc("GET /chains/{chain_id}/ocr", a.chainOCR)
	mux.HandleFunc("GET /chains/{chain_id}/workbook", a.chainWorkbook)
	mux.HandleFunc("GET /chains/{chain_id}/image", a.chainImage)
	// Operations.
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	if opts.Gatherer != nil {
		mux.Handle("GET /metrics", metrics.Handler(opts.Gatherer))
	}
	return a.middleware(a.jsonMisses(mux))
}

// jsonMisses answers the requests mux has no route for (404, or 405 with
// its Allow header) with a JSON error instead of the mux's plain text.
func (a *api) jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		mw := &missWriter{ResponseWriter: w}
		mux.ServeHTTP(mw, r)
		switch mw.status {
		case http.StatusNotFound:
			a.writeError(w, r, notFoundError("no route for %s %s", r.Method, r.URL.Path))
		case http.StatusMethodNotAllowed:
			a.writeError(w, r, &clientError{http.StatusMethodNotAllowed,
				fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path)})
		}
	})
}

// missWriter swallows the mux's own 404 and 405 answers and passes
// anything else (a redirect to a clean path) through.
type missWriter struct {
	http.ResponseWriter
	status int
}

func (m *missWriter) WriteHeader(code int) {
	m.status = code
	if code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		m.ResponseWriter.WriteHeader(code)
	}
}

func (m *missWriter) Write(p []byte) (int, error) {
	if m.status == 0 {
		m.WriteHeader(http.StatusOK)
	}
	if m.status == http.StatusNotFound || m.status == http.StatusMethodNotAllowed {
		return len(p), nil
	}
	return m.ResponseWriter.Write(p)
}
