package metrics

import (
	"context"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/prometheus/client_golang/prometheus"
)

// QueueOptions configures a QueueCollector. Only Depth is required.
type QueueOptions struct {
	// Depth returns, per stage, how many tasks are waiting and how many
	// are leased: (*tracking.Store).QueueDepth.
	Depth func(ctx context.Context) (map[tracking.Stage][2]int, error)
	// Batches, when set, returns how many batches are in each status; it
	// is reported as docpipe_batches{status}.
	Batches func(ctx context.Context) (map[tracking.Status]int, error)
	// Stages are always reported, as 0 when they have no tasks, so that a
	// drained queue reads 0 rather than vanishing. Default: the document
	// stages and the summary stage.
	Stages []tracking.Stage
	// Timeout bounds one scrape's queries, so that /metrics answers while
	// the database is down. Default 2s.
	Timeout time.Duration
}

// QueueCollector is a prometheus.Collector that reads queue depth (and
// optionally batch counts) from the database at scrape time. When the
// database does not answer within the timeout it reports
// docpipe_queue_scrape_up 0, counts docpipe_queue_scrape_errors_total and
// leaves the depth series out of that scrape.
type QueueCollector struct {
	opts QueueOptions

	waiting  *prometheus.Desc
	leased   *prometheus.Desc
	batches  *prometheus.Desc
	up       *prometheus.Desc
	duration *prometheus.Desc
	errors   prometheus.Counter
}

// NewQueueCollector returns a collector reading through opts. Register it
// on the same registry as New's metrics.
func NewQueueCollector(opts QueueOptions) *QueueCollector {
	if len(opts.Stages) == 0 {
		opts.Stages = append(append([]tracking.Stage{}, tracking.DocumentStages...), tracking.StageSummary)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	return &QueueCollector{
		opts:     opts,
		waiting:  prometheus.NewDesc("docpipe_queue_waiting", "Tasks waiting to run (PENDING or RETRY), by stage.", []string{"stage"}, nil),
		leased:   prometheus.NewDesc("docpipe_queue_leased", "Tasks leased to a worker (STARTED or RUNNING), by stage.", []string{"stage"}, nil),
		batches:  prometheus.NewDesc("docpipe_batches", "Batches in the database, by status.", []string{"status"}, nil),
		up:       prometheus.NewDesc("docpipe_queue_scrape_up", "1 if the last scrape read the queue from the database, else 0.", nil, nil),
		duration: prometheus.NewDesc("docpipe_queue_scrape_duration_seconds", "How long reading the queue from the database took.", nil, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "docpipe_queue_scrape_errors_total",
			Help: "Scrapes whose database queries failed or timed out.",
		}),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.waiting
	ch <- c.leased
	if c.opts.Batches != nil {
		ch <- c.batches
	}
	ch <- c.up
	ch <- c.duration
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector: it queries the database, within
// the timeout.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	start := time.Now()
	ok := c.collect(ctx, ch)
	ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, time.Since(start).Seconds())
	up := 0.0
	if ok {
		up = 1
	} else {
		c.errors.Inc()
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	c.errors.Collect(ch)
}

func (c *QueueCollector) collect(ctx context.Context, ch chan<- prometheus.Metric) bool {
	depth, err := c.opts.Depth(ctx)
	if err != nil {
		return false
	}
	var batches map[tracking.Status]int
	if c.opts.Batches != nil {
		if batches, err = c.opts.Batches(ctx); err != nil {
			return false
		}
	}
	seen := make(map[tracking.Stage]bool, len(depth))
	emit := func(st tracking.Stage, d [2]int) {
		seen[st] = true
		ch <- prometheus.MustNewConstMetric(c.waiting, prometheus.GaugeValue, float64(d[0]), string(st))
		ch <- prometheus.MustNewConstMetric(c.leased, prometheus.GaugeValue, float64(d[1]), string(st))
	}
	for _, st := range c.opts.Stages {
		if !seen[st] {
			emit(st, depth[st])
		}
	}
	for st, d := range depth {
		if !seen[st] {
			emit(st, d)
		}
	}
	if c.opts.Batches != nil {
		for _, s := range tracking.Statuses {
			ch <- prometheus.MustNewConstMetric(c.batches, prometheus.GaugeValue, float64(batches[s]), string(s))
		}
	}
	return true
}
