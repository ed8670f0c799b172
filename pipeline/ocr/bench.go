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
	"syscall"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// Rate is how fast a set of images was OCR'd: wall-clock time and the CPU
// time (user+system) it took. On a shared machine the CPU figure is the
// steadier one.
type Rate struct {
	Images int
	Wall   time.Duration
	CPU    time.Duration
}

// PerSecond is images per wall-clock second.
func (r Rate) PerSecond() float64 { return float64(r.Images) / r.Wall.Seconds() }

// PerCPUSecond is images per CPU second.
func (r Rate) PerCPUSecond() float64 { return float64(r.Images) / r.CPU.Seconds() }

// CLIRate OCRs paths with the tesseract command-line program, one process
// per image, workers at a time (xargs -P), with OMP_THREAD_LIMIT=1 and
// opts' languages and PSM, and returns how fast it went (CPU time is that
// of xargs and every tesseract it ran). It is the baseline `docpipe bench`
// compares StageRate with. Output is discarded; a failing tesseract run
// is an error.
func CLIRate(ctx context.Context, paths []string, workers int, opts Options) (Rate, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return Rate{}, err
	}
	if len(paths) == 0 {
		return Rate{}, errors.New("cli rate: no images")
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
		return Rate{}, fmt.Errorf("cli rate: %w: %s", err, lastLine(stderr.String()))
	}
	// xargs's rusage includes the tesseract processes it waited for.
	return Rate{Images: len(paths), Wall: time.Since(start),
		CPU: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}, nil
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// StageRate runs paths through s from workers goroutines, as the stage's
// runner would (without the database), and returns how fast it went (CPU
// time is the whole process's, so run it alone). The first error stops it.
func StageRate(ctx context.Context, s *Stage, paths []string, workers int) (Rate, error) {
	if len(paths) == 0 {
		return Rate{}, errors.New("stage rate: no images")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	start, cpu0 := time.Now(), processCPU()
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
		return Rate{}, fmt.Errorf("stage rate: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return Rate{}, fmt.Errorf("stage rate: %w", err)
	}
	return Rate{Images: len(paths), Wall: time.Since(start), CPU: processCPU() - cpu0}, nil
}

// processCPU is the CPU time (user+system) this process has used so far,
// or 0 where getrusage is unavailable.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
