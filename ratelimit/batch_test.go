package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// roundTrips counts what a go-redis client sends, per node address: single
// commands and pipelines (one pipeline = one round trip). A new connection's
// handshake (HELLO, CLIENT SETINFO) also passes the hooks; it is not counted.
type roundTrips struct {
	mu     sync.Mutex
	single map[string]int
	pipes  map[string]int
}

func newRoundTrips() *roundTrips {
	return &roundTrips{single: map[string]int{}, pipes: map[string]int{}}
}

func (rt *roundTrips) hook(addr string) redis.Hook { return rtHook{rt, addr} }

func (rt *roundTrips) reset() {
	rt.mu.Lock()
	clear(rt.single)
	clear(rt.pipes)
	rt.mu.Unlock()
}

func (rt *roundTrips) snapshot() (single, pipes map[string]int) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	single, pipes = map[string]int{}, map[string]int{}
	for k, v := range rt.single {
		single[k] = v
	}
	for k, v := range rt.pipes {
		pipes[k] = v
	}
	return single, pipes
}

type rtHook struct {
	rt   *roundTrips
	addr string
}

func (h rtHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h rtHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if handshake(cmd) {
			return next(ctx, cmd)
		}
		h.rt.mu.Lock()
		h.rt.single[h.addr]++
		h.rt.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h rtHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && handshake(cmds[0]) {
			return next(ctx, cmds)
		}
		h.rt.mu.Lock()
		h.rt.pipes[h.addr]++
		h.rt.mu.Unlock()
		return next(ctx, cmds)
	}
}

func handshake(c redis.Cmder) bool {
	switch c.Name() {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}

// sequential is the reference: the batch as one Allow call after another.
func sequential(ctx context.Context, l Limiter, reqs []Request) ([]Result, error) {
	out := make([]Result, len(reqs))
	for i, q := range reqs {
		r, err := l.Allow(ctx, q.Key, q.Limit, q.N)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

// batchBackends: for each backend, one instance answering batches and a twin
// with separate state answering the same requests one Allow at a time; all
// share clock c. The two Redis limiters share one redis-server under
// different prefixes.
func batchBackends(t *testing.T, c *fakeClock) map[string][2]Backend {
	t.Helper()
	r := testenv.StartRedis(t)
	cl := newClient(t, r.Addr)
	return map[string][2]Backend{
		"memory": {NewMemory(MemoryOptions{Clock: c.Now}), NewMemory(MemoryOptions{Clock: c.Now})},
		"redis":  {NewRedis(cl, RedisOptions{Prefix: "batch:", Clock: c.Now}), NewRedis(cl, RedisOptions{Prefix: "seq:", Clock: c.Now})},
		"fallback": {
			NewFallback(NewRedis(cl, RedisOptions{Prefix: "fbbatch:", Clock: c.Now}), NewMemory(MemoryOptions{Clock: c.Now}), FallbackOptions{Timeout: 2 * time.Second}),
			NewFallback(NewRedis(cl, RedisOptions{Prefix: "fbseq:", Clock: c.Now}), NewMemory(MemoryOptions{Clock: c.Now}), FallbackOptions{Timeout: 2 * time.Second}),
		},
	}
}

// AllowMany answers exactly as sequential Allow calls do, on every backend,
// repeated keys included (decided in order, each seeing the earlier counts).
func TestAllowManyMatchesSequential(t *testing.T) {
	// Long periods: see TestGCRATable.
	a := Limit{Rate: 10, Per: 1000 * time.Second, Burst: 3} // 100s per event, bucket 3
	b := Limit{Rate: 3, Per: time.Hour}                     // 20m per event, bucket 3
	bytes := Limit{Rate: 1 << 20, Per: time.Hour, Burst: 10000}
	steps := []struct {
		name    string
		advance time.Duration
		reqs    []Request
		allowed []bool // pinned outcomes; the full Results must equal sequential
	}{
		{"one", 0, []Request{{"a", a, 1}}, []bool{true}},
		{"distinct keys", 0, []Request{{"a", a, 1}, {"b", b, 1}, {"bytes", bytes, 4096}}, []bool{true, true, true}},
		{"repeated key runs out in order", 0, []Request{{"a", a, 1}, {"b", b, 1}, {"a", a, 1}, {"b", b, 1}}, []bool{true, true, false, true}},
		{"denied not counted", 100 * time.Second, []Request{{"a", a, 2}, {"a", a, 1}}, []bool{false, true}},
		{"cost 0 and above bucket", 0, []Request{{"a", a, 0}, {"a", a, 4}, {"bytes", bytes, 20000}}, []bool{true, false, false}},
		{"same key, different limits", 24 * time.Hour, []Request{{"c", a, 3}, {"c", b, 1}, {"c", a, 1}}, []bool{true, true, false}},
		{"big cost then small", 0, []Request{{"bytes", bytes, 9000}, {"bytes", bytes, 2000}, {"bytes", bytes, 1000}}, []bool{true, false, true}},
		{"empty", 0, nil, nil},
	}
	clock := newFakeClock()
	ctx := context.Background()
	for name, pair := range batchBackends(t, clock) {
		t.Run(name, func(t *testing.T) {
			for _, s := range steps {
				clock.Advance(s.advance)
				got, err := pair[0].AllowMany(ctx, s.reqs)
				if err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				want, err := sequential(ctx, pair[1], s.reqs)
				if err != nil {
					t.Fatalf("%s sequential: %v", s.name, err)
				}
				if len(got) != len(s.reqs) {
					t.Fatalf("%s: %d results for %d requests", s.name, len(got), len(s.reqs))
				}
				for i := range got {
					if got[i] != want[i] {
						t.Errorf("%s [%d] %s: batch %+v, sequential %+v", s.name, i, s.reqs[i].Key, got[i], want[i])
					}
					if got[i].Allowed != s.allowed[i] || got[i].BackendError {
						t.Errorf("%s [%d] %s: %+v, want allowed=%v", s.name, i, s.reqs[i].Key, got[i], s.allowed[i])
					}
				}
			}
			// An invalid request fails the batch before anything is counted.
			before, _ := pair[0].Peek(ctx, "a", a)
			_, err := pair[0].AllowMany(ctx, []Request{{"a", a, 1}, {"x", Limit{Rate: 1}, 1}})
			if !errors.Is(err, ErrInvalidLimit) {
				t.Fatalf("invalid request: %v", err)
			}
			if after, _ := pair[0].Peek(ctx, "a", a); after != before {
				t.Fatalf("invalid batch counted: %+v -> %+v", before, after)
			}
		})
	}
}

// Random batches over a few keys agree with sequential calls on every backend.
func TestAllowManyRandomAgree(t *testing.T) {
	clock := newFakeClock()
	rng := rand.New(rand.NewPCG(3, 4))
	limits := []Limit{{Rate: 10, Per: 1000 * time.Second, Burst: 3}, {Rate: 600, Per: time.Hour, Burst: 5}, {Rate: 3, Per: 7 * time.Minute, Burst: 9}}
	ctx := context.Background()
	bs := batchBackends(t, clock)
	outcomes := map[bool]int{}
	for i := range 120 {
		clock.Advance(time.Duration(rng.IntN(90)) * time.Second)
		reqs := make([]Request, 1+rng.IntN(6))
		for j := range reqs {
			k := rng.IntN(3)
			reqs[j] = Request{Key: string(rune('p' + k)), Limit: limits[k], N: rng.IntN(4)}
		}
		for name, pair := range bs {
			got, err1 := pair[0].AllowMany(ctx, reqs)
			want, err2 := sequential(ctx, pair[1], reqs)
			if err1 != nil || err2 != nil {
				t.Fatalf("step %d %s: %v %v", i, name, err1, err2)
			}
			for j := range reqs {
				if got[j] != want[j] {
					t.Fatalf("step %d %s [%d] %+v: batch %+v, sequential %+v", i, name, j, reqs[j], got[j], want[j])
				}
				if name == "memory" {
					outcomes[got[j].Allowed]++
				}
			}
		}
	}
	if outcomes[true] < 50 || outcomes[false] < 50 {
		t.Fatalf("sequence too one-sided to compare: %v", outcomes)
	}
}

// One batch is one pipeline on a standalone Redis, and a flushed script
// cache (NOSCRIPT) costs one retry, counting nothing twice.
func TestRedisAllowManyOneRoundTrip(t *testing.T) {
	r := testenv.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = c.Close() })
	rt := newRoundTrips()
	c.AddHook(rt.hook(r.Addr))
	clock := newFakeClock()
	gw := NewRedis(c, RedisOptions{Clock: clock.Now})
	ctx := context.Background()
	if err := gw.Warm(ctx); err != nil {
		t.Fatal(err)
	}
	l := Limit{Rate: 5, Per: time.Hour}
	reqs := make([]Request, 10)
	for i := range reqs {
		reqs[i] = Request{Key: fmt.Sprintf("client_ip:192.0.2.%d", i%7), Limit: l, N: 1}
	}
	rt.reset()
	res, err := gw.AllowMany(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if single, pipes := rt.snapshot(); len(single) != 0 || pipes[r.Addr] != 1 {
		t.Fatalf("round trips: single %v, pipelines %v; want one pipeline", single, pipes)
	}
	if res[0].Remaining != 4 || res[7].Remaining != 3 { // key 0 again at index 7
		t.Fatalf("results %+v", res)
	}

	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	rt.reset()
	res, err = gw.AllowMany(ctx, reqs)
	if err != nil {
		t.Fatalf("after SCRIPT FLUSH: %v", err)
	}
	if _, pipes := rt.snapshot(); pipes[r.Addr] != 2 {
		t.Fatalf("NOSCRIPT: %d pipelines, want 2 (EVALSHA, then EVAL)", pipes[r.Addr])
	}
	if res[0].Remaining != 2 || res[7].Remaining != 1 || res[1].Remaining != 2 {
		t.Fatalf("after NOSCRIPT retry (counted twice?): %+v", res)
	}
	if ok, _ := c.ScriptExists(ctx, gcraScript.Hash()).Result(); len(ok) != 1 || !ok[0] {
		t.Fatal("EVAL retry did not load the script")
	}
}

// Cluster: a batch with keys on every node is one pipeline per node, agrees
// with sequential decisions, survives a node that lost its scripts, and when
// a node is down the Fallback decides the whole batch locally.
func TestRedisClusterAllowMany(t *testing.T) {
	cl := testenv.StartRedisCluster(t, 3)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs, ContextTimeoutEnabled: true,
		MaxRetries: 1, DialerRetries: 1, MaxRedirects: 1, DialTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	rt := newRoundTrips()
	c.OnNewNode(func(n *redis.Client) { n.AddHook(rt.hook(n.Options().Addr)) })
	clock := newFakeClock()
	gw := NewRedis(c, RedisOptions{Clock: clock.Now})
	mem := NewMemory(MemoryOptions{Clock: clock.Now})
	ctx := context.Background()
	if err := gw.Warm(ctx); err != nil {
		t.Fatal(err)
	}

	// Pick keys until every node holds some, each key twice in the batch.
	l := Limit{Rate: 3, Per: time.Hour}
	nodeOf := map[string]string{}
	perNode := map[string]int{}
	var reqs []Request
	for i := 0; len(perNode) < len(cl.Nodes) || len(reqs) < 10; i++ {
		if i > 200 {
			t.Fatalf("keys cover only %d nodes", len(perNode))
		}
		key := fmt.Sprintf("mail_from_domain:d%d.example", i)
		m, err := c.MasterForKey(ctx, gw.bucketKey(key))
		if err != nil {
			t.Fatal(err)
		}
		nodeOf[key] = m.Options().Addr
		perNode[nodeOf[key]]++
		reqs = append(reqs, Request{key, l, 2}, Request{key, l, 1}, Request{key, l, 1})
	}
	check := func(step string, want int) []Result {
		t.Helper()
		rt.reset()
		got, err := gw.AllowMany(ctx, reqs)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		ref, _ := sequential(ctx, mem, reqs)
		for i := range reqs {
			if got[i] != ref[i] {
				t.Fatalf("%s [%d] %s: cluster %+v, sequential memory %+v", step, i, reqs[i].Key, got[i], ref[i])
			}
		}
		single, pipes := rt.snapshot()
		if len(single) != 0 || len(pipes) != len(cl.Nodes) {
			t.Fatalf("%s: single %v, pipelines %v; want pipelines on all %d nodes", step, single, pipes, len(cl.Nodes))
		}
		for addr, n := range pipes {
			if n != want && !(want == 2 && n == 1) {
				t.Fatalf("%s: %d pipelines to %s", step, n, addr)
			}
		}
		return got
	}
	got := check("first", 1)
	if !got[0].Allowed || !got[1].Allowed || got[2].Allowed {
		t.Fatalf("repeated key in order: %+v", got[:3])
	}

	// One node forgets its scripts: only its commands go again (as EVAL).
	flushed := cl.Nodes[0].Addr
	fc := redis.NewClient(&redis.Options{Addr: flushed})
	t.Cleanup(func() { _ = fc.Close() })
	if err := fc.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour) // buckets full again, in Redis and in memory
	check("noscript", 2)
	if _, pipes := rt.snapshot(); pipes[flushed] != 2 {
		t.Fatalf("flushed node %s: %d pipelines, want 2", flushed, pipes[flushed])
	}

	// A node dies: part of the batch may have been counted, but the gateway
	// gets one local decision for the whole batch, every fact flagged.
	fb := NewFallback(gw, NewMemory(MemoryOptions{Clock: clock.Now}), FallbackOptions{Timeout: 2 * time.Second})
	cl.Nodes[1].Stop()
	res, err := fb.AllowMany(ctx, reqs)
	if err != nil {
		t.Fatalf("fallback batch: %v", err)
	}
	fresh, _ := sequential(ctx, NewMemory(MemoryOptions{Clock: clock.Now}), reqs)
	for i, r := range res {
		if !r.BackendError {
			t.Fatalf("[%d] %s: no backend_error with a node down: %+v", i, reqs[i].Key, r)
		}
		r.BackendError = false
		if r != fresh[i] {
			t.Fatalf("[%d] %s: fallback %+v, fresh memory %+v", i, reqs[i].Key, r, fresh[i])
		}
	}
	if n := counterValue(t, fb.errs.WithLabelValues("allow")); n != 1 {
		t.Fatalf("backend errors %v, want 1 for one batch", n)
	}
}

// Redis stops between batches of one Fallback: the next batch is decided
// entirely from memory with backend_error on every result, as one breaker
// failure; the memory keeps enforcing the limits batch after batch.
func TestFallbackAllowManyRedisDown(t *testing.T) {
	r := testenv.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, ContextTimeoutEnabled: true, DialerRetries: 1, MaxRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	bclock := newFakeClock()
	f := NewFallback(NewRedis(c, RedisOptions{}), NewMemory(MemoryOptions{}),
		FallbackOptions{Timeout: 2 * time.Second, Failures: 2, Cooldown: time.Minute, Clock: bclock.Now})
	ctx := context.Background()
	l := Limit{Rate: 2, Per: time.Hour}
	reqs := []Request{{"client_ip:192.0.2.1", l, 1}, {"client_net:192.0.2.0/24", l, 1}, {"client_ip:192.0.2.1", l, 1}}
	res, err := f.AllowMany(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range res {
		if x.BackendError || !x.Allowed {
			t.Fatalf("shared [%d]: %+v", i, x)
		}
	}
	if n := counterValue(t, f.decisions.WithLabelValues("client_ip", "allowed", "shared")); n != 2 {
		t.Fatalf("shared client_ip decisions %v", n)
	}

	r.Stop()
	wantAllowed := [][]bool{{true, true, true}, {false, true, false}, {false, false, false}}
	for b, want := range wantAllowed {
		res, err := f.AllowMany(ctx, reqs)
		if err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
		for i, x := range res {
			if !x.BackendError || x.Allowed != want[i] {
				t.Fatalf("batch %d [%d]: %+v, want allowed=%v with backend_error", b, i, x, want[i])
			}
		}
	}
	if n := counterValue(t, f.errs.WithLabelValues("allow")); n != 2 {
		t.Fatalf("backend errors %v, want 2 (one per batch, then the breaker skips Redis)", n)
	}
	if f.State() != Open {
		t.Fatalf("breaker %v, want open", f.State())
	}
	if n := counterValue(t, f.decisions.WithLabelValues("client_ip", "denied", "local")); n != 4 {
		t.Fatalf("local client_ip denials %v, want 4", n)
	}
}
