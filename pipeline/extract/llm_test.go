package extract

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
)

// testOCR is a small receipt: one line box followed by its word boxes per line.
func testOCR(lines ...string) *tracking.OCRResult {
	ocr := &tracking.OCRResult{ChainID: "c1", Status: tracking.OCRSuccess, Pages: 1, Width: 600, Height: 40 * len(lines)}
	seq := 0
	for i, text := range lines {
		y := float64(40 * i)
		ocr.Boxes = append(ocr.Boxes, tracking.TextBox{ID: int64(seq + 1), Text: text, Confidence: 0.9, BBox: tracking.Rect(0, y, 600, y+30), Page: 1, Level: tracking.LevelLine, Seq: seq})
		seq++
		x := 0.0
		for _, w := range strings.Fields(text) {
			wdt := float64(12 * len(w))
			ocr.Boxes = append(ocr.Boxes, tracking.TextBox{ID: int64(seq + 1), Text: w, Confidence: 0.9, BBox: tracking.Rect(x, y, x+wdt, y+30), Page: 1, Level: tracking.LevelWord, Seq: seq})
			seq++
			x += wdt + 12
		}
	}
	return ocr
}

func testDoc() *Document {
	return NewDocument(testOCR("ACME TRADING SDN BHD", "Date: 25/12/2018", "TOTAL RM 1,234.50"), DefaultSchema())
}

// chatBody wraps content in a chat-completions response as llama.cpp,
// vLLM and Ollama send it (no OpenAI-only fields are needed).
func chatBody(content string) string {
	b, _ := json.Marshal(map[string]any{
		"id": "x", "object": "chat.completion", "model": "m",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": content}}},
	})
	return string(b)
}

const goodAnswer = `{"fields": {
  "company": {"value": "ACME TRADING SDN BHD", "line": 0},
  "address": {"value": null, "line": null},
  "date": {"value": "25/12/2018", "line": 1},
  "total": {"value": "RM 1,234.50", "line": 2},
  "currency": {"value": "MYR", "line": 2},
  "invoice_number": {"value": null, "line": null},
  "tax": {"value": null, "line": null}},
 "pairs": [{"key": "Date", "value": "25/12/2018", "line": 1}]}`

// reply is one canned answer of the fake server.
type reply struct {
	status  int
	header  map[string]string
	body    string
	block   bool // wait for the client to give up
	content string
}

// fakeLLM is an httptest chat-completions server that plays replies in
// order (the last one repeats) and records the requests.
type fakeLLM struct {
	mu       sync.Mutex
	replies  []reply
	requests []map[string]any
	headers  []http.Header
}

func (f *fakeLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	data, _ := io.ReadAll(r.Body)
	var req map[string]any
	_ = json.Unmarshal(data, &req)
	f.mu.Lock()
	n := len(f.requests)
	f.requests = append(f.requests, req)
	f.headers = append(f.headers, r.Header.Clone())
	rep := f.replies[min(n, len(f.replies)-1)]
	f.mu.Unlock()
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.Error(w, "wrong path "+r.URL.Path, http.StatusNotFound)
		return
	}
	if rep.block {
		<-r.Context().Done()
		return
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	status := rep.status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	body := rep.body
	if body == "" && status == http.StatusOK {
		body = chatBody(rep.content)
	}
	_, _ = io.WriteString(w, body)
}

func (f *fakeLLM) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// newTestLLM starts a fake server and an LLM client whose sleeps are
// recorded instead of slept.
func newTestLLM(t *testing.T, replies ...reply) (*LLM, *fakeLLM, *[]time.Duration) {
	t.Helper()
	fake := &fakeLLM{replies: replies}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	c, err := NewLLM(Config{URL: srv.URL + "/v1/", Model: "qwen2.5-7b-instruct", APIKey: "sk-test", Timeout: 5 * time.Second, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sleeps []time.Duration
	c.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		sleeps = append(sleeps, d)
		return ctx.Err()
	}
	c.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	return c, fake, &sleeps
}

func TestLLMSuccessAndRequest(t *testing.T) {
	c, fake, sleeps := newTestLLM(t, reply{content: goodAnswer})
	got, err := c.Extract(t.Context(), testDoc())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"company": "ACME TRADING SDN BHD", "date": "2018-12-25", "total": "1234.50", "currency": "MYR", "address": "", "tax": ""}
	for k, v := range want {
		if got.Fields[k].Value != v {
			t.Errorf("%s = %q, want %q", k, got.Fields[k].Value, v)
		}
	}
	if ids := got.Fields["total"].BoxIDs; len(ids) != 2 { // "RM" and "1,234.50"
		t.Errorf("total box ids = %v, want the two words of RM 1,234.50", ids)
	}
	if got.Fields["date"].Confidence <= 0 || got.Fields["date"].Confidence > 1 {
		t.Errorf("date confidence %v out of (0,1]", got.Fields["date"].Confidence)
	}
	if len(got.Pairs) != 1 || got.Pairs[0].Key != "Date" {
		t.Errorf("pairs = %+v", got.Pairs)
	}
	if len(*sleeps) != 0 {
		t.Errorf("slept %v on success", *sleeps)
	}

	req := fake.requests[0]
	if req["model"] != "qwen2.5-7b-instruct" {
		t.Errorf("model = %v", req["model"])
	}
	msgs, _ := req["messages"].([]any)
	if len(msgs) != 2 {
		t.Fatalf("messages = %v", req["messages"])
	}
	user, _ := msgs[1].(map[string]any)
	if user["role"] != "user" || !strings.Contains(user["content"].(string), "L2 [0,80,600,30] TOTAL RM 1,234.50") {
		t.Errorf("user message = %v", user)
	}
	rf, _ := req["response_format"].(map[string]any)
	js, _ := rf["json_schema"].(map[string]any)
	schema, _ := js["schema"].(map[string]any)
	if rf["type"] != "json_schema" || js["strict"] != true || js["name"] != "receipt" || schema["type"] != "object" || schema["additionalProperties"] != false {
		t.Errorf("response_format = %v", rf)
	}
	if h := fake.headers[0].Get("Authorization"); h != "Bearer sk-test" {
		t.Errorf("Authorization = %q", h)
	}
}

func TestLLMRetries(t *testing.T) {
	httpDate := time.Date(2026, 1, 2, 3, 4, 12, 0, time.UTC).Format(http.TimeFormat) // now + 7s
	tests := []struct {
		name      string
		replies   []reply
		wantSleep []time.Duration
		wantCalls int
	}{
		{"429 Retry-After seconds", []reply{{status: 429, header: map[string]string{"Retry-After": "2"}, body: `{"error":{"message":"slow down"}}`}, {content: goodAnswer}}, []time.Duration{2 * time.Second}, 2},
		{"429 Retry-After date", []reply{{status: 429, header: map[string]string{"Retry-After": httpDate}}, {content: goodAnswer}}, []time.Duration{7 * time.Second}, 2},
		{"503 then success", []reply{{status: 503, body: "loading model"}, {content: goodAnswer}}, []time.Duration{time.Second}, 2},
		{"502 twice then success", []reply{{status: 502}, {status: 500}, {content: goodAnswer}}, []time.Duration{time.Second, 2 * time.Second}, 3},
		{"bad JSON once", []reply{{content: `{"fields": `}, {content: goodAnswer}}, []time.Duration{time.Second}, 2},
		{"fenced JSON", []reply{{content: "```json\n" + goodAnswer + "\n```"}}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, fake, sleeps := newTestLLM(t, tt.replies...)
			got, err := c.Extract(t.Context(), testDoc())
			if err != nil {
				t.Fatal(err)
			}
			if got.Fields["total"].Value != "1234.50" {
				t.Errorf("total = %+v", got.Fields["total"])
			}
			if fake.count() != tt.wantCalls {
				t.Errorf("calls = %d, want %d", fake.count(), tt.wantCalls)
			}
			if !equalDurations(*sleeps, tt.wantSleep) {
				t.Errorf("sleeps = %v, want %v", *sleeps, tt.wantSleep)
			}
		})
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestLLMErrors(t *testing.T) {
	tests := []struct {
		name          string
		replies       []reply
		wantPermanent bool
		wantCalls     int
		wantIn        string // in the error message
		wantIs        error
	}{
		{"400 permanent with reason", []reply{{status: 400, body: `{"error":{"message":"response_format json_schema is not supported","type":"invalid_request_error"}}`}}, true, 1, "json_schema is not supported", nil},
		{"404 plain body", []reply{{status: 404, body: "model not found"}}, true, 1, "model not found", nil},
		{"malformed JSON content", []reply{{content: `{"fields": {"company": `}}, true, 3, "not JSON", ErrInvalidAnswer},
		{"no choices", []reply{{body: `{"object":"chat.completion","choices":[]}`}}, true, 3, "no choices", ErrInvalidAnswer},
		{"schema violation: missing field", []reply{{content: `{"fields": {}, "pairs": []}`}}, true, 3, `required property "company"`, ErrInvalidAnswer},
		{"schema violation: extra property", []reply{{content: strings.Replace(goodAnswer, `"pairs"`, `"notes": "x", "pairs"`, 1)}}, true, 3, `"notes" is not allowed`, ErrInvalidAnswer},
		{"schema violation: number for string", []reply{{content: strings.Replace(goodAnswer, `"RM 1,234.50"`, `1234.5`, 1)}}, true, 3, "$.fields.total.value: is number", ErrInvalidAnswer},
		{"schema violation: enum", []reply{{content: strings.Replace(goodAnswer, `"MYR"`, `"ringgit"`, 1)}}, true, 3, "not one of the allowed", ErrInvalidAnswer},
		{"503 exhausted is retryable", []reply{{status: 503, body: `{"error":"overloaded"}`}}, false, 3, "overloaded", nil},
		{"429 exhausted is retryable", []reply{{status: 429, header: map[string]string{"Retry-After": "1"}}}, false, 3, "429", nil},
		{"Retry-After too long", []reply{{status: 429, header: map[string]string{"Retry-After": "3600"}}}, false, 1, "more than", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, fake, _ := newTestLLM(t, tt.replies...)
			_, err := c.Extract(t.Context(), testDoc())
			if err == nil {
				t.Fatal("no error")
			}
			if tracking.IsPermanent(err) != tt.wantPermanent {
				t.Errorf("permanent = %v, want %v (%v)", tracking.IsPermanent(err), tt.wantPermanent, err)
			}
			if fake.count() != tt.wantCalls {
				t.Errorf("calls = %d, want %d", fake.count(), tt.wantCalls)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("error %q does not contain %q", err, tt.wantIn)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v is not %v", err, tt.wantIs)
			}
		})
	}
}

func TestLLMTimeout(t *testing.T) {
	c, _, _ := newTestLLM(t, reply{block: true})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Extract(ctx, testDoc())
	if err == nil {
		t.Fatal("no error")
	}
	if tracking.IsPermanent(err) {
		t.Errorf("timeout must be retryable: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
}

func TestLLMAttemptTimeout(t *testing.T) {
	c, fake, sleeps := newTestLLM(t, reply{block: true})
	c.cfg.Timeout = 50 * time.Millisecond
	_, err := c.Extract(t.Context(), testDoc())
	if err == nil || tracking.IsPermanent(err) {
		t.Fatalf("err = %v, want a retryable error", err)
	}
	if fake.count() != 3 || len(*sleeps) != 2 {
		t.Errorf("calls = %d, sleeps = %v; want 3 calls and 2 waits", fake.count(), *sleeps)
	}
}

func TestNewLLMConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{URL: "http://localhost:8080/v1", Model: "m"}, true},
		{"no model", Config{URL: "http://localhost:8080/v1"}, false},
		{"relative URL", Config{URL: "localhost:8080", Model: "m"}, false},
		{"empty URL", Config{Model: "m"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewLLM(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && c.endpoint != "http://localhost:8080/v1/chat/completions" {
				t.Errorf("endpoint = %s", c.endpoint)
			}
		})
	}
}
