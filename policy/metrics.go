package policy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	decisions *prometheus.CounterVec
	errors    *prometheus.CounterVec
	latency   prometheus.Histogram
	reloads   *prometheus.CounterVec
	revision  *prometheus.GaugeVec
	cacheHits prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_policy_decisions_total",
			Help: "Policy decisions by stage and enforced action (errors count as tempfail).",
		}, []string{"stage", "action"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_policy_errors_total",
			Help: "Policy evaluations that failed, by kind (input, eval, timeout, canceled, undefined, invalid); each became a 451 4.3.0.",
		}, []string{"kind"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mxguard_policy_eval_seconds",
			Help:    "Time to evaluate one policy decision, input conversion included.",
			Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 5e-3, 25e-3, 100e-3, 250e-3, 1},
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_policy_reloads_total",
			Help: "Policy reloads by result: ok, or refused (did not compile or failed its tests; the old rules stay).",
		}, []string{"result"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mxguard_policy_revision_info",
			Help: "The policy revision in use (hash of the rule and data files); value 1.",
		}, []string{"revision"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxguard_policy_cache_hits_total",
			Help: "Decisions answered from the decision cache: the part of the input the stage's rules read was the same as for an earlier decision of the same policy revision.",
		}),
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("refused")
	return m
}

func (m *metrics) observe(stage, action string, d time.Duration) {
	known := false
	for _, s := range Stages {
		known = known || s == stage
	}
	if !known {
		stage = "unknown" // bounded label values
	}
	m.decisions.WithLabelValues(stage, action).Inc()
	m.latency.Observe(d.Seconds())
}

func (m *metrics) setRevision(rev string) {
	m.revision.Reset()
	m.revision.WithLabelValues(rev).Set(1)
}

// Collectors returns the engine's Prometheus metrics: decisions by stage and
// action, errors by kind, evaluation latency, reloads ok/refused and the
// revision in use.
func (e *Engine) Collectors() []prometheus.Collector {
	return []prometheus.Collector{e.metrics.decisions, e.metrics.errors, e.metrics.latency, e.metrics.reloads, e.metrics.revision, e.metrics.cacheHits}
}
