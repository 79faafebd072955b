package auth

import (
	"errors"
	"strings"
)

// SPF macros (RFC 7208 7). A macro-string is parsed once into parts, checked
// for syntax with the record (RFC 7208 4.6: any syntax error is a permerror),
// and expanded when the term that holds it is evaluated.

const (
	// spfMaxDomainLen is the longest expanded domain-spec kept (RFC 7208 7.3:
	// longer names are truncated from the left, label by label).
	spfMaxDomainLen = 253
	// spfMaxExpLen bounds the bytes an explanation expansion may produce
	// before it is cut; RFC 7208 sets no limit, a receiver must.
	spfMaxExpLen = 1024
	// spfMaxTransformDigits caps the DIGIT transformer; more parts than
	// this never exist in a 253-byte name anyway.
	spfMaxTransformDigits = 255
)

var errSPFMacroSyntax = errors.New("macro syntax error")

// spfMacroPart is either literal text (letter == 0) or one macro-expand.
type spfMacroPart struct {
	lit     string
	letter  byte   // lower-case macro-letter
	escape  bool   // upper-case letter: URL-escape the value (RFC 7208 7.3)
	keep    int    // DIGIT transformer: right-hand parts to keep, 0 = all
	reverse bool   // "r" transformer
	delims  string // delimiters to split on; "" means "."
}

// spfMacro is a parsed macro-string.
type spfMacro []spfMacroPart

// spfMacroString parses a macro-string (RFC 7208 7.1). In explanation text
// (exp) the letters c, r and t are allowed and so are spaces (RFC 7208 6.2:
// explain-string = *( macro-string / SP )). tail returns the literal text
// after the last macro-expand, for the domain-end check.
func spfMacroString(s string, exp bool) (m spfMacro, tail string, err error) {
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			m = append(m, spfMacroPart{lit: lit.String()})
			lit.Reset()
		}
	}
	tailStart := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '%':
			if i+1 >= len(s) {
				return nil, "", errSPFMacroSyntax
			}
			switch s[i+1] {
			// RFC 7208 7.1: "%%", "%_" and "%-" are macro-expands too.
			case '%':
				lit.WriteByte('%')
				i += 2
			case '_':
				lit.WriteByte(' ')
				i += 2
			case '-':
				lit.WriteString("%20")
				i += 2
			case '{':
				end := strings.IndexByte(s[i+2:], '}')
				if end < 0 {
					return nil, "", errSPFMacroSyntax
				}
				p, perr := spfMacroExpand(s[i+2:i+2+end], exp)
				if perr != nil {
					return nil, "", perr
				}
				flush()
				m = append(m, p)
				i += 2 + end + 1
			default:
				// RFC 7208 7.1: a '%' not followed by '{', '%', '-' or '_'
				// is a syntax error.
				return nil, "", errSPFMacroSyntax
			}
			tailStart = i
		case c >= 0x21 && c <= 0x7e, exp && c == ' ':
			lit.WriteByte(c)
			i++
		default:
			return nil, "", errSPFMacroSyntax
		}
	}
	flush()
	return m, s[tailStart:], nil
}

// spfMacroExpand parses the inside of "%{...}":
// macro-letter transformers *delimiter (RFC 7208 7.1).
func spfMacroExpand(body string, exp bool) (spfMacroPart, error) {
	var p spfMacroPart
	if body == "" {
		return p, errSPFMacroSyntax
	}
	l := body[0]
	lower := l | 0x20
	switch lower {
	case 's', 'l', 'o', 'd', 'i', 'p', 'h', 'v':
	case 'c', 'r', 't':
		// RFC 7208 7.1: c, r and t are only allowed in "exp" text.
		if !exp {
			return p, errSPFMacroSyntax
		}
	default:
		return p, errSPFMacroSyntax
	}
	if l < 'a' {
		if l < 'A' || l > 'Z' {
			return p, errSPFMacroSyntax
		}
		p.escape = true
	}
	p.letter = lower
	i := 1
	digits := 0
	for i < len(body) && body[i] >= '0' && body[i] <= '9' {
		if p.keep <= spfMaxTransformDigits {
			p.keep = p.keep*10 + int(body[i]-'0')
		}
		digits++
		i++
	}
	if digits > 0 && p.keep == 0 {
		// RFC 7208 7.3: if a DIGIT is specified, the value MUST be nonzero.
		return p, errSPFMacroSyntax
	}
	if p.keep > spfMaxTransformDigits {
		p.keep = spfMaxTransformDigits
	}
	if i < len(body) && (body[i]|0x20) == 'r' {
		p.reverse = true
		i++
	}
	p.delims = body[i:]
	for ; i < len(body); i++ {
		switch body[i] {
		case '.', '-', '+', ',', '/', '_', '=':
		default:
			return p, errSPFMacroSyntax
		}
	}
	return p, nil
}

// spfDomainSpec parses and checks a domain-spec:
// domain-spec = macro-string domain-end;
// domain-end = ( "." toplabel [ "." ] ) / macro-expand (RFC 7208 7.1).
func spfDomainSpec(s string) (spfMacro, error) {
	if s == "" {
		return nil, errors.New("empty domain-spec")
	}
	m, tail, err := spfMacroString(s, false)
	if err != nil {
		return nil, err
	}
	if tail == "" {
		return m, nil // ends in a macro-expand
	}
	t := strings.TrimSuffix(tail, ".")
	dot := strings.LastIndexByte(t, '.')
	if dot < 0 || !spfTopLabel(t[dot+1:]) {
		return nil, errors.New("domain-spec does not end in a valid top label")
	}
	return m, nil
}

// spfTopLabel reports whether s is a toplabel (RFC 7208 7.1):
// ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ).
func spfTopLabel(s string) bool {
	if s == "" || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	alpha, dash := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			alpha = true
		case c >= '0' && c <= '9':
		case c == '-':
			dash = true
		default:
			return false
		}
	}
	return alpha || dash
}

// spfMacroEnv supplies macro values; the checker implements it so that %{p}
// can do its (counted) lookups lazily.
type spfMacroEnv interface {
	macroValue(letter byte, domain string) (string, error)
}

// expand expands m for the current domain. For a domain-spec (domainSpec)
// the result is cut from the left to 253 bytes by whole labels (RFC 7208 7.3)
// and a trailing dot is dropped; explanation text is cut at spfMaxExpLen.
func (m spfMacro) expand(env spfMacroEnv, domain string, domainSpec bool) (string, error) {
	var b strings.Builder
	for _, p := range m {
		if p.letter == 0 {
			b.WriteString(p.lit)
		} else {
			v, err := env.macroValue(p.letter, domain)
			if err != nil {
				return "", err
			}
			b.WriteString(p.transform(v))
		}
		if domainSpec && b.Len() > 4*spfMaxDomainLen {
			// Only the rightmost 253 bytes can survive the final left
			// truncation, so dropping the front keeps memory bounded
			// without changing the result.
			keep := b.String()[b.Len()-2*spfMaxDomainLen:]
			b.Reset()
			b.WriteString(keep)
		}
		if !domainSpec && b.Len() > spfMaxExpLen {
			return b.String()[:spfMaxExpLen], nil
		}
	}
	out := b.String()
	if domainSpec {
		out = spfTruncateDomain(strings.TrimSuffix(out, "."))
	}
	return out, nil
}

// spfTruncateDomain removes leading labels until name fits in 253 bytes
// (RFC 7208 7.3).
func spfTruncateDomain(name string) string {
	for len(name) > spfMaxDomainLen {
		dot := strings.IndexByte(name, '.')
		if dot < 0 {
			return name[len(name)-spfMaxDomainLen:]
		}
		name = name[dot+1:]
	}
	return name
}

// transform applies the transformers and URL escaping (RFC 7208 7.3).
func (p spfMacroPart) transform(v string) string {
	if p.keep > 0 || p.reverse || p.delims != "" {
		delims := p.delims
		if delims == "" {
			delims = "."
		}
		parts := spfSplitAny(v, delims)
		if p.reverse {
			for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
				parts[i], parts[j] = parts[j], parts[i]
			}
		}
		if p.keep > 0 && p.keep < len(parts) {
			parts = parts[len(parts)-p.keep:]
		}
		v = strings.Join(parts, ".")
	}
	if p.escape {
		v = spfURLEscape(v)
	}
	return v
}

// spfSplitAny splits s on every byte in delims.
func spfSplitAny(s, delims string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(delims, s[i]) >= 0 {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// spfURLEscape escapes every byte outside the URI "unreserved" set
// (RFC 7208 7.3, RFC 3986 2.3).
func spfURLEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}
