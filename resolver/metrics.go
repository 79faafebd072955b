package resolver

import (
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Stats are plain counters since New.
type Stats struct {
	Queries        uint64 // questions asked by callers ("ip" counts two)
	CacheHits      uint64 // answered from the cache
	CacheMisses    uint64 // not in the cache (including those that joined another's flight)
	Shared         uint64 // misses answered by an upstream query that served several concurrent callers (all of them count)
	Upstream       uint64 // exchanges sent upstream (UDP and TCP)
	TCPRetries     uint64 // truncated UDP answers retried over TCP
	UpstreamErrors uint64 // upstream attempts that failed (network, timeout, SERVFAIL, REFUSED, other rcode, mismatch)
	NXDomain       uint64 // lookups answered NXDOMAIN
	NoData         uint64 // lookups answered NODATA
	Timeouts       uint64 // lookups that timed out (upstream or caller deadline)
	Failures       uint64 // lookups that failed temporarily or were invalid (not NXDOMAIN/NODATA)
}

type stats struct {
	queries, cacheHits, cacheMisses, shared atomic.Uint64
	upstream, tcpRetries, upstreamErrors    atomic.Uint64
	failures                                [numKinds]atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (r *Resolver) Stats() Stats {
	s := Stats{
		Queries:        r.stats.queries.Load(),
		CacheHits:      r.stats.cacheHits.Load(),
		CacheMisses:    r.stats.cacheMisses.Load(),
		Shared:         r.stats.shared.Load(),
		Upstream:       r.stats.upstream.Load(),
		TCPRetries:     r.stats.tcpRetries.Load(),
		UpstreamErrors: r.stats.upstreamErrors.Load(),
		NXDomain:       r.stats.failures[kindNXDomain].Load(),
		NoData:         r.stats.failures[kindNoData].Load(),
		Timeouts:       r.stats.failures[kindTimeout].Load(),
	}
	for k := kindServFail; k < numKinds; k++ {
		s.Failures += r.stats.failures[k].Load()
	}
	return s
}

// qtypes we ask; their metric children are created up front so the hot path
// does no label lookup.
var qtypes = [...]uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeMX, dns.TypePTR}

const numQtypes = len(qtypes)

func qtypeIndex(t uint16) (int, bool) {
	for i, q := range qtypes {
		if q == t {
			return i, true
		}
	}
	return 0, false
}

type metrics struct {
	queriesVec  *prometheus.CounterVec
	hitsVec     *prometheus.CounterVec
	latencyVec  *prometheus.HistogramVec
	failuresVec *prometheus.CounterVec

	queries  [numQtypes]prometheus.Counter
	hits     [numQtypes]prometheus.Counter
	udp, tcp prometheus.Observer
	failures [numKinds]prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		queriesVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_resolver_queries_total",
			Help: "DNS questions asked of the resolver, by record type.",
		}, []string{"type"}),
		hitsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_resolver_cache_hits_total",
			Help: "DNS questions answered from the resolver cache, by record type.",
		}, []string{"type"}),
		latencyVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mxguard_resolver_upstream_duration_seconds",
			Help:    "Duration of one exchange with an upstream DNS server, by transport.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"transport"}),
		failuresVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_resolver_failures_total",
			Help: "Lookups that returned an error, by kind (nxdomain, nodata, servfail, refused, rcode, timeout, canceled, network, mismatch, cname_chain, invalid).",
		}, []string{"kind"}),
	}
	for i, t := range qtypes {
		m.queries[i] = m.queriesVec.WithLabelValues(dns.TypeToString[t])
		m.hits[i] = m.hitsVec.WithLabelValues(dns.TypeToString[t])
	}
	m.udp = m.latencyVec.WithLabelValues("udp")
	m.tcp = m.latencyVec.WithLabelValues("tcp")
	for k := kindNXDomain; k < numKinds; k++ {
		m.failures[k] = m.failuresVec.WithLabelValues(kindNames[k])
	}
	return m
}

// Collectors returns the resolver's Prometheus collectors for the caller to
// register (nothing is registered globally).
func (r *Resolver) Collectors() []prometheus.Collector {
	m := r.metrics
	return []prometheus.Collector{m.queriesVec, m.hitsVec, m.latencyVec, m.failuresVec}
}

func (m *metrics) query(qtype uint16) {
	if i, ok := qtypeIndex(qtype); ok {
		m.queries[i].Inc()
	}
}

func (m *metrics) hit(qtype uint16) {
	if i, ok := qtypeIndex(qtype); ok {
		m.hits[i].Inc()
	}
}

func (m *metrics) upstream(transport string, d time.Duration) {
	if transport == "tcp" {
		m.tcp.Observe(d.Seconds())
	} else {
		m.udp.Observe(d.Seconds())
	}
}

func (m *metrics) failure(k kind) {
	if k > kindOK && k < numKinds {
		m.failures[k].Inc()
	}
}
