package filter

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"
)

// maxHeaderFields bounds the number of header fields we index.
const maxHeaderFields = 2000

var errHeaderTooLarge = errors.New("header section too large")

// headerField is one field exactly as received (name, colon, value, folding
// and the final CRLF), so that relaying keeps DKIM-signed headers intact.
type headerField struct {
	Name string // lower-cased
	Raw  []byte
}

// Value returns the unfolded value without the leading space.
func (f headerField) Value() string {
	i := bytes.IndexByte(f.Raw, ':')
	if i < 0 {
		return ""
	}
	v := f.Raw[i+1:]
	// RFC 5322 2.2.3: unfolding removes each CRLF that precedes WSP.
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	return strings.TrimSpace(string(v))
}

// parseHeader splits the header section at the start of head into fields and
// returns the offset where the body starts (after the empty line). head must
// hold the whole header section; if it ends before the empty line and more
// of the message follows (complete is false), the header is too large.
func parseHeader(head []byte, complete bool) (fields []headerField, bodyOff int, err error) {
	off := 0
	for off < len(head) {
		eol := bytes.Index(head[off:], []byte("\r\n"))
		if eol < 0 {
			if !complete {
				return nil, 0, errHeaderTooLarge
			}
			// A last line without CRLF: treat it as body.
			return fields, off, nil
		}
		line := head[off : off+eol]
		if len(line) == 0 {
			return fields, off + 2, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(fields) == 0 {
				// A continuation with nothing to continue: not a header.
				return fields, off, nil
			}
			last := &fields[len(fields)-1]
			last.Raw = head[off-len(last.Raw) : off+eol+2]
			off += eol + 2
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validFieldName(line[:colon]) {
			// RFC 5322 2.2: not a field; the header section ended without
			// the empty line. Everything from here on is body.
			return fields, off, nil
		}
		if len(fields) >= maxHeaderFields {
			return nil, 0, fmt.Errorf("more than %d header fields: %w", maxHeaderFields, errHeaderTooLarge)
		}
		// RFC 5322 4.5.3 (obs-optional): white space may precede the colon,
		// and readers honour "From :" as From. The name must not keep it,
		// or such a field would escape the From count and the A-R strip.
		name := bytes.TrimRight(line[:colon], " \t")
		fields = append(fields, headerField{Name: strings.ToLower(string(name)), Raw: head[off : off+eol+2]})
		off += eol + 2
	}
	if !complete {
		return nil, 0, errHeaderTooLarge
	}
	return fields, off, nil
}

// validFieldName: RFC 5322 2.2, printable US-ASCII except colon. Trailing
// white space before the colon is an obsolete form (4.5) we tolerate.
func validFieldName(name []byte) bool {
	name = bytes.TrimRight(name, " \t")
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// headerValues returns the unfolded values of all fields named name.
func headerValues(fields []headerField, name string) []string {
	var vals []string
	for _, f := range fields {
		if f.Name == name {
			vals = append(vals, f.Value())
		}
	}
	return vals
}

func firstValue(fields []headerField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value()
		}
	}
	return ""
}

var headerWordDecoder = mime.WordDecoder{}

// decodeHeaderText decodes RFC 2047 encoded-words for display and policy,
// falling back to the raw text, and bounds the length.
func decodeHeaderText(s string, max int) string {
	if d, err := headerWordDecoder.DecodeHeader(s); err == nil {
		s = d
	}
	return truncate(strings.ToValidUTF8(s, "\uFFFD"), max)
}

func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	// Cut on a rune boundary.
	for max > 0 && max < len(s) && (s[max]&0xC0) == 0x80 {
		max--
	}
	return s[:max]
}

// receivedHeader builds our trace field (RFC 5321 4.4; protocol names from
// RFC 3848 and RFC 6531).
func receivedHeader(t *Transaction, hostname string, now time.Time) []byte {
	proto := "ESMTP"
	if t.Envelope.SMTPUTF8 {
		proto = "UTF8SMTP"
	}
	if t.Client.TLS != nil {
		proto += "S"
	}
	var b bytes.Buffer
	b.WriteString("Received: from ")
	b.WriteString(traceToken(t.Client.Helo))
	b.WriteString(" (")
	if t.Client.PTR != "" {
		b.WriteString(traceToken(t.Client.PTR))
		b.WriteByte(' ')
	}
	b.WriteString("[")
	if strings.Contains(t.Client.IP, ":") {
		// RFC 5321 4.1.3: an IPv6 address literal is tagged "IPv6:".
		b.WriteString("IPv6:")
	}
	b.WriteString(t.Client.IP)
	b.WriteString("])\r\n\tby ")
	b.WriteString(hostname)
	b.WriteString(" (mxguard) with ")
	b.WriteString(proto)
	b.WriteString(" id ")
	b.WriteString(t.ID)
	if t.Client.TLS != nil {
		fmt.Fprintf(&b, "\r\n\t(%s %s)", t.Client.TLS.Version, t.Client.TLS.Cipher)
	}
	// Name the recipient only when there is one: listing several would tell
	// each recipient who else got the message.
	if len(t.Envelope.RcptTo) == 1 {
		b.WriteString("\r\n\tfor <")
		b.WriteString(t.Envelope.RcptTo[0])
		b.WriteString(">")
	}
	b.WriteString(";\r\n\t")
	b.WriteString(now.Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return b.Bytes()
}

// traceToken keeps client-supplied names in the trace field to a safe
// character set (they were already checked for control characters).
func traceToken(s string) string {
	if s == "" {
		return "unknown"
	}
	b := []byte(truncate(s, 255))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-_:[]", c) >= 0) {
			b[i] = '_'
		}
	}
	return string(b)
}

// foldHeader formats one header field with folding at spaces so that no
// line exceeds ~78 octets (RFC 5322 2.1.1), ending in CRLF.
func foldHeader(name, value string) []byte {
	var b bytes.Buffer
	b.WriteString(name)
	b.WriteString(":")
	lineLen := len(name) + 1
	for i, word := range strings.Fields(value) {
		if i > 0 && lineLen+1+len(word) > 78 {
			b.WriteString("\r\n\t")
			lineLen = 1
		} else {
			b.WriteByte(' ')
			lineLen++
		}
		b.WriteString(word)
		lineLen += len(word)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}
