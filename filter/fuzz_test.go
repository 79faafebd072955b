package filter

import (
	"bytes"
	"strings"
	"testing"
)

// refLines is the oracle for the line validator, written the plain way:
// one pass over the whole input, looking ahead instead of keeping state.
// A CR followed by LF is a line break; any other CR, and any LF not after a
// CR, is bare; NUL is flagged (and dropped in normalize mode).
func refLines(in []byte, normalize bool, maxLine int) (out []byte, bareLF, bareCR, nul, long bool) {
	lineLen := 0
	brk := func() {
		out = append(out, '\r', '\n')
		lineLen = 0
	}
	for i := 0; i < len(in); i++ {
		switch c := in[i]; {
		case c == '\r' && i+1 < len(in) && in[i+1] == '\n':
			brk()
			i++
		case c == '\r':
			bareCR = true
			if normalize {
				brk()
			} else {
				out = append(out, '\r')
				lineLen = 0
			}
		case c == '\n':
			bareLF = true
			brk()
		default:
			if c == 0 {
				nul = true
				if normalize {
					continue
				}
			}
			out = append(out, c)
			lineLen++
			if maxLine > 0 && lineLen > maxLine {
				long = true
			}
		}
	}
	return out, bareLF, bareCR, nul, long
}

// FuzzLineValidator writes arbitrary input in arbitrary chunks and checks
// the flags and the output against refLines.
func FuzzLineValidator(f *testing.F) {
	for _, tc := range lineCases {
		f.Add([]byte(tc.in), false, uint8(tc.maxLine), uint64(0))
		f.Add([]byte(tc.in), true, uint8(tc.maxLine), uint64(0x0102030405060708))
	}
	f.Add([]byte("a\r\n.\r\nMAIL FROM:<x@y>\r\n\r\n.\r\n"), false, uint8(0), uint64(0x0303030303030303))
	f.Add([]byte("\r\r\r\n\n\n\x00\r\x00\n"), true, uint8(1), uint64(0x0101010101010101))
	f.Fuzz(func(t *testing.T, in []byte, normalize bool, maxLine uint8, splits uint64) {
		var got bytes.Buffer
		v := newLineValidator(&got, normalize, int(maxLine))
		// Each byte of splits is one chunk length (0 = the rest).
		rest := in
		for s := splits; len(rest) > 0; s >>= 8 {
			n := int(s & 0xff)
			if n == 0 || n > len(rest) {
				n = len(rest)
			}
			if k, err := v.Write(rest[:n]); err != nil || k != n {
				t.Fatalf("Write = %d, %v", k, err)
			}
			rest = rest[n:]
		}
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		wantOut, bareLF, bareCR, nul, long := refLines(in, normalize, int(maxLine))
		if !normalize {
			wantOut = in // refusing mode passes the bytes through
		}
		if v.BareLF != bareLF || v.BareCR != bareCR || v.NUL != nul || v.LongLine != long {
			t.Fatalf("normalize=%v max=%d %q: flags LF=%v CR=%v NUL=%v long=%v, oracle %v %v %v %v",
				normalize, maxLine, in, v.BareLF, v.BareCR, v.NUL, v.LongLine, bareLF, bareCR, nul, long)
		}
		if v.Dirty() != (bareLF || bareCR || nul) {
			t.Fatalf("Dirty() = %v", v.Dirty())
		}
		out := got.Bytes()
		if !bytes.Equal(out, wantOut) {
			t.Fatalf("normalize=%v %q: output %q, oracle %q", normalize, in, out, wantOut)
		}
		if normalize {
			// Nothing but CRLF line endings, and no NUL, ever goes downstream.
			if bytes.IndexByte(out, 0) >= 0 {
				t.Fatalf("NUL in normalized output %q", out)
			}
			stripped := bytes.ReplaceAll(out, []byte("\r\n"), nil)
			if bytes.ContainsAny(stripped, "\r\n") {
				t.Fatalf("bare CR/LF in normalized output %q", out)
			}
		}
		if !normalize && !bareLF && !bareCR && !nul && !bytes.Equal(out, in) {
			t.Fatalf("clean input changed: %q -> %q", in, out)
		}
	})
}

// FuzzParseHeader: parseHeader never panics, its fields are the input's own
// bytes in order, and names are lower-case.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte("From: <a@example.org>\r\nSubject: hi\r\n\r\nbody\r\n"), true)
	f.Add([]byte("Subject: a\r\n b\r\n\tc\r\nTo: x\r\n\r\n"), true)
	f.Add([]byte("A: 1\r\nB: 2"), false)
	f.Add([]byte(" cont\r\nA: 1\r\n\r\n"), true)
	f.Add([]byte("From : x\r\nX\t: y\r\n:\r\n\r\n"), true)
	f.Add([]byte("DKIM-Signature: v=1; a=rsa-sha256; d=example.org;\r\n\ts=sel; b=abc\r\n def\r\n\r\n"), true)
	f.Add([]byte("A: 1\nB: 2\r\n\r\n"), true)
	f.Add([]byte(strings.Repeat("X: 1\r\n", 50)+"\r\n"), false)
	f.Fuzz(func(t *testing.T, head []byte, complete bool) {
		fields, off, err := parseHeader(head, complete)
		if err != nil {
			if fields != nil {
				t.Fatalf("fields with error %v", err)
			}
			return
		}
		pos := 0
		for i, fl := range fields {
			raw := fl.Raw
			if !bytes.HasPrefix(head[pos:], raw) {
				t.Fatalf("field %d Raw %q is not the input at %d", i, raw, pos)
			}
			pos += len(raw)
			if !bytes.HasSuffix(raw, []byte("\r\n")) {
				t.Fatalf("field %d %q does not end in CRLF", i, raw)
			}
			colon := bytes.IndexByte(raw, ':')
			if colon <= 0 {
				t.Fatalf("field %d %q has no name", i, raw)
			}
			// (White space before the colon is obsolete syntax, RFC 5322 4.5;
			// it is not part of the name.)
			if fl.Name == "" || fl.Name != strings.ToLower(fl.Name) ||
				strings.TrimRight(fl.Name, " \t") != strings.ToLower(strings.TrimRight(string(raw[:colon]), " \t")) {
				t.Fatalf("field %d name %q from %q", i, fl.Name, raw)
			}
			if strings.ContainsAny(fl.Name, ":\r\n\x00") {
				t.Fatalf("field %d name %q", i, fl.Name)
			}
			// Every line after the first is a continuation (RFC 5322 2.2.3).
			lines := bytes.Split(bytes.TrimSuffix(raw, []byte("\r\n")), []byte("\r\n"))
			for _, l := range lines[1:] {
				if len(l) == 0 || (l[0] != ' ' && l[0] != '\t') {
					t.Fatalf("field %d: line %q is not a continuation", i, l)
				}
			}
			_ = fl.Value()
		}
		// The body starts where the fields end, or after the empty line.
		switch {
		case off == pos:
		case off == pos+2 && bytes.HasPrefix(head[pos:], []byte("\r\n")):
		default:
			t.Fatalf("body offset %d, fields end at %d", off, pos)
		}
		if off > len(head) {
			t.Fatalf("body offset %d past the input (%d)", off, len(head))
		}
	})
}

// FuzzCheckAddress: the envelope checks never panic, and whatever passes as
// a recipient cannot carry routing syntax.
func FuzzCheckAddress(f *testing.F) {
	for _, s := range []string{
		"bob@corp.test", "Bob@CORP.TEST.", "bób@corp.test", "a@b", "@corp.test", "bob@", "bob",
		"victim%elsewhere.example@corp.test", "elsewhere.example!victim@corp.test",
		"victim@elsewhere.example@corp.test", "victim@[192.0.2.1]", "victim@[IPv6:2001:db8::1]",
		"a..b@corp.test", ".a@corp.test", "a.@corp.test", "a b@corp.test", "a\"b@corp.test",
		"bob@corp..test", "bob@-corp.test", "bob@corp-.test", "bob@corp.test..", "bob@co_rp.test",
		"bob@xn--bcher-kva.test", "bob@bücher.test", "b\xffb@corp.test", "bob@ban\u212a.example",
		strings.Repeat("a", 64) + "@corp.test", strings.Repeat("a", 65) + "@corp.test",
		"bob@" + strings.Repeat("a", 63) + ".test", "bob@" + strings.Repeat("a", 64) + ".test",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, addr string, utf8 bool) {
		_ = checkAddress(addr, utf8, false)
		if r := checkAddress(addr, utf8, true); r != nil {
			if r.Code/100 != 5 {
				t.Fatalf("%q refused with %d", addr, r.Code)
			}
			return
		}
		if n := strings.Count(addr, "@"); n != 1 {
			t.Fatalf("accepted %q with %d '@'", addr, n)
		}
		local, domain, _ := strings.Cut(addr, "@")
		if local == "" || strings.ContainsAny(local, "%!\"\\ ") {
			t.Fatalf("accepted %q: routing or quoting syntax in the local part", addr)
		}
		if !utf8 && !isASCII(addr) {
			t.Fatalf("accepted 8-bit %q without SMTPUTF8", addr)
		}
		if !oracleDomain(strings.TrimSuffix(domain, ".")) {
			t.Fatalf("accepted %q: domain %q is not LDH/8-bit labels", addr, domain)
		}
		norm, d := normalizeRcpt(addr)
		if d != strings.ToLower(d) || strings.HasSuffix(d, ".") || strings.Contains(d, "@") || d == "" {
			t.Fatalf("normalizeRcpt(%q) domain %q", addr, d)
		}
		if norm != local+"@"+d {
			t.Fatalf("normalizeRcpt(%q) = %q, %q: local part changed", addr, norm, d)
		}
		if isASCII(domain) && d != strings.ToLower(strings.TrimSuffix(domain, ".")) {
			t.Fatalf("normalizeRcpt(%q) domain %q", addr, d)
		}
	})
}

// oracleDomain: RFC 5321 4.1.2 Domain (dot-separated LDH labels, no hyphen
// at either end, 1-63 octets each) with 8-bit labels for SMTPUTF8 (RFC
// 6531 3.3). validDomain also admits '_' (used in DNS names such as
// _dmarc); a route lookup is an exact match, so it gives no routing trick.
func oracleDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.HasPrefix(d, "[") {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if c < 0x80 && !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// TestCheckAddressRefusesInvalidUTF8: with SMTPUTF8 an address is UTF-8
// (RFC 6531 3.3, RFC 6532 3.1). Invalid bytes would reach the downstream as
// sent while the policy (JSON input) sees U+FFFD in their place.
func TestCheckAddressRefusesInvalidUTF8(t *testing.T) {
	for _, a := range []string{"b\xffb@corp.test", "bob@corp\xc3.test", "\xed\xa0\x80@corp.test"} {
		if checkAddress(a, true, true) == nil {
			t.Errorf("recipient %q accepted", a)
		}
		if checkAddress(a, true, false) == nil {
			t.Errorf("sender %q accepted", a)
		}
	}
}
