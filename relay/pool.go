package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for zero pool Options fields.
const (
	DefaultPoolMaxIdle     = 8
	DefaultPoolIdleTimeout = 30 * time.Second
	DefaultPoolMaxUses     = 100
)

// maxProbeTimeout caps the liveness probe of a pooled connection: a healthy
// downstream answers NOOP at once, and a slow probe only costs a dial.
const maxProbeTimeout = time.Second

// poolKey: a connection serves only routes with the same host and TLS mode,
// so a plaintext or unverified session never serves a "required" route and
// a TLS one never serves a "none" route.
type poolKey struct {
	host string
	mode TLSMode
}

type idleConn struct {
	sc    *smtpConn
	since time.Time
}

// pool keeps greeted, idle downstream sessions per host and TLS mode. Each
// list is a stack: the most recently returned session is handed out first
// (the likeliest to be alive), and the oldest sit at the bottom, where the
// idle timeout removes them when traffic falls.
type pool struct {
	maxIdle      int
	idleTimeout  time.Duration
	maxUses      int
	probeTimeout time.Duration
	m            *metrics

	mu     sync.Mutex
	idle   map[poolKey][]idleConn
	n      int         // idle sessions over all keys
	timer  *time.Timer // sweeps expired sessions; armed while any is idle
	closed bool

	retiring sync.WaitGroup // QUITs of sessions leaving the pool
}

func newPool(opts Options, m *metrics) *pool {
	return &pool{
		maxIdle:      opts.PoolMaxIdle,
		idleTimeout:  opts.PoolIdleTimeout,
		maxUses:      opts.PoolMaxUses,
		probeTimeout: min(opts.CommandTimeout/4, maxProbeTimeout),
		m:            m,
		idle:         make(map[poolKey][]idleConn),
	}
}

// take returns a live pooled session for key, or nil. Expired sessions are
// dropped on the way (the sweeper may not have run yet). A session that
// fails its probe is discarded together with every older one of that key:
// what killed it (a downstream restart or idle timeout, a hang) has
// killed those too, and probing each would cost a timeout apiece.
func (p *pool) take(ctx context.Context, key poolKey) *smtpConn {
	p.mu.Lock()
	list := p.idle[key]
	var expired []*smtpConn
	cut := 0
	for cut < len(list) && time.Since(list[cut].since) >= p.idleTimeout {
		expired = append(expired, list[cut].sc)
		cut++
	}
	var sc *smtpConn
	if cut < len(list) {
		sc = list[len(list)-1].sc
		list[len(list)-1] = idleConn{}
		list = list[:len(list)-1]
	}
	list = p.dropFrontLocked(key, list, cut)
	p.mu.Unlock()
	p.retire(expired, "idle_timeout")
	if sc == nil {
		return nil
	}
	if key.mode == TLSRequired && !sc.tls {
		// Cannot happen with the key including the mode; never rely on it.
		p.retire([]*smtpConn{sc}, "tls_mismatch")
		return nil
	}
	err := sc.probe(ctx, p.probeTimeout)
	if err == nil {
		p.m.poolHits.Inc()
		return sc
	}
	sc.c.Close()
	p.m.discard("probe")
	if ctx.Err() != nil {
		return nil // our deadline, not the session's fault
	}
	p.mu.Lock()
	older := p.idle[key]
	p.dropFrontLocked(key, older, len(older))
	p.mu.Unlock()
	stale := make([]*smtpConn, len(older))
	for i, ic := range older {
		stale[i] = ic.sc
	}
	// Suspected dead: close without the QUIT round trip.
	for _, s := range stale {
		s.c.Close()
		p.m.discard("probe")
	}
	return nil
}

// dropFrontLocked removes list[:n] and stores the rest for key.
func (p *pool) dropFrontLocked(key poolKey, list []idleConn, n int) []idleConn {
	p.n -= len(p.idle[key]) - len(list) + n
	rest := list[n:]
	if len(rest) == 0 {
		delete(p.idle, key)
		return nil
	}
	// Copy down so the backing array does not keep dropped sessions alive.
	kept := append(list[:0], rest...)
	clear(list[len(kept):])
	p.idle[key] = kept
	return kept
}

// put keeps sc, an idle session whose handle was just closed, for reuse.
// It returns false (with sc untouched) when sc must be QUIT instead.
func (p *pool) put(sc *smtpConn, key poolKey) bool {
	if sc.uses >= p.maxUses {
		p.m.discard("max_uses")
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.m.discard("closed")
		return false
	}
	if len(p.idle[key]) >= p.maxIdle {
		p.m.discard("full")
		return false
	}
	p.idle[key] = append(p.idle[key], idleConn{sc: sc, since: time.Now()})
	p.n++
	if p.timer == nil {
		p.timer = time.AfterFunc(p.idleTimeout, p.sweep)
	}
	return true
}

// sweep QUITs expired sessions and re-arms for the next expiry.
func (p *pool) sweep() {
	p.mu.Lock()
	p.timer = nil
	if p.closed {
		p.mu.Unlock()
		return
	}
	var expired []*smtpConn
	var next time.Time
	for key, list := range p.idle {
		cut := 0
		for cut < len(list) && time.Since(list[cut].since) >= p.idleTimeout {
			expired = append(expired, list[cut].sc)
			cut++
		}
		list = p.dropFrontLocked(key, list, cut)
		if len(list) > 0 && (next.IsZero() || list[0].since.Before(next)) {
			next = list[0].since
		}
	}
	if !next.IsZero() {
		p.timer = time.AfterFunc(max(time.Until(next.Add(p.idleTimeout)), time.Millisecond), p.sweep)
	}
	p.mu.Unlock()
	p.retire(expired, "idle_timeout")
}

// retire QUITs sessions in the background: they leave the pool healthy, so
// the downstream gets a proper goodbye, but no caller waits for it.
func (p *pool) retire(conns []*smtpConn, reason string) {
	for _, sc := range conns {
		p.m.discard(reason)
		p.retiring.Add(1)
		go func() {
			defer p.retiring.Done()
			_ = sc.quit()
		}()
	}
}

// close stops pooling and QUITs every idle session, waiting (each QUIT is
// bounded) so that nothing of the pool outlives it.
func (p *pool) close() {
	p.mu.Lock()
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	var all []*smtpConn
	for _, list := range p.idle {
		for _, ic := range list {
			all = append(all, ic.sc)
		}
	}
	clear(p.idle)
	p.n = 0
	p.mu.Unlock()
	p.retire(all, "closed")
	p.retiring.Wait()
}

func (p *pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// probe checks that a pooled session is alive with a NOOP round trip
// bounded by d and ctx. NOOP rather than RSET: both cost one round trip,
// but go-smtp's Reset makes the next command re-send EHLO (one more), and
// the session is known to have no open transaction (only idle sessions are
// pooled). A round trip, rather than a look for unread bytes, also catches
// a downstream that hangs or vanished without closing the connection; and a
// 421 the downstream sent before closing is read as NOOP's reply.
func (s *smtpConn) probe(ctx context.Context, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if d <= 0 {
		return context.DeadlineExceeded
	}
	stop := context.AfterFunc(ctx, s.abort)
	s.c.CommandTimeout = d
	err := s.c.Noop()
	s.c.CommandTimeout = s.r.opts.CommandTimeout
	if !stop() {
		return errors.Join(err, ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("noop: %w", err)
	}
	return nil
}

// metrics of the pool; registered by the caller through Collectors.
type metrics struct {
	poolHits     prometheus.Counter
	poolMisses   prometheus.Counter
	poolDiscards *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		poolHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxguard_relay_pool_hits_total",
			Help: "Downstream sessions taken from the pool (probe passed).",
		}),
		poolMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxguard_relay_pool_misses_total",
			Help: "Opens of an SMTP route that found no live pooled session and dialled.",
		}),
		poolDiscards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_relay_pool_discards_total",
			Help: "Sessions not pooled or removed from the pool, by reason (probe, idle_timeout, max_uses, full, closed, tls_mismatch).",
		}, []string{"reason"}),
	}
}

func (m *metrics) discard(reason string) { m.poolDiscards.WithLabelValues(reason).Inc() }

// Collectors returns the relay's metrics (pool hits, misses, discards by
// reason, idle sessions) for the caller to register; nothing is registered
// globally.
func (r *Relay) Collectors() []prometheus.Collector {
	idle := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mxguard_relay_pool_idle",
		Help: "Idle downstream sessions in the pool.",
	}, func() float64 {
		if r.pool == nil {
			return 0
		}
		return float64(r.pool.idleCount())
	})
	return []prometheus.Collector{r.m.poolHits, r.m.poolMisses, r.m.poolDiscards, idle}
}

// Close QUITs every pooled session and stops pooling: Conns closed later
// send QUIT, Open still works (it dials). Call it once at shutdown, after
// the last Open; it waits for the QUITs, each bounded by CommandTimeout
// and a few seconds.
func (r *Relay) Close() error {
	if r.pool != nil {
		r.pool.close()
	}
	return nil
}
