package ratelimit

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
)

// backends returns a Memory and a Redis (own redis-server) sharing clock c.
func backends(t *testing.T, c *fakeClock) map[string]Backend {
	t.Helper()
	r := testenv.StartRedis(t)
	return map[string]Backend{
		"memory": NewMemory(MemoryOptions{Clock: c.Now}),
		"redis":  NewRedis(newClient(t, r.Addr), RedisOptions{Clock: c.Now}),
	}
}

func TestGCRATable(t *testing.T) {
	// Periods are long on purpose: Redis expires keys on its own (real) clock
	// after the time a bucket needs to refill, and a loaded test machine must
	// not see a key vanish between two steps of the fake clock.
	a := Limit{Rate: 10, Per: 1000 * time.Second, Burst: 5} // 100s per event, bucket 5
	b := Limit{Rate: 3, Per: time.Hour}                     // Burst 0 = Rate: 20m per event, bucket 3
	c := Limit{Rate: 7, Per: 1000 * time.Second, Burst: 1}  // 142857143µs per event (rounded)
	ms := time.Second                                       // a's time unit
	steps := []struct {
		advance time.Duration
		key     string
		l       Limit
		n       int
		allowed bool
		rem     int
		retry   time.Duration
	}{
		{0, "a", a, 1, true, 4, 0},
		{0, "a", a, 4, true, 0, 0},
		{0, "a", a, 1, false, 0, 100 * ms},
		{100 * ms, "a", a, 1, true, 0, 0},
		{50 * ms, "a", a, 1, false, 0, 50 * ms},
		{850 * ms, "a", a, 6, false, 5, -1}, // cost above the bucket never fits
		{0, "a", a, 3, true, 2, 0},
		{0, "a", a, 3, false, 2, 100 * ms}, // 2 left but 3 asked
		{200 * ms, "a", a, 3, true, 1, 0},
		{0, "a", a, 0, true, 1, 0}, // cost 0 counts nothing
		{0, "b", b, 1, true, 2, 0},
		{0, "b", b, 1, true, 1, 0},
		{0, "b", b, 1, true, 0, 0},
		{0, "b", b, 1, false, 0, 20 * time.Minute},
		{20 * time.Minute, "b", b, 1, true, 0, 0},
		{24 * time.Hour, "b", b, 2, true, 1, 0}, // idle: bucket full again
		{0, "c", c, 1, true, 0, 0},
		{0, "c", c, 1, false, 0, 142857143 * time.Microsecond},
		{142857143 * time.Microsecond, "c", c, 1, true, 0, 0},
	}
	clock := newFakeClock()
	bs := backends(t, clock)
	ctx := context.Background()
	for i, s := range steps {
		clock.Advance(s.advance)
		for name, be := range bs {
			got, err := be.Allow(ctx, s.key, s.l, s.n)
			if err != nil {
				t.Fatalf("step %d %s: %v", i, name, err)
			}
			want := Result{Allowed: s.allowed, Limit: got.Limit, Remaining: s.rem, RetryAfter: s.retry}
			if got != want {
				t.Errorf("step %d %s: got %+v, want %+v", i, name, got, want)
			}
		}
	}
	// Peek sees what a cost-1 Allow would, and counts nothing.
	for name, be := range bs {
		for range 2 {
			p, err := be.Peek(ctx, "a", a) // idle for a day: full
			if err != nil || p != (Result{Allowed: true, Limit: 5, Remaining: 5}) {
				t.Errorf("%s peek a: %+v %v", name, p, err)
			}
			p, err = be.Peek(ctx, "c", c) // just used up
			if err != nil || p != (Result{Allowed: false, Limit: 1, Remaining: 0, RetryAfter: 142857143 * time.Microsecond}) {
				t.Errorf("%s peek c: %+v %v", name, p, err)
			}
		}
		if err := be.Reset(ctx, "b"); err != nil {
			t.Fatalf("%s reset: %v", name, err)
		}
		if p, _ := be.Peek(ctx, "b", b); p.Remaining != 3 {
			t.Errorf("%s after reset: %+v", name, p)
		}
		if _, err := be.Allow(ctx, "x", Limit{Rate: 0, Per: time.Second}, 1); !errors.Is(err, ErrInvalidLimit) {
			t.Errorf("%s invalid limit: %v", name, err)
		}
	}
}

// Random sequences give identical results on both backends.
func TestGCRABackendsAgree(t *testing.T) {
	clock := newFakeClock()
	bs := backends(t, clock)
	rng := rand.New(rand.NewPCG(1, 2))
	// Long periods: see TestGCRATable.
	limits := []Limit{{Rate: 10, Per: 1000 * time.Second, Burst: 3}, {Rate: 600, Per: time.Hour, Burst: 5}, {Rate: 3, Per: 7 * time.Minute, Burst: 9}}
	ctx := context.Background()
	outcomes := map[bool]int{}
	for i := range 300 {
		clock.Advance(time.Duration(rng.IntN(60)) * time.Second)
		k := rng.IntN(3)
		l, n := limits[k], rng.IntN(4)
		key := string(rune('p' + k))
		m, err1 := bs["memory"].Allow(ctx, key, l, n)
		r, err2 := bs["redis"].Allow(ctx, key, l, n)
		if err1 != nil || err2 != nil || m != r {
			t.Fatalf("step %d key %s cost %d: memory %+v %v, redis %+v %v", i, key, n, m, err1, r, err2)
		}
		outcomes[m.Allowed]++
	}
	if outcomes[true] < 50 || outcomes[false] < 50 {
		t.Fatalf("sequence too one-sided to compare: %v", outcomes)
	}
}

func TestFact(t *testing.T) {
	f := Result{Allowed: false, Limit: 5, Remaining: 1, RetryAfter: 1500 * time.Millisecond, BackendError: true}.Fact()
	if f != (Fact{Allowed: false, Limit: 5, Remaining: 1, RetryAfterS: 1.5, BackendError: true}) {
		t.Errorf("fact %+v", f)
	}
	if f := (Result{RetryAfter: -1}).Fact(); f.RetryAfterS != -1 {
		t.Errorf("never-fits fact %+v", f)
	}
}
