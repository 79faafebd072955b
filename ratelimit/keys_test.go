package ratelimit

import (
	"net/netip"
	"testing"
)

func TestIPKey(t *testing.T) {
	for _, c := range []struct {
		ip     string
		v4, v6 int
		want   string
	}{
		{"192.0.2.10", 32, 64, "192.0.2.10"},
		{"192.0.2.10", 24, 48, "192.0.2.0/24"},
		{"::ffff:192.0.2.10", 32, 64, "192.0.2.10"},
		{"::ffff:192.0.2.10", 24, 48, "192.0.2.0/24"},
		{"2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::/64"},
		{"2001:DB8:1:2:3:4:5:6", 24, 48, "2001:db8:1::/48"},
		{"fe80::1%eth0", 32, 128, "fe80::1"},
	} {
		if got := IPKey(netip.MustParseAddr(c.ip), c.v4, c.v6); got != c.want {
			t.Errorf("IPKey(%s, %d, %d) = %q, want %q", c.ip, c.v4, c.v6, got, c.want)
		}
	}
	if got := IPKey(netip.Addr{}, 32, 64); got != "" {
		t.Errorf("invalid addr: %q", got)
	}
}

func TestAddrAndDomainKey(t *testing.T) {
	for in, want := range map[string]string{
		"Alice@Example.ORG":       "alice@example.org",
		"<Bob+Tag@corp.example>":  "bob+tag@corp.example", // sub-address kept
		" carol@mx.example. ":     "carol@mx.example",
		"<>":                      "",
		"":                        "",
		"postmaster":              "postmaster",
		`"odd@local"@Example.org`: `"odd@local"@example.org`,
	} {
		if got := AddrKey(in); got != want {
			t.Errorf("AddrKey(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"Example.ORG.": "example.org", " mx.Example ": "mx.example", "": ""} {
		if got := DomainKey(in); got != want {
			t.Errorf("DomainKey(%q) = %q, want %q", in, got, want)
		}
	}
	if got := DomainOf("<Alice@Example.ORG>"); got != "example.org" {
		t.Errorf("DomainOf: %q", got)
	}
}

func TestDimensions(t *testing.T) {
	seen := map[string]bool{}
	stages := map[string]bool{"connect": true, "mail": true, "rcpt": true, "data": true}
	for _, d := range Dimensions {
		if seen[d.Name] || !stages[d.Stage] {
			t.Errorf("dimension %+v: duplicate or bad stage", d)
		}
		seen[d.Name] = true
	}
	v := Values{IP: netip.MustParseAddr("2001:db8::1"), HELO: "MX.Example.", MailFrom: "<Alice@Example.org>", Rcpt: "Bob@Corp.example", DKIMDomain: "Example.org"}
	want := map[string]string{
		"client_ip":              "client_ip:2001:db8::/64",
		"client_net_concurrent":  "client_net_concurrent:2001:db8::/48",
		"helo":                   "helo:mx.example",
		"mail_from":              "mail_from:alice@example.org",
		"mail_from_domain_bytes": "mail_from_domain_bytes:example.org",
		"rcpt":                   "rcpt:bob@corp.example",
		"rcpt_domain":            "rcpt_domain:corp.example",
		"dkim_domain":            "dkim_domain:example.org",
	}
	for name, k := range want {
		d, ok := DimensionByName(name)
		if !ok {
			t.Fatalf("no dimension %s", name)
		}
		if got := d.Key(v); got != k {
			t.Errorf("%s key %q, want %q", name, got, k)
		}
	}
	d, _ := DimensionByName("mail_from")
	if got := d.Key(Values{MailFrom: "<>"}); got != "" {
		t.Errorf("null sender key %q", got)
	}
}
