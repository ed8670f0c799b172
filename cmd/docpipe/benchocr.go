package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/pipeline/ocr"
	"github.com/docpipe/docpipe/tracking"
	"github.com/jackc/pgx/v5/pgxpool"
)

// benchOCR runs the images in dir through the OCR stage with the engine
// (boxes committed to PostgreSQL) and through the tesseract command line,
// both with one worker per CPU, in the same run, and prints both rates.
func benchOCR(ctx context.Context, dir string, pool *pgxpool.Pool, out io.Writer, log *slog.Logger) error {
	paths, err := findImages([]string{dir})
	if err != nil {
		return err
	}
	// Only the formats the CLI reads directly, so both sides do the same work.
	var imgs []string
	for _, p := range paths {
		switch strings.ToLower(filepath.Ext(p)) {
		case ".png", ".jpg", ".jpeg", ".tif", ".tiff":
			imgs = append(imgs, p)
		}
	}
	if len(imgs) == 0 {
		return fmt.Errorf("%w: no PNG/JPEG/TIFF images in %s", errUsage, dir)
	}
	workers := runtime.NumCPU()
	store := tracking.NewStore(pool, tracking.StoreOptions{})
	st := ocr.NewStage(ocr.StageOptions{Workers: workers})
	defer st.Close()
	e, err := pipeline.New(pipeline.Config{Queue: store, Logger: log,
		Stages: []pipeline.StageConfig{{Stage: tracking.StageOCR, Run: st, Workers: workers}}})
	if err != nil {
		return err
	}
	// Warm up: load the language data once in every engine (the CLI pays
	// it per image; that is the point, but not the first-run disk reads).
	if _, err := ocr.StageRate(ctx, st, imgs[:min(workers, len(imgs))], workers); err != nil {
		return err
	}
	nb := tracking.NewBatch{Name: "bench-ocr", Stages: []tracking.Stage{tracking.StageOCR}, Chains: make([]tracking.NewChain, len(imgs))}
	for i, p := range imgs {
		nb.Chains[i].Input = tracking.ChainInput{ImagePath: p, FileName: p}
	}
	t0 := time.Now()
	b, err := store.CreateBatch(ctx, nb)
	if err != nil {
		return err
	}
	stop := runEngine(ctx, e)
	e.Wake(tracking.StageOCR)
	if err := waitAllEnded(ctx, pool); err != nil {
		stop()
		return err
	}
	took := time.Since(t0)
	stop()
	b, err = store.Batch(ctx, b.BatchID)
	if err != nil {
		return err
	}
	var boxes int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM ocr_text_boxes`).Scan(&boxes); err != nil {
		return err
	}
	docpipeRate := float64(len(imgs)) / took.Seconds()
	cliRate, err := ocr.CLIRate(ctx, imgs, workers, ocr.Options{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nOCR on %d images of %s, %d workers, OMP_THREAD_LIMIT=1:\n", len(imgs), dir, workers)
	fmt.Fprintf(out, "  docpipe OCR stage (engine, boxes committed): %.2f images/s (%d ok, %d failed, %d boxes)\n", docpipeRate, b.CompletedImages, b.FailedImages, boxes)
	fmt.Fprintf(out, "  tesseract CLI (xargs -P%d):                  %.2f images/s (%.2f images per CPU-second)\n", workers, cliRate.PerSecond(), cliRate.PerCPUSecond())
	fmt.Fprintf(out, "  ratio: %.2fx (target >= 1.1x)\n", docpipeRate/cliRate.PerSecond())
	return nil
}
