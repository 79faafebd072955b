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
