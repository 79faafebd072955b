package resolver

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/miekg/dns"
)

// exchange asks the upstream servers one question, trying up to r.attempts
// times round-robin. It returns a NOERROR or NXDOMAIN response whose ID and
// question match ours, or the last failure as an entry.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, string, *entry) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	start := int(r.rr.Add(1))
	var last *entry
	for i := 0; i < r.attempts; i++ {
		if ctx.Err() != nil {
			break
		}
		server := r.servers[(start+i)%len(r.servers)]
		m.Id = dns.Id() // a fresh random ID per attempt (RFC 5452 9.2)
		resp, err := r.exchangeOne(ctx, m, server)
		if err != nil {
			last = classify(err, server)
			r.stats.upstreamErrors.Add(1)
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			return resp, server, nil
		case dns.RcodeServerFailure:
			last = &entry{kind: kindServFail, server: server}
		case dns.RcodeRefused:
			last = &entry{kind: kindRefused, server: server}
		default:
			last = &entry{kind: kindRcode, server: server,
				text: errTextBadRcode + " " + dns.RcodeToString[resp.Rcode]}
		}
		r.stats.upstreamErrors.Add(1)
	}
	if last == nil {
		last = &entry{kind: kindTimeout}
	}
	return nil, "", last
}

// exchangeOne does one attempt: UDP, then TCP to the same server when the
// answer came back truncated (RFC 7766 / RFC 1035 4.2.1).
func (r *Resolver) exchangeOne(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	resp, err := r.roundTrip(ctx, r.udp, "udp", m, server)
	if err != nil {
		return nil, err
	}
	if !resp.Truncated {
		return resp, nil
	}
	r.stats.tcpRetries.Add(1)
	m.Id = dns.Id()
	return r.roundTrip(ctx, r.tcp, "tcp", m, server)
}

var errMismatch = errors.New(errTextMismatch)

func (r *Resolver) roundTrip(ctx context.Context, c *dns.Client, transport string, m *dns.Msg, server string) (*dns.Msg, error) {
	r.stats.upstream.Add(1)
	t0 := time.Now()
	// miekg/dns checks the ID (and skips mismatched UDP datagrams).
	resp, _, err := c.ExchangeContext(ctx, m, server)
	r.metrics.upstream(transport, time.Since(t0))
	if err != nil {
		return nil, err
	}
	// RFC 5452 9.1: the answer must be a response to our exact question.
	q := m.Question[0]
	if !resp.Response || resp.Id != m.Id || len(resp.Question) != 1 ||
		resp.Question[0].Qtype != q.Qtype || resp.Question[0].Qclass != q.Qclass ||
		!sameName(resp.Question[0].Name, q.Name) {
		return nil, errMismatch
	}
	return resp, nil
}

// classify maps an exchange error to a failure entry.
func classify(err error, server string) *entry {
	var ne net.Error
	switch {
	case errors.Is(err, errMismatch):
		return &entry{kind: kindMismatch, server: server}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return &entry{kind: kindTimeout, server: server, cause: err}
	default:
		return &entry{kind: kindNetwork, server: server, text: err.Error(), cause: err}
	}
}
