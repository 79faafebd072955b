package quarantine

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// quietLogger drops go-redis's own log lines (dial failures are what some
// tests provoke).
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func init() { redis.SetLogger(quietLogger{}) }

func TestRedisTTLAndCompression(t *testing.T) {
	r := testenv.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	s, err := NewRedis(c, RedisOptions{Retention: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	small, _ := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 100)))
	big, err := s.Put(ctx, sampleMeta(2), bytes.NewReader(sampleMsg(2, 200<<10)))
	if err != nil {
		t.Fatal(err)
	}
	for id, wantEnc := range map[string]string{small: "", big: "zstd"} {
		key := "{mxg:q:}i:" + id
		ttl := c.TTL(ctx, key).Val()
		if ttl <= 47*time.Hour || ttl > 48*time.Hour {
			t.Fatalf("%s: TTL %v, want 48h", key, ttl)
		}
		if enc := c.HGet(ctx, key, "enc").Val(); enc != wantEnc {
			t.Fatalf("%s: enc %q, want %q", key, enc, wantEnc)
		}
	}
	if n := c.HStrLen(ctx, "{mxg:q:}i:"+big, "body").Val(); n > 50<<10 {
		t.Fatalf("compressed body is %d bytes for 200 KiB of text", n)
	}
	// An index entry whose item expired is skipped and dropped.
	c.Del(ctx, "{mxg:q:}i:"+small)
	items, _, err := s.List(ctx, Filter{})
	if err != nil || len(items) != 1 || items[0].ID != big {
		t.Fatalf("List after expiry = %v, %v", ids(items), err)
	}
	if n := c.ZCard(ctx, "{mxg:q:}idx").Val(); n != 1 {
		t.Fatalf("index still holds %d entries", n)
	}
}

func TestRedisUnreachable(t *testing.T) {
	r := testenv.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond, DialerRetries: 1})
	defer c.Close()
	s, _ := NewRedis(c, RedisOptions{})
	id, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 100)))
	if err != nil {
		t.Fatal(err)
	}
	r.Stop()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.Put(cctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 100))); err == nil || !strings.Contains(err.Error(), "redis") {
		t.Fatalf("Put with Redis down = %v", err)
	}
	if _, _, err := s.List(cctx, Filter{}); err == nil {
		t.Fatal("List with Redis down succeeded")
	}
	d := &countingDeliverer{}
	if err := Release(cctx, s, id, "rev", d); err == nil || d.n.Load() != 0 {
		t.Fatalf("Release with Redis down = %v, deliveries %d", err, d.n.Load())
	}
}

func TestRedisKeyPrefix(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	for _, p := range []string{"a{b", "a}b", strings.Repeat("x", 65)} {
		if _, err := NewRedis(c, RedisOptions{KeyPrefix: p}); err == nil {
			t.Errorf("NewRedis(prefix %q) succeeded", p)
		}
	}
	if _, err := NewRedis(nil, RedisOptions{}); err == nil {
		t.Error("NewRedis(nil client) succeeded")
	}
}

var benchMsg = sampleMsg(0, 4<<10)[:4<<10]

func BenchmarkDirPut(b *testing.B) {
	s, err := OpenDir(filepath.Join(b.TempDir(), "q"), DirOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	m := sampleMeta(1)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchMsg)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Put(ctx, m, bytes.NewReader(benchMsg)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRedisPut(b *testing.B) {
	r := testenv.StartRedis(b)
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	s, _ := NewRedis(c, RedisOptions{Retention: time.Hour})
	m := sampleMeta(1)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchMsg)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Put(ctx, m, bytes.NewReader(benchMsg)); err != nil {
			b.Fatal(err)
		}
	}
}
