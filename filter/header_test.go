package filter

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseHeader(t *testing.T) {
	type field struct{ name, value string }
	cases := []struct {
		name     string
		in       string
		complete bool
		want     []field
		bodyOff  int // -1: len(in)
		err      error
	}{
		{name: "simple", complete: true,
			in:      "From: <a@example.org>\r\nSubject: hi\r\n\r\nbody\r\n",
			want:    []field{{"from", "<a@example.org>"}, {"subject", "hi"}},
			bodyOff: 38},
		{name: "names lower-cased", complete: true,
			in:      "MIME-Version: 1.0\r\nDKIM-Signature: v=1\r\n\r\n",
			want:    []field{{"mime-version", "1.0"}, {"dkim-signature", "v=1"}},
			bodyOff: -1},
		{name: "folded", complete: true,
			in:      "Subject: a\r\n b\r\n\tc\r\nTo: x\r\n\r\nbody",
			want:    []field{{"subject", "a b\tc"}, {"to", "x"}},
			bodyOff: 29},
		{name: "empty value", complete: true,
			in:      "X-Empty:\r\n\r\n",
			want:    []field{{"x-empty", ""}},
			bodyOff: -1},
		{name: "colon in value", complete: true,
			in:      "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n",
			want:    []field{{"date", "Fri, 27 Nov 2026 10:00:00 +0000"}},
			bodyOff: -1},
		{name: "no empty line, complete", complete: true,
			in:      "A: 1\r\nB: 2\r\n",
			want:    []field{{"a", "1"}, {"b", "2"}},
			bodyOff: -1},
		{name: "no empty line, incomplete", complete: false,
			in:  "A: 1\r\nB: 2\r\n",
			err: errHeaderTooLarge},
		{name: "cut mid-line, incomplete", complete: false,
			in:  "A: 1\r\nB: 2",
			err: errHeaderTooLarge},
		{name: "last line without CRLF is body", complete: true,
			in:      "A: 1\r\nB: 2",
			want:    []field{{"a", "1"}},
			bodyOff: 6},
		{name: "non-field line ends the header", complete: true,
			in:      "A: 1\r\nthis is body\r\n",
			want:    []field{{"a", "1"}},
			bodyOff: 6},
		{name: "continuation with nothing to continue", complete: true,
			in:      " x\r\nA: 1\r\n\r\n",
			bodyOff: 0},
		{name: "empty field name", complete: true,
			in:      ": x\r\n\r\n",
			bodyOff: 0},
		{name: "space inside field name", complete: true,
			in:      "Bad Name: x\r\n\r\n",
			bodyOff: 0},
		{name: "8-bit field name", complete: true,
			in:      "Sub\xc3\xa9ject: x\r\n\r\n",
			bodyOff: 0},
		{name: "control in field name", complete: true,
			in:      "A\x01B: x\r\n\r\n",
			bodyOff: 0},
		{name: "body starts right away", complete: true,
			in:      "\r\nbody\r\n",
			bodyOff: 2},
		{name: "empty input", complete: true, in: "", bodyOff: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fields, off, err := parseHeader([]byte(tc.in), tc.complete)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || fields != nil {
					t.Fatalf("got %d fields, err %v; want nil, %v", len(fields), err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.bodyOff
			if want < 0 {
				want = len(tc.in)
			}
			if off != want {
				t.Errorf("body offset %d, want %d", off, want)
			}
			if len(fields) != len(tc.want) {
				t.Fatalf("%d fields, want %d: %+v", len(fields), len(tc.want), fields)
			}
			var raw strings.Builder
			for i, f := range fields {
				if f.Name != tc.want[i].name || f.Value() != tc.want[i].value {
					t.Errorf("field %d = %q: %q, want %q: %q", i, f.Name, f.Value(), tc.want[i].name, tc.want[i].value)
				}
				raw.Write(f.Raw)
			}
			// Raw keeps the fields byte for byte (DKIM needs them intact).
			if !strings.HasPrefix(tc.in, raw.String()) {
				t.Errorf("fields' Raw %q is not a prefix of the input", raw.String())
			}
		})
	}
}

func TestParseHeaderFieldLimit(t *testing.T) {
	head := strings.Repeat("X-A: 1\r\n", maxHeaderFields)
	fields, _, err := parseHeader([]byte(head+"\r\n"), true)
	if err != nil || len(fields) != maxHeaderFields {
		t.Fatalf("%d fields: %d, %v", maxHeaderFields, len(fields), err)
	}
	fields, _, err = parseHeader([]byte(head+"X-A: 1\r\n\r\n"), true)
	if !errors.Is(err, errHeaderTooLarge) || fields != nil {
		t.Fatalf("%d fields: %d, %v; want errHeaderTooLarge", maxHeaderFields+1, len(fields), err)
	}
}

// TestParseHeaderObsoleteFieldName: RFC 5322 4.5 allows white space between
// the field name and the colon (obs-optional), and mail readers honour it.
// mxguard must see such a field under its real name, or a second From or a
// forged Authentication-Results hides from the checks while the mailbox
// server and the reader still see it.
func TestParseHeaderObsoleteFieldName(t *testing.T) {
	in := "From: <alice@example.org>\r\nFrom : <ceo@bank.example>\r\nAuthentication-Results\t: mx.test; dmarc=pass\r\n\r\n"
	fields, _, err := parseHeader([]byte(in), true)
	if err != nil {
		t.Fatal(err)
	}
	if got := headerValues(fields, "from"); len(got) != 2 {
		t.Errorf("From values %q, want both", got)
	}
	if got := headerValues(fields, "authentication-results"); len(got) != 1 {
		t.Errorf("Authentication-Results values %q, want the obs-form one", got)
	}
}

func TestFoldHeader(t *testing.T) {
	words := make([]string, 60)
	for i := range words {
		words[i] = fmt.Sprintf("reason_%d", i)
	}
	cases := []struct {
		name, field, value string
		want               string // "" = check only the folding rules
	}{
		{name: "short", field: "X-MXGuard-Verdict", value: "accept", want: "X-MXGuard-Verdict: accept\r\n"},
		{name: "spaces collapse", field: "X-A", value: "  a \t b  ", want: "X-A: a b\r\n"},
		{name: "empty", field: "X-A", value: "", want: "X-A:\r\n"},
		{name: "many words", field: "X-MXGuard-Reasons", value: strings.Join(words, " ")},
		{name: "long single word", field: "X-MXGuard-Decision-ID", value: strings.Repeat("z", 120) + " tail"},
		{name: "CRLF in value cannot start a field", field: "X-A", value: "a\r\nBcc: victim@example.org\r\n\r\nbody"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(foldHeader(tc.field, tc.value))
			if tc.want != "" && got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if !strings.HasSuffix(got, "\r\n") {
				t.Fatalf("%q does not end in CRLF", got)
			}
			lines := strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n")
			for i, l := range lines {
				if i > 0 && !strings.HasPrefix(l, "\t") {
					t.Fatalf("line %d %q is not a continuation: a value could inject a field", i, l)
				}
				if strings.ContainsAny(l, "\r\n") {
					t.Fatalf("bare CR/LF in %q", l)
				}
				// RFC 5322 2.1.1: at most 78 characters, unless one word
				// alone is longer (a word is never broken).
				body := l
				if i == 0 {
					body = strings.TrimPrefix(l, tc.field+":")
				}
				if len(l) > 78 && len(strings.Fields(body)) > 1 {
					t.Errorf("line %d has %d characters: %q", i, len(l), l)
				}
			}
			// Unfolding gives back the words in order.
			unfolded := strings.ReplaceAll(strings.TrimSuffix(got, "\r\n"), "\r\n\t", " ")
			want := tc.field + ":"
			if f := strings.Fields(tc.value); len(f) > 0 {
				want += " " + strings.Join(f, " ")
			}
			if unfolded != want {
				t.Errorf("unfolded %q, want %q", unfolded, want)
			}
		})
	}
}

func TestReceivedHeader(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	tlsInfo := &TLSInfo{Version: "TLS 1.3", Cipher: "TLS_AES_128_GCM_SHA256"}
	cases := []struct {
		name    string
		client  Client
		env     Envelope
		want    []string // substrings
		notWant []string
	}{
		{name: "plain with FCrDNS",
			client: Client{IP: "192.0.2.10", Helo: "mail.example.org", PTR: "mail.example.org"},
			env:    Envelope{RcptTo: []string{"bob@corp.test"}},
			want: []string{"Received: from mail.example.org (mail.example.org [192.0.2.10])\r\n\tby mx.test (mxguard) with ESMTP id mxg-0123456789ab\r\n",
				"\r\n\tfor <bob@corp.test>;\r\n\tFri, 27 Nov 2026 10:00:00 +0000\r\n"}},
		{name: "no PTR", client: Client{IP: "192.0.2.10", Helo: "x.example"},
			want: []string{"from x.example ([192.0.2.10])"}},
		{name: "no HELO", client: Client{IP: "192.0.2.10"},
			want: []string{"from unknown ([192.0.2.10])"}},
		{name: "TLS", client: Client{IP: "192.0.2.10", Helo: "x.example", TLS: tlsInfo},
			want: []string{"with ESMTPS id", "\r\n\t(TLS 1.3 TLS_AES_128_GCM_SHA256)"}},
		{name: "SMTPUTF8", client: Client{IP: "192.0.2.10", Helo: "x.example"}, env: Envelope{SMTPUTF8: true},
			want: []string{"with UTF8SMTP id"}},
		{name: "SMTPUTF8 over TLS", client: Client{IP: "192.0.2.10", Helo: "x.example", TLS: tlsInfo}, env: Envelope{SMTPUTF8: true},
			want: []string{"with UTF8SMTPS id"}},
		{name: "several recipients are not named",
			client: Client{IP: "192.0.2.10", Helo: "x.example"}, env: Envelope{RcptTo: []string{"a@corp.test", "b@corp.test"}},
			notWant: []string{"for <", "a@corp.test", "b@corp.test"}},
		{name: "hostile HELO and PTR are neutralised",
			client:  Client{IP: "192.0.2.10", Helo: "evil) [10.0.0.1]\r\nX-Injected: 1", PTR: "p(t)r;x"},
			want:    []string{"from evil__[10.0.0.1]__X-Injected:_1 (p_t_r_x [192.0.2.10])"},
			notWant: []string{"X-Injected: 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := &Transaction{ID: "mxg-0123456789ab", Client: tc.client, Envelope: tc.env}
			got := string(receivedHeader(tr, "mx.test", now))
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in\n%q", w, got)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("unexpected %q in\n%q", w, got)
				}
			}
			checkTraceField(t, got)
		})
	}
}

// checkTraceField: one field, folded only with CRLF TAB, ending in CRLF
// after an RFC 5322 date.
func checkTraceField(t *testing.T, f string) {
	t.Helper()
	if !strings.HasPrefix(f, "Received: from ") || !strings.HasSuffix(f, "\r\n") {
		t.Fatalf("not a Received field: %q", f)
	}
	body := strings.TrimSuffix(f, "\r\n")
	if strings.Contains(strings.ReplaceAll(body, "\r\n\t", ""), "\r") || strings.Contains(strings.ReplaceAll(body, "\r\n\t", ""), "\n") {
		t.Fatalf("line break other than folding in %q", f)
	}
	semi := strings.LastIndex(body, ";\r\n\t")
	if semi < 0 {
		t.Fatalf("no date part in %q", f)
	}
	if _, err := time.Parse(time.RFC1123Z, body[semi+4:]); err != nil {
		t.Fatalf("date: %v", err)
	}
}

func TestReceivedHeaderBoundsHelo(t *testing.T) {
	tr := &Transaction{ID: "mxg-0123456789ab", Client: Client{IP: "192.0.2.10", Helo: strings.Repeat("h", 1000), PTR: strings.Repeat("p", 1000)}}
	got := string(receivedHeader(tr, "mx.test", time.Unix(0, 0)))
	if strings.Contains(got, strings.Repeat("h", 256)) || strings.Contains(got, strings.Repeat("p", 256)) {
		t.Errorf("client names not truncated to 255 octets: %d bytes", len(got))
	}
	checkTraceField(t, got)
}

// TestReceivedHeaderIPv6Literal: RFC 5321 4.1.3 and 4.4 write an IPv6
// client address as an address literal "[IPv6:...]".
func TestReceivedHeaderIPv6Literal(t *testing.T) {
	tr := &Transaction{ID: "mxg-0123456789ab", Client: Client{IP: "2001:db8::77", Helo: "x.example"}}
	got := string(receivedHeader(tr, "mx.test", time.Unix(0, 0)))
	if !strings.Contains(got, "([IPv6:2001:db8::77])") {
		t.Errorf("got %q", got)
	}
}

func TestDecodeHeaderText(t *testing.T) {
	cases := []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "Q4 invoice", 998, "Q4 invoice"},
		{"base64 and Q words joined", "=?UTF-8?B?SGVsbG8=?= =?UTF-8?Q?_W=C3=B6rld?=", 998, "Hello Wörld"},
		{"Latin-1", "=?ISO-8859-1?Q?caf=E9?=", 998, "café"},
		{"lower-case charset and encoding", "a =?utf-8?q?b?= c", 998, "a b c"},
		{"unknown charset kept raw", "=?x-unknown?Q?abc?=", 998, "=?x-unknown?Q?abc?="},
		{"malformed word kept raw", "=?UTF-8?B?!!!?=", 998, "=?UTF-8?B?!!!?="},
		{"invalid UTF-8 replaced", "\xff abc", 998, "\uFFFD abc"},
		{"invalid UTF-8 inside a word replaced", "=?UTF-8?B?/w==?=", 998, "\uFFFD"},
		{"bounded", strings.Repeat("a", 2000), 998, strings.Repeat("a", 998)},
		{"bounded after decoding", "=?UTF-8?B?" + strings.Repeat("YWFh", 100) + "?=", 10, "aaaaaaaaaa"},
		{"cut on a rune boundary", "ééééé", 5, "éé"},
		{"cut on a rune boundary (4-byte)", "😀😀", 7, "😀"},
		{"zero", "abc", 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := decodeHeaderText(tc.in, tc.max)
			if got != tc.want {
				t.Errorf("decodeHeaderText(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			if len(got) > tc.max || !utf8.ValidString(got) {
				t.Errorf("%q: %d bytes (max %d), valid UTF-8 %v", got, len(got), tc.max, utf8.ValidString(got))
			}
		})
	}
}
