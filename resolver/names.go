package resolver

import (
	"strconv"
	"strings"
)

// RFC 1035 2.3.4: a name is at most 255 octets on the wire, which is 253
// characters in dotted form without the trailing dot; a label at most 63.
const (
	maxNameLen  = 253
	maxLabelLen = 63
)

// canonical validates a name as callers give it (raw bytes, dots separate
// labels, optional trailing dot) and returns its key: the miekg/dns
// presentation form (special and non-printable bytes escaped exactly as
// miekg/dns escapes them when unpacking, so answers compare equal), lower-cased
// (ASCII only: RFC 4343), without the trailing dot. The root is "".
// It allocates only when the name needs escaping or lower-casing.
func canonical(name string) (string, bool) {
	if name == "." {
		return "", true
	}
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > maxNameLen {
		return "", false
	}
	clean := true
	label := 0
	for i := 0; i < len(name); i++ {
		b := name[i]
		if b == '.' {
			if label == 0 {
				return "", false // empty label
			}
			label = 0
			continue
		}
		label++
		if label > maxLabelLen {
			return "", false
		}
		if needsEscape(b) || ('A' <= b && b <= 'Z') {
			clean = false
		}
	}
	if label == 0 {
		return "", false
	}
	if clean {
		return name, true
	}
	var sb strings.Builder
	sb.Grow(len(name) + 8)
	for i := 0; i < len(name); i++ {
		b := name[i]
		switch {
		case b == '.':
			sb.WriteByte(b)
		case b < ' ' || b > '~':
			sb.WriteByte('\\')
			s := strconv.Itoa(int(b))
			sb.WriteString(strings.Repeat("0", 3-len(s)))
			sb.WriteString(s)
		case isSpecial(b):
			sb.WriteByte('\\')
			sb.WriteByte(b)
		case 'A' <= b && b <= 'Z':
			sb.WriteByte(b + 'a' - 'A')
		default:
			sb.WriteByte(b)
		}
	}
	return sb.String(), true
}

func needsEscape(b byte) bool { return b < ' ' || b > '~' || isSpecial(b) }

// isSpecial mirrors miekg/dns isDomainNameLabelSpecial (minus '.', our label
// separator).
func isSpecial(b byte) bool {
	switch b {
	case ' ', '\'', '@', ';', '(', ')', '"', '\\':
		return true
	}
	return false
}

// fqdn adds the trailing dot miekg/dns wants.
func fqdn(key string) string { return key + "." }

// sameName compares two presentation-form names case-insensitively (ASCII,
// RFC 4343), ignoring a trailing dot on either.
func sameName(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

// unescapeTXT turns a TXT string as miekg/dns unpacks it (`\"`, `\\` and
// `\DDD` escapes) back into the bytes that were on the wire.
func unescapeTXT(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b != '\\' || i+1 >= len(s) {
			sb.WriteByte(b)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			v := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if v <= 255 {
				sb.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		sb.WriteByte(s[i+1])
		i++
	}
	return sb.String()
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }
