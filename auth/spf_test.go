package auth

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/resolver"
)

// spfTestEnv is a fixed macro environment for expansion tests.
type spfTestEnv map[byte]string

func (e spfTestEnv) macroValue(letter byte, domain string) (string, error) {
	if letter == 'd' {
		return domain, nil
	}
	return e[letter], nil
}

func TestSPFParse(t *testing.T) {
	tests := []struct {
		rec   string
		ok    bool
		terms int
	}{
		{"v=spf1", true, 0},
		{"v=spf1 ", true, 0},
		{"V=SPF1 -ALL", true, 1},
		{"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx ptr exists:%{i}.x.example include:_spf.example.com -all", true, 8},
		{"v=spf1 a:example.com/24//64 mx/0 a//128 ~all", true, 4},
		{"v=spf1 redirect=_spf.example.com exp=exp.%{d}", true, 0},
		{"v=spf1 foo.bar-baz_q=anything%%%_%-:/ -all", true, 1},
		{"v=spf1 a:%{d}", true, 1},
		{"v=spf1 a:foo.xn--zckzah.", true, 1},
		{"v=spf1 a:foo:bar/baz.example.com", true, 1},
		{"v=spf1  a   -all  ", true, 2},

		{"v=spf10", false, 0},
		{"v=spf1 -all moo", false, 0},
		{"v=spf1 all.", false, 0},
		{"v=spf1 all:x", false, 0},
		{"v=spf1 ip4", false, 0},
		{"v=spf1 ip4:1.2.3", false, 0},
		{"v=spf1 ip4:1.2.3.4/33", false, 0},
		{"v=spf1 ip4:1.2.3.4/032", false, 0},
		{"v=spf1 ip4:1.2.3.4//32", false, 0},
		{"v=spf1 ip4:2001:db8::1", false, 0},
		{"v=spf1 ip6:1.2.3.4", false, 0},
		{"v=spf1 ip6:fe80::1%eth0", false, 0},
		{"v=spf1 ip6:::1/129", false, 0},
		{"v=spf1 a/33", false, 0},
		{"v=spf1 a/24/64", false, 0},
		{"v=spf1 a:", false, 0},
		{"v=spf1 a:museum", false, 0},
		{"v=spf1 a:museum.", false, 0},
		{"v=spf1 a:abc.123", false, 0},
		{"v=spf1 a:example.-com", false, 0},
		{"v=spf1 include", false, 0},
		{"v=spf1 include:example.com/24", false, 0},
		{"v=spf1 exists", false, 0},
		{"v=spf1 ptr/0", false, 0},
		{"v=spf1 redirect=a.example redirect=b.example", false, 0},
		{"v=spf1 exp=a.example exp=b.example", false, 0},
		{"v=spf1 exp=", false, 0},
		{"v=spf1 redirect=-all", false, 0},
		{"v=spf1 redirect:example.com", false, 0},
		{"v=spf1 foo=%abc", false, 0},
		{"v=spf1 1up=foo", false, 0},
		{"v=spf1 =all", false, 0},
		{"v=spf1 exists:%{r}.example.com", false, 0},
		{"v=spf1 exists:%{d0}.example.com", false, 0},
		{"v=spf1 exists:%(ir).example.com", false, 0},
		{"v=spf1 a\r -all", false, 0},
		{"v=spf1 a\t-all", false, 0},
		{"v=spf1 a:caf\xc3\xa9.example", false, 0},
		{"v=spf1 " + strings.Repeat("a ", 600), false, 0},
		{"v=spf1 " + strings.Repeat("x", spfMaxRecordLen), false, 0},
	}
	for _, tc := range tests {
		r, err := spfParse(tc.rec)
		if (err == nil) != tc.ok {
			t.Errorf("spfParse(%q): err = %v, want ok=%v", spfClip(tc.rec), err, tc.ok)
			continue
		}
		if err == nil && len(r.terms) != tc.terms {
			t.Errorf("spfParse(%q): %d terms, want %d", tc.rec, len(r.terms), tc.terms)
		}
	}
}

func TestSPFParseCIDR(t *testing.T) {
	r, err := spfParse("v=spf1 a:example.com/24//64 mx//0 ip4:192.0.2.77/24 ip6:2001:DB8::1/32")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.terms[0]; got.cidr4 != 24 || got.cidr6 != 64 {
		t.Errorf("a: cidr %d/%d, want 24/64", got.cidr4, got.cidr6)
	}
	if got := r.terms[1]; got.cidr4 != 32 || got.cidr6 != 0 {
		t.Errorf("mx: cidr %d/%d, want 32/0", got.cidr4, got.cidr6)
	}
	if got := r.terms[2].net.String(); got != "192.0.2.0/24" {
		t.Errorf("ip4: %s", got)
	}
	if got := r.terms[3].net.String(); got != "2001:db8::/32" {
		t.Errorf("ip6: %s", got)
	}
}

// TestSPFMacroExpansion uses the examples of RFC 7208 7.4.
func TestSPFMacroExpansion(t *testing.T) {
	env4 := spfTestEnv{
		's': "strong-bad@email.example.com", 'l': "strong-bad", 'o': "email.example.com",
		'i': "192.0.2.3", 'v': "in-addr", 'h': "mx.example.org", 'c': "192.0.2.3",
	}
	env6 := spfTestEnv{
		's': "strong-bad@email.example.com", 'l': "strong-bad", 'o': "email.example.com",
		'i': spfDottedIP(netip.MustParseAddr("2001:db8::cb01")), 'v': "ip6",
	}
	tests := []struct {
		env  spfTestEnv
		in   string
		want string
	}{
		{env4, "%{s}", "strong-bad@email.example.com"},
		{env4, "%{o}", "email.example.com"},
		{env4, "%{d}", "email.example.com"},
		{env4, "%{d4}", "email.example.com"},
		{env4, "%{d3}", "email.example.com"},
		{env4, "%{d2}", "example.com"},
		{env4, "%{d1}", "com"},
		{env4, "%{dr}", "com.example.email"},
		{env4, "%{d2r}", "example.email"},
		{env4, "%{l}", "strong-bad"},
		{env4, "%{l-}", "strong.bad"},
		{env4, "%{lr}", "strong-bad"},
		{env4, "%{lr-}", "bad.strong"},
		{env4, "%{l1r-}", "strong"},
		{env4, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"},
		{env4, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"},
		{env4, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
		{env4, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"},
		{env4, "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"},
		{env6, "%{ir}.%{v}._spf.%{d2}", "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf.example.com"},
		{env4, "%{d999999999999999999999}", "email.example.com"},
		{env4, "a%%b%_c%-d.example.com", "a%b c%20d.example.com"},
		{env4, "%{S}", "strong-bad%40email.example.com"},
		{env4, "x.example.com.", "x.example.com"},
	}
	for _, tc := range tests {
		m, err := spfDomainSpec(tc.in)
		if err != nil {
			t.Errorf("spfDomainSpec(%q): %v", tc.in, err)
			continue
		}
		got, err := m.expand(tc.env, "email.example.com", true)
		if err != nil || got != tc.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}

	// RFC 7208 7.3: domain-spec expansions longer than 253 lose labels
	// from the left; explanations keep their trailing dot.
	long := spfTestEnv{'l': strings.Repeat("abcdefghi.", 60)}
	m, err := spfDomainSpec("%{l}example.com")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := m.expand(long, "d.example", true)
	if len(got) > spfMaxDomainLen || !strings.HasSuffix(got, "abcdefghi.example.com") || strings.HasPrefix(got, ".") {
		t.Errorf("long expansion %d bytes: %q", len(got), got)
	}
	em, _, err := spfMacroString("Denied: %{c} by %{r} at %{t}.", true)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = em.expand(spfTestEnv{'c': "192.0.2.3", 'r': "mx.corp.example", 't': "1700000000"}, "d.example", false)
	if got != "Denied: 192.0.2.3 by mx.corp.example at 1700000000." {
		t.Errorf("explanation = %q", got)
	}
	em, _, _ = spfMacroString(strings.Repeat("%{s}", 200), true)
	got, _ = em.expand(env4, "d.example", false)
	if len(got) != spfMaxExpLen {
		t.Errorf("explanation not bounded: %d bytes", len(got))
	}
}

// spfTestServer starts a DNS server with records and a resolver on it.
func spfTestServer(t testing.TB, cacheSize int, records ...string) (*testenv.DNS, *resolver.Resolver) {
	t.Helper()
	d := testenv.StartDNS(t)
	d.AddRR(t, records...)
	r, err := resolver.New(resolver.Config{Servers: []string{d.Addr()}, Timeout: 2 * time.Second, CacheSize: cacheSize})
	if err != nil {
		t.Fatal(err)
	}
	return d, r
}

func TestCheckSPF(t *testing.T) {
	d, r := spfTestServer(t, -1,
		`example.org. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 include:_spf.example.net a:mail.example.org mx -all"`,
		`_spf.example.net. 300 IN TXT "v=spf1 ip6:2001:db8:1::/48 ~all"`,
		`mail.example.org. 300 IN A 198.51.100.7`,
		`example.org. 300 IN MX 10 mx1.example.org.`,
		`mx1.example.org. 300 IN A 198.51.100.25`,
		`mx1.example.org. 300 IN AAAA 2001:db8:2::25`,
		`helo.example.org. 300 IN TXT "v=spf1 a -all"`,
		`helo.example.org. 300 IN A 203.0.113.9`,
		`exp.example.org. 300 IN TXT "v=spf1 -all exp=why.%{d}"`,
		`why.exp.example.org. 300 IN TXT "%{i} is not allowed to send for %{o} (see %{r}, %{l})"`,
		`redir.example.org. 300 IN TXT "v=spf1 redirect=example.org"`,
		`two.example.org. 300 IN TXT "v=spf1 -all"`,
		`two.example.org. 300 IN TXT "v=spf1 +all"`,
		`loop.example.org. 300 IN TXT "v=spf1 include:loop.example.org"`,
		`slow.example.org. 300 IN TXT "v=spf1 a:slow-a.example.org -all"`,
		`broken.example.org. 300 IN TXT "v=spf1 a:servfail.example.org -all"`,
		`void.example.org. 300 IN TXT "v=spf1 a:n1.example.org a:n2.example.org a:n3.example.org -all"`,
		`pmacro.example.org. 300 IN TXT "v=spf1 exists:%{p}.allow.example.org -all"`,
		`7.100.51.198.in-addr.arpa. 300 IN PTR mail.example.org.`,
		`mail.example.org.allow.example.org. 300 IN A 127.0.0.2`,
	)
	d.SetRcode("servfail.example.org", dns.TypeA, dns.RcodeServerFailure)
	d.SetTimeout("slow-a.example.org", dns.TypeA)

	tests := []struct {
		name           string
		ip, helo, from string
		opts           SPFOptions
		want           SPFResult
	}{
		{"ip4 match", "192.0.2.10", "x.example", "alice@example.org", SPFOptions{},
			SPFResult{Result: "pass", Domain: "example.org", Identity: "mailfrom", Mechanism: "ip4:192.0.2.0/24"}},
		{"include softfail does not match; a matches", "198.51.100.7", "x.example", "<alice@Example.ORG>", SPFOptions{},
			SPFResult{Result: "pass", Domain: "example.org", Identity: "mailfrom", Mechanism: "a:mail.example.org", Lookups: 2}},
		{"include pass", "2001:db8:1::5", "x.example", "alice@example.org", SPFOptions{},
			SPFResult{Result: "pass", Domain: "example.org", Identity: "mailfrom", Mechanism: "include:_spf.example.net", Lookups: 1}},
		{"mx ip6", "2001:db8:2::25", "x.example", "alice@example.org", SPFOptions{},
			SPFResult{Result: "pass", Domain: "example.org", Identity: "mailfrom", Mechanism: "mx", Lookups: 3}},
		{"ipv4-mapped is ipv4", "::ffff:198.51.100.25", "x.example", "alice@example.org", SPFOptions{},
			SPFResult{Result: "pass", Domain: "example.org", Identity: "mailfrom", Mechanism: "mx", Lookups: 3}},
		{"fail", "203.0.113.1", "x.example", "alice@example.org", SPFOptions{},
			SPFResult{Result: "fail", Domain: "example.org", Identity: "mailfrom", Mechanism: "-all", Lookups: 3}},
		{"null sender uses helo", "203.0.113.9", "helo.example.org", "", SPFOptions{},
			SPFResult{Result: "pass", Domain: "helo.example.org", Identity: "helo", Mechanism: "a", Lookups: 1}},
		{"null sender helo fail", "203.0.113.10", "helo.example.org.", "<>", SPFOptions{},
			SPFResult{Result: "fail", Domain: "helo.example.org", Identity: "helo", Mechanism: "-all", Lookups: 1}},
		{"explanation", "2001:db8::1", "x.example", "bob@exp.example.org", SPFOptions{ReceiverName: "mx.corp.example"},
			SPFResult{Result: "fail", Domain: "exp.example.org", Identity: "mailfrom", Mechanism: "-all",
				Explanation: "2.0.0.1.0.D.B.8.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1 is not allowed to send for exp.example.org (see mx.corp.example, bob)"}},
		{"redirect", "192.0.2.1", "x.example", "a@redir.example.org", SPFOptions{},
			SPFResult{Result: "pass", Domain: "redir.example.org", Identity: "mailfrom", Mechanism: "ip4:192.0.2.0/24", Lookups: 1}},
		{"no record", "192.0.2.1", "x.example", "a@nothing.example.org", SPFOptions{},
			SPFResult{Result: "none", Domain: "nothing.example.org", Identity: "mailfrom"}},
		{"single label", "192.0.2.1", "x.example", "a@localhost", SPFOptions{},
			SPFResult{Result: "none", Domain: "localhost", Identity: "mailfrom"}},
		{"two records", "192.0.2.1", "x.example", "a@two.example.org", SPFOptions{},
			SPFResult{Result: "permerror", Domain: "two.example.org", Identity: "mailfrom"}},
		{"include loop", "192.0.2.1", "x.example", "a@loop.example.org", SPFOptions{},
			SPFResult{Result: "permerror", Domain: "loop.example.org", Identity: "mailfrom", Mechanism: "include:loop.example.org", Lookups: 11}},
		{"servfail", "192.0.2.1", "x.example", "a@broken.example.org", SPFOptions{},
			SPFResult{Result: "temperror", Domain: "broken.example.org", Identity: "mailfrom", Mechanism: "a:servfail.example.org", Lookups: 1}},
		{"deadline", "192.0.2.1", "x.example", "a@slow.example.org", SPFOptions{Timeout: 300 * time.Millisecond},
			SPFResult{Result: "temperror", Domain: "slow.example.org", Identity: "mailfrom", Mechanism: "a:slow-a.example.org", Lookups: 1}},
		{"void limit", "192.0.2.1", "x.example", "a@void.example.org", SPFOptions{},
			SPFResult{Result: "permerror", Domain: "void.example.org", Identity: "mailfrom", Mechanism: "a:n3.example.org", Lookups: 3}},
		{"p macro", "198.51.100.7", "x.example", "a@pmacro.example.org", SPFOptions{},
			SPFResult{Result: "pass", Domain: "pmacro.example.org", Identity: "mailfrom", Mechanism: "exists:%{p}.allow.example.org", Lookups: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckSPF(context.Background(), r, netip.MustParseAddr(tc.ip), tc.helo, tc.from, tc.opts)
			reason := got.Reason
			got.Reason = ""
			if got != tc.want {
				t.Errorf("got  %+v (reason %q)\nwant %+v", got, reason, tc.want)
			}
			if (got.Result == SPFPermerror || got.Result == SPFTemperror) && reason == "" {
				t.Errorf("%s without a reason", got.Result)
			}
		})
	}
}

// TestSPFResolverTimeout: a server that never answers is temperror even
// when the check's own deadline is far away.
func TestSPFResolverTimeout(t *testing.T) {
	d := testenv.StartDNS(t)
	d.SetTimeout("silent.example.org", dns.TypeTXT)
	r, err := resolver.New(resolver.Config{Servers: []string{d.Addr()}, Timeout: 200 * time.Millisecond, Attempts: 1, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	got := CheckSPF(context.Background(), r, netip.MustParseAddr("192.0.2.1"), "h.example", "a@silent.example.org", SPFOptions{})
	if got.Result != SPFTemperror || !strings.Contains(got.Reason, "timeout") {
		t.Errorf("got %+v, want temperror with a timeout reason", got)
	}
}

func TestSPFMacroTimeAndJSON(t *testing.T) {
	_, r := spfTestServer(t, -1,
		`t.example.org. 300 IN TXT "v=spf1 -all exp=e.t.example.org"`,
		`e.t.example.org. 300 IN TXT "at %{t} for %{s}, %{h}"`,
	)
	now := func() time.Time { return time.Unix(1700000000, 0) }
	got := CheckSPF(context.Background(), r, netip.MustParseAddr("192.0.2.1"), "helo.example", "@t.example.org", SPFOptions{Now: now})
	if want := "at 1700000000 for postmaster@t.example.org, helo.example"; got.Explanation != want {
		t.Errorf("explanation %q, want %q", got.Explanation, want)
	}
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"result":"fail","domain":"t.example.org","identity":"mailfrom","mechanism":"-all","explanation":"at 1700000000 for postmaster@t.example.org, helo.example","lookups":0}`; string(b) != want {
		t.Errorf("json %s\nwant %s", b, want)
	}
}

func TestSPFBadInput(t *testing.T) {
	_, r := spfTestServer(t, -1)
	for _, tc := range []struct {
		ip, helo, from, want string
	}{
		{"", "h.example", "a@example.org", SPFPermerror},
		{"192.0.2.1", "h.example", "a@[192.0.2.1]", SPFNone},
		{"192.0.2.1", "[192.0.2.1]", "", SPFNone},
		{"192.0.2.1", "h.example", "a@" + strings.Repeat("x", 64) + ".example", SPFNone},
		{"192.0.2.1", "h.example", "a@" + strings.Repeat("x.", 200) + "example", SPFNone},
		{"192.0.2.1", "h.example", strings.Repeat("a", 2000) + "@example.org", SPFNone},
		{"192.0.2.1", "h.example", "a@b..example", SPFNone},
		{"192.0.2.1", "h.example", "a@exa\x00mple.org", SPFNone},
	} {
		var ip netip.Addr
		if tc.ip != "" {
			ip = netip.MustParseAddr(tc.ip)
		}
		got := CheckSPF(context.Background(), r, ip, tc.helo, tc.from, SPFOptions{})
		if got.Result != tc.want || got.Reason == "" {
			t.Errorf("CheckSPF(%q, %q, %q) = %+v, want %s with a reason", tc.ip, tc.helo, spfClip(tc.from), got, tc.want)
		}
	}
}

// BenchmarkCheckSPF: a warm-cache check walking include, a, mx and ip4
// through the real resolver (cache on) against the test DNS server.
func BenchmarkCheckSPF(b *testing.B) {
	_, r := spfTestServer(b, 0,
		`bench.example. 300 IN TXT "v=spf1 include:_spf.bench.example a mx ip4:192.0.2.0/24 -all"`,
		`_spf.bench.example. 300 IN TXT "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/32 ~all"`,
		`bench.example. 300 IN A 203.0.113.1`,
		`bench.example. 300 IN MX 10 mx.bench.example.`,
		`mx.bench.example. 300 IN A 203.0.113.2`,
	)
	ip := netip.MustParseAddr("192.0.2.55")
	ctx := context.Background()
	if res := CheckSPF(ctx, r, ip, "h.example", "alice@bench.example", SPFOptions{}); res.Result != SPFPass || res.Mechanism != "ip4:192.0.2.0/24" {
		b.Fatalf("warm-up: %+v", res)
	}
	b.ReportAllocs()
	for b.Loop() {
		if res := CheckSPF(ctx, r, ip, "h.example", "alice@bench.example", SPFOptions{}); res.Result != SPFPass {
			b.Fatalf("%+v", res)
		}
	}
}
