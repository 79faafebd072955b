package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
)

// Two gateways (separate clients, separate limiters) sharing one Redis
// enforce one combined limit.
func TestRedisSharedLimit(t *testing.T) {
	r := testenv.StartRedis(t)
	gws := []*Redis{
		NewRedis(newClient(t, r.Addr), RedisOptions{GatewayID: "gw1"}),
		NewRedis(newClient(t, r.Addr), RedisOptions{GatewayID: "gw2"}),
	}
	l := Limit{Rate: 10, Per: time.Hour, Burst: 10}
	var allowed, perGW [2]atomic.Int32
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := gws[i%2].Allow(context.Background(), "client_ip:192.0.2.1", l, 1)
			if err != nil {
				t.Error(err)
				return
			}
			if res.Allowed {
				allowed[0].Add(1)
				perGW[i%2].Add(1)
			}
		}()
	}
	wg.Wait()
	if got := allowed[0].Load(); got != 10 {
		t.Fatalf("allowed %d of 30 across two gateways, want exactly 10", got)
	}
	t.Logf("gw1 allowed %d, gw2 allowed %d", perGW[0].Load(), perGW[1].Load())
}

// A gateway that dies holding leases stops refreshing; its leases expire and
// the slots come back to the others. A refreshed lease outlives its first ttl.
func TestLeasesExpireAfterGatewayDies(t *testing.T) {
	clock := newFakeClock()
	r := testenv.StartRedis(t)
	mem := NewMemory(MemoryOptions{Clock: clock.Now})
	c1 := newClient(t, r.Addr)
	shared1 := NewRedis(c1, RedisOptions{GatewayID: "gw1", Clock: clock.Now})
	shared2 := NewRedis(newClient(t, r.Addr), RedisOptions{GatewayID: "gw2", Clock: clock.Now})
	for name, pair := range map[string][2]Leaser{"redis": {shared1, shared2}, "memory": {mem, mem}} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			key := "client_net_concurrent:198.51.100.0/24"
			ttl := 30 * time.Second
			gw1, gw2 := pair[0], pair[1]
			l1, res, err := gw1.Acquire(ctx, key, 2, ttl)
			if err != nil || l1 == nil || res != (Result{Allowed: true, Limit: 2, Remaining: 1}) {
				t.Fatalf("acquire 1: %+v %v", res, err)
			}
			l2, res, err := gw1.Acquire(ctx, key, 2, ttl)
			if err != nil || l2 == nil || res.Remaining != 0 {
				t.Fatalf("acquire 2: %+v %v", res, err)
			}
			if l, res, err := gw2.Acquire(ctx, key, 2, ttl); err != nil || l != nil || res.Allowed {
				t.Fatalf("acquire 3 over max: %+v %v", res, err)
			}
			// gw1 keeps connection 1 alive but dies holding connection 2.
			clock.Advance(20 * time.Second)
			if err := l1.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			clock.Advance(11 * time.Second) // past l2's expiry, within l1's refreshed one
			if n, err := gw2.Holders(ctx, key); err != nil || n != 1 {
				t.Fatalf("holders after expiry: %d %v", n, err)
			}
			l3, res, err := gw2.Acquire(ctx, key, 2, ttl)
			if err != nil || l3 == nil || !res.Allowed {
				t.Fatalf("acquire after expiry: %+v %v", res, err)
			}
			if l, _, _ := gw2.Acquire(ctx, key, 2, ttl); l != nil {
				t.Fatal("acquired above max after expiry")
			}
			for _, l := range []Lease{l1, l3, l3} { // a second Release is a no-op
				if err := l.Release(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if n, _ := gw2.Holders(ctx, key); n != 0 {
				t.Fatalf("holders after release: %d", n)
			}
			_ = l2 // never released: the killed gateway's lease
		})
	}
}

// With Redis TIME (no injected clock) leases still expire on their own.
func TestLeaseExpiresOnServerTime(t *testing.T) {
	r := testenv.StartRedis(t)
	gw := NewRedis(newClient(t, r.Addr), RedisOptions{})
	ctx := context.Background()
	if l, _, err := gw.Acquire(ctx, "k", 1, 100*time.Millisecond); err != nil || l == nil {
		t.Fatalf("acquire: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		l, res, err := gw.Acquire(ctx, "k", 1, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			_ = l.Release(ctx)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lease never expired")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A three-node Redis Cluster: decisions on keys spread over the slots, leases,
// and Reset (bucket and lease key in one slot thanks to the hash tag).
func TestRedisCluster(t *testing.T) {
	cl := testenv.StartRedisCluster(t, 3)
	c := newClient(t, cl.Addrs...)
	gw := NewRedis(c, RedisOptions{GatewayID: "gw1"})
	other := NewRedis(newClient(t, cl.Addrs...), RedisOptions{GatewayID: "gw2"})
	ctx := context.Background()
	if err := gw.Warm(ctx); err != nil {
		t.Fatalf("warm: %v", err)
	}
	for _, n := range cl.Nodes { // loaded on every primary
		ok, err := newClient(t, n.Addr).ScriptExists(ctx, gcraScript.Hash(), leaseScript.Hash()).Result()
		if err != nil || !ok[0] || !ok[1] {
			t.Fatalf("scripts on %s: %v %v", n.Addr, ok, err)
		}
	}
	l := Limit{Rate: 3, Per: time.Hour}
	for i := range 20 {
		key := fmt.Sprintf("mail_from_domain:d%d.example", i)
		allowed := 0
		for j := range 5 {
			be := gw
			if j%2 == 1 {
				be = other
			}
			res, err := be.Allow(ctx, key, l, 1)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			if res.Allowed {
				allowed++
			}
		}
		if allowed != 3 {
			t.Fatalf("%s: allowed %d, want 3", key, allowed)
		}
	}
	key := "mail_from_domain:d0.example"
	lease, res, err := gw.Acquire(ctx, key, 1, time.Minute)
	if err != nil || lease == nil || !res.Allowed {
		t.Fatalf("cluster acquire: %+v %v", res, err)
	}
	if _, res, _ := other.Acquire(ctx, key, 1, time.Minute); res.Allowed {
		t.Fatal("cluster lease over max")
	}
	if err := lease.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.Reset(ctx, key); err != nil {
		t.Fatalf("cluster reset: %v", err)
	}
	if p, err := gw.Peek(ctx, key, l); err != nil || p.Remaining != 3 {
		t.Fatalf("after reset: %+v %v", p, err)
	}
	if n, err := gw.Holders(ctx, key); err != nil || n != 0 {
		t.Fatalf("holders after reset: %d %v", n, err)
	}
}

func TestRedisKeyLayout(t *testing.T) {
	r := testenv.StartRedis(t)
	c := newClient(t, r.Addr)
	gw := NewRedis(c, RedisOptions{Prefix: "t:"})
	ctx := context.Background()
	if _, err := gw.Allow(ctx, "helo:mx.example", Limit{Rate: 1, Per: time.Minute}, 1); err != nil {
		t.Fatal(err)
	}
	ttl, err := c.PTTL(ctx, "t:{helo:mx.example}").Result()
	if err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("bucket key ttl %v %v", ttl, err)
	}
	long := string(make([]byte, 5000))
	if _, err := gw.Allow(ctx, long, Limit{Rate: 1, Per: time.Minute}, 1); err != nil {
		t.Fatal(err)
	}
	keys, _ := c.Keys(ctx, "t:*").Result()
	for _, k := range keys {
		if len(k) > maxKeyLen+10 {
			t.Fatalf("unbounded key length %d", len(k))
		}
	}
}
