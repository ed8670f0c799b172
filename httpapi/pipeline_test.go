package httpapi_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
)

// SPEC.md's keys for GET /pipeline/status/{chain_id} and its tasks.
var (
	statusKeys  = []string{"chain_id", "chain_name", "status", "progress", "total_tasks", "completed_tasks", "failed_tasks", "started_at", "finished_at", "error_message", "tasks"}
	taskKeys    = []string{"task_id", "task_name", "status", "retries", "error", "started_at", "finished_at"}
	historyKeys = []string{"chain_id", "chain_name", "status", "completed_tasks", "total_tasks", "started_at", "finished_at"}
)

// isTime reports whether v is an RFC 3339 timestamp string.
func isTime(v any) bool {
	s, ok := v.(string)
	if !ok {
		return false
	}
	_, err := time.Parse(time.RFC3339Nano, s)
	return err == nil
}

func TestChainStatus(t *testing.T) {
	e := newEnv(t, nil)
	b := submit(t, e.store, "status", 1)
	id := chainIDs(t, e.store, b.BatchID)[0]

	// Fresh: one PENDING task, nothing started.
	rec := e.do(t, "GET", "/pipeline/status/"+id, nil)
	wantStatus(t, rec, 200)
	m := decode[map[string]any](t, rec)
	wantKeys(t, "status", m, statusKeys...)
	if m["status"] != "PENDING" || m["started_at"] != nil || m["progress"] != 0.0 || m["error_message"] != nil {
		t.Errorf("fresh chain: %v", m)
	}

	// OCR succeeds, extraction fails once (RETRY).
	runStage(t, e.store, tracking.StageOCR, succeed)
	runStage(t, e.store, tracking.StageLLM, func(*tracking.Claimed) tracking.Outcome {
		return tracking.Outcome{Err: errors.New("llm endpoint timed out"), RetryAt: time.Now().Add(time.Hour)}
	})

	rec = e.do(t, "GET", "/pipeline/status/"+id, nil)
	wantStatus(t, rec, 200)
	m = decode[map[string]any](t, rec)
	wantKeys(t, "status", m, statusKeys...)
	types := []struct {
		key  string
		want any
	}{
		{"chain_id", id},
		{"chain_name", tracking.DefaultWorkflow},
		{"status", "STARTED"}, // a chain stays STARTED until it ends
		{"progress", 0.25},
		{"total_tasks", 4.0},
		{"completed_tasks", 1.0},
		{"failed_tasks", 0.0},
		{"finished_at", nil},
		{"error_message", nil},
	}
	for _, tt := range types {
		if m[tt.key] != tt.want {
			t.Errorf("%s = %#v, want %#v", tt.key, m[tt.key], tt.want)
		}
	}
	if !isTime(m["started_at"]) {
		t.Errorf("started_at = %#v, want a timestamp", m["started_at"])
	}
	tasks, ok := m["tasks"].([]any)
	if !ok || len(tasks) != 2 {
		t.Fatalf("tasks = %#v, want 2", m["tasks"])
	}
	var prev time.Time
	for i, x := range tasks {
		task := x.(map[string]any)
		wantKeys(t, fmt.Sprintf("task %d", i), task, taskKeys...)
		if _, ok := task["task_id"].(string); !ok {
			t.Errorf("task %d task_id %#v", i, task["task_id"])
		}
		if _, ok := task["retries"].(float64); !ok {
			t.Errorf("task %d retries %#v", i, task["retries"])
		}
		if !isTime(task["started_at"]) {
			t.Fatalf("task %d started_at %#v", i, task["started_at"])
		}
		st, _ := time.Parse(time.RFC3339Nano, task["started_at"].(string))
		if st.Before(prev) {
			t.Errorf("tasks not ordered by started_at")
		}
		prev = st
	}
	ocr, llm := tasks[0].(map[string]any), tasks[1].(map[string]any)
	if ocr["task_name"] != string(tracking.StageOCR) || ocr["status"] != "SUCCESS" || ocr["error"] != nil || !isTime(ocr["finished_at"]) {
		t.Errorf("ocr task %v", ocr)
	}
	if llm["task_name"] != string(tracking.StageLLM) || llm["status"] != "RETRY" || llm["retries"] != 1.0 || llm["error"] != "llm endpoint timed out" {
		t.Errorf("llm task %v", llm)
	}
}

func TestChainStatusNotFound(t *testing.T) {
	e := newEnv(t, nil)
	wantError(t, e.do(t, "GET", "/pipeline/status/no-such-chain", nil), 404)
}

func TestHistory(t *testing.T) {
	e := newEnv(t, nil)
	// Three chains, submitted one after the other: newest first.
	var ids []string
	for i := range 3 {
		b := submit(t, e.store, fmt.Sprintf("h%d", i), 1)
		ids = append([]string{chainIDs(t, e.store, b.BatchID)[0]}, ids...)
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"", ids},
		{"?limit=100&offset=0", ids},
		{"?limit=2", ids[:2]},
		{"?limit=2&offset=1", ids[1:]},
		{"?offset=3", nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			rec := e.do(t, "GET", "/pipeline/history"+tt.query, nil)
			wantStatus(t, rec, 200)
			list := decode[[]map[string]any](t, rec)
			if list == nil {
				t.Fatal("history is null, want a list")
			}
			var got []string
			for _, m := range list {
				wantKeys(t, "history entry", m, historyKeys...)
				got = append(got, m["chain_id"].(string))
				if m["total_tasks"] != 4.0 || m["completed_tasks"] != 0.0 || m["status"] != "PENDING" ||
					m["chain_name"] != tracking.DefaultWorkflow || m["started_at"] != nil || m["finished_at"] != nil {
					t.Errorf("entry %v", m)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("chains %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHistoryBadParams(t *testing.T) {
	e := newEnv(t, nil)
	for _, q := range []string{"limit=abc", "limit=-1", "limit=0", "limit=1001", "offset=-5", "offset=x", "limit=1.5"} {
		t.Run(q, func(t *testing.T) {
			wantError(t, e.do(t, "GET", "/pipeline/history?"+q, nil), 400)
		})
	}
	wantStatus(t, e.do(t, "GET", "/pipeline/history?limit=1000", nil), 200)
}

func TestChainStatusFailedChain(t *testing.T) {
	e := newEnv(t, nil)
	b := submit(t, e.store, "fail", 1)
	id := chainIDs(t, e.store, b.BatchID)[0]
	runStage(t, e.store, tracking.StageOCR, func(*tracking.Claimed) tracking.Outcome {
		return tracking.Outcome{Err: tracking.Permanent(errors.New("not an image"))}
	})
	m := decode[map[string]any](t, e.do(t, "GET", "/pipeline/status/"+id, nil))
	if m["status"] != "FAILURE" || m["failed_tasks"] != 1.0 || !isTime(m["finished_at"]) {
		t.Errorf("failed chain %v", m)
	}
	if msg, _ := m["error_message"].(string); msg == "" {
		t.Errorf("error_message %#v, want text", m["error_message"])
	}
}
