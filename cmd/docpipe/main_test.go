package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/docpipe/docpipe/tracking/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// runCmd runs docpipe with args and returns its exit code and output.
func runCmd(t *testing.T, ctx context.Context, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string { return env[k] }
	code = run(ctx, args, getenv, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "Usage:"},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"migrate without verb", []string{"migrate"}, 2, "want exactly one of up, down, status, version"},
		{"migrate bad verb", []string{"migrate", "sideways"}, 2, `unknown migrate command "sideways"`},
		{"bad flag", []string{"serve", "-no-such-flag"}, 2, "flag provided but not defined"},
		{"process nothing", []string{"process"}, 2, "name at least one image or directory"},
		{"process missing file", []string{"process", "/no/such/file.png"}, 2, "no such file"},
		{"bad log level", []string{"migrate", "status", "-log-level", "loud", "-database-url", "host=/nonexistent"}, 2, "-log-level"},
		{"input dir not absolute", []string{"serve", "-input-dirs", "scans"}, 2, `-input-dirs: "scans" is not an absolute path`},
		{"input dir missing", []string{"serve", "-input-dirs", "/tmp,/no/such/dir"}, 2, `-input-dirs: "/no/such/dir" is not a directory`},
		{"help", []string{"help"}, 0, ""},
		{"serve -h", []string{"serve", "-h"}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, context.Background(), nil, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stdout+stderr, tt.want) {
				t.Fatalf("output lacks %q:\n%s%s", tt.want, stdout, stderr)
			}
		})
	}
}

// TestMigrateUnreachable: a database that is not there is a non-zero exit
// with a one-line reason, not a stack trace.
func TestMigrateUnreachable(t *testing.T) {
	code, stdout, stderr := runCmd(t, context.Background(), nil,
		"migrate", "status", "-database-url", "host=/nonexistent-socket-dir port=5 user=x dbname=y connect_timeout=2")
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr %q", code, stderr)
	}
	if lines := strings.Count(strings.TrimSpace(stderr), "\n"); lines != 0 || !strings.HasPrefix(stderr, "docpipe migrate: connect to ") {
		t.Fatalf("want one line naming the connection, got %q (stdout %q)", stderr, stdout)
	}
	if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
		t.Fatalf("stack trace: %s", stderr)
	}
}

func TestMigrateCommands(t *testing.T) {
	dsn := pgtest.NewEmptyDSN(t)
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "version"}, "0"},
		{[]string{"migrate", "status"}, "pending  00001"},
		{[]string{"migrate", "up"}, "applied 2 migration(s); schema version 2"},
		{[]string{"migrate", "up"}, "applied 0 migration(s); schema version 2"},
		{[]string{"migrate", "status"}, "applied  00002"},
		{[]string{"migrate", "down"}, "undid one migration; schema version 1"},
		{[]string{"migrate", "up"}, "applied 1 migration(s); schema version 2"},
	}
	for _, s := range steps {
		code, stdout, stderr := runCmd(t, context.Background(), map[string]string{"DATABASE_URL": dsn}, s.args...)
		if code != 0 || !strings.Contains(stdout, s.want) {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want %q", s.args, code, stdout, stderr, s.want)
		}
	}
}

// TestProcess runs the whole pipeline in-process on a real receipt and a
// file that is not an image: one workbook, one readable failure, exit 1.
func TestProcess(t *testing.T) {
	dsn := pgtest.NewDSN(t)
	out := t.TempDir()
	data := t.TempDir()
	env := map[string]string{"DATABASE_URL": dsn, "DOCPIPE_DATA_DIR": data}
	code, stdout, stderr := runCmd(t, context.Background(), env, "process", "-o", out, "testdata/receipt.jpg", "testdata/notes.png")
	if code != 1 {
		t.Fatalf("exit %d, want 1 (one document failed)\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"documents         2", "succeeded         1", "failed            1", "summary workbook", "notes.png: pipeline.ocr_stage failed:"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	books, _ := filepath.Glob(filepath.Join(out, "*", "receipt-*.xlsx"))
	summary, _ := filepath.Glob(filepath.Join(out, "*", "summary.xlsx"))
	if len(books) != 1 || len(summary) != 1 {
		t.Fatalf("workbooks %v, summary %v", books, summary)
	}
	// The same files again: a new batch, no unique-constraint trouble.
	code, stdout, _ = runCmd(t, context.Background(), env, "process", "-o", out, "testdata/receipt.jpg")
	if code != 0 || !strings.Contains(stdout, "succeeded         1") {
		t.Fatalf("second run: exit %d\n%s", code, stdout)
	}
	if _, err := os.Stat(filepath.Join(data, "images")); err != nil {
		t.Fatalf("images not stored under the data directory: %v", err)
	}
}

// TestBenchRuns: a small docpipe bench against a test database runs every
// phase and prints its figures (their values are for the README, not for
// tests).
func TestBenchRuns(t *testing.T) {
	dsn := pgtest.NewDSN(t)
	code, stdout, stderr := runCmd(t, context.Background(), map[string]string{"DATABASE_URL": dsn},
		"bench", "-chains", "200", "-batch", "50", "-runs", "2", "-low-rate", "20", "-low-duration", "1s")
	if code != 0 {
		t.Fatalf("exit %d; stderr %s", code, stderr)
	}
	for _, want := range []string{"stage tasks/s", "CPU per stage task", "WAL per stage task", "tasks handed off directly",
		"pickup latency p50/p99", "chain latency at low rate", "task_logs size before/after"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestParseMemTotal(t *testing.T) {
	tests := []struct {
		name, in string
		want     uint64
	}{
		{"linux", "MemTotal:       24589612 kB\nMemFree:        1000 kB\n", 24589612 * 1024},
		{"not first", "Foo: 1 kB\nMemTotal: 2 kB\n", 2048},
		{"missing", "MemFree: 1000 kB\n", 0},
		{"bad unit", "MemTotal: 2 MB\n", 0},
		{"garbage", "MemTotal: lots kB\n", 0},
		{"empty", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseMemTotal(tt.in); got != tt.want {
				t.Errorf("parseMemTotal(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestCgroupV2Path(t *testing.T) {
	tests := []struct {
		name, in string
		want     string
		ok       bool
	}{
		{"v2", "0::/system.slice/docpipe.service\n", "/system.slice/docpipe.service", true},
		{"container root", "0::/\n", "/", true},
		{"hybrid", "12:memory:/user.slice\n0::/user.slice/session-1.scope\n", "/user.slice/session-1.scope", true},
		{"v1 only", "12:memory:/user.slice\n", "", false},
		{"empty", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := cgroupV2Path(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("cgroupV2Path(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestStartEnv(t *testing.T) {
	env := map[string]string{}
	for _, kv := range startEnv() {
		env[kv[0]] = kv[1]
	}
	for _, k := range []string{"OMP_THREAD_LIMIT", "MALLOC_ARENA_MAX", "GOGC", "GOMEMLIMIT"} {
		if env[k] == "" {
			t.Errorf("startEnv sets no %s (got %v)", k, env)
		}
	}
	limit, err := strconv.ParseUint(env["GOMEMLIMIT"], 10, 64)
	if err != nil || limit < 64<<20 || limit > memoryAvailable() {
		t.Errorf("GOMEMLIMIT = %q: want a byte count between 64 MiB and the memory available (%d)", env["GOMEMLIMIT"], memoryAvailable())
	}
}
