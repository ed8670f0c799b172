// Package metrics defines docpipe's Prometheus metrics on an injected
// registry and serves them.
//
// *Metrics receives the engine's events (it has the method set of
// pipeline.Observer without importing pipeline) and the HTTP API's request
// timings. QueueCollector reads queue depth from PostgreSQL at scrape time.
// Nothing here touches the default Prometheus registry.
package metrics

import (
	"net/http"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Buckets for durations: from 5 ms (a claim, a small commit) to 10 min
// (OCR of a large multi-page scan).
var durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Buckets for the number of tasks one commit records (CommitMax is 1000 by default).
var batchSizeBuckets = []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000}

// Metrics holds docpipe's metrics. Its methods are safe for concurrent use.
// It implements pipeline.Observer.
type Metrics struct {
	tasks          *prometheus.CounterVec
	taskDuration   *prometheus.HistogramVec
	claims         *prometheus.CounterVec
	claimedTasks   *prometheus.CounterVec
	handedOff      *prometheus.CounterVec
	folded         *prometheus.CounterVec
	claimDuration  *prometheus.HistogramVec
	commitDuration *prometheus.HistogramVec
	commitSize     *prometheus.HistogramVec
	inflight       *prometheus.GaugeVec
	rescued        prometheus.Counter
	dbErrors       *prometheus.CounterVec
	httpRequests   *prometheus.CounterVec
	httpDuration   *prometheus.HistogramVec
}

// New creates docpipe's metrics and registers them on reg. It panics if
// they are already registered on reg (a programming error, as with
// prometheus.MustRegister); separate registries each get their own set. A
// nil reg registers nothing, which suits tests.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docpipe_tasks_total",
			Help: "Task attempts that ended, by stage and status (SUCCESS or FAILURE of the attempt).",
		}, []string{"stage", "status"}),
		taskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "docpipe_task_duration_seconds",
			Help:    "How long one task attempt ran in its stage.",
			Buckets: durationBuckets,
		}, []string{"stage"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docpipe_claims_total",
			Help: "Claims that leased at least one task, by stage.",
		}, []string{"stage"}),
		claimedTasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docpipe_claimed_tasks_total",
			Help: "Tasks leased by claims, by stage.",
		}, []string{"stage"}),
		handedOff: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docpipe_handed_off_tasks_total",
			Help: "Tasks handed straight to the stage's workers (no claim), by stage: run ahead of the previous task's commit, or created already leased to this process by it.",
		}, []string{"stage"}),
		folded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docpipe_folded_tasks_total",
			Help: "Tasks that ran ahead and were recorded by the commit of an earlier task of their chain (no commit of their own), by stage.",
		}, []string{"stage"}),
		claimDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "docpipe_claim_duration_seconds",
			Help:    "How long a claim statement took, by stage.",
			Buckets: durationBuckets,
		}, []string{"stage"}),
		commitDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "docpipe_commit_duration_seconds",
			Help:    "How long a commit of finished tasks took, by stage.",
			Buckets: durationBuckets,
		}, []string{"stage"}),
		commitSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "docpipe_commit_batch_size",
			Help:    "Tasks recorded per commit, by stage.",
			Buckets: batchSizeBuckets,
		}, []string{"stage"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "docpipe_inflight_tasks",
			Help: "Tasks claimed by this process and not yet committed, by stage.",
		}, []string{"stage"}),
		rescued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "docpipe_rescued_tasks_total",
			Help: "Tasks whose lease expired and that were rescued (retried or failed).",
		}),
		dbErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docpipe_db_errors_total",
			Help: "Database operations that failed, by operation.",
		}, []string{"op"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "docpipe_http_requests_total",
			Help: "HTTP requests served, by route pattern and status code.",
		}, []string{"route", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "docpipe_http_request_duration_seconds",
			Help:    "How long HTTP requests took, by route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	if reg != nil {
		reg.MustRegister(m.tasks, m.taskDuration, m.claims, m.claimedTasks, m.handedOff, m.folded, m.claimDuration,
			m.commitDuration, m.commitSize, m.inflight, m.rescued, m.dbErrors,
			m.httpRequests, m.httpDuration)
	}
	return m
}

// Claimed records a claim of stage that leased n tasks and took took.
func (m *Metrics) Claimed(stage tracking.Stage, n int, took time.Duration) {
	m.claims.WithLabelValues(string(stage)).Inc()
	m.claimedTasks.WithLabelValues(string(stage)).Add(float64(n))
	m.claimDuration.WithLabelValues(string(stage)).Observe(took.Seconds())
}

// HandedOff counts n tasks of stage handed over directly by the previous
// stage's commit.
func (m *Metrics) HandedOff(stage tracking.Stage, n int) {
	m.handedOff.WithLabelValues(string(stage)).Add(float64(n))
}

// Folded counts n tasks of stage recorded by an earlier task's commit.
func (m *Metrics) Folded(stage tracking.Stage, n int) {
	m.folded.WithLabelValues(string(stage)).Add(float64(n))
}

// TaskDone records one attempt of a stage that ended with status after took.
func (m *Metrics) TaskDone(stage tracking.Stage, status tracking.Status, took time.Duration) {
	m.tasks.WithLabelValues(string(stage), string(status)).Inc()
	m.taskDuration.WithLabelValues(string(stage)).Observe(took.Seconds())
}

// Committed records a commit of stage that recorded n tasks and took took.
func (m *Metrics) Committed(stage tracking.Stage, n int, took time.Duration) {
	m.commitDuration.WithLabelValues(string(stage)).Observe(took.Seconds())
	m.commitSize.WithLabelValues(string(stage)).Observe(float64(n))
}

// Inflight sets the number of tasks of stage this process holds.
func (m *Metrics) Inflight(stage tracking.Stage, n int) {
	m.inflight.WithLabelValues(string(stage)).Set(float64(n))
}

// Rescued counts n tasks rescued from expired leases.
func (m *Metrics) Rescued(n int) {
	m.rescued.Add(float64(n))
}

// DBError counts a failed database operation op (claim, commit, rescue, ...).
func (m *Metrics) DBError(op string) {
	m.dbErrors.WithLabelValues(op).Inc()
}

// HTTPRequest records one HTTP request to route (a ServeMux pattern, never
// a raw path, to bound the label's values) answered with code after took.
func (m *Metrics) HTTPRequest(route string, code int, took time.Duration) {
	m.httpRequests.WithLabelValues(route, statusCode(code)).Inc()
	m.httpDuration.WithLabelValues(route).Observe(took.Seconds())
}

func statusCode(code int) string {
	if code < 100 || code > 999 {
		return "unknown"
	}
	b := [3]byte{byte('0' + code/100), byte('0' + code/10%10), byte('0' + code%10)}
	return string(b[:])
}

// Handler serves the metrics g gathers in the Prometheus exposition
// formats. A collector that fails is reported in the answer, and the
// other metrics are still served.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
