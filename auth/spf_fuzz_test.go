package auth

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzSPFParse feeds arbitrary text to the record parser, the macro-string
// and domain-spec parsers and the expander: none may panic, and every
// expanded domain-spec must fit in 253 bytes (RFC 7208 7.3) while every
// explanation stays within its bound.
//
//	go test ./auth/ -run '^$' -fuzz FuzzSPFParse -fuzztime 60s
func FuzzSPFParse(f *testing.F) {
	for _, s := range []string{
		"v=spf1 -all",
		"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a/24//64 mx:%{d} ptr exists:%{ir}.%{v}._spf.%{d2} include:_spf.example.com ~all",
		"v=spf1 redirect=%{d}.d.spf.example.com. exp=%{l2r+-}.%{o}",
		"v=spf1 foo=%{x} a:%%%_%-.example.com",
		"v=spf1 a:foo:bar/baz.example.com/24//128",
		"%{s}.%{l}.%{o}.%{d}.%{i}.%{p}.%{v}.%{h}.%{c}.%{r}.%{t}",
		"%{d999999999999}%{L1r-.+,/_=}%{S}",
		"v=spf1 " + strings.Repeat("%{s}", 50) + ".example.com",
		"v=spf1 a:\x00 \x80 \xff",
		"%",
		"%{",
		"v=spf1 ip6:::ffff:1.2.3.4/128",
	} {
		f.Add(s)
	}
	env := spfTestEnv{
		's': strings.Repeat("local-part.", 30) + "@" + strings.Repeat("label.", 40) + "example",
		'l': strings.Repeat("local-part.", 30),
		'o': strings.Repeat("label.", 40) + "example",
		'i': spfDottedIP(netip.MustParseAddr("2001:db8::1")),
		'v': "ip6", 'h': "helo.example", 'c': "2001:db8::1", 'r': "mx.example", 't': "1700000000", 'p': "unknown",
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 4*spfMaxRecordLen {
			return
		}
		for _, rec := range []string{s, "v=spf1 " + s} {
			r, err := spfParse(rec)
			if err != nil {
				continue
			}
			var specs []spfMacro
			for _, term := range r.terms {
				if term.domain != nil {
					specs = append(specs, term.domain)
				}
			}
			specs = append(specs, r.redirect, r.exp)
			for _, m := range specs {
				if m == nil {
					continue
				}
				out, err := m.expand(env, "example.org", true)
				if err == nil && len(out) > spfMaxDomainLen {
					t.Fatalf("domain-spec expanded to %d bytes", len(out))
				}
			}
		}
		if m, err := spfDomainSpec(s); err == nil {
			out, err := m.expand(env, "example.org", true)
			if err == nil && len(out) > spfMaxDomainLen {
				t.Fatalf("domain-spec %q expanded to %d bytes", s, len(out))
			}
		}
		if m, _, err := spfMacroString(s, true); err == nil {
			out, err := m.expand(env, "example.org", false)
			if err == nil && len(out) > spfMaxExpLen {
				t.Fatalf("explanation expanded to %d bytes", len(out))
			}
		}
		_ = spfValidDomain(s)
		_ = spfTargetOK(s)
	})
}
