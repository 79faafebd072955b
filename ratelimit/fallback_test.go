package ratelimit

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

type transitions struct {
	mu  sync.Mutex
	got []string
}

func (tr *transitions) hook(from, to BreakerState, _ error) {
	tr.mu.Lock()
	tr.got = append(tr.got, from.String()+">"+to.String())
	tr.mu.Unlock()
}

func (tr *transitions) list() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.got...)
}

// Redis stops mid-run: decisions go on from memory with BackendError, memory
// enforces the limit locally, the breaker opens; after Restart the probe
// closes it and the shared limiter decides again for both gateways.
func TestFallbackRedisDownAndBack(t *testing.T) {
	r := testenv.StartRedis(t)
	bclock := newFakeClock() // breaker clock only: cool-downs without sleeping
	var tr transitions
	newGW := func() *Fallback {
		// As the gateway configures it: one dial attempt, so a stopped Redis
		// fails fast instead of through five dial retries.
		c := redis.NewClient(&redis.Options{Addr: r.Addr, ContextTimeoutEnabled: true, DialerRetries: 1, MaxRetries: 1})
		t.Cleanup(func() { _ = c.Close() })
		return NewFallback(NewRedis(c, RedisOptions{}), NewMemory(MemoryOptions{}),
			// A generous timeout: a loaded CI machine must not turn the first
			// (dial + script load) call into a fallback. A stopped Redis
			// refuses connections at once; the blackhole test covers timeouts.
			FallbackOptions{Timeout: 2 * time.Second, Failures: 2, Cooldown: 10 * time.Second, Clock: bclock.Now, OnStateChange: tr.hook})
	}
	gw1, gw2 := newGW(), newGW()
	ctx := context.Background()
	l := Limit{Rate: 5, Per: time.Hour}
	key := "client_ip:192.0.2.7"
	for i := range 3 {
		res, err := gw1.Allow(ctx, key, l, 1)
		if err != nil || !res.Allowed || res.BackendError || res.Remaining != 4-i {
			t.Fatalf("shared %d: %+v %v", i, res, err)
		}
	}

	r.Stop()
	for i := range 7 {
		res, err := gw1.Allow(ctx, key, l, 1)
		if err != nil {
			t.Fatalf("fallback returned an error: %v", err)
		}
		if !res.BackendError {
			t.Fatalf("fallback %d: no backend_error: %+v", i, res)
		}
		if want := i < 5; res.Allowed != want { // memory starts fresh and enforces 5
			t.Fatalf("fallback %d: %+v, want allowed=%v", i, res, want)
		}
	}
	if s := gw1.State(); s != Open {
		t.Fatalf("breaker %v, want open", s)
	}
	if n := counterValue(t, gw1.errs.WithLabelValues("allow")); n != 2 {
		t.Fatalf("backend errors %v, want 2 (then the breaker skips Redis)", n)
	}
	// Leases fall back too, and never error.
	if l, res, err := gw1.Acquire(ctx, "client_net_concurrent:192.0.2.0/24", 1, time.Minute); err != nil || l == nil || !res.BackendError {
		t.Fatalf("lease fallback: %+v %v", res, err)
	}

	r.Restart(t)
	bclock.Advance(11 * time.Second)
	var res Result
	for range 20 { // the first call after a restart may meet a stale pooled connection
		var err error
		if res, err = gw1.Allow(ctx, key, l, 1); err != nil {
			t.Fatal(err)
		}
		if !res.BackendError {
			break
		}
		bclock.Advance(11 * time.Second)
	}
	if res.BackendError || gw1.State() != Closed {
		t.Fatalf("after restart: %+v state %v", res, gw1.State())
	}
	// Redis came back empty (no persistence): 4 left after that call, and gw2
	// sees the same shared bucket, not its own memory.
	if res.Remaining != 4 {
		t.Fatalf("after restart: %+v", res)
	}
	res2, err := gw2.Allow(ctx, key, l, 1)
	if err != nil || res2.BackendError || res2.Remaining != 3 {
		t.Fatalf("gw2 after restart: %+v %v", res2, err)
	}
	got := tr.list()
	want := []string{"closed>open", "open>half_open", "half_open>closed"}
	if len(got) < 3 || got[0] != want[0] || got[len(got)-2] != want[1] || got[len(got)-1] != want[2] {
		t.Fatalf("transitions %v, want %v", got, want)
	}
}

// A Redis that accepts connections and never answers must not stall a
// decision: the per-call timeout bounds it.
func TestFallbackBlackholeRedis(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	// Default client options on purpose: go-redis then ignores context
	// deadlines, and the Fallback must bound the wait by itself.
	c := redis.NewClient(&redis.Options{Addr: ln.Addr().String()})
	defer c.Close()
	f := NewFallback(NewRedis(c, RedisOptions{}), NewMemory(MemoryOptions{}), FallbackOptions{Timeout: 50 * time.Millisecond})
	start := time.Now()
	res, err := f.Allow(context.Background(), "client_ip:192.0.2.9", Limit{Rate: 1, Per: time.Minute}, 1)
	// Not a speed target: the go-redis default read timeout is 3s, so this
	// only fails if the fallback timeout is not applied at all.
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("decision stalled %v", took)
	}
	if err != nil || !res.Allowed || !res.BackendError {
		t.Fatalf("blackhole: %+v %v", res, err)
	}

	// The gateway's way: a client that honours context deadlines, called
	// on the caller's goroutine.
	c2 := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), ContextTimeoutEnabled: true, MaxRetries: -1})
	defer c2.Close()
	f2 := NewFallback(NewRedis(c2, RedisOptions{}), NewMemory(MemoryOptions{}), FallbackOptions{Timeout: 50 * time.Millisecond, PrimaryHonoursDeadline: true})
	start = time.Now()
	res, err = f2.Allow(context.Background(), "client_ip:192.0.2.9", Limit{Rate: 1, Per: time.Minute}, 1)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("inline call stalled %v", took)
	}
	if err != nil || !res.Allowed || !res.BackendError {
		t.Fatalf("blackhole, inline: %+v %v", res, err)
	}
}

func TestFallbackMemoryOnlyAndMetrics(t *testing.T) {
	f := NewFallback(nil, NewMemory(MemoryOptions{}), FallbackOptions{})
	ctx := context.Background()
	l := Limit{Rate: 1, Per: time.Minute}
	for range 2 {
		res, err := f.Allow(ctx, "rcpt:bob@corp.example", l, 1)
		if err != nil || res.BackendError {
			t.Fatalf("memory only: %+v %v", res, err)
		}
	}
	_, _ = f.Allow(ctx, "nonsense", l, 1)
	reg := prometheus.NewPedanticRegistry()
	for _, c := range f.Collectors() {
		reg.MustRegister(c)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	if n := counterValue(t, f.decisions.WithLabelValues("rcpt", "denied", "local")); n != 1 {
		t.Fatalf("denied rcpt decisions %v", n)
	}
	if n := counterValue(t, f.decisions.WithLabelValues("other", "allowed", "local")); n != 1 {
		t.Fatalf("unknown dimension not folded into other: %v", n)
	}
	if err := f.Reset(ctx, "rcpt:bob@corp.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Allow(ctx, "rcpt:x", Limit{Rate: 1}, 1); !errors.Is(err, ErrInvalidLimit) {
		t.Fatalf("invalid limit: %v", err)
	}
}
