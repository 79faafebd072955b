// Package resolver is mxguard's caching stub resolver on github.com/miekg/dns.
//
// It asks the configured upstream (recursive) servers over UDP with EDNS0,
// retries over TCP when an answer is truncated, retries across servers, caches
// positive answers by TTL (capped) and negative ones per RFC 2308, and folds
// concurrent identical questions into one upstream query (singleflight).
//
// Every error it returns is a *net.DNSError, unwrapped, so that callers (SPF,
// go-msgauth DKIM/DMARC) can tell "not found" (IsNotFound: NXDOMAIN or NODATA,
// see IsNXDomain and IsNoData) from a temporary failure (IsTemporary: SERVFAIL,
// REFUSED, network errors; IsTimeout too for timeouts and ctx deadlines).
package resolver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// Defaults for zero Config fields.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultAttempts    = 2
	DefaultCacheSize   = 100000
	DefaultMaxTTL      = time.Hour
	DefaultNegativeTTL = 5 * time.Minute
)

const (
	// ednsSize is the EDNS0 UDP payload size we advertise (DNS flag day
	// 2020 recommendation: avoids IP fragmentation).
	ednsSize = 1232
	// maxCNAME bounds the CNAME chain followed for one question.
	maxCNAME = 8
	// maxAttempts bounds Config.Attempts so a typo cannot make a lookup
	// wait for minutes.
	maxAttempts = 10
	// resolvConf is where servers come from when Config.Servers is empty.
	resolvConf = "/etc/resolv.conf"
)

// Config configures a Resolver. The zero value means: servers from
// /etc/resolv.conf, defaults below.
type Config struct {
	// Servers are upstream recursive servers as "host:port" (a missing
	// port means 53). Empty: the nameservers of /etc/resolv.conf.
	Servers []string
	// Timeout bounds one query attempt (UDP, plus TCP when truncated).
	// Default 2s.
	Timeout time.Duration
	// Attempts is the number of tries per question, round-robin across
	// servers. Default 2, at most 10.
	Attempts int
	// CacheSize is the number of cached questions. 0 means the default
	// (100000); negative turns the cache off.
	CacheSize int
	// MaxTTL caps how long a positive answer is cached. Default 1h.
	MaxTTL time.Duration
	// NegativeTTL caps how long NXDOMAIN/NODATA is cached (RFC 2308 5:
	// the SOA's TTL or MINIMUM, whichever is smaller). Default 5m.
	NegativeTTL time.Duration
	// Now is the clock for cache expiry; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Resolver is a caching stub resolver. It is safe for concurrent use.
type Resolver struct {
	servers  []string
	timeout  time.Duration
	attempts int
	maxTTL   time.Duration
	negTTL   time.Duration
	now      func() time.Time

	udp *dns.Client
	tcp *dns.Client

	// cache is nil when caching is off. hashicorp/golang-lru is a kept
	// library with O(1) bounded LRU eviction behind one mutex; at mail
	// rates (thousands of lookups a second at most, on few cores) that
	// mutex is not a bottleneck, so a sharded map of our own is not worth
	// its code. Expiry is checked on read, per entry (TTLs differ).
	cache *lru.Cache[cacheKey, *entry]
	group singleflight.Group
	rr    atomic.Uint32 // round-robin start

	stats   stats
	metrics *metrics
}

type cacheKey struct {
	name  string // canonical()
	qtype uint16
}

// entry is the outcome of one question, converted to what the Lookup methods
// return so a cache hit does no parsing. Cached entries are shared and never
// modified; callers get copies.
type entry struct {
	kind    kind // kindOK, or why not
	text    string
	server  string
	cause   error
	expires time.Time
	strs    []string // TXT (strings of a record joined) or PTR names
	addrs   []netip.Addr
	mx      []net.MX
}

// New returns a Resolver for cfg.
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{
		timeout:  cmp.Or(cfg.Timeout, DefaultTimeout),
		attempts: cmp.Or(cfg.Attempts, DefaultAttempts),
		maxTTL:   cmp.Or(cfg.MaxTTL, DefaultMaxTTL),
		negTTL:   cmp.Or(cfg.NegativeTTL, DefaultNegativeTTL),
		now:      cfg.Now,
	}
	if r.timeout < 0 || r.attempts < 0 || r.maxTTL < 0 || r.negTTL < 0 {
		return nil, fmt.Errorf("resolver: negative timeout, attempts or TTL cap in config")
	}
	r.attempts = min(r.attempts, maxAttempts)
	if r.now == nil {
		r.now = time.Now
	}
	servers := cfg.Servers
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			return nil, fmt.Errorf("resolver: no servers configured and %s unreadable: %w", resolvConf, err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cmp.Or(cc.Port, "53")))
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("resolver: %s", errTextNoServers)
		}
	}
	for _, s := range servers {
		hp, err := hostPort(s)
		if err != nil {
			return nil, fmt.Errorf("resolver: server %q: %w", s, err)
		}
		r.servers = append(r.servers, hp)
	}
	if cfg.CacheSize >= 0 {
		c, err := lru.New[cacheKey, *entry](cmp.Or(cfg.CacheSize, DefaultCacheSize))
		if err != nil {
			return nil, fmt.Errorf("resolver: cache: %w", err)
		}
		r.cache = c
	}
	// dns.Client dials a fresh socket per exchange: a random source port
	// for every UDP query, and a random ID from dns.Id() (RFC 5452 9.2).
	r.udp = &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: ednsSize}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	r.metrics = newMetrics()
	return r, nil
}

// hostPort accepts "host:port" or a bare host/IP (port 53).
func hostPort(s string) (string, error) {
	if host, port, err := net.SplitHostPort(s); err == nil {
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return "", fmt.Errorf("bad port %q", port)
		}
		if host == "" {
			return "", errors.New("empty host")
		}
		return s, nil
	}
	if s == "" {
		return "", errors.New("empty server")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	return net.JoinHostPort(s, "53"), nil
}

// LookupTXT returns the TXT records of name; the strings of one record are
// joined without separator (RFC 7208 3.3, RFC 6376 3.6.2.2), bytes as on the
// wire.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	e, err := r.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	return slices.Clone(e.strs), nil
}

// LookupNetIP returns the addresses of host for network "ip4" (A), "ip6"
// (AAAA) or "ip" (both, asked concurrently). An IP literal is returned as is.
// For "ip", addresses found for one family are returned even when the other
// failed; when both fail a temporary error wins over not-found.
func (r *Resolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var want4, want6 bool
	switch network {
	case "ip":
		want4, want6 = true, true
	case "ip4":
		want4 = true
	case "ip6":
		want6 = true
	default:
		return nil, newError(kindInvalid, errTextNetwork, network, "", nil)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if (a.Unmap().Is4() && want4) || (a.Is6() && !a.Is4In6() && want6) {
			return []netip.Addr{a}, nil
		}
		return nil, newError(kindNoData, "", host, "", nil)
	}
	if !want4 || !want6 {
		qtype := dns.TypeA
		if want6 {
			qtype = dns.TypeAAAA
		}
		e, err := r.query(ctx, host, qtype)
		if err != nil {
			return nil, err
		}
		return slices.Clone(e.addrs), nil
	}

	type res struct {
		e   *entry
		err *net.DNSError
	}
	ch := make(chan res, 1)
	go func() {
		e, err := r.query(ctx, host, dns.TypeAAAA)
		ch <- res{e, err}
	}()
	e4, err4 := r.query(ctx, host, dns.TypeA)
	r6 := <-ch
	var out []netip.Addr
	if err4 == nil {
		out = append(out, e4.addrs...)
	}
	if r6.err == nil {
		out = append(out, r6.e.addrs...)
	}
	if len(out) > 0 {
		return out, nil
	}
	switch {
	case err4 != nil && err4.IsTemporary:
		return nil, err4
	case r6.err != nil && r6.err.IsTemporary:
		return nil, r6.err
	case err4 != nil:
		return nil, err4
	case r6.err != nil:
		return nil, r6.err
	}
	return nil, newError(kindNoData, "", host, "", nil)
}

// LookupMX returns the MX records of name sorted by preference. Hosts are
// fully qualified (trailing dot); a null MX (RFC 7505) is returned as ".".
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	e, err := r.query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, len(e.mx))
	for i := range e.mx {
		mx := e.mx[i]
		out[i] = &mx
	}
	return out, nil
}

// LookupAddr returns the PTR names of an IP address (fully qualified).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, newError(kindInvalid, errTextBadAddr, addr, "", nil)
	}
	rev, err := dns.ReverseAddr(a.Unmap().String())
	if err != nil {
		return nil, newError(kindInvalid, errTextBadAddr, addr, "", nil)
	}
	e, derr := r.query(ctx, rev, dns.TypePTR)
	if derr != nil {
		derr.Name = addr
		return nil, derr
	}
	return slices.Clone(e.strs), nil
}

// query answers one question from the cache or upstream. The returned entry
// is shared: callers copy what they hand out. The error is never wrapped.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*entry, *net.DNSError) {
	r.stats.queries.Add(1)
	r.metrics.query(qtype)
	key, ok := canonical(name)
	if !ok {
		return nil, r.fail(newError(kindInvalid, "", name, "", nil), kindInvalid)
	}
	k := cacheKey{key, qtype}
	if r.cache != nil {
		if e, ok := r.cache.Get(k); ok {
			if r.now().Before(e.expires) {
				r.stats.cacheHits.Add(1)
				r.metrics.hit(qtype)
				return r.result(e, name)
			}
			r.cache.Remove(k)
		}
	}
	r.stats.cacheMisses.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, r.fail(ctxError(err, name), kindTimeout)
	}

	// The flight runs detached from every caller's ctx, bounded by its own
	// deadline, so one caller giving up does not fail the others; each
	// caller waits only as long as its own ctx allows.
	ch := r.group.DoChan(key+"/"+strconv.Itoa(int(qtype)), func() (any, error) {
		return r.resolve(k), nil
	})
	select {
	case res := <-ch:
		if res.Shared {
			r.stats.shared.Add(1)
		}
		return r.result(res.Val.(*entry), name)
	case <-ctx.Done():
		return nil, r.fail(ctxError(ctx.Err(), name), kindTimeout)
	}
}

// result turns an entry into the caller's answer or error.
func (r *Resolver) result(e *entry, name string) (*entry, *net.DNSError) {
	if e.kind == kindOK {
		return e, nil
	}
	return nil, r.fail(newError(e.kind, e.text, name, e.server, e.cause), e.kind)
}

func (r *Resolver) fail(err *net.DNSError, k kind) *net.DNSError {
	if k == kindTimeout && !err.IsTimeout {
		k = kindCanceled
	}
	r.stats.failures[k].Add(1)
	r.metrics.failure(k)
	return err
}

// ctxError maps the caller's ctx ending: a deadline is a timeout, a
// cancellation a temporary failure; errors.Is still finds the ctx error.
func ctxError(err error, name string) *net.DNSError {
	if errors.Is(err, context.DeadlineExceeded) {
		return newError(kindTimeout, "", name, "", err)
	}
	return newError(kindCanceled, "", name, "", err)
}

// resolve asks upstream, follows CNAMEs and caches the outcome. It runs once
// per flight.
func (r *Resolver) resolve(k cacheKey) *entry {
	// Each attempt has its own timeout (UDP and maybe TCP); the flight's
	// deadline bounds the whole, CNAME follow-ups included.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.attempts)*r.timeout*2)
	defer cancel()

	target := k.name
	chain := 0
	ttl := uint32(1<<31 - 1)
	for {
		resp, server, f := r.exchange(ctx, target, k.qtype)
		if f != nil {
			return f // failures are not cached (RFC 2308 7 allows it; we prefer asking again)
		}
		rrs, end, hops, minTTL, ok := follow(resp.Answer, target, k.qtype, maxCNAME-chain)
		ttl = min(ttl, minTTL)
		chain += hops
		if !ok {
			return &entry{kind: kindChain, server: server}
		}
		if len(rrs) > 0 {
			e := build(rrs, k.qtype)
			e.server = server
			r.store(k, e, time.Duration(ttl)*time.Second, r.maxTTL)
			return e
		}
		soa := findSOA(resp.Ns)
		if resp.Rcode == dns.RcodeSuccess && end != target && soa == nil && chain < maxCNAME {
			// The chain leaves the answer without an authoritative
			// negative: ask for its end (a recursive server normally
			// chases it for us).
			target = end
			continue
		}
		e := &entry{kind: kindNoData, server: server}
		if resp.Rcode == dns.RcodeNameError {
			e.kind = kindNXDomain
		}
		if soa != nil {
			// RFC 2308 5: negative TTL = min(SOA TTL, SOA MINIMUM).
			// Without a SOA the answer is not cached (RFC 2308 5).
			neg := min(soa.Hdr.Ttl, soa.Minttl, ttl)
			r.store(k, e, time.Duration(neg)*time.Second, r.negTTL)
		}
		return e
	}
}

func (r *Resolver) store(k cacheKey, e *entry, ttl, limit time.Duration) {
	if r.cache == nil || ttl <= 0 {
		return
	}
	e.expires = r.now().Add(min(ttl, limit))
	r.cache.Add(k, e)
}

// follow walks the answer section from name through CNAMEs (at most budget
// hops) and returns the records of qtype at the end of the chain, the last
// name reached, the hops taken, the smallest TTL seen and false when the
// chain was longer than budget.
func follow(answer []dns.RR, name string, qtype uint16, budget int) (rrs []dns.RR, end string, hops int, ttl uint32, ok bool) {
	ttl = 1<<31 - 1
	end = name
	for {
		var cname string
		for _, rr := range answer {
			h := rr.Header()
			if h.Class != dns.ClassINET || !sameName(h.Name, end) {
				continue
			}
			switch {
			case h.Rrtype == qtype:
				rrs = append(rrs, rr)
				ttl = min(ttl, h.Ttl)
			case h.Rrtype == dns.TypeCNAME && cname == "":
				cname = rr.(*dns.CNAME).Target
				ttl = min(ttl, h.Ttl)
			}
		}
		if len(rrs) > 0 || cname == "" {
			return rrs, end, hops, ttl, true
		}
		if hops >= budget {
			return nil, end, hops, ttl, false
		}
		hops++
		end = canonicalWire(cname)
	}
}

// canonicalWire lower-cases a presentation-form name from a response and drops
// the trailing dot, giving a cache-key-shaped name.
func canonicalWire(name string) string {
	name = dns.CanonicalName(name)
	if name == "." {
		return ""
	}
	return name[:len(name)-1]
}

func findSOA(ns []dns.RR) *dns.SOA {
	for _, rr := range ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa
		}
	}
	return nil
}

// build converts answer records into the shape the Lookup methods return.
func build(rrs []dns.RR, qtype uint16) *entry {
	e := &entry{kind: kindOK}
	switch qtype {
	case dns.TypeTXT:
		e.strs = make([]string, 0, len(rrs))
		for _, rr := range rrs {
			var sb strings.Builder
			for _, part := range rr.(*dns.TXT).Txt {
				sb.WriteString(unescapeTXT(part))
			}
			e.strs = append(e.strs, sb.String())
		}
	case dns.TypePTR:
		e.strs = make([]string, 0, len(rrs))
		for _, rr := range rrs {
			e.strs = append(e.strs, rr.(*dns.PTR).Ptr)
		}
	case dns.TypeA:
		e.addrs = make([]netip.Addr, 0, len(rrs))
		for _, rr := range rrs {
			if a, ok := netip.AddrFromSlice(rr.(*dns.A).A.To4()); ok {
				e.addrs = append(e.addrs, a)
			}
		}
	case dns.TypeAAAA:
		e.addrs = make([]netip.Addr, 0, len(rrs))
		for _, rr := range rrs {
			if a, ok := netip.AddrFromSlice(rr.(*dns.AAAA).AAAA.To16()); ok {
				e.addrs = append(e.addrs, a)
			}
		}
	case dns.TypeMX:
		e.mx = make([]net.MX, 0, len(rrs))
		for _, rr := range rrs {
			mx := rr.(*dns.MX)
			e.mx = append(e.mx, net.MX{Host: mx.Mx, Pref: mx.Preference})
		}
		slices.SortStableFunc(e.mx, func(a, b net.MX) int { return cmp.Compare(a.Pref, b.Pref) })
	}
	return e
}
