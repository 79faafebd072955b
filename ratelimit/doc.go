// Package ratelimit turns "how much has this client, sender or recipient sent
// lately" into facts for the policy. It has one algorithm, GCRA (the generic
// cell rate algorithm: Rate events per Per with a bucket of Burst), and two
// backends behind the same small interfaces:
//
//   - Memory: in process, sharded, bounded, idle keys dropped. The default for
//     one instance.
//   - Redis: one Lua script per decision over redis.UniversalClient, so several
//     gateways behind one MX share one limit (standalone, Sentinel, Cluster).
//     AllowMany pipelines a stage's decisions: one round trip per node.
//
// Fallback wraps Redis with a Memory, a per-call timeout and a circuit breaker,
// so Redis trouble becomes a fact (BackendError) and never an error or a stall.
//
// Concurrent connections are counted with leases (Leaser): each live
// connection holds a lease with an expiry that it refreshes; a gateway that
// dies stops refreshing and its leases expire, so counts cannot leak.
//
// Keys are "<dimension>:<normalised value>" (see Key, IPKey, AddrKey,
// DomainKey and Dimensions). The package never logs; Fallback reports state
// changes through a callback and Prometheus collectors.
package ratelimit
