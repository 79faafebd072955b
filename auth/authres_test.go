package auth

import (
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
)

func TestAuthResClaims(t *testing.T) {
	const id = "mx1.corp.example"
	tests := []struct {
		value string
		want  bool
	}{
		{"mx1.corp.example; spf=pass smtp.mailfrom=example.org", true},
		{"MX1.Corp.Example; dkim=pass", true},
		{"mx1.corp.example 1; dkim=pass", true}, // version
		{"mx1.corp.example;", true},
		{"mx1.corp.example", true}, // no results at all
		{"mx1.corp.example; none", true},
		{"mx1.corp.example.; dkim=pass", true},          // trailing dot
		{" \t mx1.corp.example ; dmarc=pass", true},     // leading and trailing WSP
		{"\r\n\tmx1.corp.example;\r\n\tspf=pass", true}, // folded
		{"(forged by us) mx1.corp.example; spf=pass", true},
		{"(nested (comment) with \\) quoted-pair) mx1.corp.example; spf=pass", true},
		{"\r\n (comment\r\n folded) mx1.corp.example(c); spf=pass", true},
		{`"mx1.corp.example"; spf=pass`, true}, // quoted-string authserv-id
		{`"mx1.corp\.example"; spf=pass`, true},
		{"mx1.corp.example(comment); spf=pass", true},
		{"mx1.corp.example/1; spf=pass", true}, // tspecials end the token
		{"mx1.corp.example:x; spf=pass", true},
		{"mx1.corp.example=; spf=pass", true},

		{"mx1.corp.example.evil; spf=pass", false}, // look-alikes
		{"evil.mx1.corp.example; spf=pass", false},
		{"mx1-corp.example; spf=pass", false},
		{"mx1.corp.exampl; spf=pass", false},
		{"mx1.corp.example1; spf=pass", false},
		{"xmx1.corp.example; spf=pass", false},
		{"lists.example.org; arc=none; spf=pass smtp.mfrom=jqd@d1.example; dkim=pass header.i=@mx1.corp.example; dmarc=pass", false},
		{"other.example; spf=pass (mx1.corp.example)", false},
		{"(mx1.corp.example) other.example; spf=pass", false}, // the id in a comment is not the id
		{"", false},
		{"   ", false},
		{"(unterminated comment mx1.corp.example; spf=pass", false},
		{`"mx1.corp.example; spf=pass`, false}, // unterminated quote
		{"; mx1.corp.example", false},
		{"foo@mx1.corp.example; spf=pass", false},
	}
	for _, tc := range tests {
		if got := AuthResClaims(tc.value, id); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.value, got, tc.want)
		}
	}
	if AuthResClaims("mx1.corp.example; spf=pass", "") {
		t.Error("an empty authserv-id claims everything")
	}
	if !AuthResClaims("mx1.corp.example; spf=pass", "MX1.corp.example.") {
		t.Error("configured id with trailing dot and case")
	}
}

func FuzzAuthResClaims(f *testing.F) {
	for _, s := range []string{"mx1.corp.example; spf=pass", "(c) mx1.corp.example 1;", `"mx1.corp.example";`, "(a(b)c) x; y", "\r\n\tid;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		id, ok := authResServID(v)
		if !ok {
			if AuthResClaims(v, "mx1.corp.example") {
				t.Fatal("claims without an id")
			}
			return
		}
		if id == "" {
			t.Fatal("empty id reported as found")
		}
		// Whatever the value claims, it claims it for itself.
		if id != "." && id == strings.TrimSpace(id) && !strings.ContainsAny(id, "\\\"") && !AuthResClaims(v, id) {
			t.Fatalf("%q: id %q does not claim itself", v, id)
		}
	})
}

func TestFormatAuthResults(t *testing.T) {
	dk := []DKIMResult{
		{Result: "pass", Domain: "example.org", Selector: "sel1", Algorithm: "rsa-sha256", HeaderB: "AbCdEfGhIjKl", Identifier: "@example.org"},
		{Result: "fail", Domain: "evil\r\nX-Injected: yes", Selector: `s"e\l`, Algorithm: "ed25519-sha256", HeaderB: "zzzzzzzzzzzz", Reason: "body hash did not verify"},
	}
	dm := DMARCResult{Result: "pass", Policy: "reject", Domain: "sub.example.org", PolicyDomain: "example.org"}
	got := FormatAuthResults("mx1.corp.example", AuthResSPF{Result: "pass", MailFrom: "alice@example.org", Helo: "mail.example.org"}, dk, dm)

	// No line may be long, and no injected line may appear.
	for _, line := range strings.Split(got, "\r\n") {
		if len(line) > 78 {
			t.Errorf("line of %d octets: %q", len(line), line)
		}
		if strings.HasPrefix(line, "X-Injected") {
			t.Errorf("header injection: %q", got)
		}
		if line != "" && line != strings.Split(got, "\r\n")[0] && line[0] != '\t' {
			t.Errorf("continuation line without WSP: %q", line)
		}
	}
	if strings.ContainsAny(strings.ReplaceAll(got, "\r\n\t", ""), "\r\n") {
		t.Errorf("bare CR/LF: %q", got)
	}
	// It parses back with go-msgauth, with what we put in.
	unfolded := strings.ReplaceAll(got, "\r\n", "")
	id, results, err := authres.Parse(unfolded)
	if err != nil || id != "mx1.corp.example" || len(results) != 4 {
		t.Fatalf("parse %q: %q %d %v", unfolded, id, len(results), err)
	}
	if !AuthResClaims(got, "mx1.corp.example") {
		t.Error("our own header does not claim our id")
	}
	for _, want := range []string{
		"spf=pass smtp.helo=mail.example.org smtp.mailfrom=alice@example.org",
		"dkim=pass header.a=rsa-sha256 header.b=AbCdEfGhIjKl header.d=example.org header.i=@example.org header.s=sel1",
		`dkim=fail reason="body hash did not verify"`,
		"dmarc=pass header.from=sub.example.org polrec.domain=example.org polrec.p=reject",
	} {
		if !strings.Contains(strings.ReplaceAll(unfolded, "\t", " "), want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}

	// Resolver addresses do not leak into the header.
	got = FormatAuthResults("mx", AuthResSPF{}, []DKIMResult{{Result: "permerror", Domain: "example.org",
		Reason: "no key for signature: lookup s._domainkey.example.org on 10.1.2.3:53: no such host"}},
		DMARCResult{Result: "temperror", Domain: "example.org", Reason: "dmarc _dmarc.example.org: lookup _dmarc.example.org on [fd00::53]:53: server misbehaving"})
	if strings.Contains(got, "10.1.2.3") || strings.Contains(got, "fd00") || !strings.Contains(got, "lookup s._domainkey.example.org: no such host") {
		t.Errorf("resolver address in %q", got)
	}

	// No DKIM signature at all: dkim=none; no SPF result: no spf.
	got = FormatAuthResults("mx1.corp.example", AuthResSPF{}, nil, DMARCResult{Result: "none", Domain: "example.org"})
	if want := "mx1.corp.example;\r\n\tdkim=none;\r\n\tdmarc=none header.from=example.org"; got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
