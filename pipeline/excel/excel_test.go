package excel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/pipeline/layout"
	"github.com/docpipe/docpipe/tracking"
)

// memReader is a pipeline.Reader over results held in memory: the input of
// the stages under test.
type memReader struct {
	results map[int64]map[tracking.Stage]json.RawMessage
	chains  map[string][]*tracking.Chain
	err     error
}

func (r *memReader) StageResult(_ context.Context, chainPK int64, stage tracking.Stage) (json.RawMessage, error) {
	if r.err != nil {
		return nil, r.err
	}
	raw, ok := r.results[chainPK][stage]
	if !ok {
		return nil, tracking.ErrNotFound
	}
	return raw, nil
}

func (r *memReader) OCRResult(context.Context, string) (*tracking.OCRResult, error) {
	return nil, tracking.ErrNotFound
}

func (r *memReader) BatchChains(ctx context.Context, batchID string, fn func(*tracking.Chain) error) error {
	if r.err != nil {
		return r.err
	}
	for _, c := range r.chains[batchID] {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// word is an OCR word box 20 px high.
func word(id int64, text string, x, y, w float64) tracking.TextBox {
	return tracking.TextBox{ID: id, Text: text, Confidence: 0.9, BBox: tracking.Rect(x, y, x+w, y+20), Page: 1, Level: tracking.LevelWord}
}

// receiptLayout is the layout of a small receipt: a title and a 4-column
// table with a header.
func receiptLayout(t testing.TB) *layout.Layout {
	t.Helper()
	rows := [][]string{
		{"Description", "Qty", "Price", "Amount"},
		{"Coffee", "2", "12.50", "25.00"},
		{"Oil", "1", "1,234.50", "1,234.50"},
		{"Eggs", "12", "0.35", "4.20"},
	}
	boxes := []tracking.TextBox{word(1, "ACME", 40, 10, 60), word(2, "MARKET", 110, 10, 90)}
	for r, row := range rows {
		y := 80 + float64(r)*30
		for c, s := range row {
			w := float64(len(s)) * 10
			x := 40.0
			if c > 0 {
				x = 300 + float64(c)*150 - w // right-aligned
			}
			boxes = append(boxes, word(int64(len(boxes)+1), s, x, y, w))
		}
	}
	l := layout.Analyze(boxes)
	if len(l.Tables) != 1 || !l.Tables[0].Header {
		t.Fatalf("test layout has no table with a header: %+v", l.Tables)
	}
	return l
}

const extractionJSON = `{
  "fields": {
    "company": {"value": "ACME Market", "confidence": 0.93, "box_ids": [1, 2]},
    "total": {"value": "1,264.70", "confidence": 0.8, "box_ids": [20]},
    "date": {"value": "2024-03-05", "confidence": 0.7},
    "invoice_number": {"value": "007123", "confidence": 0.6},
    "store_id": 42,
    "cashier": {"value": null}
  },
  "pairs": [{"key": "Till", "value": 3}, {"key": "Cashier", "value": "Ann"}],
  "extractor": "builtin"
}`

// numberCell asserts that cell holds a number (no type, or type n, in the
// file) and returns it.
func numberCell(t *testing.T, f *excelize.File, sheet, cell string) float64 {
	t.Helper()
	typ, err := f.GetCellType(sheet, cell)
	if err != nil {
		t.Fatalf("%s!%s: %v", sheet, cell, err)
	}
	raw, err := f.GetCellValue(sheet, cell, excelize.Options{RawCellValue: true})
	if err != nil {
		t.Fatalf("%s!%s: %v", sheet, cell, err)
	}
	v, perr := strconv.ParseFloat(raw, 64)
	if (typ != excelize.CellTypeUnset && typ != excelize.CellTypeNumber) || perr != nil {
		t.Errorf("%s!%s = %q (type %v), want a number", sheet, cell, raw, typ)
	}
	return v
}

// textCell asserts that cell holds a string and returns it.
func textCell(t *testing.T, f *excelize.File, sheet, cell string) string {
	t.Helper()
	typ, err := f.GetCellType(sheet, cell)
	if err != nil {
		t.Fatalf("%s!%s: %v", sheet, cell, err)
	}
	v, err := f.GetCellValue(sheet, cell)
	if err != nil {
		t.Fatalf("%s!%s: %v", sheet, cell, err)
	}
	if typ != excelize.CellTypeSharedString && typ != excelize.CellTypeInlineString {
		t.Errorf("%s!%s = %q has type %v, want a string", sheet, cell, v, typ)
	}
	return v
}

func openBook(t *testing.T, path string) *excelize.File {
	t.Helper()
	f, err := excelize.OpenFile(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// noTempFiles asserts that dir holds only finished workbooks.
func noTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temp file left behind: %s", e.Name())
		}
	}
}

func TestStageWritesDocumentWorkbook(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	lay := receiptLayout(t)
	reader := &memReader{results: map[int64]map[tracking.Stage]json.RawMessage{
		7: {tracking.StageLLM: json.RawMessage(extractionJSON), tracking.StageLayout: mustJSON(t, lay)},
	}}
	st, err := NewStage(Options{OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	job := &pipeline.Job{
		ChainPK: 7, ChainID: "3f2a9c1e-77aa-4b1c-9d2e-0123456789ab", BatchID: "batch/../7",
		Input: tracking.ChainInput{ImagePath: "/data/in/x.png", FileName: "scan 01.png"}, Reader: reader,
	}
	res, err := st.Run(t.Context(), job)
	if err != nil {
		t.Fatal(err)
	}

	// The result, as the engine stores it.
	var got map[string]any
	if err := json.Unmarshal(mustJSON(t, res.Result), &got); err != nil {
		t.Fatal(err)
	}
	wantPath := filepath.Join(out, "batch_.._7", "scan_01-3f2a9c1e.xlsx")
	want := map[string]any{
		"workbook":  wantPath,
		"file_name": "scan 01.png",
		"fields": map[string]any{
			"company": "ACME Market", "total": "1,264.70", "date": "2024-03-05",
			"invoice_number": "007123", "store_id": "42", "cashier": "",
		},
		"tables": float64(1),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("result:\n got %v\nwant %v", got, want)
	}
	noTempFiles(t, filepath.Dir(wantPath))

	f := openBook(t, wantPath)
	if got, want := f.GetSheetList(), []string{SheetFields, SheetTable, SheetText, SheetPairs}; !reflect.DeepEqual(got, want) {
		t.Errorf("sheets = %v, want %v", got, want)
	}

	// Fields: known fields first in their order, then the others by name.
	rows, err := f.GetRows(SheetFields)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rows[1:] {
		names = append(names, r[0])
	}
	if want := []string{"company", "date", "total", "invoice_number", "cashier", "store_id"}; !reflect.DeepEqual(names, want) {
		t.Errorf("field order = %v, want %v", names, want)
	}
	if v := numberCell(t, f, SheetFields, "B4"); v != 1264.7 {
		t.Errorf("total = %v, want 1264.7", v)
	}
	if v := textCell(t, f, SheetFields, "B5"); v != "007123" {
		t.Errorf("invoice number = %q, want the text 007123", v)
	}
	if v := numberCell(t, f, SheetFields, "C2"); v != 0.93 {
		t.Errorf("company confidence = %v", v)
	}
	if v := textCell(t, f, SheetFields, "D2"); v != "1, 2" {
		t.Errorf("company box ids = %q", v)
	}

	// Table: header row, then numbers as numbers.
	if got := []string{textCell(t, f, SheetTable, "A1"), textCell(t, f, SheetTable, "D1")}; !reflect.DeepEqual(got, []string{"Description", "Amount"}) {
		t.Errorf("table header = %v", got)
	}
	if v := textCell(t, f, SheetTable, "A3"); v != "Oil" {
		t.Errorf("A3 = %q, want Oil", v)
	}
	for cell, want := range map[string]float64{"B2": 2, "C3": 1234.5, "D3": 1234.5, "D4": 4.2, "B4": 12} {
		if v := numberCell(t, f, SheetTable, cell); v != want {
			t.Errorf("Table!%s = %v, want %v", cell, v, want)
		}
	}
	if v, _ := f.GetCellValue(SheetTable, "C3"); v != "1,234.50" {
		t.Errorf("Table!C3 is shown as %q, want 1,234.50", v)
	}
	tables, err := f.GetTables(SheetTable)
	if err != nil || len(tables) != 1 || tables[0].Range != "A1:D4" {
		t.Errorf("excel tables = %+v, %v; want one on A1:D4", tables, err)
	}
	hs, _ := f.GetCellStyle(SheetTable, "A1")
	if style, err := f.GetStyle(hs); err != nil || style.Font == nil || !style.Font.Bold {
		t.Errorf("table header is not bold: %+v %v", style, err)
	}
	if w, _ := f.GetColWidth(SheetTable, "A"); w < 12 {
		t.Errorf("column A width = %v, want room for Description", w)
	}

	// Text: every line with confidence and bbox.
	rows, err = f.GetRows(SheetText)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+len(lay.Lines) || rows[1][3] != "ACME MARKET" {
		t.Errorf("text rows = %q", rows)
	}
	if v := numberCell(t, f, SheetText, "E2"); v != 0.9 {
		t.Errorf("line confidence = %v", v)
	}
	if v := numberCell(t, f, SheetText, "F2"); v != 40 {
		t.Errorf("line x0 = %v", v)
	}

	// Pairs.
	if v := textCell(t, f, SheetPairs, "B2"); v != "3" {
		t.Errorf("pair value = %q", v)
	}
}

func TestStageInputs(t *testing.T) {
	t.Parallel()
	lay := mustJSON(t, receiptLayout(t))
	tests := []struct {
		name      string
		results   map[tracking.Stage]json.RawMessage
		readErr   error
		job       pipeline.Job
		wantFile  string // under OutDir
		wantErr   bool
		permanent bool
	}{
		{
			name:     "single document, no extraction result",
			results:  map[tracking.Stage]json.RawMessage{tracking.StageLayout: lay},
			job:      pipeline.Job{ChainID: "abc", Input: tracking.ChainInput{ImagePath: "/in/r.tiff"}},
			wantFile: "single/r-abc.xlsx",
		},
		{
			name:     "nothing to write but the name",
			job:      pipeline.Job{ChainID: "c-1", BatchID: "b1"},
			wantFile: "b1/document-c1.xlsx",
		},
		{
			name:      "extraction that does not decode",
			results:   map[tracking.Stage]json.RawMessage{tracking.StageLLM: json.RawMessage(`{"fields": [1]}`)},
			job:       pipeline.Job{ChainID: "abc"},
			wantErr:   true,
			permanent: true,
		},
		{
			name:    "read error is retried",
			readErr: errors.New("connection reset"),
			job:     pipeline.Job{ChainID: "abc"},
			wantErr: true,
		},
		{
			name:      "no chain",
			job:       pipeline.Job{},
			wantErr:   true,
			permanent: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out := t.TempDir()
			st, err := NewStage(Options{OutDir: out})
			if err != nil {
				t.Fatal(err)
			}
			job := tt.job
			job.ChainPK = 1
			job.Reader = &memReader{results: map[int64]map[tracking.Stage]json.RawMessage{1: tt.results}, err: tt.readErr}
			res, err := st.Run(t.Context(), &job)
			if (err != nil) != tt.wantErr || tracking.IsPermanent(err) != tt.permanent {
				t.Fatalf("err = %v (permanent %v), want error %v permanent %v", err, tracking.IsPermanent(err), tt.wantErr, tt.permanent)
			}
			if err != nil {
				return
			}
			want := filepath.Join(out, tt.wantFile)
			if got := res.Result.(Result).Workbook; got != want {
				t.Errorf("workbook = %s, want %s", got, want)
			}
			openBook(t, want)
		})
	}
	if _, err := NewStage(Options{}); err == nil {
		t.Error("NewStage without OutDir: no error")
	}
}

// batchReader holds a batch of three documents: two done (one with an
// extra field), one failed.
func batchReader(t testing.TB) *memReader {
	ok := func(file, total string, extra map[string]any) json.RawMessage {
		fields := map[string]any{"company": "ACME", "total": total, "date": "2024-03-05"}
		for k, v := range extra {
			fields[k] = v
		}
		return mustJSON(t, map[string]any{"workbook": "/out/b/" + file + ".xlsx", "file_name": file, "fields": fields})
	}
	in := func(name, path string) json.RawMessage {
		return mustJSON(t, tracking.ChainInput{FileName: name, ImagePath: path})
	}
	return &memReader{chains: map[string][]*tracking.Chain{"b-1": {
		{ChainID: "c1", Status: tracking.StatusSuccess, InputData: in("a.png", "/in/a.png"), FinalResult: ok("a.png", "1,234.50", nil)},
		{ChainID: "c2", Status: tracking.StatusFailure, InputData: in("", "/in/b.jpg"), ErrorMessage: "pipeline.ocr_stage: unreadable image"},
		{ChainID: "c3", Status: tracking.StatusSuccess, InputData: in("c.png", ""), FinalResult: ok("c.png", "n/a", map[string]any{"store_id": 42, "Total": "x"})},
	}}}
}

func TestSummaryStage(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	st, err := NewSummaryStage(Options{OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Run(t.Context(), &pipeline.Job{BatchID: "b-1", Reader: batchReader(t)})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(mustJSON(t, res.Result), &got); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(out, "b-1", "summary.xlsx")
	want := map[string]any{"summary_workbook": path, "documents": 3.0, "succeeded": 2.0, "failed": 1.0}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("result = %v, want %v", got, want)
	}
	noTempFiles(t, filepath.Dir(path))

	f := openBook(t, path)
	rows, err := f.GetRows(SheetSummary)
	if err != nil {
		t.Fatal(err)
	}
	wantHeader := []string{"File", "Chain ID", "Status", "company", "address", "date", "total", "currency", "invoice_number", "tax", "Total 2", "store_id", "Workbook", "Error"}
	if !reflect.DeepEqual(rows[0], wantHeader) {
		t.Errorf("header = %q\nwant %q", rows[0], wantHeader)
	}
	if len(rows) != 4 {
		t.Fatalf("got %d rows, want header + 3", len(rows))
	}
	if v := numberCell(t, f, SheetSummary, "G2"); v != 1234.5 {
		t.Errorf("total of a.png = %v", v)
	}
	if v := textCell(t, f, SheetSummary, "G4"); v != "n/a" {
		t.Errorf("total of c.png = %q, want the text n/a", v)
	}
	checks := map[string]string{
		"A2": "a.png", "C2": "SUCCESS", "D2": "ACME", "M2": "/out/b/a.png.xlsx",
		"A3": "b.jpg", "C3": "FAILURE", "N3": "pipeline.ocr_stage: unreadable image",
		"A4": "c.png", "K4": "x", "L4": "42",
	}
	for cell, want := range checks {
		if v, _ := f.GetCellValue(SheetSummary, cell); v != want {
			t.Errorf("%s = %q, want %q", cell, v, want)
		}
	}
	if v, _ := f.GetCellValue(SheetSummary, "D3"); v != "" {
		t.Errorf("failed document has company %q", v)
	}
	tables, err := f.GetTables(SheetSummary)
	if err != nil || len(tables) != 1 || tables[0].Range != "A1:N4" {
		t.Errorf("tables = %+v, %v; want one on A1:N4", tables, err)
	}

	if _, err := st.Run(t.Context(), &pipeline.Job{Reader: batchReader(t)}); !tracking.IsPermanent(err) {
		t.Errorf("summary without a batch: err = %v, want permanent", err)
	}
	if _, err := st.Run(t.Context(), &pipeline.Job{BatchID: "b-1", Reader: &memReader{err: errors.New("down")}}); err == nil || tracking.IsPermanent(err) {
		t.Errorf("summary with a read error: err = %v, want a retryable error", err)
	}
	empty, err := st.Run(t.Context(), &pipeline.Job{BatchID: "empty", Reader: &memReader{}})
	if err != nil || empty.Result.(*SummaryResult).Documents != 0 {
		t.Errorf("empty batch: %+v, %v", empty, err)
	}
}

// TestLibreOfficeOpensWorkbooks proves another program accepts the files:
// LibreOffice converts a document workbook and a summary to PDF, and the
// summary to CSV with the numbers as numbers.
func TestLibreOfficeOpensWorkbooks(t *testing.T) {
	t.Parallel()
	lo, err := exec.LookPath("libreoffice")
	if err != nil {
		t.Skip("libreoffice is not installed (apt-get install libreoffice-calc): skipping the conversion test")
	}
	out := t.TempDir()
	doc := filepath.Join(out, "doc.xlsx")
	var ext Extraction
	if err := json.Unmarshal([]byte(extractionJSON), &ext); err != nil {
		t.Fatal(err)
	}
	if err := WriteDocument(doc, &ext, receiptLayout(t)); err != nil {
		t.Fatal(err)
	}
	st, err := NewSummaryStage(Options{OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Run(t.Context(), &pipeline.Job{BatchID: "b-1", Reader: batchReader(t)})
	if err != nil {
		t.Fatal(err)
	}
	summary := res.Result.(*SummaryResult).SummaryWorkbook

	pdfDir, csvDir := filepath.Join(out, "pdf"), filepath.Join(out, "csv")
	profile := "-env:UserInstallation=file://" + filepath.Join(out, "lo-profile")
	for _, args := range [][]string{
		{profile, "--headless", "--convert-to", "pdf", "--outdir", pdfDir, doc, summary},
		{profile, "--headless", "--convert-to", "csv", "--outdir", csvDir, summary},
	} {
		cmd := exec.CommandContext(t.Context(), lo, args...)
		cmd.Env = append(os.Environ(), "HOME="+out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("libreoffice %v: %v\n%s", args, err, b)
		}
	}
	for _, name := range []string{"doc.pdf", "summary.pdf"} {
		b, err := os.ReadFile(filepath.Join(pdfDir, name))
		if err != nil || len(b) < 1000 || !strings.HasPrefix(string(b), "%PDF") {
			t.Errorf("%s: %d bytes, %v; want a PDF", name, len(b), err)
		}
	}
	csv, err := os.ReadFile(filepath.Join(csvDir, "summary.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	if len(lines) != 4 || !strings.Contains(lines[1], ",1234.5,") {
		t.Errorf("summary as CSV:\n%s\nwant 4 lines, a.png's total as 1234.5", csv)
	}
}

// genReader yields n generated chains without holding them: a batch of
// any size in constant memory, for the benchmark.
type genReader struct{ n int }

func (genReader) StageResult(context.Context, int64, tracking.Stage) (json.RawMessage, error) {
	return nil, tracking.ErrNotFound
}

func (genReader) OCRResult(context.Context, string) (*tracking.OCRResult, error) {
	return nil, tracking.ErrNotFound
}

func (r genReader) BatchChains(ctx context.Context, _ string, fn func(*tracking.Chain) error) error {
	for i := range r.n {
		c := &tracking.Chain{
			ChainID:   fmt.Sprintf("chain-%08d-aaaa-bbbb-cccc-dddddddddddd", i),
			Status:    tracking.StatusSuccess,
			InputData: json.RawMessage(fmt.Sprintf(`{"image_path":"/data/in/batch/img-%06d.png","file_name":"img-%06d.png"}`, i, i)),
			FinalResult: json.RawMessage(fmt.Sprintf(`{"workbook":"/data/out/batch/img-%06d-chain%04d.xlsx","file_name":"img-%06d.png",`+
				`"fields":{"company":"ACME Market %d","address":"12 Harbour Road, Springfield","date":"2024-03-05",`+
				`"total":"%d.%02d","currency":"EUR","invoice_number":"INV-%06d","tax":"1.%02d","store_id":"%d"}}`,
				i, i%10000, i, i, i%1000, i%100, i, i%100, i%7)),
		}
		if i%50 == 0 {
			c.Status, c.FinalResult, c.ErrorMessage = tracking.StatusFailure, nil, "pipeline.ocr_stage: unreadable image"
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkSummary writes the summary of generated batches and reports the
// peak heap in use above the baseline (sampled every millisecond). The
// stage holds one row at a time; what grows is excelize's StreamWriter
// buffer, which keeps the sheet XML in memory up to its StreamChunkSize
// (16 MiB, a constant) and spills to a temp file past it, so the peak rises
// up to roughly 25,000 rows and stays flat after: compare docs=100000 with
// docs=10000 (and run with GOGC=20 to see less uncollected garbage).
func BenchmarkSummary(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("docs=%d", n), func(b *testing.B) {
			out := b.TempDir()
			st, err := NewSummaryStage(Options{OutDir: out})
			if err != nil {
				b.Fatal(err)
			}
			job := &pipeline.Job{BatchID: "bench", Reader: genReader{n: n}}
			peak := peakHeap(b, func() {
				for b.Loop() {
					if _, err := st.Run(b.Context(), job); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			if fi, err := os.Stat(filepath.Join(out, "bench", "summary.xlsx")); err == nil {
				b.ReportMetric(float64(fi.Size())/(1<<10), "file-KiB")
			}
		})
	}
}

// peakHeap runs fn and returns the largest HeapInuse seen while it ran,
// minus the HeapInuse before it started (after a GC).
func peakHeap(b *testing.B, fn func()) uint64 {
	b.Helper()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := make(chan struct{})
	done := make(chan uint64)
	go func() {
		var m runtime.MemStats
		peak := uint64(0)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	fn()
	close(stop)
	peak := <-done
	if peak < base {
		return 0
	}
	return peak - base
}
