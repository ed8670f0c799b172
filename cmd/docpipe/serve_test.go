package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking/pgtest"
)

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon runs "docpipe serve" on a free port against a fresh database
// and returns its base URL; the daemon is stopped (and must exit 0) when
// the test ends.
func startDaemon(t *testing.T) (base string, dataDir string) {
	t.Helper()
	dsn := pgtest.NewDSN(t)
	dataDir = t.TempDir()
	env := map[string]string{"DATABASE_URL": dsn, "DOCPIPE_DATA_DIR": dataDir, "DOCPIPE_OCR_WORKERS": "2"}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "-listen", "127.0.0.1:0", "-log-format", "json"}, func(k string) string { return env[k] }, &stdout, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d; stderr:\n%s", code, stderr.String())
			}
		case <-time.After(60 * time.Second):
			t.Error("serve did not stop within 60s of SIGTERM")
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := stdout.String()
		if i := strings.Index(out, "listening on "); i >= 0 {
			line := out[i+len("listening on "):]
			return strings.Fields(line)[0], dataDir
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d before listening; stderr:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	return resp.StatusCode
}

// TestServeEndToEnd drives the daemon as a user would: upload a receipt,
// watch the batch to its end, read the old status and history routes, the
// OCR boxes, the workbook and the metrics, then stop it with SIGTERM.
func TestServeEndToEnd(t *testing.T) {
	base, _ := startDaemon(t)
	if code := getJSON(t, base+"/readyz", nil); code != 200 {
		t.Fatalf("readyz %d", code)
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("files", "receipt.jpg")
	img, err := os.ReadFile(filepath.Join("testdata", "receipt.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(img)
	mw.WriteField("batch_name", "e2e")
	mw.Close()
	resp, err := http.Post(base+"/batches", mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		BatchID  string   `json:"batch_id"`
		ChainIDs []string `json:"chain_ids"`
	}
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != 201 || len(created.ChainIDs) != 1 {
		t.Fatalf("submit: %d %+v", resp.StatusCode, created)
	}

	var batch map[string]any
	deadline := time.Now().Add(3 * time.Minute)
	for {
		getJSON(t, base+"/batches/"+created.BatchID, &batch)
		if s := batch["status"]; (s == "SUCCESS" || s == "FAILURE") && batch["final_result"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch did not finish: %v", batch)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if batch["status"] != "SUCCESS" || batch["progress"] != 100.0 || batch["completed_images"] != 1.0 {
		t.Fatalf("batch %v", batch)
	}

	chainID := created.ChainIDs[0]
	var status map[string]any
	if code := getJSON(t, base+"/pipeline/status/"+chainID, &status); code != 200 {
		t.Fatalf("status %d", code)
	}
	tasks, _ := status["tasks"].([]any)
	if status["status"] != "SUCCESS" || status["progress"] != 1.0 || status["completed_tasks"] != 4.0 || len(tasks) != 4 {
		t.Fatalf("status %v", status)
	}
	for i, want := range []string{"pipeline.ocr_stage", "pipeline.llm_stage", "pipeline.layout_stage", "pipeline.excel_stage"} {
		if task := tasks[i].(map[string]any); task["task_name"] != want || task["status"] != "SUCCESS" {
			t.Errorf("task %d: %v", i, task)
		}
	}
	var history []map[string]any
	if code := getJSON(t, base+"/pipeline/history?limit=10", &history); code != 200 || len(history) != 1 || history[0]["chain_id"] != chainID {
		t.Fatalf("history %d %v", code, history)
	}
	var ocr struct {
		Boxes []map[string]any `json:"boxes"`
	}
	if getJSON(t, base+"/chains/"+chainID+"/ocr", &ocr); len(ocr.Boxes) < 20 {
		t.Fatalf("%d OCR boxes", len(ocr.Boxes))
	}
	for _, path := range []string{"/chains/" + chainID + "/workbook", "/batches/" + created.BatchID + "/summary"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.HasPrefix(b, []byte("PK")) {
			t.Errorf("%s: %d, %d bytes", path, resp.StatusCode, len(b))
		}
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`docpipe_tasks_total{stage="pipeline.ocr_stage",status="SUCCESS"} 1`,
		`docpipe_queue_waiting{stage="pipeline.ocr_stage"} 0`,
		`docpipe_batches{status="SUCCESS"} 1`,
		"go_goroutines",
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if code := getJSON(t, base+"/pipeline/status/nope", nil); code != 404 {
		t.Errorf("unknown chain: %d", code)
	}
}
