package filter

import (
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"
)

// The reply funnel. Every reply that mxguard's own code sends (gate, Session
// methods, DATA outcomes) is built here: it carries the transaction id and
// never internal error text, host names or addresses of the inside. Replies
// to malformed commands are written by go-smtp's parser before our code runs
// (its texts carry no internal detail either).

// Reply is an SMTP reply before the transaction id is appended.
type Reply struct {
	Code     int
	Enhanced smtp.EnhancedCode
	Text     string
}

// Default replies (ARCHITECTURE.md, "Replies: one funnel").
var (
	ReplyPolicyReject      = Reply{550, smtp.EnhancedCode{5, 7, 1}, "Message rejected by policy"}
	ReplyPolicyTempfail    = Reply{451, smtp.EnhancedCode{4, 7, 1}, "Message deferred by policy, try again later"}
	ReplyRelayDenied       = Reply{550, smtp.EnhancedCode{5, 7, 1}, "Relaying denied: we do not accept mail for this domain"}
	ReplyDownstreamDown    = Reply{451, smtp.EnhancedCode{4, 4, 1}, "Mailbox server unavailable, try again later"}
	ReplyPolicyError       = Reply{451, smtp.EnhancedCode{4, 3, 0}, "Temporary policy error, try again later"}
	ReplyInternalError     = Reply{451, smtp.EnhancedCode{4, 3, 0}, "Temporary local problem, try again later"}
	ReplyBareLineEnding    = Reply{550, smtp.EnhancedCode{5, 6, 0}, "Message contains bare CR, bare LF or NUL; only CRLF line endings are accepted (RFC 5321 2.3.8)"}
	ReplyLineTooLong       = Reply{550, smtp.EnhancedCode{5, 6, 0}, "Message contains a line longer than allowed (RFC 5321 4.5.3.1.6)"}
	ReplyTooLarge          = Reply{552, smtp.EnhancedCode{5, 3, 4}, "Message too large"}
	ReplyHeaderTooLarge    = Reply{552, smtp.EnhancedCode{5, 3, 4}, "Message header section too large"}
	ReplyRateLimited       = Reply{451, smtp.EnhancedCode{4, 7, 0}, "Rate limit exceeded, try again later"}
	ReplyRateLimitedClose  = Reply{421, smtp.EnhancedCode{4, 7, 0}, "Too many connections or messages from your network, try again later"}
	ReplyTooManyConns      = Reply{421, smtp.EnhancedCode{4, 7, 0}, "Too many connections, try again later"}
	ReplyTooManyRcpts      = Reply{452, smtp.EnhancedCode{4, 5, 3}, "Too many recipients"}
	ReplyOtherRoute        = Reply{452, smtp.EnhancedCode{4, 5, 3}, "Recipient needs a separate transaction, please retry it"}
	ReplyMailLoop          = Reply{554, smtp.EnhancedCode{5, 4, 6}, "Mail loop detected: too many Received headers"}
	ReplyBadCommandChars   = Reply{501, smtp.EnhancedCode{5, 5, 2}, "Control characters are not allowed in commands"}
	ReplyBadSender         = Reply{501, smtp.EnhancedCode{5, 1, 7}, "Bad sender address syntax"}
	ReplyBadRecipient      = Reply{501, smtp.EnhancedCode{5, 1, 3}, "Bad recipient address syntax"}
	ReplyBadHelo           = Reply{501, smtp.EnhancedCode{5, 5, 4}, "Bad HELO/EHLO argument"}
	ReplyNeedSMTPUTF8      = Reply{553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address needs the SMTPUTF8 parameter"}
	ReplyShuttingDown      = Reply{421, smtp.EnhancedCode{4, 3, 2}, "Service shutting down, try again later"}
	ReplyTooManyErrors     = Reply{421, smtp.EnhancedCode{4, 7, 0}, "Too many errors, closing connection"}
	ReplyDataTimeout       = Reply{451, smtp.EnhancedCode{4, 4, 2}, "Message transfer too slow"}
	ReplyQuarantined       = Reply{250, smtp.EnhancedCode{2, 0, 0}, "Message accepted"}
	ReplyDelivered         = Reply{250, smtp.EnhancedCode{2, 0, 0}, "Message accepted for delivery"}
	ReplyDownstreamRefused = Reply{550, smtp.EnhancedCode{5, 0, 0}, "Refused by the mailbox server"}
	ReplyDownstreamDefer   = Reply{451, smtp.EnhancedCode{4, 0, 0}, "Deferred by the mailbox server, try again later"}
)

// maxReplyText bounds the human text of one reply line (RFC 5321 4.5.3.1.5:
// a reply line is at most 512 octets including the code and CRLF).
const maxReplyText = 400

// SMTPError returns the reply as the error go-smtp writes to the client, with
// the transaction id appended.
func (r Reply) SMTPError(id string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: r.Enhanced, Message: r.line(id)}
}

// Line formats the whole reply line, for writers that bypass go-smtp (the
// gate before the banner).
func (r Reply) Line(id string) string {
	return fmt.Sprintf("%d %d.%d.%d %s\r\n", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.line(id))
}

func (r Reply) line(id string) string {
	text := sanitizeReplyText(r.Text)
	if id == "" {
		return text
	}
	return text + " (id " + id + ")"
}

// WithText returns a copy with other text (policy-provided texts come here).
func (r Reply) WithText(text string) Reply {
	if text != "" {
		r.Text = text
	}
	return r
}

// sanitizeReplyText keeps a reply on one line of printable ASCII: a policy
// or downstream text must never be able to inject a reply line.
func sanitizeReplyText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxReplyText; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = ' '
		}
		b.WriteByte(c)
	}
	return strings.TrimSpace(b.String())
}

// downstreamReply maps a downstream reply to what the sender sees: the same
// code class and enhanced code, our own text (the downstream's text may name
// internal hosts).
func downstreamReply(code int, enh [3]int) Reply {
	r := ReplyDownstreamDefer
	if code >= 500 && code < 600 {
		r = ReplyDownstreamRefused
		r.Code = code
	} else if code >= 400 && code < 500 {
		r.Code = code
	}
	// Keep the downstream's enhanced code only when it is well formed and of
	// the same class (RFC 3463 2: the class must match the reply code).
	if enh[0] == r.Code/100 && enh[1] >= 0 && enh[1] < 1000 && enh[2] >= 0 && enh[2] < 1000 {
		r.Enhanced = smtp.EnhancedCode(enh)
	}
	return r
}
