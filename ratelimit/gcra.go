package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Limit is one GCRA limit: Rate events per Per, at most Burst at once.
// Burst is the bucket size (how many events may arrive back to back after a
// quiet period); Burst <= 0 means Burst = Rate.
type Limit struct {
	Rate  int
	Per   time.Duration
	Burst int
}

// Result is one decision. Limit is the bucket size, Remaining how many more
// unit-cost events would be allowed right now (after this one, if allowed).
// RetryAfter is how long until this cost would fit (0 when allowed; negative
// when the cost exceeds the bucket and can never fit). BackendError says the
// shared backend failed and the decision came from the local fallback.
type Result struct {
	Allowed      bool
	Limit        int
	Remaining    int
	RetryAfter   time.Duration
	BackendError bool
}

// Fact is a Result as the policy sees it under input.ratelimit.<dimension>.
type Fact struct {
	Allowed      bool    `json:"allowed"`
	Limit        int     `json:"limit"`
	Remaining    int     `json:"remaining"`
	RetryAfterS  float64 `json:"retry_after_s"`
	BackendError bool    `json:"backend_error"`
}

// Fact converts r for the policy input; RetryAfterS is -1 when the cost can
// never fit.
func (r Result) Fact() Fact {
	ra := r.RetryAfter.Seconds()
	if r.RetryAfter < 0 {
		ra = -1
	}
	return Fact{Allowed: r.Allowed, Limit: r.Limit, Remaining: r.Remaining, RetryAfterS: ra, BackendError: r.BackendError}
}

// Limiter decides whether n more units (1 message, k recipients, or bytes)
// for key fit under l, and counts them if they do.
type Limiter interface {
	Allow(ctx context.Context, key string, l Limit, n int) (Result, error)
}

// Request is one decision of a batch: Allow(ctx, Key, Limit, N).
type Request struct {
	Key   string
	Limit Limit
	N     int
}

// BatchLimiter decides several requests at once (the dimensions of one SMTP
// stage), with the results sequential Allow calls in the same order would
// give: a key repeated in the batch sees the counts of its earlier requests.
// An invalid request (ErrInvalidLimit) fails the whole batch before anything
// is counted. The results are in request order; reqs is not kept.
type BatchLimiter interface {
	AllowMany(ctx context.Context, reqs []Request) ([]Result, error)
}

// Inspector reads and clears buckets for operator tools. Peek reports what a
// cost-1 Allow would see without counting anything.
type Inspector interface {
	Peek(ctx context.Context, key string, l Limit) (Result, error)
	Reset(ctx context.Context, key string) error
}

// Leaser counts concurrent holders of key (connections per client network).
// Acquire takes a slot unless max live holders already exist; the Result says
// which (Allowed), with Limit = max and Remaining = free slots after this one,
// so it doubles as the policy fact. The Lease is nil when not allowed.
// Holders reports the live count (expired leases excluded).
type Leaser interface {
	Acquire(ctx context.Context, key string, max int, ttl time.Duration) (Lease, Result, error)
	Holders(ctx context.Context, key string) (int, error)
}

// Lease is one held slot. Refresh extends it by its ttl (call it well within
// the ttl, e.g. every ttl/3, while the connection lives; it re-adds a lease
// that had already expired); Release gives it back. Both are no-ops after
// Release. Call them from one goroutine: a Refresh racing a Release may
// re-add the lease, which then lingers until its ttl.
type Lease interface {
	Refresh(ctx context.Context) error
	Release(ctx context.Context) error
}

// Backend is everything a limiter backend offers; Memory, Redis and Fallback
// implement it.
type Backend interface {
	Limiter
	BatchLimiter
	Inspector
	Leaser
}

// ErrInvalidLimit is returned for a Limit with Rate or Per <= 0 and for n < 0.
var ErrInvalidLimit = errors.New("ratelimit: invalid limit")

// maxKeyLen bounds the key stored per bucket: HELO names and addresses come
// from the network.
const maxKeyLen = 300

// params are the integer microsecond figures both backends compute with.
// Everything stays an integer below 2^53 so Go int64 and Lua doubles agree
// bit for bit.
type params struct {
	emission int64 // µs per event: Per/Rate, at least 1
	tau      int64 // µs of burst tolerance: emission*burst
	burst    int64
}

func (l Limit) params(n int) (params, error) {
	if l.Rate <= 0 || l.Per <= 0 || n < 0 {
		return params{}, fmt.Errorf("%w: rate %d per %v, cost %d", ErrInvalidLimit, l.Rate, l.Per, n)
	}
	burst := int64(l.Burst)
	if burst <= 0 {
		burst = int64(l.Rate)
	}
	em := int64(math.Round(float64(l.Per.Microseconds()) / float64(l.Rate)))
	if em < 1 {
		em = 1
	}
	// Keep tau (and tat = now + tau) well inside 2^53 µs (~285 years).
	const maxTau = int64(1) << 50
	if burst > maxTau/em {
		burst = maxTau / em
	}
	return params{emission: em, tau: em * burst, burst: burst}, nil
}

// batchParams validates every request of a batch before any is counted.
func batchParams(reqs []Request) ([]params, error) {
	if err := validBatch(reqs); err != nil {
		return nil, err
	}
	ps := make([]params, len(reqs))
	for i, r := range reqs {
		ps[i], _ = r.Limit.params(r.N)
	}
	return ps, nil
}

func validBatch(reqs []Request) error {
	for i, r := range reqs {
		if _, err := r.Limit.params(r.N); err != nil {
			return fmt.Errorf("request %d (%s): %w", i, boundKey(r.Key), err)
		}
	}
	return nil
}

// decide is GCRA on the theoretical arrival time tat (µs; 0 = no state):
// an event of cost n is allowed when now >= tat + n*emission - tau. It returns
// the result and the new tat to store (0 = nothing to store). The Lua script
// in redis.go is a line-by-line twin of this function.
func decide(p params, tat, now int64, n int64) (Result, int64) {
	if tat < now {
		tat = now
	}
	res := Result{Limit: int(p.burst)}
	if n > p.burst {
		res.RetryAfter = -1
		res.Remaining = int(floorDiv(now-(tat-p.tau), p.emission))
		return res, 0
	}
	newTat := tat + n*p.emission
	diff := now - (newTat - p.tau)
	if diff < 0 {
		res.RetryAfter = time.Duration(-diff) * time.Microsecond
		res.Remaining = int(floorDiv(now-(tat-p.tau), p.emission))
		return res, 0
	}
	res.Allowed = true
	res.Remaining = int(diff / p.emission)
	if n == 0 {
		return res, 0
	}
	return res, newTat
}

func floorDiv(a, b int64) int64 {
	if a < 0 {
		return 0
	}
	return a / b
}
