package ocr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// CLIRate OCRs paths with the tesseract command-line program, one process
// per image, workers at a time (xargs -P), with OMP_THREAD_LIMIT=1 and
// opts' languages and PSM, and returns the images per second achieved.
// It is the baseline `docpipe bench` compares StageRate with. Output is
// discarded; a failing tesseract run is an error.
func CLIRate(ctx context.Context, paths []string, workers int, opts Options) (float64, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return 0, err
	}
	if len(paths) == 0 {
		return 0, errors.New("cli rate: no images")
	}
	var in bytes.Buffer
	for _, p := range paths {
		in.WriteString(p)
		in.WriteByte(0)
	}
	cmd := exec.CommandContext(ctx, "xargs", "-0", "-P", strconv.Itoa(max(workers, 1)), "-I{}",
		"tesseract", "{}", "stdout", "-l", o.Languages, "--psm", strconv.Itoa(o.PSM))
	cmd.Env = append(os.Environ(), "OMP_THREAD_LIMIT=1")
	cmd.Stdin = &in
	cmd.Stdout = io.Discard
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("cli rate: %w: %s", err, lastLine(stderr.String()))
	}
	return float64(len(paths)) / time.Since(start).Seconds(), nil
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// StageRate runs paths through s from workers goroutines, as the stage's
// runner would (without the database), and returns the images per second
// achieved. The first error stops it.
func StageRate(ctx context.Context, s *Stage, paths []string, workers int) (float64, error) {
	if len(paths) == 0 {
		return 0, errors.New("stage rate: no images")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	start := time.Now()
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				job := &pipeline.Job{Stage: tracking.StageOCR, Attempt: 1, Input: tracking.ChainInput{ImagePath: p}}
				if _, err := s.Run(ctx, job); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
				}
			}
		}()
	}
feed:
	for _, p := range paths {
		select {
		case work <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("stage rate: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("stage rate: %w", err)
	}
	return float64(len(paths)) / time.Since(start).Seconds(), nil
}
