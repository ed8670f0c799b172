// Command docpipe turns batches of scanned documents into Excel workbooks
// (OCR → field extraction → layout → Excel) and records every step in
// PostgreSQL.
//
// Usage:
//
//	docpipe serve            run the daemon: REST API, metrics and the stage engine
//	docpipe process DIR...   run a one-off batch in-process and write workbooks
//	docpipe migrate up|down|status|version
//	docpipe bench            measure the engine (and OCR) on this machine
//
// Run "docpipe COMMAND -h" for a command's flags. Only this package reads
// flags and the environment; everything else gets a Config.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	ensureStartEnv()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// startEnv is the environment that libraries and the Go runtime read only
// when the process starts:
//
//   - OMP_THREAD_LIMIT=1: Tesseract's own threads only slow docpipe down,
//     since images are OCR'd in parallel.
//   - MALLOC_ARENA_MAX=2: cgo calls land on many OS threads, and glibc's
//     per-thread arenas made RSS creep (500 pages: +23% → +15% RSS with
//     it, and 80 → 64 MB).
//   - GOGC=400: the engine makes short-lived garbage on every task while
//     its live heap stays small, so the default GOGC=100 runs a collection
//     every few megabytes. 400 cut docpipe's own CPU per stage task by a
//     third (docpipe bench, same moment: 19–21 → 12–16 µs).
//   - GOMEMLIMIT, half the memory docpipe may use (cgroup limit, else
//     RAM): the guard for the larger heap goal. A batch of big images
//     makes the collector work harder near the limit instead of growing
//     the heap to five times its live size.
//
// A value the user set is kept.
func startEnv() [][2]string {
	env := [][2]string{{"OMP_THREAD_LIMIT", "1"}, {"MALLOC_ARENA_MAX", "2"}, {"GOGC", "400"}}
	if limit := memoryAvailable() / 2; limit > 0 {
		env = append(env, [2]string{"GOMEMLIMIT", strconv.FormatUint(limit, 10)})
	}
	return env
}

// memoryAvailable returns the bytes of memory this process may use: its
// cgroup v2 limit when one is set, else the machine's RAM; 0 if unknown.
func memoryAvailable() uint64 {
	var ram uint64
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		ram = parseMemTotal(string(b))
	}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		if path, ok := cgroupV2Path(string(b)); ok {
			if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", path, "memory.max")); err == nil {
				// "max" (no limit) does not parse.
				if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && (ram == 0 || v < ram) {
					return v
				}
			}
		}
	}
	return ram
}

// cgroupV2Path returns the cgroup v2 path in /proc/self/cgroup's text
// (the line "0::/path").
func cgroupV2Path(text string) (string, bool) {
	for line := range strings.Lines(text) {
		if path, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok && strings.HasPrefix(path, "/") {
			return path, true
		}
	}
	return "", false
}

// parseMemTotal reads MemTotal (in kB) from /proc/meminfo's text, in bytes.
func parseMemTotal(meminfo string) uint64 {
	for line := range strings.Lines(meminfo) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					return kb * 1024
				}
			}
		}
	}
	return 0
}

// ensureStartEnv re-executes docpipe once with startEnv's variables set
// where they are unset.
func ensureStartEnv() {
	env := os.Environ()
	missing := false
	for _, kv := range startEnv() {
		if _, set := os.LookupEnv(kv[0]); !set {
			env = append(env, kv[0]+"="+kv[1])
			missing = true
		}
	}
	if !missing {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, env) // returns only on failure: carry on without it
}

const usage = `docpipe turns scanned documents into Excel workbooks and tracks every step in PostgreSQL.

Usage:
  docpipe serve              run the daemon: REST API, metrics and the stage engine
  docpipe process DIR|FILE…  run a one-off batch in-process; write workbooks to -o DIR
  docpipe migrate CMD        up | down | status | version of the database schema
  docpipe bench              measure the engine (and optionally OCR) on this machine
  docpipe version            print the version

Run "docpipe COMMAND -h" for a command's flags and environment variables.
With no DATABASE_URL, docpipe starts a private PostgreSQL under its data directory.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// errUsage marks a command-line mistake: exit code 2.
var errUsage = errors.New("usage")

// run executes one docpipe command and returns the process exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCmd(ctx, args[1:], getenv, stdout, stderr)
	case "process":
		err = processCmd(ctx, args[1:], getenv, stdout, stderr)
	case "migrate":
		err = migrateCmd(ctx, args[1:], getenv, stdout, stderr)
	case "bench":
		err = benchCmd(ctx, args[1:], getenv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "docpipe", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "docpipe: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "docpipe %s: %v\n", args[0], err)
		return 2
	case errors.Is(err, errFailedDocuments):
		return 1 // the summary already said which
	default:
		fmt.Fprintf(stderr, "docpipe %s: %v\n", args[0], oneLine(err))
		return 1
	}
}

// oneLine keeps an error to one line for the terminal.
func oneLine(err error) string {
	s := err.Error()
	for i, r := range s {
		if r == '\n' {
			return s[:i]
		}
	}
	return s
}
