package relay

import (
	"errors"
	"fmt"
	"net/textproto"

	"github.com/emersion/go-smtp"
)

// ErrNoRoute is returned by Open and Deliver for a domain without a route.
var ErrNoRoute = errors.New("relay: no route for domain")

// maxReplyText bounds the downstream text kept in a ReplyError.
const maxReplyText = 512

// ReplyError is a 4xx or 5xx reply from the downstream to one of the
// mirrored commands. Callers find it with errors.As; the gateway passes the
// code class (never the text) back to the sender.
type ReplyError struct {
	Code     int    // 400-599
	Enhanced [3]int // RFC 3463 enhanced status code; zero when the downstream sent none
	Text     string // the downstream's text, truncated; for logs only
	Stage    string // "mail", "rcpt", "data" or "rset"
}

func (e *ReplyError) Error() string {
	if e.Enhanced != [3]int{} {
		return fmt.Sprintf("downstream %s: %d %d.%d.%d %s", e.Stage, e.Code,
			e.Enhanced[0], e.Enhanced[1], e.Enhanced[2], e.Text)
	}
	return fmt.Sprintf("downstream %s: %d %s", e.Stage, e.Code, e.Text)
}

// Temporary reports whether the reply is a 4xx.
func (e *ReplyError) Temporary() bool { return e.Code/100 == 4 }

// IsTemporary reports whether err should become a 4xx for the sender: true
// for every error except a 5xx ReplyError (nil is not an error: false).
func IsTemporary(err error) bool {
	if err == nil {
		return false
	}
	var re *ReplyError
	if errors.As(err, &re) && re.Code/100 == 5 {
		return false
	}
	return true
}

// replyError converts a go-smtp reply error into a ReplyError; ok is false
// for anything that is not a 4xx/5xx reply.
func replyError(err error, stage string) (*ReplyError, bool) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code < 400 || se.Code > 599 {
		return nil, false
	}
	re := &ReplyError{Code: se.Code, Stage: stage, Text: truncate(se.Message, maxReplyText)}
	if se.EnhancedCode != smtp.NoEnhancedCode {
		re.Enhanced = [3]int(se.EnhancedCode)
	}
	return re, true
}

// plainError turns err into an error that carries no *smtp.SMTPError, so
// that a reply outside the mirrored commands (greeting, EHLO, STARTTLS, an
// unexpected code) is never mistaken for a verdict on the message.
func plainError(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Errorf("downstream replied %d %s", se.Code, truncate(se.Message, maxReplyText))
	}
	var tpe *textproto.Error
	if errors.As(err, &tpe) {
		return fmt.Errorf("downstream replied %d %s", tpe.Code, truncate(tpe.Msg, maxReplyText))
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
