package filter

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the front end's Prometheus collectors. They are not
// registered globally: cmd/mxguard registers Collectors() on its registry.
type Metrics struct {
	connections       prometheus.Counter
	gateRejects       *prometheus.CounterVec
	transactions      *prometheus.CounterVec
	blocks            *prometheus.CounterVec
	decisions         *prometheus.CounterVec
	relayDenied       prometheus.Counter
	bareLineEndings   prometheus.Counter
	downstreamErrors  *prometheus.CounterVec
	downstreamReplies *prometheus.CounterVec
	sessionErrors     prometheus.Counter
	relayDuration     prometheus.Histogram
}

// NewMetrics creates the collectors.
func NewMetrics() *Metrics {
	return &Metrics{
		connections: prometheus.NewCounter(prometheus.CounterOpts{Name: "mxguard_connections_total",
			Help: "Connections admitted by the gate."}),
		gateRejects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxguard_gate_rejects_total",
			Help: "Connections refused before the banner, by reason."}, []string{"reason"}),
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxguard_transactions_total",
			Help: "Finished transactions by outcome (delivered, quarantined, rejected, tempfailed, abandoned)."}, []string{"outcome"}),
		blocks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxguard_early_blocks_total",
			Help: "Policy rejects/tempfails before DATA, by stage and action."}, []string{"stage", "action"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxguard_data_decisions_total",
			Help: "Final policy actions at end of DATA."}, []string{"action"}),
		relayDenied: prometheus.NewCounter(prometheus.CounterOpts{Name: "mxguard_relay_denied_total",
			Help: "Recipients refused by the open-relay guard."}),
		bareLineEndings: prometheus.NewCounter(prometheus.CounterOpts{Name: "mxguard_bare_line_endings_total",
			Help: "Messages refused for bare CR, bare LF or NUL."}),
		downstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxguard_downstream_errors_total",
			Help: "Downstream failures other than SMTP replies, by stage."}, []string{"stage"}),
		downstreamReplies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mxguard_downstream_refusals_total",
			Help: "Downstream 4xx/5xx replies, by stage and class."}, []string{"stage", "class"}),
		sessionErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "mxguard_sessions_closed_for_errors_total",
			Help: "Sessions closed after too many error replies."}),
		relayDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mxguard_relay_data_seconds",
			Help: "Time to stream a message downstream and get its reply.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
	}
}

// Collectors lists the collectors for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.connections, m.gateRejects, m.transactions, m.blocks, m.decisions,
		m.relayDenied, m.bareLineEndings, m.downstreamErrors, m.downstreamReplies,
		m.sessionErrors, m.relayDuration}
}
