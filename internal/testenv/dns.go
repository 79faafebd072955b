package testenv

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNS is an in-process authoritative DNS server on 127.0.0.1, serving UDP and
// TCP on the same port from records added by the test. It answers every name
// it is asked about from its one data set (there is no zone cut logic): a name
// with no records and no descendants is NXDOMAIN.
type DNS struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu        sync.RWMutex
	nodes     map[string]map[uint16][]dns.RR // lower-case FQDN → type → records
	ents      map[string]int                 // lower-case FQDN → number of descendants (empty non-terminals)
	overrides map[qkey]int                   // forced rcodes
	timeouts  map[qkey]bool                  // questions never answered

	queries atomic.Int64
}

type qkey struct {
	name  string
	qtype uint16
}

// maxChase bounds CNAME chasing inside our own data.
const maxChase = 8

// StartDNS starts a server on a free 127.0.0.1 port (UDP and TCP) and stops it
// when the test ends.
func StartDNS(tb testing.TB) *DNS {
	tb.Helper()
	d := &DNS{}
	d.Reset()

	var pc net.PacketConn
	var ln net.Listener
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		p, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			lastErr = err
			continue
		}
		l, err := net.Listen("tcp", p.LocalAddr().String())
		if err != nil {
			p.Close()
			lastErr = err
			continue
		}
		pc, ln = p, l
		break
	}
	if pc == nil {
		tb.Fatalf("testenv dns: no free port for UDP+TCP: %v", lastErr)
	}
	d.addr = pc.LocalAddr().String()

	h := dns.HandlerFunc(d.serve)
	udpStarted := make(chan struct{})
	tcpStarted := make(chan struct{})
	d.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { close(udpStarted) }}
	d.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: func() { close(tcpStarted) },
		ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 5 * time.Second }}
	errc := make(chan error, 2)
	go func() { errc <- d.udp.ActivateAndServe() }()
	go func() { errc <- d.tcp.ActivateAndServe() }()
	for _, ch := range []chan struct{}{udpStarted, tcpStarted} {
		select {
		case <-ch:
		case err := <-errc:
			tb.Fatalf("testenv dns: serve: %v", err)
		case <-time.After(5 * time.Second):
			tb.Fatalf("testenv dns: server did not start within 5s")
		}
	}
	tb.Cleanup(func() {
		_ = d.udp.Shutdown()
		_ = d.tcp.Shutdown()
	})
	return d
}

// Addr returns "127.0.0.1:PORT", valid for both UDP and TCP.
func (d *DNS) Addr() string { return d.addr }

// LoadZoneFile adds every record of an RFC 1035 zone file. Relative names are
// completed with origin ("" means the file must set $ORIGIN or use absolute
// names).
func (d *DNS) LoadZoneFile(tb testing.TB, path, origin string) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("testenv dns: %v", err)
	}
	defer f.Close()
	if origin != "" {
		origin = dns.Fqdn(origin)
	}
	zp := dns.NewZoneParser(f, origin, path)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		tb.Fatalf("testenv dns: zone %s: %v", path, err)
	}
	d.AddRRs(rrs...)
}

// AddRR parses zone-file syntax lines (absolute names, e.g.
// `example.org. 300 IN TXT "v=spf1 -all"`) and adds them.
func (d *DNS) AddRR(tb testing.TB, rrs ...string) {
	tb.Helper()
	parsed := make([]dns.RR, 0, len(rrs))
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			tb.Fatalf("testenv dns: record %q: %v", s, err)
		}
		if rr == nil {
			continue // blank line or comment
		}
		parsed = append(parsed, rr)
	}
	d.AddRRs(parsed...)
}

// AddRRs adds records as given. TXT strings are served byte for byte in the
// miekg/dns representation: any byte as is, except that a backslash starts an
// escape (`\\`, `\"`, `\DDD`).
func (d *DNS) AddRRs(rrs ...dns.RR) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, rr := range rrs {
		if rr == nil {
			continue
		}
		rr = dns.Copy(rr)
		h := rr.Header()
		h.Name = strings.ToLower(dns.Fqdn(h.Name))
		name := h.Name
		types, ok := d.nodes[name]
		if !ok {
			types = make(map[uint16][]dns.RR)
			d.nodes[name] = types
			// Count this node under every proper ancestor so empty
			// non-terminals exist (RFC 4592 2.2.2).
			for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
				d.ents[name[off:]]++
			}
		}
		types[h.Rrtype] = append(types[h.Rrtype], rr)
	}
}

// SetRcode forces rcode for questions about name (qtype dns.TypeANY means all
// types).
func (d *DNS) SetRcode(name string, qtype uint16, rcode int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.overrides[qkey{strings.ToLower(dns.Fqdn(name)), qtype}] = rcode
}

// SetTimeout makes the server never answer questions about name (qtype
// dns.TypeANY means all types), to simulate a timeout.
func (d *DNS) SetTimeout(name string, qtype uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timeouts[qkey{strings.ToLower(dns.Fqdn(name)), qtype}] = true
}

// Queries returns the number of questions received so far, including those
// answered with a forced rcode or left unanswered by SetTimeout.
func (d *DNS) Queries() int64 { return d.queries.Load() }

// Reset drops all records and overrides (the query counter keeps counting).
func (d *DNS) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nodes = make(map[string]map[uint16][]dns.RR)
	d.ents = make(map[string]int)
	d.overrides = make(map[qkey]int)
	d.timeouts = make(map[qkey]bool)
}

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	d.queries.Add(1)
	q := req.Question[0]
	name := strings.ToLower(q.Name)

	d.mu.RLock()
	defer d.mu.RUnlock()

	if d.timeouts[qkey{name, q.Qtype}] || d.timeouts[qkey{name, dns.TypeANY}] {
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if rc, ok := d.overrides[qkey{name, q.Qtype}]; ok {
		m.Rcode = rc
	} else if rc, ok := d.overrides[qkey{name, dns.TypeANY}]; ok {
		m.Rcode = rc
	} else {
		d.answer(m, name, q.Qtype)
	}

	size := dns.MaxMsgSize
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(4096, false)
		if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
			size = int(opt.UDPSize())
		}
	} else if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
		size = dns.MinMsgSize
	}
	m.Truncate(size) // sets TC=1 when records had to be dropped
	_ = w.WriteMsg(m)
}

// answer fills m for name/qtype from the data, chasing CNAMEs.
func (d *DNS) answer(m *dns.Msg, name string, qtype uint16) {
	for i := 0; i <= maxChase; i++ {
		types, owner, found := d.lookup(name)
		if !found {
			m.Rcode = dns.RcodeNameError
			m.Ns = append(m.Ns, d.soaFor(name))
			return
		}
		if qtype == dns.TypeANY {
			for _, rrs := range types {
				m.Answer = append(m.Answer, synth(rrs, name, owner)...)
			}
			return
		}
		if rrs, ok := types[qtype]; ok {
			m.Answer = append(m.Answer, synth(rrs, name, owner)...)
			return
		}
		if cn, ok := types[dns.TypeCNAME]; ok && len(cn) > 0 {
			m.Answer = append(m.Answer, synth(cn[:1], name, owner)...)
			name = strings.ToLower(cn[0].(*dns.CNAME).Target)
			continue
		}
		// NODATA: the name exists but lacks the type (RFC 2308 2.2).
		m.Ns = append(m.Ns, d.soaFor(name))
		return
	}
}

// lookup returns the records at name, directly or through a wildcard
// (RFC 4592 3.3.1), and whether the name exists at all (an empty non-terminal
// exists with no records). owner is the wildcard owner when one matched.
func (d *DNS) lookup(name string) (map[uint16][]dns.RR, string, bool) {
	if types, ok := d.nodes[name]; ok {
		return types, name, true
	}
	if d.ents[name] > 0 {
		return nil, name, true
	}
	// Closest encloser: the longest existing ancestor. The wildcard at it
	// answers for the name (RFC 4592 3.3.1).
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		anc := name[off:]
		if _, exists := d.nodes[anc]; !exists && d.ents[anc] == 0 {
			continue
		}
		wc := "*." + anc
		if types, ok := d.nodes[wc]; ok {
			return types, wc, true
		}
		if d.ents[wc] > 0 {
			return nil, wc, true
		}
		return nil, "", false
	}
	if types, ok := d.nodes["*."]; ok {
		return types, "*.", true
	}
	return nil, "", false
}

// synth copies rrs (the stored ones stay untouched by concurrent packing),
// renaming wildcard owners to the query name (RFC 4592 4.1).
func synth(rrs []dns.RR, name, owner string) []dns.RR {
	out := make([]dns.RR, 0, len(rrs))
	for _, rr := range rrs {
		rr = dns.Copy(rr)
		if owner != name {
			rr.Header().Name = name
		}
		out = append(out, rr)
	}
	return out
}

// soaFor returns the SOA of the closest enclosing name that has one, or a
// synthetic one at the top-level label, for the authority section of negative
// answers (RFC 2308 3). The synthetic SOA has a 60 s minimum.
func (d *DNS) soaFor(name string) dns.RR {
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if types, ok := d.nodes[name[off:]]; ok {
			if soa := types[dns.TypeSOA]; len(soa) > 0 {
				return soa[0]
			}
		}
	}
	top := "."
	if labels := dns.SplitDomainName(name); len(labels) > 0 {
		top = dns.Fqdn(labels[len(labels)-1])
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: top, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns:      "ns." + strings.TrimPrefix(top, "."),
		Mbox:    "hostmaster." + strings.TrimPrefix(top, "."),
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  60,
	}
}

// String describes the server for test logs.
func (d *DNS) String() string { return fmt.Sprintf("testenv DNS at %s", d.addr) }
