package loadenv

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// DNS is an authoritative DNS server on 127.0.0.1 (UDP and TCP on one port)
// answering from a fixed record set. Names without records are NXDOMAIN with
// a synthetic SOA (60 s minimum), so the resolver under test can cache
// negative answers (RFC 2308 5).
type DNS struct {
	addr    string
	udp     *dns.Server
	tcp     *dns.Server
	nodes   map[string]map[uint16][]dns.RR // read-only after start
	queries atomic.Int64
}

// StartDNS serves rrs (owner names are matched case-insensitively; no
// wildcards, no CNAME chasing) until Close.
func StartDNS(rrs []dns.RR) (*DNS, error) {
	d := &DNS{nodes: make(map[string]map[uint16][]dns.RR)}
	for _, rr := range rrs {
		h := rr.Header()
		name := strings.ToLower(dns.Fqdn(h.Name))
		if d.nodes[name] == nil {
			d.nodes[name] = make(map[uint16][]dns.RR)
		}
		d.nodes[name][h.Rrtype] = append(d.nodes[name][h.Rrtype], rr)
	}
	var pc net.PacketConn
	var ln net.Listener
	var lastErr error
	for attempt := 0; attempt < 20 && pc == nil; attempt++ {
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
	}
	if pc == nil {
		return nil, fmt.Errorf("loadenv dns: no free port for UDP+TCP: %w", lastErr)
	}
	d.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(d.serve)
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	d.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: notify}
	d.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: notify,
		ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 5 * time.Second }}
	errc := make(chan error, 2)
	go func() { errc <- d.udp.ActivateAndServe() }()
	go func() { errc <- d.tcp.ActivateAndServe() }()
	timeout := time.After(5 * time.Second)
	for i := 0; i < 2; i++ {
		select {
		case <-started:
		case err := <-errc:
			d.Close()
			return nil, fmt.Errorf("loadenv dns: serve: %w", err)
		case <-timeout:
			d.Close()
			return nil, fmt.Errorf("loadenv dns: not started within 5s")
		}
	}
	return d, nil
}

// Addr is "127.0.0.1:PORT" for UDP and TCP.
func (d *DNS) Addr() string { return d.addr }

// Queries is the number of questions received so far.
func (d *DNS) Queries() int64 { return d.queries.Load() }

// Close stops both servers.
func (d *DNS) Close() {
	_ = d.udp.Shutdown()
	_ = d.tcp.Shutdown()
}

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	if len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	d.queries.Add(1)
	q := req.Question[0]
	m.SetReply(req)
	m.Authoritative = true
	types, ok := d.nodes[strings.ToLower(q.Name)]
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa(q.Name))
	case len(types[q.Qtype]) == 0:
		m.Ns = append(m.Ns, soa(q.Name)) // NODATA (RFC 2308 2.2)
	default:
		for _, rr := range types[q.Qtype] {
			m.Answer = append(m.Answer, dns.Copy(rr)) // packing must not race on shared records
		}
	}
	size := dns.MaxMsgSize
	_, udp := w.LocalAddr().(*net.UDPAddr)
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(4096, false)
		if udp {
			size = int(opt.UDPSize())
		}
	} else if udp {
		size = dns.MinMsgSize
	}
	m.Truncate(size)
	_ = w.WriteMsg(m)
}

func soa(name string) dns.RR {
	top := "."
	if labels := dns.SplitDomainName(name); len(labels) > 0 {
		top = dns.Fqdn(labels[len(labels)-1])
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: top, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns:      "ns." + top,
		Mbox:    "hostmaster." + top,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  60,
	}
}
