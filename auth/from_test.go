package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestParseHeaderFrom(t *testing.T) {
	tests := []struct {
		values       []string
		addr, domain string
		err          error
	}{
		{[]string{"alice@example.org"}, "alice@example.org", "example.org", nil},
		{[]string{"Alice <Alice@EXAMPLE.Org>"}, "Alice@example.org", "example.org", nil},
		{[]string{`"Test, User" <test@example.com>`}, "test@example.com", "example.com", nil},
		{[]string{"John Q. Public <jqp@example.org>"}, "jqp@example.org", "example.org", nil},
		{[]string{"alice@example.org (Alice)"}, "alice@example.org", "example.org", nil},
		{[]string{"=?utf-8?q?Al=C3=AFce?= <a@example.org>"}, "a@example.org", "example.org", nil},
		{[]string{"Alice\r\n <alice@example.org>"}, "alice@example.org", "example.org", nil},
		{[]string{"alice@example.org."}, "", "", ErrBadFrom},
		{[]string{"Jörg <jörg@bücher.example>"}, "jörg@xn--bcher-kva.example", "xn--bcher-kva.example", nil},
		{[]string{"a@XN--BCHER-KVA.example"}, "a@xn--bcher-kva.example", "xn--bcher-kva.example", nil},
		{[]string{"g: alice@example.org;"}, "alice@example.org", "example.org", nil},
		{[]string{"root@localhost"}, "root@localhost", "localhost", nil},

		{nil, "", "", ErrNoFrom},
		{[]string{"a@example.org", "b@example.org"}, "", "", ErrMultipleFrom},
		{[]string{"a@example.org, b@example.org"}, "", "", ErrMultipleMailboxes},
		{[]string{"Bad User <spoof@example.org>,Test User <test@example.com>"}, "", "", ErrMultipleMailboxes},
		{[]string{"undisclosed-recipients:;"}, "", "", ErrMultipleMailboxes},
		{[]string{""}, "", "", ErrBadFrom},
		{[]string{"   "}, "", "", ErrBadFrom},
		{[]string{`"Test User"`}, "", "", ErrBadFrom},
		{[]string{"alice"}, "", "", ErrBadFrom},
		{[]string{"alice@"}, "", "", ErrBadFrom},
		{[]string{"a@[192.0.2.1]"}, "", "", ErrBadFrom},
		{[]string{"a@exa mple.org"}, "", "", ErrBadFrom},
		{[]string{"a@example..org"}, "", "", ErrBadFrom},
		{[]string{"a@-x.example/org"}, "", "", ErrBadFrom},
		{[]string{"a@" + strings.Repeat("x", 64) + ".example"}, "", "", ErrBadFrom},
		{[]string{"a@" + strings.Repeat("abcdefghi.", 26) + "example"}, "", "", ErrBadFrom},
		{[]string{strings.Repeat("x", 300) + "@example.org"}, "", "", ErrBadFrom},
		{[]string{strings.Repeat(" ", 5000) + "a@example.org"}, "", "", ErrBadFrom},
		{[]string{"<a@example.org> trailing"}, "", "", ErrBadFrom},
	}
	for _, tc := range tests {
		addr, domain, err := ParseHeaderFrom(tc.values)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%q: error %v, want %v", tc.values, err, tc.err)
			}
			continue
		}
		if err != nil || addr != tc.addr || domain != tc.domain {
			t.Errorf("%q: got %q %q %v, want %q %q", tc.values, addr, domain, err, tc.addr, tc.domain)
		}
	}
}

func FuzzParseHeaderFrom(f *testing.F) {
	for _, s := range []string{"alice@example.org", "Alice <a@EXAMPLE.org>", `"x, y" <a@b.example>`, "g: a@b.example;",
		"a@bücher.example", "=?utf-8?q?x?= <a@b.example>", "a@[1.2.3.4]", "(c) a@b.example (d)", "a@b.example, c@d.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		addr, domain, err := ParseHeaderFrom([]string{v})
		if err != nil {
			if !errors.Is(err, ErrBadFrom) && !errors.Is(err, ErrMultipleMailboxes) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if domain == "" || !strings.HasSuffix(addr, "@"+domain) || domain != strings.ToLower(domain) {
			t.Fatalf("%q: addr %q domain %q", v, addr, domain)
		}
		if fromCheckHostname(domain) != nil || len(domain) > fromMaxDomainLen {
			t.Fatalf("%q: unusable domain %q", v, domain)
		}
	})
}
