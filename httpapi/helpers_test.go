package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docpipe/docpipe/httpapi"
	"github.com/docpipe/docpipe/tracking"
)

// env is an API over a fresh database.
type env struct {
	h       http.Handler
	store   *tracking.Store
	dataDir string
	logs    *syncBuffer
	woken   *[]tracking.Stage
}

// syncBuffer is a bytes.Buffer safe for concurrent writes (log lines).
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

// newEnv returns an API on a fresh database; edit adjusts its options.
func newEnv(t *testing.T, edit func(*httpapi.Options)) *env {
	t.Helper()
	e := &env{store: newStore(t), dataDir: t.TempDir(), logs: &syncBuffer{}, woken: new([]tracking.Stage)}
	var mu sync.Mutex
	opts := httpapi.Options{
		Store:   e.store,
		Logger:  slog.New(slog.NewJSONHandler(e.logs, nil)),
		DataDir: e.dataDir,
		Wake: func(st tracking.Stage) {
			mu.Lock()
			defer mu.Unlock()
			*e.woken = append(*e.woken, st)
		},
		Ready: e.store.Ping,
	}
	if edit != nil {
		edit(&opts)
	}
	e.h = httpapi.New(opts)
	return e
}

// do sends a request to the API and returns the answer.
func (e *env) do(t *testing.T, method, target string, body io.Reader, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

// postJSON posts v as JSON.
func (e *env) postJSON(t *testing.T, target string, v any) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	switch v := v.(type) {
	case string:
		body = strings.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	return e.do(t, "POST", target, body, "Content-Type", "application/json")
}

// decode decodes a JSON answer into a value of type T.
func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %s: %v", rec.Body.String(), err)
	}
	return v
}

// wantStatus fails the test unless the answer has status code.
func wantStatus(t *testing.T, rec *httptest.ResponseRecorder, code int) {
	t.Helper()
	if rec.Code != code {
		t.Fatalf("status %d, want %d; body %s", rec.Code, code, rec.Body.String())
	}
}

// wantError checks a JSON error answer: status, a non-empty error and the
// request id.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, code int) map[string]any {
	t.Helper()
	wantStatus(t, rec, code)
	m := decode[map[string]any](t, rec)
	if msg, _ := m["error"].(string); msg == "" {
		t.Errorf("no error message in %v", m)
	}
	if id, _ := m["request_id"].(string); id == "" || id != rec.Header().Get("X-Request-Id") {
		t.Errorf("request_id %v, header %q", m["request_id"], rec.Header().Get("X-Request-Id"))
	}
	return m
}

// keys returns the sorted keys of m.
func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// wantKeys fails unless m has exactly the keys want.
func wantKeys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := keys(m); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s keys:\n got %v\nwant %v", what, got, want)
	}
}

// images returns n chains with made-up server paths (never read: the
// store does not look at files).
func images(n int) []tracking.NewChain {
	out := make([]tracking.NewChain, n)
	for i := range out {
		out[i].Input = tracking.ChainInput{ImagePath: "/img/" + tracking.NewID() + ".png", FileName: "doc.png"}
	}
	return out
}

// submit creates a batch of n chains directly in the store.
func submit(t *testing.T, s *tracking.Store, name string, n int) *tracking.Batch {
	t.Helper()
	b, err := s.CreateBatch(context.Background(), tracking.NewBatch{Name: name, Chains: images(n), OnFinish: tracking.StageSummary})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// chainIDs lists the chain ids of a batch.
func chainIDs(t *testing.T, s *tracking.Store, batchID string) []string {
	t.Helper()
	var ids []string
	if err := s.BatchChains(context.Background(), batchID, func(c *tracking.Chain) error {
		ids = append(ids, c.ChainID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids
}

// runStage claims every claimable task of stage and completes each with
// what outcome makes of it.
func runStage(t *testing.T, s *tracking.Store, stage tracking.Stage, outcome func(c *tracking.Claimed) tracking.Outcome) int {
	t.Helper()
	ctx := context.Background()
	cl, err := s.Claim(ctx, stage, "test", 1000, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(cl) == 0 {
		return 0
	}
	outs := make([]tracking.Outcome, len(cl))
	for i := range cl {
		outs[i] = outcome(&cl[i])
		outs[i].Task = &cl[i]
	}
	if _, err := s.Complete(ctx, outs); err != nil {
		t.Fatal(err)
	}
	return len(cl)
}

// succeed is an outcome that succeeds with result {"ok": true}.
func succeed(*tracking.Claimed) tracking.Outcome {
	return tracking.Outcome{Result: json.RawMessage(`{"ok":true}`)}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// The API runs on the concrete store.
var _ httpapi.Store = (*tracking.Store)(nil)
