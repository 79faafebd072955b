package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// SPF record parsing (RFC 7208 4.5, 4.6, 5, 6, 12). The whole record is
// parsed before any term is evaluated, so a syntax error anywhere is a
// permerror even when an earlier term would have matched (RFC 7208 4.6).

const (
	// spfMaxRecordLen bounds the record text we parse. RFC 7208 3.4 asks
	// publishers to stay within a 512-byte DNS answer; a TXT RRset cannot
	// exceed 64 KiB. Anything near that is abuse, not policy.
	spfMaxRecordLen = 8192
	// spfMaxTerms bounds the number of terms in one record.
	spfMaxTerms = 512
)

type spfMechKind uint8

const (
	spfMechAll spfMechKind = iota + 1
	spfMechInclude
	spfMechA
	spfMechMX
	spfMechPTR
	spfMechIP4
	spfMechIP6
	spfMechExists
)

// spfTerm is one directive (RFC 7208 4.6.1).
type spfTerm struct {
	text   string // as written, qualifier included
	qual   byte   // '+', '-', '~' or '?'
	kind   spfMechKind
	domain spfMacro // target domain-spec; nil means <domain>
	cidr4  int      // a, mx: IPv4 prefix length
	cidr6  int      // a, mx: IPv6 prefix length
	net    netip.Prefix
}

// spfRecord is a parsed SPF record.
type spfRecord struct {
	terms    []spfTerm
	redirect spfMacro // nil when absent
	exp      spfMacro // nil when absent
}

// spfSyntaxError is a parse failure; it always means permerror.
type spfSyntaxError struct {
	term string
	msg  string
}

func (e *spfSyntaxError) Error() string {
	if e.term == "" {
		return "syntax error: " + e.msg
	}
	return fmt.Sprintf("syntax error near %q: %s", spfClip(e.term), e.msg)
}

// spfClip shortens s for diagnostics.
func spfClip(s string) string { return spfClipN(s, 64) }

// spfClipN cuts s to at most n bytes, marking the cut with "...".
func spfClipN(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

// spfIsRecord reports whether a TXT string is an SPF record: "v=spf1"
// (case-insensitive) followed by a space or the end (RFC 7208 4.5).
func spfIsRecord(txt string) bool {
	return len(txt) >= 6 && strings.EqualFold(txt[:6], "v=spf1") && (len(txt) == 6 || txt[6] == ' ')
}

// spfParse parses an SPF record (which must satisfy spfIsRecord).
func spfParse(rec string) (*spfRecord, error) {
	if len(rec) > spfMaxRecordLen {
		return nil, &spfSyntaxError{msg: fmt.Sprintf("record longer than %d bytes", spfMaxRecordLen)}
	}
	if !spfIsRecord(rec) {
		return nil, &spfSyntaxError{msg: "not an SPF record"}
	}
	// RFC 7208 3.1, 4.6.1: records are 7-bit ASCII and terms are separated
	// by spaces only; any other byte is outside the grammar.
	for i := 0; i < len(rec); i++ {
		if c := rec[i]; c != ' ' && (c < 0x21 || c > 0x7e) {
			return nil, &spfSyntaxError{term: spfTermAround(rec, i), msg: fmt.Sprintf("invalid byte 0x%02x", c)}
		}
	}
	r := &spfRecord{terms: make([]spfTerm, 0, min(strings.Count(rec, " "), spfMaxTerms))}
	rest := rec[6:]
	n := 0
	for rest != "" {
		// terms = *( 1*SP ( directive / modifier ) ); trailing spaces
		// are allowed (RFC 7208 4.5, 12).
		rest = strings.TrimLeft(rest, " ")
		if rest == "" {
			break
		}
		var t string
		if sp := strings.IndexByte(rest, ' '); sp >= 0 {
			t, rest = rest[:sp], rest[sp:]
		} else {
			t, rest = rest, ""
		}
		if n++; n > spfMaxTerms {
			return nil, &spfSyntaxError{msg: fmt.Sprintf("more than %d terms", spfMaxTerms)}
		}
		if err := r.addTerm(t); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// spfTermAround returns the space-delimited term holding rec[i].
func spfTermAround(rec string, i int) string {
	start := strings.LastIndexByte(rec[:i], ' ') + 1
	end := strings.IndexByte(rec[i:], ' ')
	if end < 0 {
		return rec[start:]
	}
	return rec[start : i+end]
}

// spfModifierName returns the length of a modifier name at the start of t,
// name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) (RFC 7208 12), when it is
// followed by "=", else -1.
func spfModifierName(t string) int {
	if t == "" || !spfAlpha(t[0]) {
		return -1
	}
	for i := 1; i < len(t); i++ {
		c := t[i]
		switch {
		case spfAlpha(c), c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		case c == '=':
			return i
		default:
			return -1
		}
	}
	return -1
}

func spfAlpha(c byte) bool { return (c|0x20) >= 'a' && (c|0x20) <= 'z' }

func (r *spfRecord) addTerm(t string) error {
	serr := func(msg string) error { return &spfSyntaxError{term: t, msg: msg} }
	if n := spfModifierName(t); n >= 0 {
		name, val := t[:n], t[n+1:]
		switch strings.ToLower(name) {
		case "redirect", "exp":
			// RFC 7208 6: redirect and exp each at most once; their value
			// is a domain-spec, so "exp=" or "redirect=-all" are errors
			// (not unknown modifiers).
			ds, err := spfDomainSpec(val)
			if err != nil {
				return serr(err.Error())
			}
			if strings.EqualFold(name, "redirect") {
				if r.redirect != nil {
					return serr("redirect given twice")
				}
				r.redirect = ds
			} else {
				if r.exp != nil {
					return serr("exp given twice")
				}
				r.exp = ds
			}
		default:
			// RFC 7208 6: unknown modifiers are ignored, but their
			// macro-string must still be well-formed (RFC 7208 12).
			if _, _, err := spfMacroString(val, true); err != nil {
				return serr(err.Error())
			}
		}
		return nil
	}

	term := spfTerm{text: t, qual: '+'}
	body := t
	switch t[0] {
	case '+', '-', '~', '?':
		term.qual = t[0]
		body = t[1:]
	}
	nameEnd := strings.IndexAny(body, ":/")
	if nameEnd < 0 {
		nameEnd = len(body)
	}
	name, arg := strings.ToLower(body[:nameEnd]), body[nameEnd:]
	var err error
	switch name {
	case "all":
		// RFC 7208 5.1: all = "all", nothing after it.
		term.kind = spfMechAll
		if arg != "" {
			return serr("all takes no argument")
		}
	case "include", "exists":
		// RFC 7208 5.2, 5.7: ":" domain-spec is required, no CIDR.
		term.kind = spfMechInclude
		if name == "exists" {
			term.kind = spfMechExists
		}
		if !strings.HasPrefix(arg, ":") {
			return serr(name + " needs :domain")
		}
		if term.domain, err = spfDomainSpec(arg[1:]); err != nil {
			return serr(err.Error())
		}
	case "ptr":
		// RFC 7208 5.5: ptr [ ":" domain-spec ], no CIDR.
		term.kind = spfMechPTR
		if arg != "" {
			if arg[0] != ':' {
				return serr("ptr takes no CIDR length")
			}
			if term.domain, err = spfDomainSpec(arg[1:]); err != nil {
				return serr(err.Error())
			}
		}
	case "a", "mx":
		// RFC 7208 5.3, 5.4: [ ":" domain-spec ] [ dual-cidr-length ].
		term.kind = spfMechA
		if name == "mx" {
			term.kind = spfMechMX
		}
		spec, c4, c6, cerr := spfDualCIDR(arg)
		if cerr != nil {
			return serr(cerr.Error())
		}
		term.cidr4, term.cidr6 = c4, c6
		if spec != "" {
			if spec[0] != ':' {
				return serr("unexpected " + spec)
			}
			if term.domain, err = spfDomainSpec(spec[1:]); err != nil {
				return serr(err.Error())
			}
		}
	case "ip4", "ip6":
		// RFC 7208 5.6: ip4 ":" ip4-network [ ip4-cidr-length ],
		// ip6 ":" ip6-network [ ip6-cidr-length ].
		term.kind = spfMechIP4
		if name == "ip6" {
			term.kind = spfMechIP6
		}
		if term.net, err = spfIPNetwork(term.kind, arg); err != nil {
			return serr(err.Error())
		}
	default:
		return serr("unknown mechanism")
	}
	r.terms = append(r.terms, term)
	return nil
}

// spfCIDR parses the digits of a cidr-length: "0" / %x31-39 0*nDIGIT with
// value at most max (RFC 7208 12: no leading zeros).
func spfCIDR(s string, max int) (int, error) {
	if s == "" || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad CIDR length /%s", s)
	}
	v := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("bad CIDR length /%s", s)
		}
		v = v*10 + int(s[i]-'0')
	}
	if v > max {
		return 0, fmt.Errorf("CIDR length /%d out of range", v)
	}
	return v, nil
}

// spfDualCIDR splits a trailing dual-cidr-length off arg:
// [ "/" ip4-cidr-length ] [ "//" ip6-cidr-length ]. A domain-spec may itself
// hold "/", so only an all-digit suffix counts as a length.
func spfDualCIDR(arg string) (rest string, c4, c6 int, err error) {
	c4, c6 = 32, 128
	rest = arg
	if d := spfDigitSuffix(rest); d > 0 && strings.HasSuffix(rest[:len(rest)-d], "//") {
		if c6, err = spfCIDR(rest[len(rest)-d:], 128); err != nil {
			return "", 0, 0, err
		}
		rest = rest[:len(rest)-d-2]
	}
	if d := spfDigitSuffix(rest); d > 0 && strings.HasSuffix(rest[:len(rest)-d], "/") {
		if c4, err = spfCIDR(rest[len(rest)-d:], 32); err != nil {
			return "", 0, 0, err
		}
		rest = rest[:len(rest)-d-1]
	}
	return rest, c4, c6, nil
}

// spfDigitSuffix returns the number of trailing ASCII digits of s.
func spfDigitSuffix(s string) int {
	n := 0
	for n < len(s) && s[len(s)-1-n] >= '0' && s[len(s)-1-n] <= '9' {
		n++
	}
	return n
}

// spfIPNetwork parses ":" network [ "/" length ] for ip4 or ip6.
func spfIPNetwork(kind spfMechKind, arg string) (netip.Prefix, error) {
	if !strings.HasPrefix(arg, ":") {
		return netip.Prefix{}, errors.New("needs :network")
	}
	arg = arg[1:]
	addrText, bitsText, hasBits := strings.Cut(arg, "/")
	addr, err := netip.ParseAddr(addrText)
	if err != nil || addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad address %q", addrText)
	}
	max := 32
	if kind == spfMechIP4 {
		if !addr.Is4() {
			return netip.Prefix{}, fmt.Errorf("not an IPv4 address %q", addrText)
		}
	} else {
		if !addr.Is6() {
			return netip.Prefix{}, fmt.Errorf("not an IPv6 address %q", addrText)
		}
		max = 128
	}
	bits := max
	if hasBits {
		if bits, err = spfCIDR(bitsText, max); err != nil {
			return netip.Prefix{}, err
		}
	}
	return netip.PrefixFrom(addr, bits).Masked(), nil
}
