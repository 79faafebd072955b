package testenv

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func zonePath(name string) string {
	return filepath.Join("..", "..", "testdata", "zones", name)
}

func ask(t *testing.T, d *DNS, net, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: net, Timeout: 2 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, d.Addr())
	if err != nil {
		t.Fatalf("%s %s %s: %v", net, name, dns.TypeToString[qtype], err)
	}
	if r.Id != m.Id {
		t.Fatalf("id mismatch")
	}
	return r
}

func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		case *dns.TXT:
			out = append(out, strings.Join(v.Txt, "|"))
		case *dns.MX:
			out = append(out, fmt.Sprintf("%d %s", v.Preference, v.Mx))
		case *dns.CNAME:
			out = append(out, "CNAME "+v.Target)
		case *dns.PTR:
			out = append(out, v.Ptr)
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

func TestDNSZoneAnswers(t *testing.T) {
	d := StartDNS(t)
	d.LoadZoneFile(t, zonePath("example.org.zone"), "example.org.")

	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		soa    bool // SOA expected in authority
	}{
		{"example.org", dns.TypeA, dns.RcodeSuccess, []string{"192.0.2.1"}, false},
		{"EXAMPLE.Org", dns.TypeAAAA, dns.RcodeSuccess, []string{"2001:db8::1"}, false},
		{"example.org", dns.TypeMX, dns.RcodeSuccess, []string{"10 mx1.example.org.", "20 mx2.example.org."}, false},
		{"example.org", dns.TypeTXT, dns.RcodeSuccess, []string{"v=spf1 ip4:192.0.2.0/24 -all"}, false},
		{"multi.example.org", dns.TypeTXT, dns.RcodeSuccess, []string{"v=DKIM1; k=rsa; |p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ"}, false},
		{"twotxt.example.org", dns.TypeTXT, dns.RcodeSuccess, []string{"first", "second"}, false},
		{"nope.example.org", dns.TypeA, dns.RcodeNameError, nil, true},
		{"mx2.example.org", dns.TypeAAAA, dns.RcodeSuccess, nil, true},       // NODATA
		{"_domainkey.example.org", dns.TypeTXT, dns.RcodeSuccess, nil, true}, // empty non-terminal
		{"www.example.org", dns.TypeA, dns.RcodeSuccess, []string{"CNAME example.org.", "192.0.2.1"}, false},
		{"alias.example.org", dns.TypeA, dns.RcodeSuccess, []string{"CNAME www.example.org.", "CNAME example.org.", "192.0.2.1"}, false},
		{"www.example.org", dns.TypeCNAME, dns.RcodeSuccess, []string{"CNAME example.org."}, false},
		{"dangling.example.org", dns.TypeA, dns.RcodeNameError, []string{"CNAME nowhere.example.org."}, true},
		{"a.wild.example.org", dns.TypeTXT, dns.RcodeSuccess, []string{"wildcard"}, false},
		{"b.a.wild.example.org", dns.TypeA, dns.RcodeSuccess, []string{"192.0.2.99"}, false},
		{"a.wild.example.org", dns.TypeMX, dns.RcodeSuccess, nil, true}, // wildcard NODATA
		{"wild.example.org", dns.TypeTXT, dns.RcodeSuccess, nil, true},  // ENT above the wildcard
		{"1.2.0.192.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, []string{"example.org."}, false},
		{"other.test", dns.TypeA, dns.RcodeNameError, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			r := ask(t, d, "udp", tc.name, tc.qtype, 0)
			if r.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
			}
			if !r.Authoritative {
				t.Errorf("AA not set")
			}
			got := rrStrings(r.Answer)
			if strings.Join(got, "\n") != strings.Join(tc.answer, "\n") {
				t.Errorf("answer %q, want %q", got, tc.answer)
			}
			hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tc.soa {
				t.Errorf("authority %v, want SOA=%v", r.Ns, tc.soa)
			}
			for _, rr := range r.Answer {
				if !strings.EqualFold(rr.Header().Name, dns.Fqdn(tc.name)) && rr.Header().Rrtype != dns.TypeCNAME && len(r.Answer) == 1 {
					t.Errorf("owner %s, want %s", rr.Header().Name, tc.name)
				}
			}
		})
	}
	if n := d.Queries(); n != int64(len(tests)) {
		t.Errorf("Queries() = %d, want %d", n, len(tests))
	}
}

func TestDNSNegativeSOAFromZone(t *testing.T) {
	d := StartDNS(t)
	d.LoadZoneFile(t, zonePath("example.org.zone"), "")
	r := ask(t, d, "udp", "nope.example.org", dns.TypeTXT, 0)
	soa, ok := r.Ns[0].(*dns.SOA)
	if !ok || soa.Hdr.Name != "example.org." || soa.Minttl != 120 {
		t.Fatalf("authority %v, want the zone's SOA", r.Ns)
	}
}

func TestDNSAddRRAndOverrides(t *testing.T) {
	d := StartDNS(t)
	d.AddRR(t,
		`a.test. 60 IN A 192.0.2.7`,
		`a.test. 60 IN TXT "hello"`,
		`b.test. 60 IN TXT "x"`,
	)
	d.AddRRs(&dns.TXT{Hdr: dns.RR_Header{Name: "Raw.Test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
		Txt: []string{"caf\xc3\xa9 \xff\x00end"}})

	if r := ask(t, d, "udp", "a.test", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Fatalf("answer %v", r.Answer)
	}
	r := ask(t, d, "udp", "raw.test", dns.TypeTXT, 0)
	if len(r.Answer) != 1 {
		t.Fatalf("raw answer %v", r.Answer)
	}
	// miekg/dns escapes non-printable bytes when unpacking; the wire bytes
	// are compared by packing the answer again.
	wire, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(wire), "caf\xc3\xa9 \xff\x00end") {
		t.Errorf("raw TXT bytes not served as given: %q", r.Answer[0].(*dns.TXT).Txt)
	}

	d.SetRcode("a.test", dns.TypeTXT, dns.RcodeServerFailure)
	if r := ask(t, d, "udp", "a.test", dns.TypeTXT, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("TXT rcode %d, want SERVFAIL", r.Rcode)
	}
	if r := ask(t, d, "udp", "a.test", dns.TypeA, 0); r.Rcode != dns.RcodeSuccess {
		t.Errorf("A rcode %d, want NOERROR", r.Rcode)
	}
	d.SetRcode("b.test", dns.TypeANY, dns.RcodeRefused)
	if r := ask(t, d, "udp", "B.test", dns.TypeTXT, 0); r.Rcode != dns.RcodeRefused {
		t.Errorf("rcode %d, want REFUSED", r.Rcode)
	}

	d.SetTimeout("a.test", dns.TypeA)
	m := new(dns.Msg)
	m.SetQuestion("a.test.", dns.TypeA)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	if _, _, err := c.Exchange(m, d.Addr()); err == nil {
		t.Errorf("expected a timeout")
	}

	d.Reset()
	if r := ask(t, d, "udp", "a.test", dns.TypeA, 0); r.Rcode != dns.RcodeNameError {
		t.Errorf("after Reset rcode %d, want NXDOMAIN", r.Rcode)
	}
}

func TestDNSTruncation(t *testing.T) {
	d := StartDNS(t)
	var lines []string
	for i := 0; i < 40; i++ {
		lines = append(lines, fmt.Sprintf(`big.test. 60 IN TXT "record %02d %s"`, i, strings.Repeat("x", 40)))
	}
	d.AddRR(t, lines...)

	r := ask(t, d, "udp", "big.test", dns.TypeTXT, 0)
	if !r.Truncated {
		t.Errorf("UDP without EDNS0: TC not set (%d answers)", len(r.Answer))
	}
	r = ask(t, d, "udp", "big.test", dns.TypeTXT, 1232)
	if !r.Truncated {
		t.Errorf("UDP with EDNS0 1232: TC not set (%d answers)", len(r.Answer))
	}
	if r.IsEdns0() == nil {
		t.Errorf("EDNS0 request answered without OPT")
	}
	r = ask(t, d, "udp", "big.test", dns.TypeTXT, 8192)
	if r.Truncated || len(r.Answer) != 40 {
		t.Errorf("UDP with EDNS0 8192: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
	r = ask(t, d, "tcp", "big.test", dns.TypeTXT, 0)
	if r.Truncated || len(r.Answer) != 40 {
		t.Errorf("TCP: TC=%v, %d answers", r.Truncated, len(r.Answer))
	}
}

func TestDNSConcurrent(t *testing.T) {
	d := StartDNS(t)
	d.AddRR(t, `c.test. 60 IN A 192.0.2.1`)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if j%5 == 0 {
					d.AddRRs(&dns.A{Hdr: dns.RR_Header{Name: fmt.Sprintf("n%d-%d.test.", i, j), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}})
				}
				m := new(dns.Msg)
				m.SetQuestion("c.test.", dns.TypeA)
				r, err := dns.Exchange(m, d.Addr())
				if err != nil || len(r.Answer) != 1 {
					t.Errorf("exchange: %v %v", err, r)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	if d.Queries() != 160 {
		t.Errorf("Queries() = %d, want 160", d.Queries())
	}
}
