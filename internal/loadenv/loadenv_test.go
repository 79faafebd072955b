package loadenv

import (
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
)

func TestDNS(t *testing.T) {
	rr, err := dns.NewRR(`a.example.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 -all"`)
	if err != nil {
		t.Fatal(err)
	}
	d, err := StartDNS([]dns.RR{rr})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tests := []struct {
		name    string
		qtype   uint16
		net     string
		rcode   int
		answers int
	}{
		{"A.Example.Test.", dns.TypeTXT, "udp", dns.RcodeSuccess, 1},
		{"a.example.test.", dns.TypeTXT, "tcp", dns.RcodeSuccess, 1},
		{"a.example.test.", dns.TypeMX, "udp", dns.RcodeSuccess, 0},
		{"b.example.test.", dns.TypeTXT, "udp", dns.RcodeNameError, 0},
	}
	for _, tt := range tests {
		m := new(dns.Msg)
		m.SetQuestion(tt.name, tt.qtype)
		c := &dns.Client{Net: tt.net}
		r, _, err := c.Exchange(m, d.Addr())
		if err != nil {
			t.Fatalf("%s %s: %v", tt.name, tt.net, err)
		}
		if r.Rcode != tt.rcode || len(r.Answer) != tt.answers {
			t.Errorf("%s %d over %s: rcode %d, %d answers; want %d, %d", tt.name, tt.qtype, tt.net, r.Rcode, len(r.Answer), tt.rcode, tt.answers)
		}
		if tt.answers == 0 && len(r.Ns) != 1 {
			t.Errorf("%s: negative answer without SOA", tt.name)
		}
	}
	if d.Queries() != int64(len(tests)) {
		t.Errorf("Queries = %d, want %d", d.Queries(), len(tests))
	}
}

func TestSink(t *testing.T) {
	s, err := StartSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := "From: a@b.test\r\nSubject: x\r\n\r\nhello\r\n"
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 3; i++ { // one session, three transactions
		if err := c.SendMail("a@b.test", []string{"c@d.test"}, strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if s.Delivered() != 3 || s.Bytes() != int64(3*len(msg)) {
		t.Errorf("delivered %d, %d bytes; want 3, %d", s.Delivered(), s.Bytes(), 3*len(msg))
	}
}

func TestRedis(t *testing.T) {
	r, err := StartRedis(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	r.Stop()
	r.Stop() // idempotent
}
