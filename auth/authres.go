package auth

import (
	"regexp"
	"strings"

	"github.com/emersion/go-msgauth/authres"
)

// AuthResSPF is the SPF part of our Authentication-Results: the result word
// and the identities checked (smtp.mailfrom, smtp.helo; RFC 8601 2.7.2).
type AuthResSPF struct{ Result, MailFrom, Helo string }

// authResServer matches the " on SERVER:PORT" part of a *net.DNSError text,
// which must not reach the recipients: it names our internal resolver.
var authResServer = regexp.MustCompile(` on \[?[0-9A-Za-z.:%-]+\]?:[0-9]+:`)

// authResReason is a result's reason as the A-R carries it: without resolver
// addresses, printable and bounded.
func authResReason(s string) string {
	return authResSafeValue(authResServer.ReplaceAllString(s, ":"))
}

// maxAuthResValue bounds each property value we copy from hostile input
// (d=, s=, reasons) into the header we add.
const maxAuthResValue = 200

// AuthResClaims reports whether an Authentication-Results field value claims to
// come from authservID: its authserv-id (RFC 8601 2.2: the first value, after
// any CFWS, a token or quoted-string) equals authservID case-insensitively. A
// trailing dot is ignored on both sides so that "mx.example." cannot pass for
// something else than ours. Such fields must be removed before relaying
// (RFC 8601 5).
func AuthResClaims(fieldValue, authservID string) bool {
	id, ok := authResServID(fieldValue)
	if !ok {
		return false
	}
	want := strings.TrimSuffix(strings.TrimSpace(authservID), ".")
	return want != "" && strings.EqualFold(strings.TrimSuffix(id, "."), want)
}

// authResServID extracts the authserv-id of a field value. It tolerates
// folding (CRLF), nested comments with quoted-pairs and a quoted-string id.
func authResServID(v string) (string, bool) {
	i := authResSkipCFWS(v, 0)
	if i >= len(v) {
		return "", false
	}
	if v[i] == '"' {
		var b strings.Builder
		for i++; i < len(v); i++ {
			switch c := v[i]; c {
			case '\\':
				if i+1 < len(v) {
					i++
					b.WriteByte(v[i])
				}
			case '"':
				return b.String(), b.Len() > 0
			case '\r', '\n':
				// folding inside a quoted-string: FWS, dropped on unfolding
			default:
				b.WriteByte(c)
			}
		}
		return "", false // unterminated
	}
	j := i
	for j < len(v) && !isAuthResDelim(v[j]) {
		j++
	}
	return v[i:j], j > i
}

// isAuthResDelim ends a token (RFC 8601 2.2 value, RFC 2045 token): CTLs,
// space and tspecials. Stopping at every tspecial makes "mx.example/1" or
// "mx.example:" claim "mx.example": we would rather strip a look-alike than
// let one through.
func isAuthResDelim(c byte) bool {
	if c <= ' ' || c == 0x7f {
		return true
	}
	return strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0
}

// authResSkipCFWS skips whitespace, line breaks and (nested) comments from i. The
// nesting depth is bounded by the input length.
func authResSkipCFWS(v string, i int) int {
	depth := 0
	for i < len(v) {
		c := v[i]
		switch {
		case depth > 0 && c == '\\':
			i += 2
			continue
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		default:
			return i
		}
		i++
	}
	return len(v)
}

// FormatAuthResults builds the value of our Authentication-Results field
// (without the field name) with go-msgauth's authres.Format: spf
// (smtp.mailfrom, smtp.helo), one dkim per signature (header.d, header.s,
// header.a, header.b, header.i) or dkim=none, and dmarc (header.from,
// polrec.p, polrec.domain). Each result goes on its own line, folded with
// CRLF + TAB; long results are folded between properties. Every value taken
// from the message is reduced to printable ASCII and bounded.
func FormatAuthResults(authservID string, spf AuthResSPF, dkim []DKIMResult, dmarc DMARCResult) string {
	var results []authres.Result
	if spf.Result != "" {
		results = append(results, &authres.SPFResult{
			Value: authres.ResultValue(authResSafeWord(spf.Result)),
			From:  authResSafeValue(spf.MailFrom),
			Helo:  authResSafeValue(spf.Helo),
		})
	}
	for _, d := range dkim {
		results = append(results, &authres.GenericResult{
			Method: "dkim",
			Value:  authres.ResultValue(authResSafeWord(d.Result)),
			Params: map[string]string{
				"reason":   authResReason(d.Reason),
				"header.d": authResSafeValue(d.Domain),
				"header.s": authResSafeValue(d.Selector),
				"header.a": authResSafeValue(d.Algorithm),
				"header.b": authResSafeValue(d.HeaderB),
				"header.i": authResSafeValue(d.Identifier),
			},
		})
	}
	if len(dkim) == 0 {
		results = append(results, &authres.GenericResult{Method: "dkim", Value: authres.ResultNone})
	}
	if dmarc.Result != "" {
		params := map[string]string{
			"reason":      authResReason(dmarc.Reason),
			"header.from": authResSafeValue(dmarc.Domain),
			"polrec.p":    authResSafeValue(dmarc.Policy),
		}
		if dmarc.PolicyDomain != "" && dmarc.PolicyDomain != dmarc.Domain {
			params["polrec.domain"] = authResSafeValue(dmarc.PolicyDomain)
		}
		results = append(results, &authres.GenericResult{Method: "dmarc", Value: authres.ResultValue(authResSafeWord(dmarc.Result)), Params: params})
	}

	var b strings.Builder
	b.WriteString(authResSafeValue(authservID))
	if len(results) == 0 {
		b.WriteString("; none")
		return b.String()
	}
	for _, r := range results {
		// Format one result at a time so that we fold between results
		// without re-parsing quoted strings.
		one := strings.TrimSpace(strings.TrimPrefix(authres.Format("", []authres.Result{r}), "; "))
		b.WriteString(";\r\n\t")
		b.WriteString(foldAuthRes(one, 76))
	}
	return b.String()
}

// foldAuthRes folds one "method=result prop=value ..." string at spaces that
// are outside quoted strings and comments, so that lines stay near width.
func foldAuthRes(s string, width int) string {
	var out strings.Builder
	lineLen := 8 // the leading TAB
	start := 0
	inQuote, depth := false, 0
	flush := func(end int) {
		word := s[start:end]
		if lineLen > 8 && lineLen+1+len(word) > width {
			out.WriteString("\r\n\t")
			lineLen = 8
		} else if lineLen > 8 {
			out.WriteByte(' ')
			lineLen++
		}
		out.WriteString(word)
		lineLen += len(word)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"' && depth == 0:
			inQuote = !inQuote
		case !inQuote && c == '(':
			depth++
		case !inQuote && c == ')' && depth > 0:
			depth--
		case !inQuote && depth == 0 && c == ' ':
			if i > start {
				flush(i)
			}
			start = i + 1
		}
	}
	if start < len(s) {
		flush(len(s))
	}
	return out.String()
}

// authResSafeValue keeps printable ASCII other than '"' and '\' (authres quotes
// values but does not escape backslashes), bounded in length: no CR/LF can
// reach the header we add.
func authResSafeValue(s string) string {
	s = dkimClip(s, maxAuthResValue)
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f || r == '"' || r == '\\' {
			return '?'
		}
		return r
	}, s)
}

// authResSafeWord keeps a result word a token (RFC 8601 2.2 result = Keyword).
func authResSafeWord(s string) string {
	s = dkimClip(s, 32)
	ok := s != ""
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			ok = false
		}
	}
	if !ok {
		return "permerror"
	}
	return strings.ToLower(s)
}
