package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Many goroutines on few keys: the counts stay exact (run with -race).
func TestMemoryConcurrent(t *testing.T) {
	m := NewMemory(MemoryOptions{Shards: 8})
	l := Limit{Rate: 100, Per: time.Hour} // no measurable refill during the test
	const keys, workers, perWorker = 20, 32, 500
	var allowed [keys]atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				k := (w*perWorker + i) % keys
				res, err := m.Allow(context.Background(), fmt.Sprintf("client_ip:10.0.0.%d", k), l, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if res.Allowed {
					allowed[k].Add(1)
				}
				if i%50 == 0 { // leases and peeks interleaved
					if ls, _, _ := m.Acquire(context.Background(), "c", 1000, time.Minute); ls != nil {
						_ = ls.Refresh(context.Background())
						_ = ls.Release(context.Background())
					}
					_, _ = m.Peek(context.Background(), "client_ip:10.0.0.1", l)
				}
			}
		}()
	}
	wg.Wait()
	for k := range keys {
		if got := allowed[k].Load(); got != 100 {
			t.Errorf("key %d: allowed %d, want 100", k, got)
		}
	}
	if n, _ := m.Holders(context.Background(), "c"); n != 0 {
		t.Errorf("leases left: %d", n)
	}
}

// The key count is bounded, and a flood of fresh keys evicts idle or
// nearly-full buckets before a bucket that is being limited.
func TestMemoryBounded(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(MemoryOptions{MaxKeys: 64, Shards: 4, Clock: clock.Now})
	ctx := context.Background()
	l := Limit{Rate: 1, Per: time.Hour, Burst: 1}
	for i := range 10_000 {
		if _, err := m.Allow(ctx, fmt.Sprintf("k%d", i), l, 1); err != nil {
			t.Fatal(err)
		}
		if n := m.Len(); n > 64 {
			t.Fatalf("after %d keys: %d held, bound 64", i, n)
		}
	}
	// Idle keys are dropped by the periodic sweep: an hour later every
	// bucket is full again, which is what a missing key means.
	clock.Advance(2 * time.Hour)
	for i := range 4 * 8 { // touch every shard
		_, _ = m.Peek(ctx, fmt.Sprintf("x%d", i), l)
		_, _ = m.Allow(ctx, fmt.Sprintf("y%d", i), l, 1)
	}
	if n := m.Len(); n > 32 {
		t.Fatalf("idle keys not swept: %d held", n)
	}
}

func TestMemoryLeaseInvalid(t *testing.T) {
	m := NewMemory(MemoryOptions{})
	if _, _, err := m.Acquire(context.Background(), "k", 0, time.Second); err == nil {
		t.Fatal("max 0 accepted")
	}
}
