package quarantine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/redis/go-redis/v9"
)

// DefaultKeyPrefix namespaces the quarantine's Redis keys.
const DefaultKeyPrefix = "mxg:q:"

// compressMin: bodies at least this big are stored zstd-compressed (when
// that makes them smaller); mail text typically shrinks 3-5x.
const compressMin = 4 << 10

// RedisOptions configures NewRedis.
type RedisOptions struct {
	// KeyPrefix namespaces the keys (default DefaultKeyPrefix). It may not
	// contain braces: it becomes the keys' Cluster hash tag.
	KeyPrefix string
	// Retention sets each item's TTL; zero keeps items until purged.
	Retention time.Duration
	// MaxMessageBytes caps a stored message (default DefaultMaxMessageBytes).
	MaxMessageBytes int64
	// Now is the store's clock (default time.Now); ids embed it.
	Now func() time.Time
}

// Redis is the shared backend for a fleet of gateways: one hash per item
// ({prefix}i:<id> with fields meta, body, enc, status, rev) expiring after
// the retention period, and a sorted set ({prefix}idx) of ids for listing.
// All keys share the hash tag {prefix}, so the multi-key transaction of Put
// works on Redis Cluster (the quarantine lives on one shard). Changes are a
// compare-and-set on the item's rev field in a Lua script, which makes
// release exactly-once across gateways. It works with any
// redis.UniversalClient: standalone, Sentinel or Cluster.
//
// Durability is Redis's: configure appendonly/appendfsync (and replicas)
// for the guarantee the gateway's 250 implies.
type Redis struct {
	c         redis.UniversalClient
	tag       string
	retention time.Duration
	max       int64
	now       func() time.Time
}

var _ Admin = (*Redis)(nil)

// NewRedis returns a Redis-backed store using c (which the caller closes).
func NewRedis(c redis.UniversalClient, opts RedisOptions) (*Redis, error) {
	if c == nil {
		return nil, errors.New("quarantine redis: no client")
	}
	p := opts.KeyPrefix
	if p == "" {
		p = DefaultKeyPrefix
	}
	if strings.ContainsAny(p, "{}") || len(p) > 64 {
		return nil, fmt.Errorf("quarantine redis: key prefix %q must be at most 64 characters without braces", p)
	}
	s := &Redis{c: c, tag: "{" + p + "}", retention: opts.Retention, max: opts.MaxMessageBytes, now: opts.Now}
	if s.max <= 0 {
		s.max = DefaultMaxMessageBytes
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

func (s *Redis) itemKey(id string) string { return s.tag + "i:" + id }
func (s *Redis) indexKey() string         { return s.tag + "idx" }

var (
	zstdEnc = sync.OnceValues(func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	})
	zstdDec = sync.OnceValues(func() (*zstd.Decoder, error) {
		return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	})
)

// Put implements Store. The body is read into memory (it is capped) and
// written with the metadata and the index entry in one MULTI/EXEC.
func (s *Redis) Put(ctx context.Context, m Meta, msg io.Reader) (string, error) {
	now := s.now()
	id, err := newID(now)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(msg, s.max+1))
	if err != nil {
		return "", fmt.Errorf("quarantine put %s: %w", id, err)
	}
	if n > s.max {
		return "", fmt.Errorf("quarantine put %s: %w (more than %d bytes)", id, ErrTooLarge, s.max)
	}
	body, enc := buf.Bytes(), ""
	if len(body) >= compressMin {
		e, err := zstdEnc()
		if err != nil {
			return "", fmt.Errorf("quarantine put %s: zstd: %w", id, err)
		}
		if z := e.EncodeAll(body, make([]byte, 0, len(body)/2)); len(z) < len(body) {
			body, enc = z, "zstd"
		}
	}
	prepare(&m, id, now)
	if m.Size == 0 {
		m.Size = n
	}
	meta, err := json.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("quarantine put %s: %w", id, err)
	}
	key := s.itemKey(id)
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, "meta", meta, "body", body, "enc", enc, "status", m.Status, "rev", 1)
		if s.retention > 0 {
			p.Expire(ctx, key, s.retention)
		}
		p.ZAdd(ctx, s.indexKey(), redis.Z{Score: 0, Member: id})
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("quarantine put %s: redis: %w", id, err)
	}
	return id, nil
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, id string) (Meta, error) {
	if err := checkID(id); err != nil {
		return Meta{}, err
	}
	b, err := s.c.HGet(ctx, s.itemKey(id), "meta").Bytes()
	if errors.Is(err, redis.Nil) {
		return Meta{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Meta{}, fmt.Errorf("quarantine get %s: redis: %w", id, err)
	}
	return decodeMeta(id, b)
}

// Open implements Store.
func (s *Redis) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	vals, err := s.c.HMGet(ctx, s.itemKey(id), "meta", "body", "enc").Result()
	if err != nil {
		return nil, fmt.Errorf("quarantine open %s: redis: %w", id, err)
	}
	if vals[0] == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	body, ok := vals[1].(string)
	if !ok {
		return nil, fmt.Errorf("%w: %s: message body is gone (deleted)", ErrNotFound, id)
	}
	enc, _ := vals[2].(string)
	switch enc {
	case "":
		return io.NopCloser(strings.NewReader(body)), nil
	case "zstd":
		d, err := zstdDec()
		if err != nil {
			return nil, fmt.Errorf("quarantine open %s: zstd: %w", id, err)
		}
		out, err := d.DecodeAll([]byte(body), nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: body: %v", ErrDamaged, id, err)
		}
		if int64(len(out)) > s.max {
			return nil, fmt.Errorf("%w: %s: body decompresses to more than %d bytes", ErrDamaged, id, s.max)
		}
		return io.NopCloser(bytes.NewReader(out)), nil
	default:
		return nil, fmt.Errorf("%w: %s: unknown body encoding %q", ErrDamaged, id, enc)
	}
}

// listBatch is how many ids List fetches per round trip.
const listBatch = 200

// List implements Store: the index is walked newest first in batches, the
// metadata of each batch fetched in one pipeline. Index entries whose item
// has expired (TTL) are dropped from the index on the way.
func (s *Redis) List(ctx context.Context, f Filter) ([]Meta, string, error) {
	if err := checkFilter(f); err != nil {
		return nil, "", err
	}
	limit := limitOf(f)
	max := "+"
	if f.Cursor != "" {
		max = "(" + f.Cursor
	}
	var out []Meta
	// Each round moves max strictly down the index, so the loop ends; the
	// count bound is a backstop.
	for round := 0; round < 1_000_000; round++ {
		ids, err := s.c.ZRevRangeByLex(ctx, s.indexKey(), &redis.ZRangeBy{Min: "-", Max: max, Count: listBatch}).Result()
		if err != nil {
			return nil, "", fmt.Errorf("quarantine list: redis: %w", err)
		}
		if len(ids) == 0 {
			return out, "", nil
		}
		max = "(" + ids[len(ids)-1]
		cmds := make([]*redis.StringCmd, len(ids))
		_, err = s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				if ValidID(id) {
					cmds[i] = p.HGet(ctx, s.itemKey(id), "meta")
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, "", fmt.Errorf("quarantine list: redis: %w", err)
		}
		var gone []any
		for i, id := range ids {
			if cmds[i] == nil {
				gone = append(gone, id) // not ours; never used as a key
				continue
			}
			if stopBefore(f, id) {
				return out, "", nil
			}
			b, err := cmds[i].Bytes()
			if errors.Is(err, redis.Nil) {
				gone = append(gone, id)
				continue
			}
			if err != nil {
				return nil, "", fmt.Errorf("quarantine list: redis: %w", err)
			}
			m, err := decodeMeta(id, b)
			if err != nil {
				m = damagedMeta(id, err)
			}
			if !f.Match(m) {
				continue
			}
			if len(out) == limit {
				return out, out[limit-1].ID, nil
			}
			out = append(out, m)
		}
		if len(gone) > 0 {
			// Best effort: a failure here only leaves stale entries that
			// the next List or Purge drops.
			_ = s.c.ZRem(ctx, s.indexKey(), gone...).Err()
		}
	}
	return out, "", nil
}

// casScript replaces an item's metadata if its rev is still the one read
// (ARGV[1]); ARGV[4] == "1" also drops the body. Returns 1 on success, 0 if
// someone else changed the item first, -1 if it is gone.
var casScript = redis.NewScript(`
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if rev ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'meta', ARGV[2], 'status', ARGV[3], 'rev', tonumber(rev) + 1)
if ARGV[4] == '1' then redis.call('HDEL', KEYS[1], 'body', 'enc') end
return 1
`)

// casAttempts bounds the retries of a compare-and-set that keeps losing.
const casAttempts = 20

// Update implements Admin.
func (s *Redis) Update(ctx context.Context, id string, fn func(*Meta) error) (Meta, error) {
	return s.update(ctx, id, fn, false)
}

func (s *Redis) update(ctx context.Context, id string, fn func(*Meta) error, dropBody bool) (Meta, error) {
	if err := checkID(id); err != nil {
		return Meta{}, err
	}
	key := s.itemKey(id)
	for attempt := 0; attempt < casAttempts; attempt++ {
		vals, err := s.c.HMGet(ctx, key, "meta", "rev").Result()
		if err != nil {
			return Meta{}, fmt.Errorf("quarantine update %s: redis: %w", id, err)
		}
		mb, ok1 := vals[0].(string)
		rev, ok2 := vals[1].(string)
		if !ok1 || !ok2 {
			return Meta{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		m, err := decodeMeta(id, []byte(mb))
		if err != nil {
			return Meta{}, err
		}
		if err := fn(&m); err != nil {
			return Meta{}, err
		}
		m.ID, m.Version, m.Damaged = id, MetaVersion, ""
		nb, err := json.Marshal(m)
		if err != nil {
			return Meta{}, fmt.Errorf("quarantine update %s: %w", id, err)
		}
		drop := "0"
		if dropBody {
			drop = "1"
		}
		res, err := casScript.Run(ctx, s.c, []string{key}, rev, nb, m.Status, drop).Int()
		if err != nil {
			return Meta{}, fmt.Errorf("quarantine update %s: redis: %w", id, err)
		}
		switch res {
		case 1:
			return m, nil
		case -1:
			return Meta{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		select {
		case <-ctx.Done():
			return Meta{}, fmt.Errorf("quarantine update %s: %w", id, ctx.Err())
		case <-time.After(time.Duration(attempt+1) * time.Millisecond):
		}
	}
	return Meta{}, fmt.Errorf("%w: %s: gave up after %d attempts", ErrConflict, id, casAttempts)
}

// Delete implements Admin.
func (s *Redis) Delete(ctx context.Context, id string, ev Event) error {
	_, err := s.update(ctx, id, func(m *Meta) error {
		if m.Status != StatusHeld && m.Status != StatusReleased {
			return fmt.Errorf("%w: %s is %s", ErrNotHeld, id, m.Status)
		}
		m.Status = StatusDeleted
		addEvent(m, ev)
		return nil
	}, true)
	return err
}

// purgeRedisBatch is how many items one Purge round trip removes.
const purgeRedisBatch = 500

// Purge implements Admin: items whose id (store time) is before olderThan,
// oldest first, in batches.
func (s *Redis) Purge(ctx context.Context, olderThan time.Time) (int, error) {
	floor := "(" + idFloor(olderThan)
	n := 0
	for round := 0; round < 1_000_000; round++ {
		ids, err := s.c.ZRangeByLex(ctx, s.indexKey(), &redis.ZRangeBy{Min: "-", Max: floor, Count: purgeRedisBatch}).Result()
		if err != nil {
			return n, fmt.Errorf("quarantine purge: redis: %w", err)
		}
		if len(ids) == 0 {
			return n, nil
		}
		members := make([]any, len(ids))
		var dels []*redis.IntCmd
		_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				members[i] = id
				if ValidID(id) {
					dels = append(dels, p.Del(ctx, s.itemKey(id)))
				}
			}
			p.ZRem(ctx, s.indexKey(), members...)
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("quarantine purge: redis: %w", err)
		}
		for _, d := range dels {
			n += int(d.Val())
		}
	}
	return n, nil
}

// String describes the store for logs.
func (s *Redis) String() string { return "redis quarantine " + strconv.Quote(s.tag) }
