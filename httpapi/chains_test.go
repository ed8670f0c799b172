package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docpipe/docpipe/tracking"
)

func TestChainOCR(t *testing.T) {
	e := newEnv(t, nil)
	b := submit(t, e.store, "ocr", 1)
	id := chainIDs(t, e.store, b.BatchID)[0]
	wantError(t, e.do(t, "GET", "/chains/"+id+"/ocr", nil), 404) // not run yet

	runStage(t, e.store, tracking.StageOCR, func(c *tracking.Claimed) tracking.Outcome {
		return tracking.Outcome{Result: json.RawMessage(`{}`), OCR: &tracking.OCRResult{
			ChainID: c.ChainID, ImagePath: "/img/" + c.ChainID + ".png", Pages: 1, Width: 800, Height: 600,
			Boxes: []tracking.TextBox{
				{Text: "Invoice", Confidence: 0.97, BBox: tracking.Rect(10, 10, 90, 30), Page: 1, Level: tracking.LevelWord, Seq: 0},
				{Text: "42.00", Confidence: 0.88, BBox: tracking.Rect(100, 10, 150, 30), Page: 1, Level: tracking.LevelWord, Seq: 1},
			},
		}}
	})
	rec := e.do(t, "GET", "/chains/"+id+"/ocr", nil)
	wantStatus(t, rec, 200)
	var got tracking.OCRResult
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.ChainID != id || got.Width != 800 || len(got.Boxes) != 2 || got.Boxes[0].Text != "Invoice" ||
		got.Boxes[1].BBox != tracking.Rect(100, 10, 150, 30) {
		t.Errorf("ocr %+v", got)
	}
	wantError(t, e.do(t, "GET", "/chains/nope/ocr", nil), 404)
}

// finishChain runs every stage of a one-chain batch; the last stage's
// result is workbook, then the summary stage's result is summary.
func finishChain(t *testing.T, s *tracking.Store, workbook, summary map[string]any) (batchID, chainID string) {
	t.Helper()
	b := submit(t, s, "done", 1)
	for _, st := range tracking.DocumentStages {
		runStage(t, s, st, func(*tracking.Claimed) tracking.Outcome {
			if st == tracking.StageExcel {
				r, _ := json.Marshal(workbook)
				return tracking.Outcome{Result: r}
			}
			return succeed(nil)
		})
	}
	runStage(t, s, tracking.StageSummary, func(*tracking.Claimed) tracking.Outcome {
		r, _ := json.Marshal(summary)
		return tracking.Outcome{Result: r}
	})
	return b.BatchID, chainIDs(t, s, b.BatchID)[0]
}

func TestWorkbooks(t *testing.T) {
	e := newEnv(t, nil)
	dir := filepath.Join(e.dataDir, "workbooks", "b1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	wb := tempImage(t, dir, "doc.xlsx", "PK workbook")
	sum := tempImage(t, dir, "summary.xlsx", "PK summary")
	outside := tempImage(t, t.TempDir(), "secret.xlsx", "not yours")
	if err := os.Symlink(outside, filepath.Join(dir, "link.xlsx")); err != nil {
		t.Fatal(err)
	}

	batchOK, chainOK := finishChain(t, e.store, map[string]any{"workbook": wb}, map[string]any{"summary_workbook": sum})
	batchOut, chainOut := finishChain(t, e.store, map[string]any{"workbook": outside}, map[string]any{"summary_workbook": outside})
	_, chainLink := finishChain(t, e.store, map[string]any{"workbook": filepath.Join(dir, "link.xlsx")}, nil)
	_, chainDots := finishChain(t, e.store, map[string]any{"workbook": e.dataDir + "/workbooks/../../" + filepath.Base(filepath.Dir(outside)) + "/secret.xlsx"}, nil)
	_, chainGone := finishChain(t, e.store, map[string]any{"workbook": filepath.Join(dir, "gone.xlsx")}, nil)
	_, chainNone := finishChain(t, e.store, map[string]any{"other": 1}, nil)
	pending := chainIDs(t, e.store, submit(t, e.store, "pending", 1).BatchID)[0]

	const xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	tests := []struct {
		name, target string
		code         int
		body         string
	}{
		{"chain workbook", "/chains/" + chainOK + "/workbook", 200, "PK workbook"},
		{"summary workbook", "/batches/" + batchOK + "/summary", 200, "PK summary"},
		{"workbook outside the data dir", "/chains/" + chainOut + "/workbook", 404, ""},
		{"summary outside the data dir", "/batches/" + batchOut + "/summary", 404, ""},
		{"symlink out of the data dir", "/chains/" + chainLink + "/workbook", 404, ""},
		{"dot-dot out of the data dir", "/chains/" + chainDots + "/workbook", 404, ""},
		{"file gone", "/chains/" + chainGone + "/workbook", 404, ""},
		{"no workbook key", "/chains/" + chainNone + "/workbook", 404, ""},
		{"chain not finished", "/chains/" + pending + "/workbook", 404, ""},
		{"unknown chain", "/chains/nope/workbook", 404, ""},
		{"unknown batch", "/batches/nope/summary", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.do(t, "GET", tt.target, nil)
			if tt.code != 200 {
				m := wantError(t, rec, tt.code)
				if strings.Contains(fmt.Sprint(m), outside) {
					t.Errorf("answer reveals a server path: %v", m)
				}
				return
			}
			wantStatus(t, rec, 200)
			if rec.Body.String() != tt.body {
				t.Errorf("body %q, want %q", rec.Body.String(), tt.body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != xlsx {
				t.Errorf("Content-Type %q", ct)
			}
			if cd := rec.Header().Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, ".xlsx") {
				t.Errorf("Content-Disposition %q", cd)
			}
		})
	}
}

func TestChainImageOnlyFromDataDir(t *testing.T) {
	serverDir := t.TempDir()
	e := newEnv(t, inputDirs(serverDir))
	// A chain whose image lies outside the data dir (another process's
	// submission, an old row) is never served.
	outside := tempImage(t, serverDir, "server.png", "server file")
	c, err := e.store.CreateChain(context.Background(), tracking.NewBatch{Chains: []tracking.NewChain{{Input: tracking.ChainInput{ImagePath: outside}}}})
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, e.do(t, "GET", "/chains/"+c.ChainID+"/image", nil), 404)

	// A server path submitted through the API is copied under the data
	// dir, served, and gets a public URL.
	rec := e.postJSON(t, "/batches", map[string]any{"images": []string{outside}})
	wantStatus(t, rec, 201)
	id := decode[map[string]any](t, rec)["chain_ids"].([]any)[0].(string)
	rec = e.do(t, "GET", "/chains/"+id+"/image", nil)
	wantStatus(t, rec, 200)
	if rec.Body.String() != "server file" {
		t.Errorf("body %q", rec.Body.String())
	}
	c, err = e.store.Chain(context.Background(), id)
	if err != nil || !strings.Contains(string(c.InputData), "/chains/"+id+"/image") {
		t.Errorf("input %s, %v", c.InputData, err)
	}
	wantError(t, e.do(t, "GET", "/chains/nope/image", nil), 404)
}

func TestUploadedHTMLIsNotRendered(t *testing.T) {
	e := newEnv(t, nil)
	body, ct := multipartBody(t, file("page.html", "<script>alert(1)</script>"))
	rec := e.do(t, "POST", "/batches", body, "Content-Type", ct)
	wantStatus(t, rec, 201)
	id := decode[map[string]any](t, rec)["chain_ids"].([]any)[0].(string)
	rec = e.do(t, "GET", "/chains/"+id+"/image", nil)
	wantStatus(t, rec, 200)
	if ct := rec.Header().Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q, want application/octet-stream", ct)
	}
	if cd := rec.Header().Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") {
		t.Errorf("Content-Disposition %q, want attachment", cd)
	}
	if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no nosniff")
	}
}
