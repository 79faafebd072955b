package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BreakerState is the circuit breaker's state in front of the shared backend.
type BreakerState int

// Breaker states: Closed sends every call to the shared backend; Open skips it
// for the cool-down; HalfOpen lets one probe call through after the cool-down.
const (
	Closed BreakerState = iota
	Open
	HalfOpen
)

// String is the state's metric/log name.
func (s BreakerState) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "unknown"
}

// FallbackOptions configure a Fallback. Zero values take the defaults.
type FallbackOptions struct {
	// Timeout bounds each call to the shared backend (default 50ms), so Redis
	// can never hold a session for more than a fraction of a second.
	Timeout time.Duration
	// Failures is how many consecutive failures open the breaker (default 3).
	Failures int
	// Cooldown is how long an open breaker skips the shared backend before one
	// probe (default 5s).
	Cooldown time.Duration
	// OnStateChange, when set, is called (synchronously, from the goroutine
	// whose call caused it, never under a lock) on every breaker transition,
	// with the error that caused an opening. The gateway logs it.
	OnStateChange func(from, to BreakerState, err error)
	// Clock is the breaker's time source (default time.Now).
	Clock func() time.Time
	// PrimaryHonoursDeadline says the primary returns by its context's
	// deadline on its own (a go-redis client with ContextTimeoutEnabled,
	// as the gateway builds it). Calls then run on the caller's goroutine;
	// otherwise each runs on a goroutine of its own that the caller stops
	// waiting for at Timeout, which costs a goroutine, its stack growth
	// and a hand-off per call.
	PrimaryHonoursDeadline bool
}

// Fallback is the Backend the gateway uses: the shared backend (Redis) when it
// answers, the local Memory when it does not. Decisions never fail because of
// the shared backend and never wait longer than Timeout for it; a decision
// made locally because of a backend problem has BackendError set. With a nil
// primary it is the memory limiter plus metrics.
type Fallback struct {
	primary Backend
	local   Backend
	o       FallbackOptions

	mu        sync.Mutex
	state     BreakerState
	failures  int
	openUntil time.Time
	// healthy mirrors state == Closed && failures == 0 (written under mu):
	// the common case then takes no lock, which every session would
	// otherwise contend for twice per call.
	healthy atomic.Bool
	probing bool

	decisions *prometheus.CounterVec
	errs      *prometheus.CounterVec
	stateG    prometheus.Gauge
	changes   *prometheus.CounterVec
}

// NewFallback returns a Fallback over primary (may be nil) and local.
func NewFallback(primary, local Backend, o FallbackOptions) *Fallback {
	if o.Timeout <= 0 {
		o.Timeout = 50 * time.Millisecond
	}
	if o.Failures <= 0 {
		o.Failures = 3
	}
	if o.Cooldown <= 0 {
		o.Cooldown = 5 * time.Second
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	f := &Fallback{
		primary: primary, local: local, o: o,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_ratelimit_decisions_total",
			Help: "Rate-limit decisions by dimension, outcome (allowed|denied) and backend (shared|local).",
		}, []string{"dimension", "outcome", "backend"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_ratelimit_backend_errors_total",
			Help: "Failed or timed-out calls to the shared rate-limit backend, by operation.",
		}, []string{"op"}),
		stateG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mxguard_ratelimit_breaker_state",
			Help: "Circuit breaker in front of the shared backend: 0 closed, 1 open, 2 half-open.",
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_ratelimit_breaker_transitions_total",
			Help: "Circuit breaker transitions by new state.",
		}, []string{"to"}),
	}
	f.healthy.Store(true)
	return f
}

// Collectors returns the Prometheus collectors; the caller registers them.
func (f *Fallback) Collectors() []prometheus.Collector {
	return []prometheus.Collector{f.decisions, f.errs, f.stateG, f.changes}
}

// State reports the breaker state.
func (f *Fallback) State() BreakerState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

// try reports whether this call may use the primary. In HalfOpen only one
// caller (the probe) gets through; the rest stay local until it answers.
func (f *Fallback) try() bool {
	if f.primary == nil {
		return false
	}
	if f.healthy.Load() {
		return true
	}
	f.mu.Lock()
	var ev *transition
	ok := false
	switch f.state {
	case Closed:
		ok = true
	case Open:
		if !f.o.Clock().Before(f.openUntil) {
			ev = f.setLocked(HalfOpen, nil)
			f.probing, ok = true, true
		}
	case HalfOpen:
		if !f.probing {
			f.probing, ok = true, true
		}
	}
	f.mu.Unlock()
	f.emit(ev)
	return ok
}

type transition struct {
	from, to BreakerState
	err      error
}

func (f *Fallback) setLocked(to BreakerState, err error) *transition {
	if f.state == to {
		return nil
	}
	ev := &transition{from: f.state, to: to, err: err}
	f.state = to
	f.stateG.Set(float64(to))
	f.changes.WithLabelValues(to.String()).Inc()
	return ev
}

func (f *Fallback) emit(ev *transition) {
	if ev != nil && f.o.OnStateChange != nil {
		f.o.OnStateChange(ev.from, ev.to, ev.err)
	}
}

func (f *Fallback) success() {
	if f.healthy.Load() {
		return
	}
	f.mu.Lock()
	f.failures = 0
	f.probing = false
	ev := f.setLocked(Closed, nil)
	f.healthy.Store(true)
	f.mu.Unlock()
	f.emit(ev)
}

// failure records a primary failure. A failure caused by the caller's own
// context ending says nothing about Redis and is not counted.
func (f *Fallback) failure(ctx context.Context, op string, err error) {
	f.errs.WithLabelValues(op).Inc()
	f.mu.Lock()
	var ev *transition
	if ctx.Err() != nil {
		f.probing = false
	} else {
		f.failures++
		f.healthy.Store(false)
		if f.state == HalfOpen || f.failures >= f.o.Failures {
			f.probing = false
			f.openUntil = f.o.Clock().Add(f.o.Cooldown)
			ev = f.setLocked(Open, err)
		}
	}
	f.mu.Unlock()
	f.emit(ev)
}

// callPrimary runs op on the primary under the breaker and the timeout and
// reports whether the primary answered. op runs in its own goroutine and the
// caller stops waiting at the timeout even if the client ignores contexts
// (go-redis does unless ContextTimeoutEnabled is set), so Redis can never
// hold a session longer than Timeout. A late answer is discarded; the open
// breaker bounds how many such calls can be outstanding.
func callPrimary[T any](f *Fallback, ctx context.Context, name string, op func(context.Context) (T, error)) (T, bool) {
	var zero T
	if !f.try() {
		return zero, false
	}
	type answer struct {
		v   T
		err error
	}
	cctx, cancel := context.WithTimeout(ctx, f.o.Timeout)
	defer cancel()
	var a answer
	if f.o.PrimaryHonoursDeadline {
		a.v, a.err = op(cctx)
		if a.err != nil && cctx.Err() != nil {
			a.err = fmt.Errorf("ratelimit %s: %w (%w)", name, cctx.Err(), a.err)
		}
	} else {
		ch := make(chan answer, 1)
		go func() {
			v, err := op(cctx)
			ch <- answer{v, err}
		}()
		select {
		case a = <-ch:
		case <-cctx.Done():
			a.err = fmt.Errorf("ratelimit %s: %w", name, cctx.Err())
		}
	}
	if a.err == nil {
		f.success()
		return a.v, true
	}
	if errors.Is(a.err, ErrInvalidLimit) {
		// A caller bug, not a backend fault (callers validate first, so this
		// is only a safety net): leave the breaker as it was.
		f.mu.Lock()
		f.probing = false
		f.mu.Unlock()
		return zero, false
	}
	f.failure(ctx, name, a.err)
	return zero, false
}

// Allow implements Limiter. Its only error is ErrInvalidLimit (a bad Limit
// or negative cost, which config validation prevents).
func (f *Fallback) Allow(ctx context.Context, key string, l Limit, n int) (Result, error) {
	if _, err := l.params(n); err != nil {
		return Result{}, err
	}
	if res, ok := callPrimary(f, ctx, "allow", func(c context.Context) (Result, error) { return f.primary.Allow(c, key, l, n) }); ok {
		f.count(key, res, "shared")
		return res, nil
	}
	res, err := f.local.Allow(ctx, key, l, n)
	if err != nil {
		return Result{}, err
	}
	res.BackendError = f.primary != nil
	f.count(key, res, "local")
	return res, nil
}

// AllowMany implements BatchLimiter: the whole batch is one call to the
// shared backend under one timeout and one breaker outcome; when that fails
// or is skipped, the whole batch is decided by the local memory limiter and
// every result has BackendError. Its only error is ErrInvalidLimit, returned
// before anything is counted.
func (f *Fallback) AllowMany(ctx context.Context, reqs []Request) ([]Result, error) {
	if err := validBatch(reqs); err != nil {
		return nil, fmt.Errorf("ratelimit batch: %w", err)
	}
	if len(reqs) == 0 {
		return []Result{}, nil
	}
	if f.primary != nil {
		// The call may outlive this one (a timed-out call is abandoned, not
		// stopped), so it gets its own copy of the requests.
		own := append([]Request(nil), reqs...)
		res, ok := callPrimary(f, ctx, "allow", func(c context.Context) ([]Result, error) { return f.primary.AllowMany(c, own) })
		// A reply of the wrong length breaks the contract: decide locally
		// rather than index past it.
		if ok && len(res) == len(reqs) {
			for i, r := range res {
				f.count(reqs[i].Key, r, "shared")
			}
			return res, nil
		}
	}
	res, err := f.local.AllowMany(ctx, reqs)
	if err != nil {
		return nil, err
	}
	for i := range res {
		res[i].BackendError = f.primary != nil
		f.count(reqs[i].Key, res[i], "local")
	}
	return res, nil
}

func (f *Fallback) count(key string, r Result, backend string) {
	outcome := "denied"
	if r.Allowed {
		outcome = "allowed"
	}
	f.decisions.WithLabelValues(dimensionOf(key), outcome, backend).Inc()
}

// dimensionOf keeps metric labels bounded: only known dimension names.
func dimensionOf(key string) string {
	if i := strings.IndexByte(key, ':'); i > 0 {
		if _, ok := dimensionIndex[key[:i]]; ok {
			return key[:i]
		}
	}
	return "other"
}

// Peek implements Inspector; a backend failure gives the local view with
// BackendError set.
func (f *Fallback) Peek(ctx context.Context, key string, l Limit) (Result, error) {
	if _, err := l.params(1); err != nil {
		return Result{}, err
	}
	if res, ok := callPrimary(f, ctx, "peek", func(c context.Context) (Result, error) { return f.primary.Peek(c, key, l) }); ok {
		return res, nil
	}
	res, err := f.local.Peek(ctx, key, l)
	res.BackendError = f.primary != nil
	return res, err
}

// Reset implements Inspector: it clears both backends and reports the shared
// backend's error, if any.
func (f *Fallback) Reset(ctx context.Context, key string) error {
	lerr := f.local.Reset(ctx, key)
	if f.primary == nil {
		return lerr
	}
	if _, ok := callPrimary(f, ctx, "reset", func(c context.Context) (struct{}, error) { return struct{}{}, f.primary.Reset(c, key) }); !ok {
		return errors.Join(errors.New("ratelimit reset: shared backend failed or skipped"), lerr)
	}
	return lerr
}

// Holders implements Leaser (shared count when available, else local).
func (f *Fallback) Holders(ctx context.Context, key string) (int, error) {
	if n, ok := callPrimary(f, ctx, "holders", func(c context.Context) (int, error) { return f.primary.Holders(c, key) }); ok {
		return n, nil
	}
	return f.local.Holders(ctx, key)
}

// Acquire implements Leaser. Its only error is ErrInvalidLimit; when the shared
// backend fails the lease is taken locally and the Result has BackendError.
// The returned Lease's Refresh and Release never return errors: failures go
// to the metrics and the breaker, and an unreleased shared lease expires by
// itself.
func (f *Fallback) Acquire(ctx context.Context, key string, max int, ttl time.Duration) (Lease, Result, error) {
	if max <= 0 || ttl <= 0 {
		return nil, Result{}, fmt.Errorf("%w: lease max %d ttl %v", ErrInvalidLimit, max, ttl)
	}
	type acq struct {
		l   Lease
		res Result
	}
	if a, ok := callPrimary(f, ctx, "acquire", func(c context.Context) (acq, error) {
		l, res, err := f.primary.Acquire(c, key, max, ttl)
		return acq{l, res}, err
	}); ok {
		if a.l == nil {
			return nil, a.res, nil
		}
		return &fbLease{f: f, l: a.l, shared: true}, a.res, nil
	}
	ll, res, err := f.local.Acquire(ctx, key, max, ttl)
	if err != nil {
		return nil, Result{}, err
	}
	res.BackendError = f.primary != nil
	if ll == nil {
		return nil, res, nil
	}
	return &fbLease{f: f, l: ll}, res, nil
}

type fbLease struct {
	f      *Fallback
	l      Lease
	shared bool
}

// Refresh extends the lease where it was taken; errors only feed the breaker.
func (l *fbLease) Refresh(ctx context.Context) error {
	if !l.shared {
		return l.l.Refresh(ctx)
	}
	callPrimary(l.f, ctx, "refresh", func(c context.Context) (struct{}, error) { return struct{}{}, l.l.Refresh(c) })
	return nil
}

// Release gives the lease back; errors only feed the breaker.
func (l *fbLease) Release(ctx context.Context) error {
	if !l.shared {
		return l.l.Release(ctx)
	}
	// Skipped or failed: the member expires by itself after its ttl.
	callPrimary(l.f, ctx, "release", func(c context.Context) (struct{}, error) { return struct{}{}, l.l.Release(c) })
	return nil
}
