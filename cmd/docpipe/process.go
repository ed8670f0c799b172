package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// errFailedDocuments: the batch ran, and some documents failed (exit 1).
var errFailedDocuments = errors.New("some documents failed")

// imageExts are the file types picked up when a directory is given.
var imageExts = []string{".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".pdf"}

type processConfig struct {
	common
	stageFlags
	Out       string
	Name      string
	ChunkSize int
	Options   string
}

func processCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c processConfig
	fs := newFlagSet("process", "process [flags] DIR|FILE... -o OUT", stderr)
	c.common.register(fs, getenv)
	c.stageFlags.register(fs, getenv, false)
	if getenv("DOCPIPE_LOG_LEVEL") == "" {
		c.LogLevel = "warn" // the progress display speaks for the engine; -log-level info shows its log
		fs.Lookup("log-level").DefValue = "warn"
	}
	fs.StringVar(&c.Out, "o", "out", "directory for the workbooks (one folder per batch)")
	fs.StringVar(&c.Name, "name", "", "batch name (default: the first argument)")
	fs.IntVar(&c.ChunkSize, "chunk-size", tracking.DefaultChunkSize, "images per chunk (committed together)")
	fs.StringVar(&c.Options, "options", "", `pipeline options as JSON, e.g. {"languages":"eng+kor","psm":6}`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: name at least one image or directory", errUsage)
	}
	if c.ChunkSize <= 0 {
		return fmt.Errorf("%w: -chunk-size must be positive", errUsage)
	}
	if c.Options != "" && !json.Valid([]byte(c.Options)) {
		return fmt.Errorf("%w: -options is not valid JSON", errUsage)
	}
	images, err := findImages(fs.Args())
	if err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	out, err := filepath.Abs(c.Out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	c.OutDir = out

	db, err := c.openDatabase(ctx, log, 16, false)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrateUp(ctx, db.Pool, log); err != nil {
		return err
	}
	store := tracking.NewStore(db.Pool, tracking.StoreOptions{})

	nb := tracking.NewBatch{Name: c.Name, InitiatedBy: "docpipe process", ChunkSize: c.ChunkSize,
		OnFinish: tracking.StageSummary, Chains: make([]tracking.NewChain, len(images))}
	if nb.Name == "" {
		nb.Name = filepath.Base(strings.TrimRight(fs.Arg(0), "/"))
	}
	if c.Options != "" {
		nb.Options = json.RawMessage(c.Options)
	}
	for i, img := range images {
		id := tracking.NewID()
		stored, err := storeImage(filepath.Join(c.DataDir, "images"), id, img)
		if err != nil {
			return err
		}
		nb.Chains[i] = tracking.NewChain{ChainID: id, Input: tracking.ChainInput{ImagePath: stored, FileName: filepath.Base(img)}}
	}

	stages, closeStages, err := c.stageFlags.build(log)
	if err != nil {
		return err
	}
	defer closeStages()
	engine, err := pipeline.New(pipeline.Config{Queue: store, Stages: stages, Logger: log, ShutdownTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	batch, err := store.CreateBatch(ctx, nb)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "batch %s: %d documents → %s\n", batch.BatchID, batch.TotalImages, filepath.Join(out, batch.BatchID))

	ectx, stopEngine := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { _ = engine.Run(ectx); close(done) }() // owned: waited for below
	start := time.Now()
	final, werr := watch(ctx, store, batch.BatchID, stdout, start)
	stopEngine()
	<-done
	if werr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: batch %s stays in the database; its finished documents are in %s", batch.BatchID, out)
		}
		return werr
	}
	return report(ctx, store, final, stdout, time.Since(start))
}

// findImages expands directories (recursively, image files only, sorted)
// and keeps named files as they are.
func findImages(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		if !fi.IsDir() {
			out = append(out, a)
			continue
		}
		var found []string
		err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && slices.Contains(imageExts, strings.ToLower(filepath.Ext(p))) {
				found = append(found, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", a, err)
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%w: no images (%s) in %s", errUsage, strings.Join(imageExts, " "), a)
		}
		slices.Sort(found)
		out = append(out, found...)
	}
	return out, nil
}

// storeImage puts a copy of src (a hard link when possible) at
// dir/<chainID>/<name>, so that every chain has its own image path even
// when the same file is submitted again.
func storeImage(dir, chainID, src string) (string, error) {
	d := filepath.Join(dir, chainID)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("store image: %w", err)
	}
	dst := filepath.Join(d, filepath.Base(src))
	abs, err := filepath.Abs(src)
	if err != nil {
		return "", err
	}
	if err := os.Link(abs, dst); err == nil {
		return dst, nil
	}
	in, err := os.Open(abs)
	if err != nil {
		return "", fmt.Errorf("store image: %w", err)
	}
	defer in.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return "", fmt.Errorf("store image: %w", err)
	}
	if _, err := io.Copy(f, in); err != nil {
		f.Close()
		return "", fmt.Errorf("store image %s: %w", src, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("store image %s: %w", src, err)
	}
	return dst, nil
}

// watch shows progress until the batch and its summary have ended: a bar
// on a terminal, a line every few seconds otherwise.
func watch(ctx context.Context, store *tracking.Store, batchID string, w io.Writer, start time.Time) (*tracking.Batch, error) {
	tty := isTerminal(w)
	lastDone, lastLine := -1, time.Time{}
	summarizing := false
	for {
		b, err := store.Batch(ctx, batchID)
		if err != nil {
			return nil, err
		}
		done := b.CompletedImages + b.FailedImages
		rate := float64(done) / max(time.Since(start).Seconds(), 0.001)
		line := fmt.Sprintf("%d/%d documents, %d failed, %.2f docs/s", done, b.TotalImages, b.FailedImages, rate)
		switch {
		case tty:
			const width = 30
			filled := width * done / max(b.TotalImages, 1)
			fmt.Fprintf(w, "\r[%s%s] %s ", strings.Repeat("#", filled), strings.Repeat(".", width-filled), line)
		case done != lastDone || time.Since(lastLine) > 10*time.Second:
			fmt.Fprintln(w, line)
			lastDone, lastLine = done, time.Now()
		}
		if b.Status.Terminal() && len(b.FinalResult) > 0 {
			if tty {
				fmt.Fprintln(w)
			}
			return b, nil
		}
		if b.Status.Terminal() && !summarizing {
			summarizing = true
			if tty {
				fmt.Fprint(w, "\n")
			}
			fmt.Fprintln(w, "writing the summary workbook…")
			lastLine = time.Now()
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			if tty {
				fmt.Fprintln(w)
			}
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// report prints the summary table and the failed documents; it returns
// errFailedDocuments when any failed.
func report(ctx context.Context, store *tracking.Store, b *tracking.Batch, w io.Writer, took time.Duration) error {
	var final struct {
		Summary string `json:"summary_workbook"`
		Error   string `json:"error"`
	}
	_ = json.Unmarshal(b.FinalResult, &final)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "documents\t%d\n", b.TotalImages)
	fmt.Fprintf(tw, "succeeded\t%d\n", b.CompletedImages)
	fmt.Fprintf(tw, "failed\t%d\n", b.FailedImages)
	fmt.Fprintf(tw, "time\t%s\n", took.Round(10*time.Millisecond))
	fmt.Fprintf(tw, "images/s\t%.2f\n", float64(b.TotalImages)/max(took.Seconds(), 0.001))
	if final.Summary != "" {
		fmt.Fprintf(tw, "summary workbook\t%s\n", final.Summary)
		fmt.Fprintf(tw, "workbooks\t%s\n", filepath.Dir(final.Summary))
	}
	if final.Error != "" {
		fmt.Fprintf(tw, "summary error\t%s\n", final.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if b.FailedImages == 0 && final.Error == "" {
		return nil
	}
	fmt.Fprintln(w, "\nfailed documents:")
	err := store.BatchChains(ctx, b.BatchID, func(c *tracking.Chain) error {
		if c.Status == tracking.StatusSuccess {
			return nil
		}
		var in tracking.ChainInput
		_ = json.Unmarshal(c.InputData, &in)
		fmt.Fprintf(w, "  %s: %s\n", in.FileName, c.ErrorMessage)
		return nil
	})
	if err != nil {
		return err
	}
	return errFailedDocuments
}
