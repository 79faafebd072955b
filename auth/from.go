package auth

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"golang.org/x/net/idna"
)

// Errors of ParseHeaderFrom. The returned error wraps exactly one of them
// (test with errors.Is) and adds what was wrong.
var (
	// ErrNoFrom: the message has no From header field (RFC 5322 3.6 requires one).
	ErrNoFrom = errors.New("no From header field")
	// ErrMultipleFrom: more than one From header field (RFC 5322 3.6 allows one).
	ErrMultipleFrom = errors.New("more than one From header field")
	// ErrMultipleMailboxes: one From field with several mailboxes (or none, as
	// in an empty group). RFC 9989 ("Extract Author Domain") leaves such
	// messages outside DMARC; we refuse to pick one so that a policy can
	// reject them.
	ErrMultipleMailboxes = errors.New("From header field does not hold exactly one mailbox")
	// ErrBadFrom: the From field does not parse or its domain is unusable.
	ErrBadFrom = errors.New("malformed From header field")
)

// Bounds on hostile input. RFC 5322 2.1.1 limits a line to 998 octets, but a
// folded field may span lines; 4 KiB is far beyond any legitimate From.
const (
	maxFromFieldLen  = 4096
	fromMaxDomainLen = 253 // RFC 1035 2.3.4, without the trailing dot
	fromMaxLabelLen  = 63
	fromMaxLocalLen  = 256 // RFC 5321 4.5.3.1.1 says 64; be lenient but bounded
)

// fromIDNA converts U-labels to A-labels the way a registry lookup would
// (RFC 9989 "Extract Author Domain": "If the domain is a U-label, the domain
// name MUST be converted to an A-label").
var fromIDNA = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// ParseHeaderFrom extracts the RFC5322.From address and its domain. values are
// the bodies of all From header fields of the message (unfolded; CR and LF
// left in are treated as folding). There must be exactly one field with exactly
// one mailbox. The domain is lower-cased and converted to A-labels.
func ParseHeaderFrom(values []string) (addr, domain string, err error) {
	switch len(values) {
	case 0:
		return "", "", ErrNoFrom
	case 1:
	default:
		return "", "", fmt.Errorf("%w (%d fields)", ErrMultipleFrom, len(values))
	}
	v := values[0]
	if len(v) > maxFromFieldLen {
		return "", "", fmt.Errorf("%w: field longer than %d octets", ErrBadFrom, maxFromFieldLen)
	}
	v = fromUnfold(v)
	if strings.TrimSpace(v) == "" {
		return "", "", fmt.Errorf("%w: empty field", ErrBadFrom)
	}
	list, perr := mail.ParseAddressList(v)
	if perr != nil {
		return "", "", fmt.Errorf("%w: %v", ErrBadFrom, perr)
	}
	if len(list) != 1 {
		return "", "", fmt.Errorf("%w (%d mailboxes)", ErrMultipleMailboxes, len(list))
	}
	addr = list[0].Address
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", fmt.Errorf("%w: address %q has no domain", ErrBadFrom, addr)
	}
	if at > fromMaxLocalLen {
		return "", "", fmt.Errorf("%w: local-part longer than %d octets", ErrBadFrom, fromMaxLocalLen)
	}
	domain, derr := fromNormalizeDomain(addr[at+1:])
	if derr != nil {
		return "", "", fmt.Errorf("%w: %v", ErrBadFrom, derr)
	}
	return addr[:at+1] + domain, domain, nil
}

// fromUnfold removes folding (RFC 5322 2.2.3): CRLF followed by WSP becomes the
// WSP; any other stray CR or LF becomes a space.
func fromUnfold(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "")
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// fromNormalizeDomain lower-cases a domain name, converts it to A-labels and checks
// it is a usable host name (no address literals, bounded lengths).
func fromNormalizeDomain(d string) (string, error) {
	if strings.HasPrefix(d, "[") {
		return "", fmt.Errorf("address literal %q is not a domain", d)
	}
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 4*fromMaxDomainLen {
		return "", errors.New("bad domain length")
	}
	a, err := fromIDNA.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("domain %q: %v", d, err)
	}
	a = strings.ToLower(a)
	if err := fromCheckHostname(a); err != nil {
		return "", err
	}
	return a, nil
}

// fromCheckHostname accepts LDH names of labels of 1-63 octets, 253 octets in all. Underscores are allowed (they occur in the wild and are
// harmless for DNS queries).
func fromCheckHostname(d string) error {
	if len(d) == 0 || len(d) > fromMaxDomainLen {
		return fmt.Errorf("domain %q: length %d not in 1..%d", d, len(d), fromMaxDomainLen)
	}
	for label := range strings.SplitSeq(d, ".") {
		if len(label) == 0 || len(label) > fromMaxLabelLen {
			return fmt.Errorf("domain %q: label length %d not in 1..%d", d, len(label), fromMaxLabelLen)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= 'A' && c <= 'Z'
			if !ok {
				return fmt.Errorf("domain %q: character %q not allowed", d, c)
			}
		}
	}
	return nil
}
