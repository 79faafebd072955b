package policy

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/valyala/fastjson"
)

// decisionCache remembers the decisions of one stage of one policy
// revision, keyed by exactly the part of the input that stage's query can
// read (prepared.stagePaths). A decision is a function of that part, the
// rules and their data, all fixed for a revision, so an equal key means an
// equal decision: with the shipped rules the mail stage reads only the
// allowed flags of the rate-limit facts, and most messages in a row carry
// the same ones. Stages whose rules call a nondeterministic built-in
// (time.now_ns, rand.intn, …) or print are never cached, and a reload
// starts with empty caches.
//
// The cache is sharded so that sessions on different cores rarely meet on
// a lock; each shard is bounded and simply emptied when full.
type decisionCache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

const (
	cacheShards        = 16
	cacheShardCapacity = 256 // decisions per shard: 4096 per stage
	// maxCacheKey skips the cache for inputs whose readable part is large
	// (long attachment lists): hashing and storing them would cost more
	// than the evaluation saves, and they rarely repeat.
	maxCacheKey = 2048
)

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]*Decision
}

func newDecisionCache() *decisionCache {
	return &decisionCache{seed: maphash.MakeSeed()}
}

func (c *decisionCache) shard(key []byte) *cacheShard {
	return &c.shards[maphash.Bytes(c.seed, key)%cacheShards]
}

// get returns a copy of the cached decision for key, which the caller may
// change; only the per-evaluation fields are left to fill.
func (c *decisionCache) get(key []byte) (Decision, bool) {
	s := c.shard(key)
	s.mu.RLock()
	d, ok := s.m[string(key)]
	s.mu.RUnlock()
	if !ok {
		return Decision{}, false
	}
	return copyDecision(*d), true
}

// put stores a copy of d under key.
func (c *decisionCache) put(key []byte, d Decision) {
	d = copyDecision(d)
	d.ID, d.TxnID, d.Input = "", "", nil
	s := c.shard(key)
	s.mu.Lock()
	if s.m == nil || len(s.m) >= cacheShardCapacity {
		s.m = make(map[string]*Decision, cacheShardCapacity)
	}
	s.m[string(key)] = &d
	s.mu.Unlock()
}

// copyDecision copies what a caller could change in place: the lists and
// the replies they point to (strings are immutable).
func copyDecision(d Decision) Decision {
	d.Reasons = copyReasons(d.Reasons)
	d.DryRun = copyReasons(d.DryRun)
	d.AddHeaders = slices.Clone(d.AddHeaders)
	if d.Reply != nil {
		r := *d.Reply
		d.Reply = &r
	}
	return d
}

func copyReasons(rs []Reason) []Reason {
	out := slices.Clone(rs)
	for i := range out {
		if out[i].Reply != nil {
			r := *out[i].Reply
			out[i].Reply = &r
		}
	}
	return out
}

// cacheKey appends to dst an unambiguous encoding of the part of v that t
// keeps (what pruned converts): object keys length-prefixed, values as
// JSON. ok is false when the key would exceed maxCacheKey.
func cacheKey(dst []byte, v *fastjson.Value, t *inputTree) ([]byte, bool) {
	if t == nil || t.all {
		dst = v.MarshalTo(dst)
		return dst, len(dst) <= maxCacheKey
	}
	switch v.Type() {
	case fastjson.TypeArray:
		if t.any == nil {
			dst = v.MarshalTo(dst)
			return dst, len(dst) <= maxCacheKey
		}
		arr, _ := v.Array()
		dst = append(dst, '[')
		for _, x := range arr {
			var ok bool
			if dst, ok = cacheKey(dst, x, t.any); !ok {
				return dst, false
			}
			dst = append(dst, ',')
		}
		return append(dst, ']'), len(dst) < maxCacheKey
	case fastjson.TypeObject:
		o, _ := v.Object()
		dst = append(dst, '{')
		ok := true
		o.Visit(func(k []byte, x *fastjson.Value) {
			if !ok {
				return
			}
			sub := t.sub(string(k))
			if sub == nil {
				return
			}
			dst = binary.AppendUvarint(dst, uint64(len(k)))
			dst = append(dst, k...)
			dst, ok = cacheKey(dst, x, sub)
		})
		return append(dst, '}'), ok && len(dst) < maxCacheKey
	}
	// A scalar where the policy expects an object: pruned keeps it whole.
	dst = v.MarshalTo(dst)
	return dst, len(dst) <= maxCacheKey
}

// deterministic reports whether the rules query can reach call no built-in
// whose result may differ between two evaluations of the same input
// (ast.Builtin.Nondeterministic), nor print or trace (an output the cache
// would swallow).
func deterministic(c *ast.Compiler, query ast.Body) bool {
	ok := true
	vis := ast.NewGenericVisitor(func(x any) bool {
		if !ok {
			return true
		}
		if r, isRef := x.(ast.Ref); isRef {
			name := r.String()
			if b, found := ast.BuiltinMap[name]; found && b.Nondeterministic || name == "print" || name == "trace" {
				ok = false
			}
		}
		return false
	})
	for _, n := range reachable(c, query) {
		vis.Walk(n)
	}
	return ok
}
