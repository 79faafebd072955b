package auth

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/mail"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/resolver"
)

// dmarcZone is the DNS data of the DMARC table. Names that must exist carry
// an A record; everything else is NXDOMAIN.
var dmarcZone = []string{
	`_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:d@example.org"`,
	`example.org. 300 IN A 192.0.2.1`,
	`sub.example.org. 300 IN A 192.0.2.1`,
	`bounce.example.org. 300 IN A 192.0.2.1`,

	`_dmarc.strict.test. 300 IN TXT "v=DMARC1; p=quarantine; aspf=s; adkim=s"`,
	`strict.test. 300 IN A 192.0.2.1`,

	// sp / np
	`_dmarc.sp.test. 300 IN TXT "v=DMARC1; p=reject; sp=quarantine; np=none"`,
	`sub.sp.test. 300 IN A 192.0.2.1`,
	`_dmarc.sponly.test. 300 IN TXT "v=DMARC1; p=reject; sp=quarantine"`,
	`_dmarc.ponly.test. 300 IN TXT "v=DMARC1; p=reject"`,
	`sub.ponly.test. 300 IN MX 10 mx.ponly.test.`,
	`nodata.ponly.test. 300 IN MX 10 mx.ponly.test.`,

	// A public suffix operator (RFC 9989 example with bank.example).
	`_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject; sp=quarantine; np=reject; psd=y"`,
	`_dmarc.giant.bank.example. 300 IN TXT "v=DMARC1; p=none"`,
	`giant.bank.example. 300 IN A 192.0.2.1`,
	`x.mega.bank.example. 300 IN A 192.0.2.1`,

	// psd=n stops the walk below a parent that forgot psd=y.
	`_dmarc.corp.psdn.test. 300 IN TXT "v=DMARC1; p=quarantine; psd=n"`,
	`_dmarc.psdn.test. 300 IN TXT "v=DMARC1; p=reject"`,
	`a.corp.psdn.test. 300 IN A 192.0.2.1`,

	// Deep names: the walk jumps from 11 labels to 7, so the record at
	// 10 labels is never seen.
	`_dmarc.deep.test. 300 IN TXT "v=DMARC1; p=quarantine"`,
	`_dmarc.b.c.d.e.f.g.h.i.deep.test. 300 IN TXT "v=DMARC1; p=none"`,
	`a.b.c.d.e.f.g.h.i.deep.test. 300 IN A 192.0.2.1`,

	// Multiple records at one name are all discarded.
	`_dmarc.multi.test. 300 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.multi.test. 300 IN TXT "v=DMARC1; p=none"`,
	`_dmarc.sub.multi2.test. 300 IN TXT "v=DMARC1; p=none"`,
	`_dmarc.sub.multi2.test. 300 IN TXT "v=DMARC1; p=none; t=y"`,
	`_dmarc.multi2.test. 300 IN TXT "v=DMARC1; p=quarantine"`,
	`sub.multi2.test. 300 IN A 192.0.2.1`,
	// A non-DMARC TXT next to the record does not count as a second one.
	`_dmarc.mixed.test. 300 IN TXT "v=spf1 -all"`,
	`_dmarc.mixed.test. 300 IN TXT "v=DMARC1; p=reject"`,

	// Syntax.
	`_dmarc.badp.test. 300 IN TXT "v=DMARC1; p=bogus"`,
	`_dmarc.badprua.test. 300 IN TXT "v=DMARC1; p=bogus; rua=mailto:d@badprua.test"`,
	`_dmarc.badsp.test. 300 IN TXT "v=DMARC1; p=reject; sp=maybe"`,
	`_dmarc.vcase.test. 300 IN TXT "v=dmarc1; p=reject"`,
	`_dmarc.vnotfirst.test. 300 IN TXT "p=reject; v=DMARC1"`,
	`_dmarc.nop.test. 300 IN TXT "v=DMARC1; rua=mailto:d@nop.test"`,
	`_dmarc.junk.test. 300 IN TXT "v=DMARC1; p=Reject; adkim=x; aspf=; foo=bar; ;; =; t=maybe; psd=q"`,
	`_dmarc.spaces.test. 300 IN TXT "v = DMARC1 ;p = quarantine ; aspf = s"`,
	`_dmarc.pct0.test. 300 IN TXT "v=DMARC1; p=reject; pct=0"`,
	`_dmarc.pct50.test. 300 IN TXT "v=DMARC1; p=quarantine; pct=50; t=y"`,
	`_dmarc.testing.test. 300 IN TXT "v=DMARC1; p=reject; t=y"`,

	// Temporary failures.
	`_dmarc.servfail.test. 300 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.tfparent.test. 300 IN TXT "v=DMARC1; p=reject"`,
	`a.tfparent.test. 300 IN A 192.0.2.1`,
	`_dmarc.slow.test. 300 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.sigfail.example.org. 300 IN TXT "v=DMARC1; p=none"`,
}

func dmarcTestDNS(t testing.TB) (*resolver.Resolver, func() int64) {
	d, r := dkimTestDNS(t, dmarcZone...)
	d.SetRcode("_dmarc.servfail.test.", dns.TypeTXT, dns.RcodeServerFailure)
	d.SetRcode("_dmarc.tfparent.test.", dns.TypeTXT, dns.RcodeServerFailure)
	d.SetTimeout("_dmarc.slow.test.", dns.TypeTXT)
	d.SetRcode("_dmarc.sigfail.example.org.", dns.TypeTXT, dns.RcodeServerFailure)
	return r, d.Queries
}

func TestEvaluateDMARC(t *testing.T) {
	r, _ := dmarcTestDNS(t)
	pass := func(d string) DKIMResult { return DKIMResult{Result: "pass", Domain: d} }
	type want struct {
		result, policy, policyDomain, org string
		spfAligned, dkimAligned, testing  bool
		dkimAlignedEach                   []bool
	}
	tests := []struct {
		name           string
		from           string
		spf, spfDomain string
		dkim           []DKIMResult
		want           want
	}{
		{"spf aligned exact", "example.org", "pass", "example.org", nil,
			want{"pass", "reject", "example.org", "example.org", true, false, false, nil}},
		{"spf aligned relaxed", "example.org", "pass", "bounce.example.org", nil,
			want{"pass", "reject", "example.org", "example.org", true, false, false, nil}},
		{"spf pass unaligned", "example.org", "pass", "example.net", nil,
			want{"fail", "reject", "example.org", "example.org", false, false, false, nil}},
		{"spf fail aligned", "example.org", "fail", "example.org", nil,
			want{"fail", "reject", "example.org", "example.org", false, false, false, nil}},
		{"dkim aligned relaxed parent", "sub.example.org", "none", "", []DKIMResult{pass("example.org")},
			want{"pass", "reject", "example.org", "example.org", false, true, false, []bool{true}}},
		{"dkim unaligned, second aligned", "example.org", "fail", "example.org", []DKIMResult{pass("other.example"), pass("EXAMPLE.org")},
			want{"pass", "reject", "example.org", "example.org", false, true, false, []bool{false, true}}},
		{"dkim fail aligned", "example.org", "none", "", []DKIMResult{{Result: "fail", Domain: "example.org"}},
			want{"fail", "reject", "example.org", "example.org", false, false, false, []bool{true}}},
		{"dkim l= unsigned content does not count", "example.org", "none", "", []DKIMResult{{Result: "pass", Domain: "example.org", BodyLength: true, UnsignedContent: true}},
			want{"fail", "reject", "example.org", "example.org", false, false, false, []bool{true}}},
		{"strict spf subdomain", "strict.test", "pass", "bounce.strict.test", nil,
			want{"fail", "quarantine", "strict.test", "strict.test", false, false, false, nil}},
		{"strict dkim exact", "strict.test", "pass", "bounce.strict.test", []DKIMResult{pass("strict.test")},
			want{"pass", "quarantine", "strict.test", "strict.test", false, true, false, []bool{true}}},
		{"strict dkim parent", "a.strict.test", "none", "", []DKIMResult{pass("strict.test")},
			want{"fail", "quarantine", "strict.test", "strict.test", false, false, false, []bool{false}}},

		// Policy selection: p at the From domain, sp for existing
		// subdomains, np for non-existent ones.
		{"sp existing", "sub.sp.test", "fail", "sub.sp.test", nil,
			want{"fail", "quarantine", "sp.test", "sp.test", false, false, false, nil}},
		{"np non-existent", "nosuch.sp.test", "fail", "nosuch.sp.test", nil,
			want{"fail", "none", "sp.test", "sp.test", false, false, false, nil}},
		{"np absent: sp", "nosuch.sponly.test", "fail", "", nil,
			want{"fail", "quarantine", "sponly.test", "sponly.test", false, false, false, nil}},
		{"sp and np absent: p", "nosuch.ponly.test", "fail", "", nil,
			want{"fail", "reject", "ponly.test", "ponly.test", false, false, false, nil}},
		{"NODATA means it exists", "nodata.ponly.test", "fail", "", nil,
			want{"fail", "reject", "ponly.test", "ponly.test", false, false, false, nil}},
		{"own record under a PSD", "giant.bank.example", "pass", "mail.giant.bank.example", []DKIMResult{pass("mail.mega.bank.example")},
			want{"pass", "none", "giant.bank.example", "giant.bank.example", true, false, false, []bool{false}}},
		{"PSD policy, existing", "x.mega.bank.example", "fail", "", nil,
			want{"fail", "quarantine", "bank.example", "mega.bank.example", false, false, false, nil}},
		{"PSD policy, non-existent", "nosuch.bank.example", "fail", "", nil,
			want{"fail", "reject", "bank.example", "nosuch.bank.example", false, false, false, nil}},
		{"PSD itself", "bank.example", "fail", "", nil,
			want{"fail", "reject", "bank.example", "bank.example", false, false, false, nil}},
		{"psd=n stops the walk", "a.corp.psdn.test", "pass", "corp.psdn.test", nil,
			want{"pass", "quarantine", "corp.psdn.test", "corp.psdn.test", true, false, false, nil}},
		{"psd=n: no alignment across it", "corp.psdn.test", "pass", "other.psdn.test", nil,
			want{"fail", "quarantine", "corp.psdn.test", "corp.psdn.test", false, false, false, nil}},
		{"deep name", "a.b.c.d.e.f.g.h.i.deep.test", "pass", "deep.test", nil,
			want{"pass", "quarantine", "deep.test", "deep.test", true, false, false, nil}},

		{"multiple records: none", "multi.test", "fail", "", nil,
			want{"none", "", "", "multi.test", false, false, false, nil}},
		{"multiple records: parent used", "sub.multi2.test", "fail", "", nil,
			want{"fail", "quarantine", "multi2.test", "multi2.test", false, false, false, nil}},
		{"non-DMARC TXT ignored", "mixed.test", "fail", "", nil,
			want{"fail", "reject", "mixed.test", "mixed.test", false, false, false, nil}},
		{"bad p without rua", "badp.test", "fail", "", nil,
			want{"permerror", "", "badp.test", "badp.test", false, false, false, nil}},
		{"bad p with rua: p=none", "badprua.test", "fail", "", nil,
			want{"fail", "none", "badprua.test", "badprua.test", false, false, false, nil}},
		{"bad sp without rua", "badsp.test", "fail", "", nil,
			want{"permerror", "", "badsp.test", "badsp.test", false, false, false, nil}},
		{"v=dmarc1 is not DMARC1", "vcase.test", "fail", "", nil,
			want{"none", "", "", "vcase.test", false, false, false, nil}},
		{"v not first", "vnotfirst.test", "fail", "", nil,
			want{"none", "", "", "vnotfirst.test", false, false, false, nil}},
		{"p absent: none", "nop.test", "fail", "", nil,
			want{"fail", "none", "nop.test", "nop.test", false, false, false, nil}},
		{"junk tags ignored, defaults", "junk.test", "pass", "a.junk.test", nil,
			want{"pass", "reject", "junk.test", "junk.test", true, false, false, nil}},
		{"spaces around =", "spaces.test", "pass", "a.spaces.test", nil,
			want{"fail", "quarantine", "spaces.test", "spaces.test", false, false, false, nil}},
		{"pct=0 ignored", "pct0.test", "fail", "", nil,
			want{"fail", "reject", "pct0.test", "pct0.test", false, false, false, nil}},
		{"pct=50 ignored, t=y", "pct50.test", "fail", "", nil,
			want{"fail", "quarantine", "pct50.test", "pct50.test", false, false, true, nil}},
		{"t=y", "testing.test", "fail", "", nil,
			want{"fail", "reject", "testing.test", "testing.test", false, false, true, nil}},
		{"no record anywhere", "unknown.example", "pass", "unknown.example", []DKIMResult{pass("unknown.example")},
			want{"none", "", "", "unknown.example", false, false, false, []bool{false}}},

		{"SERVFAIL at the From domain", "servfail.test", "pass", "servfail.test", nil,
			want{"temperror", "", "", "", false, false, false, nil}},
		{"SERVFAIL at a parent", "a.tfparent.test", "pass", "a.tfparent.test", nil,
			want{"temperror", "", "", "", false, false, false, nil}},
		{"timeout", "slow.test", "pass", "slow.test", nil,
			want{"temperror", "", "", "", false, false, false, nil}},
		{"spf temperror aligned, nothing passes", "example.org", "temperror", "example.org", nil,
			want{"temperror", "reject", "example.org", "example.org", false, false, false, nil}},
		{"dkim temperror aligned, nothing passes", "example.org", "fail", "example.org", []DKIMResult{{Result: "temperror", Domain: "example.org"}},
			want{"temperror", "reject", "example.org", "example.org", false, false, false, []bool{true}}},
		{"dkim temperror aligned, spf passes", "example.org", "pass", "example.org", []DKIMResult{{Result: "temperror", Domain: "example.org"}},
			want{"pass", "reject", "example.org", "example.org", true, false, false, []bool{true}}},
		{"signer org walk SERVFAIL", "example.org", "fail", "", []DKIMResult{pass("sigfail.example.org")},
			want{"temperror", "reject", "example.org", "example.org", false, false, false, []bool{false}}},
		{"bad From domain", "", "pass", "", nil,
			want{"permerror", "", "", "", false, false, false, nil}},
		{"IDN From domain", "bücher.example.org", "pass", "xn--bcher-kva.example.org", nil,
			want{"pass", "reject", "example.org", "example.org", true, false, false, nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dk := append([]DKIMResult(nil), tc.dkim...)
			got := EvaluateDMARC(context.Background(), r, tc.from, tc.spf, tc.spfDomain, dk)
			w := tc.want
			if got.Result != w.result || got.Policy != w.policy || got.PolicyDomain != w.policyDomain ||
				got.OrgDomain != w.org || got.SPFAligned != w.spfAligned || got.DKIMAligned != w.dkimAligned || got.Testing != w.testing {
				t.Fatalf("got  %+v\nwant %+v", got, w)
			}
			for i, a := range w.dkimAlignedEach {
				if dk[i].Aligned != a {
					t.Errorf("dkim[%d].Aligned = %v, want %v", i, dk[i].Aligned, a)
				}
			}
			if (got.Result == "temperror" || got.Result == "permerror" || got.Result == "fail") && got.Reason == "" {
				t.Errorf("no reason for %s", got.Result)
			}
		})
	}
}

// TestDMARCTreeWalkQueries: a walk never costs more than 8 queries, whatever
// the number of labels (RFC 9989 DNS Tree Walk), and skips the middle.
func TestDMARCTreeWalkQueries(t *testing.T) {
	d, _ := dkimTestDNS(t, dmarcZone...)
	d.SetRcode("_dmarc.tfparent.test.", dns.TypeTXT, dns.RcodeServerFailure)
	rc, err := resolver.New(resolver.Config{Servers: []string{d.Addr()}, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		domain, org string
		queries     int64
	}{
		{"a.b.c.d.e.f.g.h.i.deep.test", "deep.test", 8},
		{strings.Repeat("x.", 100) + "deep.test", "deep.test", 8},
		{"b.c.d.e.f.g.h.i.deep.test", "deep.test", 8}, // 10 labels: its own record, then 7..1
		{"deep.test", "deep.test", 2},
		{"example.org", "example.org", 2},
		{"test", "test", 1},
	}
	for _, tc := range tests {
		before := d.Queries()
		org, err := OrganizationalDomain(context.Background(), rc, tc.domain)
		if err != nil {
			t.Fatalf("%s: %v", tc.domain, err)
		}
		q := d.Queries() - before
		if org != tc.org || q != tc.queries {
			t.Errorf("%s: org %s after %d queries, want %s after %d", tc.domain, org, q, tc.org, tc.queries)
		}
	}
	if _, err := OrganizationalDomain(context.Background(), rc, "a.tfparent.test"); err == nil {
		t.Error("no error for a SERVFAIL in the walk")
	}
	if _, err := OrganizationalDomain(context.Background(), rc, "bad..name"); err == nil {
		t.Error("no error for an invalid name")
	}
}

// TestDMARCPSLVectors checks the tree walk against the Public Suffix List's
// test vectors: wherever the PSL names a registrable domain E, a DMARC record
// published at E (by its owner), or psd=y at E's parent (by the suffix
// operator), or both, must make the walk find E.
func TestDMARCPSLVectors(t *testing.T) {
	f, err := os.Open(dkimTestdata("psl", "test_psl.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, _ := dkimTestDNS(t)
	r, err := resolver.New(resolver.Config{Servers: []string{d.Addr()}, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^checkPublicSuffix\('([^']*)', '([^']*)'\);`)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := re.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue // comments, null input or null result: no organizational domain to find
		}
		input, want := m[1], m[2]
		if strings.HasPrefix(input, ".") {
			continue
		}
		wantA, err := fromNormalizeDomain(want)
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		suffix := wantA[strings.IndexByte(wantA, '.')+1:]
		for _, variant := range []string{"owner", "operator", "both"} {
			d.Reset()
			if variant != "operator" {
				d.AddRR(t, "_dmarc."+wantA+". 300 IN TXT \"v=DMARC1; p=none\"")
			}
			if variant != "owner" {
				d.AddRR(t, "_dmarc."+suffix+". 300 IN TXT \"v=DMARC1; p=reject; psd=y\"")
			}
			got, err := OrganizationalDomain(context.Background(), r, input)
			if err != nil || got != wantA {
				t.Errorf("%s (%s records): org %q, %v; want %q", input, variant, got, err, wantA)
			}
		}
		n++
	}
	if n < 50 {
		t.Fatalf("only %d vectors used", n)
	}
}

// TestDMARCAuthheaders runs authheaders' messages through From extraction,
// DKIM and DMARC.
func TestDMARCAuthheaders(t *testing.T) {
	key := strings.TrimSpace(string(dkimReadFile(t, "dmarc", "authheaders", "test.txt")))
	_, r := dkimTestDNS(t,
		dkimTXT("test._domainkey.example.com.", key),
		`_dmarc.example.com. 300 IN TXT "v=DMARC1; p=reject"`,
	)
	tests := []struct {
		file    string
		fromErr error
		domain  string
		dkim    string
		dmarc   string
	}{
		{"test.message", nil, "example.com", "", "fail"},
		{"test.message_signed", nil, "example.com", "pass", "pass"},
		{"testcomma.message", nil, "example.com", "pass", "pass"},
		{"test.message_multi", ErrMultipleMailboxes, "", "", ""},
		{"test.message_multi2", ErrMultipleMailboxes, "", "", ""},
		{"test.nofrom.message", ErrBadFrom, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			raw := dkimReadFile(t, "dmarc", "authheaders", tc.file)
			m, err := mail.ReadMessage(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			_, domain, err := ParseHeaderFrom(m.Header["From"])
			if tc.fromErr != nil {
				if !errors.Is(err, tc.fromErr) {
					t.Fatalf("From error %v, want %v", err, tc.fromErr)
				}
				return
			}
			if err != nil || domain != tc.domain {
				t.Fatalf("From domain %q, %v", domain, err)
			}
			dk, err := VerifyDKIM(context.Background(), r, bytes.NewReader(raw), DKIMOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(dkimResultWords(dk), ","); got != tc.dkim {
				t.Fatalf("dkim %q, want %q (%+v)", got, tc.dkim, dk)
			}
			res := EvaluateDMARC(context.Background(), r, domain, "none", "", dk)
			if res.Result != tc.dmarc {
				t.Fatalf("dmarc %+v, want %s", res, tc.dmarc)
			}
		})
	}
}

func TestParseDMARCRecord(t *testing.T) {
	tests := []struct {
		txt   string
		ok    bool
		check func(*dmarcRecord) bool
	}{
		{"v=DMARC1", true, func(r *dmarcRecord) bool { return r.p == "" && r.adkim == 'r' && r.aspf == 'r' && r.psd == 'u' }},
		{"v=DMARC1;", true, nil},
		{"V=DMARC1; P=REJECT", true, func(r *dmarcRecord) bool { return r.p == "reject" }},
		{"v=DMARC1; p=none; p=reject", true, func(r *dmarcRecord) bool { return r.p == "none" }},
		{"v=DMARC1; rua=ftp:, mailto:a@b.example", true, func(r *dmarcRecord) bool { return r.validRUA }},
		{"v=DMARC1; rua=not a uri", true, func(r *dmarcRecord) bool { return !r.validRUA }},
		{"v=DMARC1; pct=0", true, func(r *dmarcRecord) bool { return r.hasPct && !r.testing }},
		{"v=DMARC1; np=bogus", true, func(r *dmarcRecord) bool { return r.badPolicy == "np" }},
		{"v=DMARC2; p=reject", false, nil},
		{"v=DMARC1x", false, nil},
		{"", false, nil},
		{"spf1", false, nil},
		{strings.Repeat("v=DMARC1;", 1000), false, nil},
	}
	for _, tc := range tests {
		rec, ok := parseDMARCRecord(tc.txt)
		if ok != tc.ok || (ok && tc.check != nil && !tc.check(rec)) {
			t.Errorf("%q: ok=%v rec=%+v", dkimClip(tc.txt, 60), ok, rec)
		}
	}
}

func BenchmarkEvaluateDMARC(b *testing.B) {
	r, _ := dmarcTestDNS(b)
	dk := []DKIMResult{{Result: "pass", Domain: "example.org"}, {Result: "pass", Domain: "esp.example"}}
	ctx := context.Background()
	// Warm the cache.
	if res := EvaluateDMARC(ctx, r, "sub.example.org", "pass", "bounce.example.org", dk); res.Result != "pass" {
		b.Fatal(res)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		EvaluateDMARC(ctx, r, "sub.example.org", "pass", "bounce.example.org", dk)
	}
}
