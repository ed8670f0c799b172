package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docpipe/docpipe/httpapi"
	"github.com/docpipe/docpipe/metrics"
	"github.com/docpipe/docpipe/tracking"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeStore answers Chain with chain; every other method is unset.
type fakeStore struct {
	httpapi.Store
	chain func(ctx context.Context, id string) (*tracking.Chain, error)
}

func (f fakeStore) Chain(ctx context.Context, id string) (*tracking.Chain, error) {
	return f.chain(ctx, id)
}

// fakeEnv is an API over a fakeStore, logging into a buffer.
func fakeEnv(t *testing.T, chain func(context.Context, string) (*tracking.Chain, error), edit func(*httpapi.Options)) (*env, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	opts := httpapi.Options{
		Store:   fakeStore{chain: chain},
		Logger:  slog.New(slog.NewJSONHandler(&logs, nil)),
		DataDir: t.TempDir(),
	}
	if edit != nil {
		edit(&opts)
	}
	return &env{h: httpapi.New(opts)}, &logs
}

func TestPanicIsRecovered(t *testing.T) {
	e, logs := fakeEnv(t, func(context.Context, string) (*tracking.Chain, error) { panic("boom") }, nil)
	rec := e.do(t, "GET", "/pipeline/status/x", nil, "X-Request-Id", "req-panic")
	m := wantError(t, rec, 500)
	if m["error"] != "internal server error" || m["request_id"] != "req-panic" {
		t.Errorf("answer %v", m)
	}
	if !strings.Contains(logs.String(), `"panic":"boom"`) || !strings.Contains(logs.String(), "req-panic") {
		t.Errorf("panic not logged with its request id:\n%s", logs)
	}
	// The server still serves.
	wantStatus(t, e.do(t, "GET", "/healthz", nil), 200)
}

func TestInternalErrorsAreNotEchoed(t *testing.T) {
	secret := "dial tcp 10.0.0.7:5432: password authentication failed for user docpipe"
	e, logs := fakeEnv(t, func(context.Context, string) (*tracking.Chain, error) {
		return nil, errors.New(secret)
	}, nil)
	rec := e.do(t, "GET", "/pipeline/status/x", nil)
	m := wantError(t, rec, 500)
	if strings.Contains(rec.Body.String(), "10.0.0.7") || m["error"] != "internal server error" {
		t.Errorf("internal error echoed: %s", rec.Body.String())
	}
	id := rec.Header().Get("X-Request-Id")
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "request failed" {
			found = l["request_id"] == id && strings.Contains(l["err"].(string), "10.0.0.7")
		}
	}
	if !found {
		t.Errorf("internal error not logged with request id %s:\n%s", id, logs)
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err  error
		code int
		msg  string
	}{
		{tracking.ErrNotFound, 404, "not found"},
		{errorsJoin("chain x", tracking.ErrNotFound), 404, "chain x"},
		{errorsJoin("revoke", tracking.ErrConflict), 409, "revoke"},
		{&tracking.ValidationError{Msg: "a batch needs at least one image"}, 400, "a batch needs at least one image"},
		{context.DeadlineExceeded, 500, "internal server error"},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			e, _ := fakeEnv(t, func(context.Context, string) (*tracking.Chain, error) { return nil, tt.err }, nil)
			m := wantError(t, e.do(t, "GET", "/chains/x/image", nil), tt.code)
			if !strings.Contains(m["error"].(string), tt.msg) {
				t.Errorf("error %q, want %q", m["error"], tt.msg)
			}
		})
	}
}

func errorsJoin(op string, err error) error { return &wrapped{op, err} }

type wrapped struct {
	op  string
	err error
}

func (w *wrapped) Error() string { return w.op + ": " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }

func TestRequestID(t *testing.T) {
	e, logs := fakeEnv(t, nil, nil)
	tests := []struct {
		name, sent string
		kept       bool
	}{
		{"honoured", "abc-123", true},
		{"generated when absent", "", false},
		{"generated when it has spaces", "a b", false},
		{"generated when too long", strings.Repeat("x", 200), false},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec *httptest.ResponseRecorder
			if tt.sent != "" {
				rec = e.do(t, "GET", "/healthz", nil, "X-Request-Id", tt.sent)
			} else {
				rec = e.do(t, "GET", "/healthz", nil)
			}
			got := rec.Header().Get("X-Request-Id")
			if tt.kept && got != tt.sent || !tt.kept && (got == "" || got == tt.sent) {
				t.Errorf("X-Request-Id %q (sent %q)", got, tt.sent)
			}
			if seen[got] {
				t.Errorf("request id %q reused", got)
			}
			seen[got] = true
		})
	}
	// Access log lines carry method, route pattern, status, duration and id.
	var l map[string]any
	first := strings.SplitN(logs.String(), "\n", 2)[0]
	if err := json.Unmarshal([]byte(first), &l); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"msg": "http request", "method": "GET", "route": "GET /healthz", "status": 200.0, "request_id": "abc-123"} {
		if l[k] != want {
			t.Errorf("access log %s = %v, want %v (line %s)", k, l[k], want, first)
		}
	}
	if _, ok := l["duration"]; !ok {
		t.Errorf("no duration in %s", first)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	down := errors.New("database unreachable at 10.0.0.7")
	tests := []struct {
		name   string
		ready  func(context.Context) error
		target string
		code   int
	}{
		{"healthz", nil, "/healthz", 200},
		{"healthz while not ready", func(context.Context) error { return down }, "/healthz", 200},
		{"ready by default", nil, "/readyz", 200},
		{"ready", func(context.Context) error { return nil }, "/readyz", 200},
		{"not ready", func(context.Context) error { return down }, "/readyz", 503},
		{"ready check times out", func(ctx context.Context) error {
			<-ctx.Done() // the 2 s timeout
			return ctx.Err()
		}, "/readyz", 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := fakeEnv(t, nil, func(o *httpapi.Options) { o.Ready = tt.ready })
			rec := e.do(t, "GET", tt.target, nil)
			wantStatus(t, rec, tt.code)
			m := decode[map[string]any](t, rec)
			if tt.code == 503 && (m["status"] != "unavailable" || strings.Contains(rec.Body.String(), "10.0.0.7")) {
				t.Errorf("answer %s", rec.Body.String())
			}
			if tt.code == 200 && m["status"] != "ok" {
				t.Errorf("answer %s", rec.Body.String())
			}
		})
	}
}

func TestReadyzRealDatabase(t *testing.T) {
	e := newEnv(t, nil) // Ready is the store's Ping
	wantStatus(t, e.do(t, "GET", "/readyz", nil), 200)
}

func TestUnknownRoute(t *testing.T) {
	e, _ := fakeEnv(t, nil, nil)
	wantError(t, e.do(t, "GET", "/no/such/route", nil), 404)
	wantError(t, e.do(t, "GET", "/metrics", nil), 404) // no Gatherer given
	rec := e.do(t, "DELETE", "/pipeline/history", nil)
	wantError(t, rec, 405)
	if allow := rec.Header().Get("Allow"); !strings.Contains(allow, "GET") {
		t.Errorf("Allow %q", allow)
	}
	wantError(t, e.do(t, "GET", "/batches/x/cancel", nil), 405)
}

func TestMetricsRoute(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	e, _ := fakeEnv(t, func(context.Context, string) (*tracking.Chain, error) { return nil, tracking.ErrNotFound },
		func(o *httpapi.Options) { o.Metrics, o.Gatherer = m, reg })
	wantError(t, e.do(t, "GET", "/pipeline/status/a", nil), 404)
	wantError(t, e.do(t, "GET", "/pipeline/status/b", nil), 404)
	e.do(t, "GET", "/nowhere/"+strings.Repeat("x", 10), nil)
	e.do(t, "PUT", "/pipeline/history", nil)

	rec := e.do(t, "GET", "/metrics", nil)
	wantStatus(t, rec, 200)
	body := rec.Body.String()
	for _, want := range []string{
		`docpipe_http_requests_total{code="404",route="GET /pipeline/status/{chain_id}"} 2`,
		`docpipe_http_requests_total{code="404",route="unmatched"} 1`,
		`docpipe_http_requests_total{code="405",route="unmatched"} 1`,
		`docpipe_http_request_duration_seconds_count{route="GET /pipeline/status/{chain_id}"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s in:\n%s", want, body)
		}
	}
	if strings.Contains(body, "/nowhere/") {
		t.Error("a raw path became a label value")
	}
}
