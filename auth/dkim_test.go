//go:debug rsa1024min=0

package auth

// rsa1024min=0 lets the tests sign with a 512-bit key, and lets crypto/rsa
// verify with one: what must then stop it is our own RFC 8301 check.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
)

// TestVerifyDKIMVectors runs the published and library test vectors, each
// against its own key records served over real DNS.
func TestVerifyDKIMVectors(t *testing.T) {
	tests := []struct {
		dir, file string
		maxSigs   int
		want      []string // result per signature
	}{
		// RFC 8463 Appendix A: both the ed25519 and the rsa signature verify.
		{"rfc8463", "A3-signed.eml", 0, []string{"pass", "pass"}},
		// RFC 6376 Appendix A as printed: the body hash was computed over
		// another body, so it must not pass.
		{"rfc6376", "A2-signed.eml", 0, []string{"fail"}},
		{"go-msgauth", "verify_test.verifiedMailString.eml", 0, []string{"pass"}},
		// go-msgauth serves its RSA test key under test._domainkey, which
		// is not the key the RFC 8463 rsa signature was made with.
		{"go-msgauth", "verify_test.verifiedEd25519MailString.eml", 0, []string{"pass", "fail"}},
		// RSAPublicKey (PKCS#1) key record, RFC 6376 erratum 3017.
		{"go-msgauth", "verify_test.verifiedRawRSAMailString.eml", 0, []string{"pass"}},
		{"go-msgauth", "verify_test.tooManySignaturesMailString.eml", 2, []string{"pass", "pass", "policy"}},
		{"go-msgauth", "verify_test.unsignedMailString.eml", 0, nil},
		{"go-msgauth", "sign_test.signedMailString.eml", 0, []string{"pass"}},
		{"go-msgauth", "sign_test.signedEd25519MailString.eml", 0, []string{"pass"}},
		{"dkimpy", "ed25519test2.msg", 0, []string{"pass"}},
		{"dkimpy", "rfc6376.signed.msg", 0, []string{"pass", "pass"}},
		// No key published for gmail.com in the test zone: NXDOMAIN.
		{"dkimpy", "test2.message", 0, []string{"permerror"}},
	}
	for _, tc := range tests {
		t.Run(tc.dir+"/"+tc.file, func(t *testing.T) {
			d, r := dkimTestDNS(t)
			d.LoadZoneFile(t, dkimTestdata("dkim", tc.dir, "dns.txt"), "")
			msg := dkimReadFile(t, "dkim", tc.dir, tc.file)
			res, err := VerifyDKIM(context.Background(), r, bytes.NewReader(msg), DKIMOptions{MaxSignatures: tc.maxSigs})
			if err != nil {
				t.Fatal(err)
			}
			if got := dkimResultWords(res); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("results %v, want %v (%+v)", got, tc.want, res)
			}
		})
	}
}

func dkimResultWords(res []DKIMResult) []string {
	var out []string
	for _, r := range res {
		out = append(out, r.Result)
	}
	return out
}

// TestVerifyDKIMFields checks what a result carries for the policy and A-R.
func TestVerifyDKIMFields(t *testing.T) {
	d, r := dkimTestDNS(t)
	d.LoadZoneFile(t, dkimTestdata("dkim", "rfc8463", "dns.txt"), "")
	res, err := VerifyDKIM(context.Background(), r, bytes.NewReader(dkimReadFile(t, "dkim", "rfc8463", "A3-signed.eml")), DKIMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := DKIMResult{Result: "pass", Domain: "football.example.com", Selector: "brisbane", Algorithm: "ed25519-sha256",
		HeaderB: "/gCrinpcQOoI", Identifier: "@football.example.com"}
	if res[0] != want {
		t.Fatalf("got %+v\nwant %+v", res[0], want)
	}
}

// TestVerifyDKIMOwnKeys signs messages with the test keys and serves the keys
// over DNS: what must pass passes, and every RFC 8301 / tampering / DNS case
// does not.
func TestVerifyDKIMOwnKeys(t *testing.T) {
	rsa2048 := dkimLoadKey(t, "rsa2048.pem")
	rsa1024 := dkimLoadKey(t, "rsa1024.pem")
	rsa512 := dkimLoadKey(t, "rsa512.pem")
	rsa1020 := dkimLoadKey(t, "rsa1020.pem")
	ed := dkimLoadKey(t, "ed25519.pem")
	msg := []byte(dkimTestMessage)

	zone := []string{
		dkimTXT("rsa2048._domainkey.example.org.", dkimKeyRecord(t, rsa2048)),
		dkimTXT("rsa1024._domainkey.example.org.", dkimKeyRecord(t, rsa1024)),
		dkimTXT("rsa512._domainkey.example.org.", dkimKeyRecord(t, rsa512)),
		dkimTXT("rsa1020._domainkey.example.org.", dkimKeyRecord(t, rsa1020)),
		dkimTXT("ed._domainkey.example.org.", dkimKeyRecord(t, ed)),
		dkimTXT("revoked._domainkey.example.org.", "v=DKIM1; k=rsa; p="),
		dkimTXT("sha256only._domainkey.example.org.", dkimKeyRecord(t, rsa2048)+"; h=sha256"),
		dkimTXT("garbage._domainkey.example.org.", "v=DKIM1; k=rsa; p=!!!notbase64"),
		dkimTXT("twice._domainkey.example.org.", dkimKeyRecord(t, rsa2048)),
		dkimTXT("twice._domainkey.example.org.", dkimKeyRecord(t, rsa1024)),
		dkimTXT("servfail._domainkey.example.org.", dkimKeyRecord(t, rsa2048)),
		dkimTXT("slow._domainkey.example.org.", dkimKeyRecord(t, rsa2048)),
	}
	d, r := dkimTestDNS(t, zone...)
	d.SetRcode("servfail._domainkey.example.org.", dns.TypeTXT, dns.RcodeServerFailure)
	d.SetTimeout("slow._domainkey.example.org.", dns.TypeTXT)

	appended := func(m []byte) []byte {
		return append(append([]byte{}, m...), "P.S. click here: http://evil.example/\r\n"...)
	}
	tampered := func(m []byte) []byte { return bytes.Replace(m, []byte("invoice is"), []byte("invoice was"), 1) }
	bodyLen := len(dkimRelaxedBody([]byte("Hello Bob,\r\n\r\nthe invoice is attached.\r\n")))

	tests := []struct {
		name       string
		msg        []byte
		want       string
		bodyLength bool
		unsigned   bool
		reason     string // substring of the reason
	}{
		{"rsa2048", dkimSign(t, msg, "example.org", "rsa2048", rsa2048), "pass", false, false, ""},
		{"rsa1024", dkimSign(t, msg, "example.org", "rsa1024", rsa1024), "pass", false, false, ""},
		{"ed25519", dkimSign(t, msg, "example.org", "ed", ed), "pass", false, false, ""},
		{"own signer agrees with go-msgauth", dkimSignRaw(t, msg, "example.org", "rsa2048", "rsa-sha256", rsa2048, -1), "pass", false, false, ""},
		{"body tampered", tampered(dkimSign(t, msg, "example.org", "rsa2048", rsa2048)), "fail", false, false, "body hash"},
		{"header tampered", bytes.Replace(dkimSign(t, msg, "example.org", "ed", ed), []byte("Q4 invoice"), []byte("Q4 lnvoice"), 1), "fail", false, false, "signature did not verify"},
		// RFC 8301 3.1: rsa-sha1 never passes, even with a good signature.
		{"rsa-sha1", dkimSignRaw(t, msg, "example.org", "rsa2048", "rsa-sha1", rsa2048, -1), "permerror", false, false, "sha1"},
		// RFC 8301 3.2: an RSA key under 1024 bits never passes.
		{"rsa512", dkimSignRaw(t, msg, "example.org", "rsa512", "rsa-sha256", rsa512, -1), "permerror", false, false, "short"},
		// 1020 bits fill 128 octets: go-msgauth's octet-based check lets
		// it through, ours counts bits.
		{"rsa1020", dkimSignRaw(t, msg, "example.org", "rsa1020", "rsa-sha256", rsa1020, -1), "permerror", false, false, "1020 bits"},
		{"key revoked", dkimSign(t, msg, "example.org", "revoked", rsa2048), "permerror", false, false, "revoked"},
		{"no key", dkimSign(t, msg, "example.org", "missing", rsa2048), "permerror", false, false, "no key"},
		{"key not base64", dkimSign(t, msg, "example.org", "garbage", rsa2048), "permerror", false, false, "key syntax"},
		{"two key records", dkimSign(t, msg, "example.org", "twice", rsa2048), "permerror", false, false, "multiple"},
		{"key h= excludes sha1", dkimSignRaw(t, msg, "example.org", "sha256only", "rsa-sha1", rsa2048, -1), "permerror", false, false, ""},
		{"SERVFAIL", dkimSign(t, msg, "example.org", "servfail", rsa2048), "temperror", false, false, ""},
		{"timeout", dkimSign(t, msg, "example.org", "slow", rsa2048), "temperror", false, false, ""},
		// l=: verified by our own code (go-msgauth refuses it), flagged,
		// and content after the signed length noticed.
		{"l= whole body", dkimSignRaw(t, msg, "example.org", "rsa2048", "rsa-sha256", rsa2048, bodyLen), "pass", true, false, ""},
		{"l= ed25519", dkimSignRaw(t, msg, "example.org", "ed", "ed25519-sha256", ed, bodyLen), "pass", true, false, ""},
		{"l= content appended", appended(dkimSignRaw(t, msg, "example.org", "rsa2048", "rsa-sha256", rsa2048, bodyLen)), "pass", true, true, ""},
		{"l=0 content appended", dkimSignRaw(t, msg, "example.org", "rsa2048", "rsa-sha256", rsa2048, 0), "pass", true, true, ""},
		{"l= signed part tampered", tampered(dkimSignRaw(t, msg, "example.org", "rsa2048", "rsa-sha256", rsa2048, bodyLen)), "fail", true, true, "body hash"},
		{"l= header tampered", bytes.Replace(dkimSignRaw(t, msg, "example.org", "ed", "ed25519-sha256", ed, bodyLen), []byte("Q4"), []byte("Q5"), 1), "fail", true, false, "signature did not verify"},
		{"l= longer than body", bytes.Replace(dkimSignRaw(t, msg, "example.org", "rsa2048", "rsa-sha256", rsa2048, bodyLen), []byte("the invoice is attached.\r\n"), nil, 1), "fail", true, false, "longer than the body"},
		{"l= rsa-sha1", dkimSignRaw(t, msg, "example.org", "rsa2048", "rsa-sha1", rsa2048, bodyLen), "permerror", true, false, "sha1"},
		{"l= rsa1020", dkimSignRaw(t, msg, "example.org", "rsa1020", "rsa-sha256", rsa1020, bodyLen), "permerror", true, false, "1020 bits"},
		{"l= not a number", bytes.Replace(dkimSignRaw(t, msg, "example.org", "rsa2048", "rsa-sha256", rsa2048, bodyLen), []byte(fmt.Sprintf("l=%d;", bodyLen)), []byte("l=x;"), 1), "permerror", true, false, "l="},
		{"hostile d=", []byte("DKIM-Signature: v=1; a=rsa-sha256; d=" + strings.Repeat("a", 300) + ".example; s=x; h=from; bh=AA==; b=AA==\r\n" + dkimTestMessage), "permerror", false, false, "no key"},
		{"missing tags", []byte("DKIM-Signature: v=1; d=example.org\r\n" + dkimTestMessage), "permerror", false, false, "missing"},
		{"garbage field", []byte("DKIM-Signature: \x00\x01;;==;\r\n" + dkimTestMessage), "permerror", false, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := VerifyDKIM(context.Background(), r, bytes.NewReader(tc.msg), DKIMOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 1 {
				t.Fatalf("%d results, want 1: %+v", len(res), res)
			}
			got := res[0]
			if got.Result != tc.want || got.BodyLength != tc.bodyLength || got.UnsignedContent != tc.unsigned || !strings.Contains(got.Reason, tc.reason) {
				t.Fatalf("got %+v\nwant result %s body_length %v unsigned %v reason ~%q", got, tc.want, tc.bodyLength, tc.unsigned, tc.reason)
			}
		})
	}
}

// TestVerifyDKIMSignatureCap: only MaxSignatures are verified (and looked up);
// the others are reported as policy.
func TestVerifyDKIMSignatureCap(t *testing.T) {
	ed := dkimLoadKey(t, "ed25519.pem")
	d, r := dkimTestDNS(t, dkimTXT("ed._domainkey.example.org.", dkimKeyRecord(t, ed)))
	msg := []byte(dkimTestMessage)
	for i := 0; i < 8; i++ {
		msg = dkimSign(t, msg, "example.org", "ed", ed)
	}
	before := d.Queries()
	res, err := VerifyDKIM(context.Background(), r, bytes.NewReader(msg), DKIMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "[pass pass pass pass pass policy policy policy]"
	if got := fmt.Sprint(dkimResultWords(res)); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if !strings.Contains(res[7].Reason, "more than 5") || res[7].Domain != "example.org" {
		t.Fatalf("capped result: %+v", res[7])
	}
	if q := d.Queries() - before; q > 5 {
		t.Fatalf("%d DNS queries for a cap of 5", q)
	}

	// Thousands of signatures: 5 verified, 5 reported, the rest counted.
	var many strings.Builder
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&many, "DKIM-Signature: v=1; a=ed25519-sha256; d=example.org; s=ed; h=from; bh=AA==; b=%04d\r\n", i)
	}
	res, err = VerifyDKIM(context.Background(), r, strings.NewReader(many.String()+dkimTestMessage), DKIMOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 10 || !strings.HasSuffix(res[9].Reason, "(2990 more not reported)") {
		t.Fatalf("%d results, last %+v", len(res), res[len(res)-1])
	}
}

// TestVerifyDKIMDeadline: the whole verification is bounded by Timeout even
// when the resolver would wait longer.
func TestVerifyDKIMDeadline(t *testing.T) {
	rsa := dkimLoadKey(t, "rsa2048.pem")
	d, _ := dkimTestDNS(t, dkimTXT("slow._domainkey.example.org.", dkimKeyRecord(t, rsa)))
	d.SetTimeout("slow._domainkey.example.org.", dns.TypeTXT)
	r := dkimSlowResolver(t, d.Addr())
	msg := dkimSign(t, []byte(dkimTestMessage), "example.org", "slow", rsa)
	res, err := VerifyDKIM(context.Background(), r, bytes.NewReader(msg), DKIMOptions{Timeout: 200e6})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Result != "temperror" {
		t.Fatalf("got %+v", res[0])
	}
}

type dkimErrReader struct{}

func (dkimErrReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestVerifyDKIMUnreadable(t *testing.T) {
	_, r := dkimTestDNS(t)
	if _, err := VerifyDKIM(context.Background(), r, dkimErrReader{}, DKIMOptions{}); err == nil {
		t.Fatal("no error for an unreadable message")
	}
	// A signed message whose body cannot be read.
	ed := dkimLoadKey(t, "ed25519.pem")
	msg := dkimSign(t, []byte(dkimTestMessage), "example.org", "ed", ed)
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	rd := io.MultiReader(bytes.NewReader(append(head, "\r\n\r\n"...)), dkimErrReader{})
	if _, err := VerifyDKIM(context.Background(), r, rd, DKIMOptions{}); err == nil {
		t.Fatal("no error for an unreadable body")
	}
}

// TestVerifyDKIMHeaderOnly: a message without body or blank line is still
// verified (no signature here), not an error.
func TestVerifyDKIMHeaderOnly(t *testing.T) {
	_, r := dkimTestDNS(t)
	for _, m := range []string{"From: a@example.org\r\n", "From: a@example.org", "", "\r\n"} {
		res, err := VerifyDKIM(context.Background(), r, strings.NewReader(m), DKIMOptions{})
		if err != nil || len(res) != 0 {
			t.Fatalf("%q: %v %+v", m, err, res)
		}
	}
}

func TestDKIMCanonBody(t *testing.T) {
	tests := []struct {
		body            string
		simple, relaxed int64
	}{
		{"", 2, 0},
		{"\r\n\r\n", 2, 0},
		{"a\r\n", 3, 3},
		{"a", 3, 3},
		{"a  b \t\r\n\r\n\r\n", 8, 5},
		{" a\r\n\r\nb\r\n", 9, 9},
		{"a\nb\n", 6, 6},
		{"a\r", 4, 4},
		{" \t \r\nx", 8, 5},
	}
	for _, tc := range tests {
		for _, canon := range []string{"simple/simple", "relaxed/relaxed"} {
			h := sha256.New()
			c := newDKIMCanonBody(canon, h, 1<<40)
			c.Write([]byte(tc.body))
			c.Close()
			want := tc.simple
			if canon == "relaxed/relaxed" {
				want = tc.relaxed
				// The test signer's canonicalization agrees, byte for byte.
				norm := strings.ReplaceAll(strings.ReplaceAll(tc.body, "\r\n", "\n"), "\n", "\r\n")
				if !strings.HasSuffix(norm, "\r") {
					ref := sha256.Sum256(dkimRelaxedBody([]byte(norm)))
					if !bytes.Equal(h.Sum(nil), ref[:]) {
						t.Errorf("%q: relaxed bytes differ from the test signer's", tc.body)
					}
				}
			}
			if c.written != want {
				t.Errorf("%q %s: %d octets, want %d", tc.body, canon, c.written, want)
			}
		}
	}
}

// TestDKIMLengthVerifierAgrees runs our own hash-and-verify path (used only
// for l= signatures, which go-msgauth refuses) on every signature go-msgauth
// can judge, and requires the same pass / not-pass verdict: our header
// canonicalization, header selection, b= removal and signature check are the
// library's.
func TestDKIMLengthVerifierAgrees(t *testing.T) {
	type msgCase struct {
		name string
		zone string // dns.txt directory, or "" for own keys
		msg  []byte
	}
	var cases []msgCase
	for _, v := range [][2]string{
		{"rfc8463", "A3-signed.eml"}, {"rfc6376", "A2-signed.eml"},
		{"go-msgauth", "verify_test.verifiedMailString.eml"}, {"go-msgauth", "verify_test.verifiedEd25519MailString.eml"},
		{"go-msgauth", "verify_test.verifiedRawRSAMailString.eml"}, {"go-msgauth", "verify_test.tooManySignaturesMailString.eml"},
		{"go-msgauth", "sign_test.signedMailString.eml"}, {"go-msgauth", "sign_test.signedEd25519MailString.eml"},
		{"dkimpy", "ed25519test2.msg"}, {"dkimpy", "rfc6376.signed.msg"},
	} {
		cases = append(cases, msgCase{v[0] + "/" + v[1], v[0], dkimReadFile(t, "dkim", v[0], v[1])})
	}
	rsa := dkimLoadKey(t, "rsa2048.pem")
	ed := dkimLoadKey(t, "ed25519.pem")
	own := []byte(dkimTestMessage)
	simple := func(key crypto.Signer, sel string, m []byte) []byte {
		var out bytes.Buffer
		if err := dkim.Sign(&out, bytes.NewReader(m), &dkim.SignOptions{Domain: "example.org", Selector: sel, Signer: key}); err != nil {
			t.Fatal(err)
		}
		return out.Bytes()
	}
	folded := []byte("Subject: a\r\n  folded\t subject\r\nFrom: x@example.org\r\nFrom: second@example.org\r\n\r\n body  \r\n\r\n")
	for _, m := range []struct {
		name string
		msg  []byte
	}{
		{"own rsa relaxed", dkimSign(t, own, "example.org", "rsa", rsa)},
		{"own ed relaxed", dkimSign(t, own, "example.org", "ed", ed)},
		{"own rsa simple", simple(rsa, "rsa", own)},
		{"own ed simple", simple(ed, "ed", own)},
		{"own folded simple", simple(ed, "ed", folded)},
		{"own folded relaxed", dkimSign(t, folded, "example.org", "ed", ed)},
		{"own header tampered", bytes.Replace(dkimSign(t, own, "example.org", "ed", ed), []byte("Q4"), []byte("Q5"), 1)},
		{"own folding changed simple", bytes.Replace(simple(ed, "ed", folded), []byte("  folded"), []byte(" folded"), 1)},
		{"own folding changed relaxed", bytes.Replace(dkimSign(t, folded, "example.org", "ed", ed), []byte("  folded"), []byte(" folded"), 1)},
		{"own From added above", append([]byte("From: evil@example.org\r\n"), dkimSign(t, own, "example.org", "ed", ed)...)},
		{"own From added below", bytes.Replace(dkimSign(t, own, "example.org", "ed", ed), []byte("\r\n\r\n"), []byte("\r\nFrom: evil@example.org\r\n\r\n"), 1)},
		{"own body tampered simple", bytes.Replace(simple(rsa, "rsa", own), []byte("invoice is"), []byte("invoice was"), 1)},
		{"own body tampered relaxed", bytes.Replace(dkimSign(t, own, "example.org", "ed", ed), []byte("invoice is"), []byte("invoice  is"), 1)},
		{"own body whitespace simple", bytes.Replace(simple(ed, "ed", own), []byte("invoice is"), []byte("invoice  is"), 1)},
		{"own signed twice", dkimSign(t, simple(rsa, "rsa", own), "example.org", "ed", ed)},
	} {
		cases = append(cases, msgCase{m.name, "", m.msg})
	}
	var passes, others int
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, r := dkimTestDNS(t)
			if tc.zone != "" {
				d.LoadZoneFile(t, dkimTestdata("dkim", tc.zone, "dns.txt"), "")
			} else {
				d.AddRR(t, dkimTXT("rsa._domainkey.example.org.", dkimKeyRecord(t, rsa)), dkimTXT("ed._domainkey.example.org.", dkimKeyRecord(t, ed)))
			}
			lib, err := VerifyDKIM(context.Background(), r, bytes.NewReader(tc.msg), DKIMOptions{MaxSignatures: 10})
			if err != nil {
				t.Fatal(err)
			}
			ours := dkimOwnVerdicts(t, r, tc.msg)
			if len(ours) != len(lib) {
				t.Fatalf("%d signatures, library %d", len(ours), len(lib))
			}
			for i := range lib {
				if (lib[i].Result == "pass") != (ours[i] == "pass") {
					t.Errorf("signature %d: library %s (%s), ours %s", i, lib[i].Result, lib[i].Reason, ours[i])
				}
				if lib[i].Result == "pass" {
					passes++
				} else {
					others++
				}
			}
		})
	}
	// Not vacuous: both verdicts occur, many times.
	if passes < 15 || others < 6 {
		t.Fatalf("%d passes and %d others compared", passes, others)
	}
	t.Logf("%d passes and %d others agree", passes, others)
}

// dkimOwnVerdicts verifies every signature of msg with dkimLengthVerify, l=
// set to the whole canonical body.
func dkimOwnVerdicts(t *testing.T, r Resolver, msg []byte) []string {
	br := bufio.NewReader(bytes.NewReader(msg))
	_, fields, err := dkimReadHeader(br, maxDKIMHeaderBytes)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(br)
	keys := &dkimKeyRecorder{r: r, ctx: context.Background(), txt: make(map[string][]string)}
	var out []string
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ":")
		if !strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature") {
			continue
		}
		s := parseDKIMSig(value)
		s.field = f
		keys.dkimLookupTXT(s.s + "._domainkey." + s.d)
		count := newDKIMCanonBody(s.c, nil, 0)
		count.Write(body)
		count.Close()
		s.l = count.written
		c := newDKIMCanonBody(s.c, sha256.New(), s.l)
		c.Write(body)
		c.Close()
		res, reason := dkimLengthVerify(s, s.field, fields, c, keys)
		out = append(out, res+" "+reason)
		if res == "pass" {
			out[len(out)-1] = "pass"
		}
	}
	return out
}

// BenchmarkVerifyDKIM: one signature per message, key record in the
// resolver's cache (warm), so this is parsing, hashing and the signature check.
func BenchmarkVerifyDKIM(b *testing.B) {
	for _, k := range []struct{ name, file string }{{"rsa-2048", "rsa2048.pem"}, {"ed25519", "ed25519.pem"}} {
		b.Run(k.name, func(b *testing.B) {
			key := dkimLoadKey(b, k.file)
			_, r := dkimTestDNS(b, dkimTXT("sel._domainkey.example.org.", dkimKeyRecord(b, key)))
			body := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n", 80) // ~5 KB
			msg := dkimSign(b, []byte(dkimTestMessage+body), "example.org", "sel", key)
			ctx := context.Background()
			if res, err := VerifyDKIM(ctx, r, bytes.NewReader(msg), DKIMOptions{}); err != nil || res[0].Result != "pass" {
				b.Fatal(res, err)
			}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := VerifyDKIM(ctx, r, bytes.NewReader(msg), DKIMOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
