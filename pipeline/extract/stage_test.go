package extract

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

func TestDefaultSchema(t *testing.T) {
	s := DefaultSchema()
	var names []string
	for _, f := range s.Fields {
		names = append(names, f.Name)
		if f.Rule == "" {
			t.Errorf("default field %s has no built-in rule", f.Name)
		}
	}
	if got := strings.Join(names, ","); got != "company,address,date,total,currency,invoice_number,tax" {
		t.Errorf("fields = %s", got)
	}
	var js map[string]any
	if err := json.Unmarshal(s.LLMSchema(), &js); err != nil {
		t.Fatal(err)
	}
	if js["type"] != "object" || js["additionalProperties"] != false {
		t.Errorf("LLM schema = %v", js)
	}
}

func TestLoadSchema(t *testing.T) {
	s, err := LoadSchema(filepath.Join("testdata", "schemas", "invoice.json"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "invoice" || len(s.Fields) != 5 || s.Fields[0].Rule != RuleCompany || s.Fields[3].Type != TypeText {
		t.Errorf("schema = %+v", s)
	}
	tests := []struct {
		file, wantIn string
	}{
		{"bad_json.json", "invalid JSON at line 3 column"},
		{"bad_type.json", `unknown type "money"`},
		{"bad_rule.json", `unknown rule "vendor_name"`},
		{"duplicate.json", "listed twice"},
		{"unknown_key.json", `unknown field "kind"`},
		{"no_fields.json", "at least one field"},
		{"bad_name.json", "must match"},
		{"missing.json", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := LoadSchema(filepath.Join("testdata", "schemas", tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantIn)
			}
		})
	}
}

// fakeReader serves one OCR result.
type fakeReader struct {
	ocr *tracking.OCRResult
	err error
}

func (r *fakeReader) StageResult(context.Context, int64, tracking.Stage) (json.RawMessage, error) {
	return nil, tracking.ErrNotFound
}

func (r *fakeReader) OCRResult(_ context.Context, chainID string) (*tracking.OCRResult, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.ocr == nil || r.ocr.ChainID != chainID {
		return nil, tracking.ErrNotFound
	}
	return r.ocr, nil
}

func (r *fakeReader) BatchChains(context.Context, string, func(*tracking.Chain) error) error {
	return nil
}

func testJob(t *testing.T, reader pipeline.Reader, options string) *pipeline.Job {
	t.Helper()
	return &pipeline.Job{
		TaskID: "t1", Stage: tracking.StageLLM, StageIndex: 1, Attempt: 1, MaxAttempts: 3,
		ChainPK: 1, ChainID: "c1", Reader: reader,
		Input: tracking.ChainInput{ImagePath: "/x.jpg", Options: json.RawMessage(options)},
	}
}

var receiptLines = []string{
	"ACME TRADING SDN BHD",
	"12, JALAN TAMPOI 7/4, 81200 JOHOR BAHRU, JOHOR",
	"TEL: 07-1234567",
	"TAX INVOICE",
	"Invoice No: INV-0042",
	"Date: 25/12/2018 Time: 10:30",
	"Cashier: Ali",
	"Sub Total 10.00",
	"GST 6%: 0.60",
	"Rounding -0.02",
	"Total RM 10.58",
	"Cash 20.00",
	"Change 9.42",
}

func TestStageBuiltin(t *testing.T) {
	st, err := NewStage(StageConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := st.Run(t.Context(), testJob(t, &fakeReader{ocr: testOCR(receiptLines...)}, ""))
	if err != nil {
		t.Fatal(err)
	}
	res, ok := out.Result.(*Result)
	if !ok {
		t.Fatalf("result is %T", out.Result)
	}
	// Round-trip through JSON, as the Excel stage will read it.
	data, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var got Result
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"company": "ACME TRADING SDN BHD", "address": "12, JALAN TAMPOI 7/4, 81200 JOHOR BAHRU, JOHOR",
		"date": "2018-12-25", "total": "10.58", "currency": "MYR", "invoice_number": "INV-0042", "tax": "0.60",
	}
	for k, v := range want {
		if got.Fields[k].Value != v {
			t.Errorf("%s = %q, want %q", k, got.Fields[k].Value, v)
		}
		if len(got.Fields[k].BoxIDs) == 0 || got.Fields[k].Confidence <= 0 {
			t.Errorf("%s has no boxes or confidence: %+v", k, got.Fields[k])
		}
	}
	if got.Extractor != "builtin" || got.Schema != "receipt" || len(got.Order) != 7 {
		t.Errorf("result header = %q %q %v", got.Extractor, got.Schema, got.Order)
	}
	pairs := map[string]string{}
	for _, p := range got.Pairs {
		pairs[p.Key] = p.Value
	}
	for k, v := range map[string]string{"Invoice No": "INV-0042", "Date": "25/12/2018", "Time": "10:30", "Cashier": "Ali", "TEL": "07-1234567"} {
		if pairs[k] != v {
			t.Errorf("pair %q = %q, want %q (pairs %v)", k, pairs[k], v, pairs)
		}
	}
}

func TestStageLLMOption(t *testing.T) {
	fake := &fakeLLM{replies: []reply{{content: goodAnswer}}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	st, err := NewStage(StageConfig{LLM: &Config{URL: srv.URL + "/v1", Model: "m", Timeout: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ocr := testOCR("ACME TRADING SDN BHD", "Date: 25/12/2018", "TOTAL RM 1,234.50")
	out, err := st.Run(t.Context(), testJob(t, &fakeReader{ocr: ocr}, `{"extractor": "llm", "chunk_size": 5}`))
	if err != nil {
		t.Fatal(err)
	}
	res := out.Result.(*Result)
	if res.Extractor != "llm" || res.Fields["total"].Value != "1234.50" || fake.count() != 1 {
		t.Errorf("result = %+v, calls %d", res, fake.count())
	}
}

func TestStageSchemaOption(t *testing.T) {
	inv, err := LoadSchema(filepath.Join("testdata", "schemas", "invoice.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := NewStage(StageConfig{Schemas: map[string]*Schema{"invoice": inv}})
	if err != nil {
		t.Fatal(err)
	}
	ocr := testOCR("ACME TRADING SDN BHD", "PO No: 7781", "Cashier: Ali", "Date 1 Jan 2019", "Grand Total 99.90")
	out, err := st.Run(t.Context(), testJob(t, &fakeReader{ocr: ocr}, `{"schema": "invoice"}`))
	if err != nil {
		t.Fatal(err)
	}
	res := out.Result.(*Result)
	want := map[string]string{"vendor": "ACME TRADING SDN BHD", "issued": "2019-01-01", "amount_due": "99.90", "po_number": "7781", "cashier": "Ali"}
	for k, v := range want {
		if res.Fields[k].Value != v {
			t.Errorf("%s = %q, want %q", k, res.Fields[k].Value, v)
		}
	}
	if len(res.Fields) != len(want) {
		t.Errorf("fields = %v, want only the invoice schema's", res.Fields)
	}
}

func TestStageErrors(t *testing.T) {
	okOCR := &fakeReader{ocr: testOCR("X")}
	tests := []struct {
		name          string
		reader        pipeline.Reader
		options       string
		wantPermanent bool
	}{
		{"no OCR result", &fakeReader{}, "", true},
		{"OCR failed", &fakeReader{ocr: &tracking.OCRResult{ChainID: "c1", Status: tracking.OCRFailed, Error: "bad image"}}, "", true},
		{"store down", &fakeReader{err: errors.New("connection refused")}, "", false},
		{"llm not configured", okOCR, `{"extractor": "llm"}`, true},
		{"unknown extractor", okOCR, `{"extractor": "magic"}`, true},
		{"unknown schema", okOCR, `{"schema": "nope"}`, true},
		{"bad options", okOCR, `{"extractor": 5}`, true},
	}
	st, err := NewStage(StageConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := st.Run(t.Context(), testJob(t, tt.reader, tt.options))
			if err == nil {
				t.Fatal("no error")
			}
			if tracking.IsPermanent(err) != tt.wantPermanent {
				t.Errorf("permanent = %v, want %v: %v", tracking.IsPermanent(err), tt.wantPermanent, err)
			}
		})
	}
}

func TestNewStageConfig(t *testing.T) {
	if _, err := NewStage(StageConfig{Extractor: "llm"}); err == nil {
		t.Error("llm without config accepted")
	}
	if _, err := NewStage(StageConfig{Extractor: "magic"}); err == nil {
		t.Error("unknown extractor accepted")
	}
	if _, err := NewStage(StageConfig{LLM: &Config{URL: "nope"}}); err == nil {
		t.Error("bad LLM config accepted")
	}
}

func TestStageEmptyDocument(t *testing.T) {
	st, err := NewStage(StageConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := st.Run(t.Context(), testJob(t, &fakeReader{ocr: &tracking.OCRResult{ChainID: "c1", Status: tracking.OCRSuccess}}, "null"))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(out.Result)
	if !strings.Contains(string(data), `"company":{"value":"","confidence":0,"box_ids":[]}`) || !strings.Contains(string(data), `"pairs":[]`) {
		t.Errorf("empty result = %s", data)
	}
}
