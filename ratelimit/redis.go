package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Why not github.com/go-redis/redis_rate: it is the same GCRA, but it reads
// the clock only from Redis TIME (so the arithmetic table cannot pin time and
// be checked against Memory), stores float seconds (our integer microseconds
// make Go and Lua agree exactly), fixes its own key layout (we need the hash
// tag shared with the lease key so Reset is one slot in Cluster), and we need
// our own scripts for leases anyway. The script below is short enough to own.

// gcraScript is decide() from gcra.go, line by line, on one key.
// ARGV: emission µs, tau µs, burst, cost, now µs (0 = Redis TIME), dry (1 = do
// not store). Returns {allowed, remaining, retry_after µs (-1 = never)}.
// All numbers are integers below 2^53, exact in Lua's doubles.
var gcraScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local em = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end
local function rem(a)
  if a < 0 then return 0 end
  return math.floor(a / em)
end
if n > burst then
  return {0, rem(now - (tat - tau)), -1}
end
local new_tat = tat + n * em
local diff = now - (new_tat - tau)
if diff < 0 then
  return {0, rem(now - (tat - tau)), -diff}
end
if n > 0 and ARGV[6] ~= '1' then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
return {1, math.floor(diff / em), 0}
`)

// leaseScript keeps a sorted set of lease id -> expiry µs per key. Expired
// members are purged before counting, so a dead gateway's leases stop
// counting once their expiry passes; the key's own TTL drops the whole set
// when nobody refreshes. ARGV: member, max, ttl µs, now µs (0 = Redis TIME),
// mode ("acquire", "refresh", "count"). Returns {ok, live count}.
var leaseScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(ARGV[4])
if now <= 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local mode = ARGV[5]
if mode == 'count' then
  return {1, redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.0f', now), '+inf')}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local ttl = tonumber(ARGV[3])
if mode == 'acquire' then
  local count = redis.call('ZCARD', KEYS[1])
  if count >= tonumber(ARGV[2]) then return {0, count} end
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), ARGV[1])
local want = math.ceil(ttl / 1000)
if redis.call('PTTL', KEYS[1]) < want then
  redis.call('PEXPIRE', KEYS[1], want)
end
return {1, redis.call('ZCARD', KEYS[1])}
`)

// DefaultPrefix starts every key mxguard's limiter writes to Redis.
const DefaultPrefix = "mxg:rl:"

// RedisOptions configure a Redis limiter. Zero values take the defaults.
type RedisOptions struct {
	// Prefix starts every key (default DefaultPrefix).
	Prefix string
	// GatewayID names this gateway in lease members, so an operator can see
	// whose connections a set holds (default hostname-pid-random).
	GatewayID string
	// Clock, when set, is sent to the scripts as "now"; when nil the scripts
	// use Redis TIME, so gateways with skewed clocks still agree. Tests set it.
	Clock func() time.Time
}

// Redis is the shared GCRA limiter and lease counter. Each decision is one
// script call on one key (AllowMany pipelines several); keys are Prefix+"{"+key+"}" (bucket) and
// Prefix+"lease:{"+key+"}" (leases): the hash tag puts both in one Cluster
// slot. It works with any redis.UniversalClient: standalone, Sentinel, Cluster.
type Redis struct {
	c        redis.UniversalClient
	prefix   string
	gateway  string
	clock    func() time.Time
	leaseSeq atomic.Uint64
}

// NewRedis returns a Redis limiter over c (which the caller owns and closes).
func NewRedis(c redis.UniversalClient, o RedisOptions) *Redis {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.GatewayID == "" {
		o.GatewayID = defaultGatewayID()
	}
	return &Redis{c: c, prefix: o.Prefix, gateway: o.GatewayID, clock: o.Clock}
}

func defaultGatewayID() string {
	h, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", h, os.Getpid(), hex.EncodeToString(b[:]))
}

func (r *Redis) bucketKey(key string) string { return r.prefix + "{" + boundKey(key) + "}" }
func (r *Redis) leaseKey(key string) string  { return r.prefix + "lease:{" + boundKey(key) + "}" }

func (r *Redis) now() int64 {
	if r.clock == nil {
		return 0
	}
	return r.clock().UnixMicro()
}

// Warm loads the scripts into Redis (every primary, in Cluster), so the first
// decisions do not pay for a NOSCRIPT round trip and a full EVAL. The gateway
// calls it at start; an error is worth a log line, not a failure (decisions
// fall back to EVAL by themselves). It doubles as a readiness check.
func (r *Redis) Warm(ctx context.Context) error {
	for _, s := range []*redis.Script{gcraScript, leaseScript} {
		if err := s.Load(ctx, r.c).Err(); err != nil {
			return fmt.Errorf("ratelimit redis load script: %w", err)
		}
	}
	return nil
}

// Allow implements Limiter.
func (r *Redis) Allow(ctx context.Context, key string, l Limit, n int) (Result, error) {
	return r.run(ctx, key, l, n, false)
}

// Peek implements Inspector.
func (r *Redis) Peek(ctx context.Context, key string, l Limit) (Result, error) {
	res, err := r.run(ctx, key, l, 1, true)
	if err == nil && res.Allowed {
		res.Remaining++
	}
	return res, err
}

func (r *Redis) run(ctx context.Context, key string, l Limit, n int, dry bool) (Result, error) {
	p, err := l.params(n)
	if err != nil {
		return Result{}, err
	}
	d := "0"
	if dry {
		d = "1"
	}
	res, err := gcraResult(p, gcraScript.Run(ctx, r.c, []string{r.bucketKey(key)}, p.emission, p.tau, p.burst, n, r.now(), d))
	if err != nil {
		return Result{}, fmt.Errorf("ratelimit redis %s: %w", key, err)
	}
	return res, nil
}

// AllowMany implements BatchLimiter in one round trip per Redis node: the
// per-key script calls go out as one pipeline (go-redis splits a Cluster
// pipeline by node and keeps each node's commands in order, so a repeated
// key, always on one node, is decided in request order). Each script still
// touches one key, so no call spans hash slots. Calls that meet NOSCRIPT (a
// restarted or new node) are sent again once with EVAL, which loads the
// script, as Script.Run does for a single call; they had not run, so nothing
// is counted twice (only a script load racing this pipeline on the same
// node could let a repeated key's retried call land after its later one).
// An error means some requests may have been counted and others not; the
// Fallback then decides the whole batch locally.
func (r *Redis) AllowMany(ctx context.Context, reqs []Request) ([]Result, error) {
	ps, err := batchParams(reqs)
	if err != nil {
		return nil, fmt.Errorf("ratelimit redis batch: %w", err)
	}
	if len(reqs) == 0 {
		return []Result{}, nil
	}
	now := r.now()
	keys := make([]string, len(reqs))
	cmds := make([]*redis.Cmd, len(reqs))
	pipe := r.c.Pipeline()
	for i, q := range reqs {
		keys[i] = r.bucketKey(q.Key)
		p := ps[i]
		cmds[i] = gcraScript.EvalSha(ctx, pipe, keys[i:i+1], p.emission, p.tau, p.burst, q.N, now, "0")
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	var retry []int
	for i, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		pipe = r.c.Pipeline()
		for _, i := range retry {
			p := ps[i]
			cmds[i] = gcraScript.Eval(ctx, pipe, keys[i:i+1], p.emission, p.tau, p.burst, reqs[i].N, now, "0")
		}
		_, _ = pipe.Exec(ctx)
	}
	out := make([]Result, len(reqs))
	for i, c := range cmds {
		if out[i], err = gcraResult(ps[i], c); err != nil {
			return nil, fmt.Errorf("ratelimit redis batch %s: %w", boundKey(reqs[i].Key), err)
		}
	}
	return out, nil
}

// gcraResult reads gcraScript's reply {allowed, remaining, retry µs}.
func gcraResult(p params, c *redis.Cmd) (Result, error) {
	v, err := c.Int64Slice()
	if err != nil {
		return Result{}, err
	}
	if len(v) != 3 {
		return Result{}, fmt.Errorf("script returned %d values", len(v))
	}
	res := Result{Allowed: v[0] == 1, Limit: int(p.burst), Remaining: int(v[1])}
	if v[2] < 0 {
		res.RetryAfter = -1
	} else {
		res.RetryAfter = time.Duration(v[2]) * time.Microsecond
	}
	return res, nil
}

// Reset implements Inspector: it deletes the bucket and the lease set of key
// (one slot, thanks to the shared hash tag).
func (r *Redis) Reset(ctx context.Context, key string) error {
	if err := r.c.Del(ctx, r.bucketKey(key), r.leaseKey(key)).Err(); err != nil {
		return fmt.Errorf("ratelimit redis reset %s: %w", key, err)
	}
	return nil
}

// Acquire implements Leaser.
func (r *Redis) Acquire(ctx context.Context, key string, max int, ttl time.Duration) (Lease, Result, error) {
	if max <= 0 || ttl <= 0 {
		return nil, Result{}, fmt.Errorf("%w: lease max %d ttl %v", ErrInvalidLimit, max, ttl)
	}
	member := r.gateway + ":" + strconv.FormatUint(r.leaseSeq.Add(1), 36)
	ok, count, err := r.lease(ctx, key, member, max, ttl, "acquire")
	if err != nil {
		return nil, Result{}, err
	}
	res := Result{Allowed: ok, Limit: max, Remaining: max - count}
	if res.Remaining < 0 {
		res.Remaining = 0
	}
	if !ok {
		return nil, res, nil
	}
	return &redisLease{r: r, key: key, member: member, ttl: ttl}, res, nil
}

// Holders implements Leaser.
func (r *Redis) Holders(ctx context.Context, key string) (int, error) {
	_, n, err := r.lease(ctx, key, "", 0, 0, "count")
	return n, err
}

func (r *Redis) lease(ctx context.Context, key, member string, max int, ttl time.Duration, mode string) (bool, int, error) {
	v, err := leaseScript.Run(ctx, r.c, []string{r.leaseKey(key)}, member, max, ttl.Microseconds(), r.now(), mode).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("ratelimit redis lease %s %s: %w", mode, key, err)
	}
	if len(v) != 2 {
		return false, 0, errors.New("ratelimit redis lease: unexpected script reply")
	}
	return v[0] == 1, int(v[1]), nil
}

type redisLease struct {
	r        *Redis
	key      string
	member   string
	ttl      time.Duration
	released atomic.Bool
}

// Refresh re-adds the member if it had expired: the connection is alive.
func (l *redisLease) Refresh(ctx context.Context) error {
	if l.released.Load() {
		return nil
	}
	_, _, err := l.r.lease(ctx, l.key, l.member, 0, l.ttl, "refresh")
	return err
}

// Release removes the member; if that fails it expires after its ttl.
func (l *redisLease) Release(ctx context.Context) error {
	if l.released.Swap(true) {
		return nil
	}
	if err := l.r.c.ZRem(ctx, l.r.leaseKey(l.key), l.member).Err(); err != nil {
		return fmt.Errorf("ratelimit redis lease release %s: %w", l.key, err)
	}
	return nil
}
