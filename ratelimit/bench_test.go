package ratelimit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
)

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "client_ip:10.1." + strconv.Itoa(i/256) + "." + strconv.Itoa(i%256)
	}
	return keys
}

func benchAllow(b *testing.B, be Limiter) {
	keys := benchKeys(4096)
	l := Limit{Rate: 1000, Per: time.Second}
	var seq atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := be.Allow(ctx, keys[seq.Add(1)%uint64(len(keys))], l, 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMemoryAllow: decisions per second of the in-process limiter.
func BenchmarkMemoryAllow(b *testing.B) {
	benchAllow(b, NewMemory(MemoryOptions{}))
}

// BenchmarkRedisAllow: decisions per second against a local redis-server
// (one EVALSHA round trip each).
func BenchmarkRedisAllow(b *testing.B) {
	r := testenv.StartRedis(b)
	benchAllow(b, NewRedis(newClient(b, r.Addr), RedisOptions{}))
}

// BenchmarkFallbackAllow: the gateway's path, Redis up (adds the timeout
// goroutine and metrics to BenchmarkRedisAllow).
func BenchmarkFallbackAllow(b *testing.B) {
	r := testenv.StartRedis(b)
	benchAllow(b, NewFallback(NewRedis(newClient(b, r.Addr), RedisOptions{}), NewMemory(MemoryOptions{}), FallbackOptions{}))
}

// benchStage is one stage's worth of decisions: 10 dimensions on distinct
// keys, spread over 4096 subjects.
func benchStage(i uint64, keys []string, reqs []Request) []Request {
	l := Limit{Rate: 1 << 30, Per: time.Second, Burst: 1 << 30}
	reqs = reqs[:0]
	for d := range 10 {
		reqs = append(reqs, Request{Key: "d" + strconv.Itoa(d) + ":" + keys[i%uint64(len(keys))], Limit: l, N: 1})
	}
	return reqs
}

func benchBatch(b *testing.B, be Backend, many bool) {
	keys := benchKeys(4096)
	reqs := make([]Request, 0, 10)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		reqs = benchStage(uint64(i), keys, reqs)
		if many {
			if _, err := be.AllowMany(ctx, reqs); err != nil {
				b.Fatal(err)
			}
			continue
		}
		for _, q := range reqs {
			if _, err := be.Allow(ctx, q.Key, q.Limit, q.N); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stages/s")
}

// BenchmarkRedisAllowMany: one stage of 10 dimensions as one batch (one
// pipelined round trip) against a local redis-server; per op = per stage.
func BenchmarkRedisAllowMany(b *testing.B) {
	r := testenv.StartRedis(b)
	benchBatch(b, NewRedis(newClient(b, r.Addr), RedisOptions{}), true)
}

// BenchmarkRedisAllow10: the same stage as 10 sequential Allow calls (10
// round trips), the baseline for BenchmarkRedisAllowMany.
func BenchmarkRedisAllow10(b *testing.B) {
	r := testenv.StartRedis(b)
	benchBatch(b, NewRedis(newClient(b, r.Addr), RedisOptions{}), false)
}

// BenchmarkFallbackAllowMany and BenchmarkFallbackAllow10: the same through
// the gateway's Fallback (timeout goroutine per call, metrics).
func BenchmarkFallbackAllowMany(b *testing.B) {
	r := testenv.StartRedis(b)
	benchBatch(b, NewFallback(NewRedis(newClient(b, r.Addr), RedisOptions{}), NewMemory(MemoryOptions{}), FallbackOptions{}), true)
}

func BenchmarkFallbackAllow10(b *testing.B) {
	r := testenv.StartRedis(b)
	benchBatch(b, NewFallback(NewRedis(newClient(b, r.Addr), RedisOptions{}), NewMemory(MemoryOptions{}), FallbackOptions{}), false)
}

// BenchmarkMemoryAllowMany: the in-process limiter, 10 dimensions per op.
func BenchmarkMemoryAllowMany(b *testing.B) {
	benchBatch(b, NewMemory(MemoryOptions{}), true)
}
