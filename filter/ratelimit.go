package filter

import (
	"context"
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/ratelimit"
)

// RateSpec is one configured limit of a dimension.
type RateSpec struct {
	Limit       ratelimit.Limit
	SPFPassOnly bool
}

// RateLimits turns the configured limits into facts on the record
// (input.ratelimit.<dimension>); the policy decides what they mean.
type RateLimits struct {
	backend ratelimit.Backend
	specs   map[string]RateSpec
	// maxPerNet > 0 counts live connections per client network with leases.
	maxPerNet int
	leaseTTL  time.Duration
}

// NewRateLimits counts the dimensions in specs on backend (a
// *ratelimit.Fallback in the gateway).
func NewRateLimits(backend ratelimit.Backend, specs map[string]RateSpec, maxPerNet int, leaseTTL time.Duration) *RateLimits {
	if leaseTTL <= 0 {
		leaseTTL = 2 * time.Minute
	}
	return &RateLimits{backend: backend, specs: specs, maxPerNet: maxPerNet, leaseTTL: leaseTTL}
}

// connect counts the connection and takes a concurrency lease that lives as
// long as the connection.
func (rl *RateLimits) connect(ctx context.Context, c *gateConn, t *Transaction) {
	rl.count(ctx, StageConnect, t, 1)
	if rl.maxPerNet <= 0 {
		return
	}
	ip, _ := netip.ParseAddr(t.Client.IP)
	key := ratelimit.Key("client_net_concurrent", ratelimit.IPKey(ip, 24, 48))
	lease, res, err := rl.backend.Acquire(ctx, key, rl.maxPerNet, rl.leaseTTL)
	if err != nil {
		return
	}
	rl.fact(t, "client_net_concurrent", res)
	if lease == nil {
		return
	}
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(rl.leaseTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = lease.Release(ctx)
				cancel()
				return
			case <-tick.C:
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = lease.Refresh(ctx)
				cancel()
			}
		}
	}()
	c.onClose(func() { close(stop) })
}

// count counts one event of the stage on every configured dimension of that
// stage; n is the message size for byte counters. The stage's dimensions go
// to the backend as one batch: one Redis round trip instead of one each.
func (rl *RateLimits) count(ctx context.Context, stage string, t *Transaction, n int64) {
	ip, _ := netip.ParseAddr(t.Client.IP)
	vals := ratelimit.Values{IP: ip, HELO: t.Client.Helo, MailFrom: t.Envelope.MailFrom, Rcpt: t.Envelope.Rcpt, DKIMDomain: passingDKIMDomain(t)}
	spfPass := t.Auth.SPF != nil && t.Auth.SPF.Result == "pass"
	// 8 covers the largest stage (6 dimensions) without regrowing.
	reqs := make([]ratelimit.Request, 0, 8)
	names := make([]string, 0, 8)
	for _, d := range ratelimit.Dimensions {
		if d.Stage != stage || d.Unit == ratelimit.Concurrent {
			continue
		}
		spec, ok := rl.specs[d.Name]
		if !ok || d.SPFOption && spec.SPFPassOnly && !spfPass {
			continue
		}
		key := d.Key(vals)
		if key == "" {
			continue
		}
		cost := 1
		if d.Unit == ratelimit.Bytes {
			cost = int(n)
		}
		reqs = append(reqs, ratelimit.Request{Key: key, Limit: spec.Limit, N: cost})
		names = append(names, d.Name)
	}
	if len(reqs) == 0 {
		return
	}
	res, err := rl.backend.AllowMany(ctx, reqs)
	if err != nil {
		// Only a malformed limit errs (config validation prevents it), and
		// then the batch counted nothing: decide one by one so the valid
		// dimensions still get their facts and the bad one gets none,
		// rather than an invented verdict.
		for i, q := range reqs {
			if r, err := rl.backend.Allow(ctx, q.Key, q.Limit, q.N); err == nil {
				rl.fact(t, names[i], r)
			}
		}
		return
	}
	for i := 0; i < len(res) && i < len(names); i++ {
		rl.fact(t, names[i], res[i])
	}
}

func (rl *RateLimits) fact(t *Transaction, name string, res ratelimit.Result) {
	if t.Ratelimit == nil {
		t.Ratelimit = make(map[string]ratelimit.Fact, 8)
	}
	t.Ratelimit[name] = res.Fact()
}

// passingDKIMDomain is the d= of the DMARC-aligned passing signature, else
// of the first passing one.
func passingDKIMDomain(t *Transaction) string {
	first := ""
	for _, d := range t.Auth.DKIM {
		if d.Result != "pass" || d.UnsignedContent {
			continue
		}
		if d.Aligned {
			return d.Domain
		}
		if first == "" {
			first = d.Domain
		}
	}
	return first
}

// stageFacts copies the facts of the dimensions counted at stage, so that a
// refused recipient's facts can be taken back (see restoreFacts).
func stageFacts(t *Transaction, stage string) map[string]ratelimit.Fact {
	out := map[string]ratelimit.Fact{}
	for _, d := range ratelimit.Dimensions {
		if d.Stage == stage {
			if f, ok := t.Ratelimit[d.Name]; ok {
				out[d.Name] = f
			}
		}
	}
	return out
}

// restoreFacts puts back the facts of stage as saved: the facts of a
// recipient that was refused must not follow the accepted recipients into
// the data stage, where they would refuse the whole message.
func restoreFacts(t *Transaction, stage string, saved map[string]ratelimit.Fact) {
	for _, d := range ratelimit.Dimensions {
		if d.Stage != stage {
			continue
		}
		if f, ok := saved[d.Name]; ok {
			t.Ratelimit[d.Name] = f
		} else {
			delete(t.Ratelimit, d.Name)
		}
	}
}
