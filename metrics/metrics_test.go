package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/docpipe/docpipe/metrics"
	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// *Metrics is what the engine reports to.
var _ pipeline.Observer = (*metrics.Metrics)(nil)

// value returns the value of the series name{labels} gathered from g, and
// whether it exists. Counters, gauges and untyped values read as their
// value; histograms as their sample count.
func value(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if len(got) != len(labels) {
				continue
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			return metricValue(m), true
		}
	}
	return 0, false
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func TestNewOnSeparateRegistries(t *testing.T) {
	r1, r2 := prometheus.NewRegistry(), prometheus.NewRegistry()
	m1, m2 := metrics.New(r1), metrics.New(r2)
	m1.Rescued(2)
	m2.Rescued(5)
	if got, _ := value(t, r1, "docpipe_rescued_tasks_total", nil); got != 2 {
		t.Errorf("registry 1 rescued = %v, want 2", got)
	}
	if got, _ := value(t, r2, "docpipe_rescued_tasks_total", nil); got != 5 {
		t.Errorf("registry 2 rescued = %v, want 5", got)
	}
	metrics.New(nil) // registers nothing, must not panic

	defer func() {
		if recover() == nil {
			t.Error("registering twice on one registry did not panic")
		}
	}()
	metrics.New(r1)
}

func TestObserverEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	ocr := string(tracking.StageOCR)

	m.Claimed(tracking.StageOCR, 7, 3*time.Millisecond)
	m.Claimed(tracking.StageOCR, 2, time.Millisecond)
	m.TaskDone(tracking.StageOCR, tracking.StatusSuccess, time.Second)
	m.TaskDone(tracking.StageOCR, tracking.StatusSuccess, time.Second)
	m.TaskDone(tracking.StageOCR, tracking.StatusFailure, time.Second)
	m.Committed(tracking.StageOCR, 3, 10*time.Millisecond)
	m.Inflight(tracking.StageOCR, 9)
	m.Inflight(tracking.StageOCR, 6)
	m.Rescued(4)
	m.DBError("claim")
	m.DBError("claim")
	m.HTTPRequest("GET /batches/{batch_id}", 404, 2*time.Millisecond)

	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"docpipe_claims_total", map[string]string{"stage": ocr}, 2},
		{"docpipe_claimed_tasks_total", map[string]string{"stage": ocr}, 9},
		{"docpipe_claim_duration_seconds", map[string]string{"stage": ocr}, 2},
		{"docpipe_tasks_total", map[string]string{"stage": ocr, "status": "SUCCESS"}, 2},
		{"docpipe_tasks_total", map[string]string{"stage": ocr, "status": "FAILURE"}, 1},
		{"docpipe_task_duration_seconds", map[string]string{"stage": ocr}, 3},
		{"docpipe_commit_duration_seconds", map[string]string{"stage": ocr}, 1},
		{"docpipe_commit_batch_size", map[string]string{"stage": ocr}, 1},
		{"docpipe_inflight_tasks", map[string]string{"stage": ocr}, 6},
		{"docpipe_rescued_tasks_total", nil, 4},
		{"docpipe_db_errors_total", map[string]string{"op": "claim"}, 2},
		{"docpipe_http_requests_total", map[string]string{"route": "GET /batches/{batch_id}", "code": "404"}, 1},
		{"docpipe_http_request_duration_seconds", map[string]string{"route": "GET /batches/{batch_id}"}, 1},
	}
	for _, tt := range tests {
		got, ok := value(t, reg, tt.name, tt.labels)
		if !ok {
			t.Errorf("%s%v: missing", tt.name, tt.labels)
			continue
		}
		if got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}

func TestQueueCollector(t *testing.T) {
	depth := map[tracking.Stage][2]int{
		tracking.StageOCR:   {12, 3},
		tracking.StageExcel: {0, 1},
		"custom.stage":      {5, 0},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewQueueCollector(metrics.QueueOptions{
		Depth: func(context.Context) (map[tracking.Stage][2]int, error) { return depth, nil },
		Batches: func(context.Context) (map[tracking.Status]int, error) {
			return map[tracking.Status]int{tracking.StatusSuccess: 8, tracking.StatusStarted: 1}, nil
		},
	}))
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"docpipe_queue_waiting", map[string]string{"stage": string(tracking.StageOCR)}, 12},
		{"docpipe_queue_leased", map[string]string{"stage": string(tracking.StageOCR)}, 3},
		{"docpipe_queue_leased", map[string]string{"stage": string(tracking.StageExcel)}, 1},
		{"docpipe_queue_waiting", map[string]string{"stage": "custom.stage"}, 5},
		// known stages without tasks read 0
		{"docpipe_queue_waiting", map[string]string{"stage": string(tracking.StageLLM)}, 0},
		{"docpipe_queue_leased", map[string]string{"stage": string(tracking.StageSummary)}, 0},
		{"docpipe_batches", map[string]string{"status": "SUCCESS"}, 8},
		{"docpipe_batches", map[string]string{"status": "STARTED"}, 1},
		{"docpipe_batches", map[string]string{"status": "FAILURE"}, 0},
		{"docpipe_queue_scrape_up", nil, 1},
		{"docpipe_queue_scrape_errors_total", nil, 0},
	}
	for _, tt := range tests {
		got, ok := value(t, reg, tt.name, tt.labels)
		if !ok {
			t.Errorf("%s%v: missing", tt.name, tt.labels)
			continue
		}
		if got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}

func TestQueueCollectorDatabaseDown(t *testing.T) {
	tests := []struct {
		name  string
		depth func(ctx context.Context) (map[tracking.Stage][2]int, error)
	}{
		{"error", func(context.Context) (map[tracking.Stage][2]int, error) {
			return nil, errors.New("connection refused")
		}},
		{"hangs until the timeout", func(ctx context.Context) (map[tracking.Stage][2]int, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			metrics.New(reg)
			reg.MustRegister(metrics.NewQueueCollector(metrics.QueueOptions{Depth: tt.depth, Timeout: 50 * time.Millisecond}))

			start := time.Now()
			rec := httptest.NewRecorder()
			metrics.Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("scrape took %v with the database down", took)
			}
			if rec.Code != 200 {
				t.Fatalf("status %d, want 200", rec.Code)
			}
			body := rec.Body.String()
			if !strings.Contains(body, "docpipe_queue_scrape_up 0") {
				t.Errorf("no docpipe_queue_scrape_up 0 in:\n%s", body)
			}
			if !strings.Contains(body, "docpipe_queue_scrape_errors_total 1") {
				t.Errorf("no docpipe_queue_scrape_errors_total 1 in:\n%s", body)
			}
			if strings.Contains(body, "docpipe_queue_waiting{") {
				t.Errorf("depth reported although the query failed:\n%s", body)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.TaskDone(tracking.StageLayout, tracking.StatusSuccess, time.Second)
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	want := `docpipe_tasks_total{stage="pipeline.layout_stage",status="SUCCESS"} 1`
	if !strings.Contains(string(b), want) {
		t.Errorf("missing %s in:\n%s", want, b)
	}
	if strings.Contains(string(b), "go_goroutines") {
		t.Error("default registry's collectors leaked into an injected registry")
	}
}

func TestQueueCollectorRealDatabase(t *testing.T) {
	store := newStore(t)
	ctx := context.Background()
	chains := make([]tracking.NewChain, 3)
	for i := range chains {
		chains[i].Input.ImagePath = "/img/" + string(rune('a'+i)) + ".png"
	}
	// Chunks of one image, so that a claim of one task takes no chunk-mates.
	if _, err := store.CreateBatch(ctx, tracking.NewBatch{Name: "metrics", ChunkSize: 1, Chains: chains}); err != nil {
		t.Fatal(err)
	}
	claimed, err := store.Claim(ctx, tracking.StageOCR, "test", 1, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v (%d)", err, len(claimed))
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewQueueCollector(metrics.QueueOptions{Depth: store.QueueDepth}))
	ocr := map[string]string{"stage": string(tracking.StageOCR)}
	if got, _ := value(t, reg, "docpipe_queue_waiting", ocr); got != 2 {
		t.Errorf("waiting = %v, want 2", got)
	}
	if got, _ := value(t, reg, "docpipe_queue_leased", ocr); got != 1 {
		t.Errorf("leased = %v, want 1", got)
	}
	if got, _ := value(t, reg, "docpipe_queue_scrape_up", nil); got != 1 {
		t.Errorf("up = %v, want 1", got)
	}
}
