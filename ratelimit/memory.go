package ratelimit

import (
	"context"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryOptions configure a Memory limiter. Zero values take the defaults.
type MemoryOptions struct {
	// MaxKeys bounds the number of buckets held (default 1,000,000, about
	// 100 MB at worst). When full, idle buckets go first, then the fullest.
	MaxKeys int
	// Shards is the number of independently locked shards (default 64,
	// rounded up to a power of two).
	Shards int
	// Clock is the time source (default time.Now); tests inject their own.
	Clock func() time.Time
}

// Memory is the in-process GCRA limiter and lease counter. It is safe for
// concurrent use; keys are spread over shards so there is no global lock.
type Memory struct {
	shards   []memShard
	mask     uint64
	perShard int
	seed     maphash.Seed
	clock    func() time.Time
	leaseSeq atomic.Uint64
}

type memShard struct {
	mu        sync.Mutex
	tats      map[string]int64            // key -> theoretical arrival time (µs)
	leases    map[string]map[string]int64 // key -> lease id -> expiry (µs)
	lastSweep int64
	lastFull  int64
	_         [64]byte // keep hot shard locks on separate cache lines
}

// sweepEvery is how often a shard drops idle buckets: a bucket whose tat is
// in the past is full again, which is exactly what a missing key means, so
// dropping it never changes a decision.
const sweepEvery = int64(time.Minute / time.Microsecond)

// NewMemory returns a Memory limiter.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxKeys <= 0 {
		o.MaxKeys = 1_000_000
	}
	if o.Shards <= 0 {
		o.Shards = 64
	}
	n := 1
	for n < o.Shards {
		n <<= 1
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	m := &Memory{shards: make([]memShard, n), mask: uint64(n - 1), seed: maphash.MakeSeed(), clock: o.Clock}
	m.perShard = (o.MaxKeys + n - 1) / n
	for i := range m.shards {
		m.shards[i].tats = make(map[string]int64)
		m.shards[i].leases = make(map[string]map[string]int64)
	}
	return m
}

func (m *Memory) shard(key string) *memShard {
	return &m.shards[maphash.String(m.seed, key)&m.mask]
}

func (m *Memory) now() int64 { return m.clock().UnixMicro() }

// Allow implements Limiter.
func (m *Memory) Allow(_ context.Context, key string, l Limit, n int) (Result, error) {
	p, err := l.params(n)
	if err != nil {
		return Result{}, err
	}
	return m.allow(key, p, n, m.now()), nil
}

// AllowMany implements BatchLimiter: one clock reading, then each request in
// order as Allow would decide it.
func (m *Memory) AllowMany(_ context.Context, reqs []Request) ([]Result, error) {
	if err := validBatch(reqs); err != nil {
		return nil, fmt.Errorf("ratelimit memory batch: %w", err)
	}
	now := m.now()
	out := make([]Result, len(reqs))
	for i, r := range reqs {
		p, _ := r.Limit.params(r.N)
		out[i] = m.allow(r.Key, p, r.N, now)
	}
	return out, nil
}

func (m *Memory) allow(key string, p params, n int, now int64) Result {
	key = boundKey(key)
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maybeSweep(now)
	tat, exists := s.tats[key]
	res, newTat := decide(p, tat, now, int64(n))
	if newTat != 0 {
		if !exists && len(s.tats) >= m.perShard {
			s.makeRoom(now)
		}
		s.tats[key] = newTat
	}
	return res
}

// Peek implements Inspector.
func (m *Memory) Peek(_ context.Context, key string, l Limit) (Result, error) {
	p, err := l.params(1)
	if err != nil {
		return Result{}, err
	}
	key = boundKey(key)
	now := m.now()
	s := m.shard(key)
	s.mu.Lock()
	tat := s.tats[key]
	s.mu.Unlock()
	return peekResult(p, tat, now), nil
}

// peekResult is what a cost-1 Allow would see, without counting it.
func peekResult(p params, tat, now int64) Result {
	r, _ := decide(p, tat, now, 1)
	if r.Allowed {
		r.Remaining++
	}
	return r
}

// Reset implements Inspector: it forgets the bucket and any leases on key.
func (m *Memory) Reset(_ context.Context, key string) error {
	key = boundKey(key)
	s := m.shard(key)
	s.mu.Lock()
	delete(s.tats, key)
	delete(s.leases, key)
	s.mu.Unlock()
	return nil
}

// Len reports the number of buckets held (for tests and metrics).
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.tats)
		s.mu.Unlock()
	}
	return n
}

func (s *memShard) maybeSweep(now int64) {
	if now-s.lastSweep < sweepEvery {
		return
	}
	s.lastSweep = now
	s.sweep(now)
}

func (s *memShard) sweep(now int64) {
	for k, tat := range s.tats {
		if tat <= now {
			delete(s.tats, k)
		}
	}
	for k, set := range s.leases {
		for id, exp := range set {
			if exp <= now {
				delete(set, id)
			}
		}
		if len(set) == 0 {
			delete(s.leases, k)
		}
	}
}

// makeRoom frees at least one slot in a full shard. A full sweep runs at most
// once a second, so a flood of fresh keys cannot make every insert O(n);
// otherwise the bucket closest to full (smallest tat) among a few sampled
// ones is dropped, the one whose loss forgives the least.
func (s *memShard) makeRoom(now int64) {
	if now-s.lastFull >= int64(time.Second/time.Microsecond) {
		s.lastFull = now
		before := len(s.tats)
		s.sweep(now)
		if len(s.tats) < before {
			return
		}
	}
	const sample = 16
	victim, best, i := "", int64(0), 0
	for k, tat := range s.tats {
		if victim == "" || tat < best {
			victim, best = k, tat
		}
		i++
		if i == sample {
			break
		}
	}
	delete(s.tats, victim)
}

// Acquire implements Leaser for one instance.
func (m *Memory) Acquire(_ context.Context, key string, max int, ttl time.Duration) (Lease, Result, error) {
	if max <= 0 || ttl <= 0 {
		return nil, Result{}, fmt.Errorf("%w: lease max %d ttl %v", ErrInvalidLimit, max, ttl)
	}
	key = boundKey(key)
	now := m.now()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.leases[key]
	for id, exp := range set {
		if exp <= now {
			delete(set, id)
		}
	}
	if len(set) >= max {
		return nil, Result{Limit: max}, nil
	}
	if set == nil {
		set = make(map[string]int64)
		s.leases[key] = set
	}
	id := strconv.FormatUint(m.leaseSeq.Add(1), 36)
	set[id] = now + ttl.Microseconds()
	return &memLease{m: m, key: key, id: id, ttl: ttl}, Result{Allowed: true, Limit: max, Remaining: max - len(set)}, nil
}

// Holders implements Leaser.
func (m *Memory) Holders(_ context.Context, key string) (int, error) {
	key = boundKey(key)
	now := m.now()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, exp := range s.leases[key] {
		if exp > now {
			n++
		}
	}
	return n, nil
}

// memLease fields after construction are guarded by the key's shard lock.
type memLease struct {
	m        *Memory
	key, id  string
	ttl      time.Duration
	released bool
}

// Refresh re-adds the lease even if it had expired: the connection is alive,
// so it counts.
func (l *memLease) Refresh(context.Context) error {
	now := l.m.now()
	s := l.m.shard(l.key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.released {
		return nil
	}
	set := s.leases[l.key]
	if set == nil {
		set = make(map[string]int64)
		s.leases[l.key] = set
	}
	set[l.id] = now + l.ttl.Microseconds()
	return nil
}

// Release removes the lease.
func (l *memLease) Release(context.Context) error {
	s := l.m.shard(l.key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.released {
		return nil
	}
	l.released = true
	if set := s.leases[l.key]; set != nil {
		delete(set, l.id)
		if len(set) == 0 {
			delete(s.leases, l.key)
		}
	}
	return nil
}
