package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// maxReplyBytes bounds what the downstream may send between two of our
// writes (one reply, or a TLS handshake flight). go-smtp bounds line length
// but not the number of continuation lines.
const maxReplyBytes = 256 << 10

var errReplyTooLong = errors.New("downstream reply exceeds size limit")

// limitConn counts bytes read since the last write and fails reads beyond
// maxReplyBytes: the client is lockstep, so that is one reply.
//
// It also holds writes back until the next read (or until maxPending
// bytes are waiting). go-smtp's client flushes every 4 KiB of a message
// body and once more for the final dot; the downstream answers only after
// the dot, so one write syscall per read is enough: a 4 KiB message goes
// out in one write instead of two or three, a 1 MiB one in 16 instead of
// 257. A lockstep client always reads a reply after its last write, so
// nothing stays buffered; bytes still pending when the connection is
// dropped are never sent, which is what a failed body copy wants anyway.
type limitConn struct {
	net.Conn
	sinceWrite atomic.Int64
	pending    *[]byte // writes not yet sent; nil when there are none
}

// maxPending bounds the bytes held back per connection.
const maxPending = 64 << 10

var pendingBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxPending); return &b }}

func (c *limitConn) Read(p []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	left := maxReplyBytes - c.sinceWrite.Load()
	if left <= 0 {
		return 0, errReplyTooLong
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	c.sinceWrite.Add(int64(n))
	return n, err
}

func (c *limitConn) Write(p []byte) (int, error) {
	c.sinceWrite.Store(0)
	if c.pending != nil && len(*c.pending)+len(p) > maxPending {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	if len(p) >= maxPending {
		return c.Conn.Write(p)
	}
	if c.pending == nil {
		c.pending = pendingBufs.Get().(*[]byte)
	}
	*c.pending = append(*c.pending, p...)
	return len(p), nil
}

// Close drops any held-back writes: the connection is given up.
func (c *limitConn) Close() error {
	if b := c.pending; b != nil {
		c.pending = nil
		*b = (*b)[:0]
		pendingBufs.Put(b)
	}
	return c.Conn.Close()
}

// flush sends the held-back writes (under the socket's deadline).
func (c *limitConn) flush() error {
	if c.pending == nil {
		return nil
	}
	b := c.pending
	c.pending = nil
	_, err := c.Conn.Write(*b)
	*b = (*b)[:0]
	pendingBufs.Put(b)
	return err
}

// greetedConn replays a synthetic greeting before the real stream, so that a
// fresh go-smtp client can take over a session after STARTTLS.
type greetedConn struct {
	net.Conn
	greeting string
}

func (c *greetedConn) Read(p []byte) (int, error) {
	if c.greeting != "" {
		n := copy(p, c.greeting)
		c.greeting = c.greeting[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// readReplyUnbuffered reads one SMTP reply a byte at a time, so that nothing
// after it is consumed (the TLS handshake follows a 220 to STARTTLS, and
// bytes a server pipelines after its 220 must not be read as plaintext).
func readReplyUnbuffered(r io.Reader) (int, error) {
	var line []byte
	var b [1]byte
	total := 0
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, err
		}
		total++
		if total > 4096 {
			return 0, errReplyTooLong
		}
		if b[0] != '\n' {
			line = append(line, b[0])
			continue
		}
		s := strings.TrimSuffix(string(line), "\r")
		line = line[:0]
		if len(s) < 3 || !isDigits(s[:3]) || (len(s) > 3 && s[3] != ' ' && s[3] != '-') {
			return 0, fmt.Errorf("malformed reply line %q", truncate(s, 64))
		}
		if len(s) == 3 || s[3] == ' ' {
			code := int(s[0]-'0')*100 + int(s[1]-'0')*10 + int(s[2]-'0')
			return code, nil
		}
	}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// smtpConn is a Conn to an SMTP downstream. With pooling, one session
// outlives its handles: Close moves the session into a new smtpConn kept by
// the pool and leaves the closed handle unable to touch it.
type smtpConn struct {
	r      *Relay
	c      *smtp.Client
	raw    net.Conn // the TCP socket under any TLS, for deadlines and abort
	host   string
	mode   TLSMode // the route's mode the session was opened for (pool key)
	tls    bool
	broken bool // the session is out of sync or gone: only Close is left
	closed bool
	// inTx: MAIL was accepted and no final DATA reply or RSET has ended
	// the transaction since. lastFailed: the last command sent got an
	// error reply. Only a session with neither is pooled.
	inTx       bool
	lastFailed bool
	uses       int // transactions started (MAIL sent) over the session's life
}

var errBroken = errors.New("relay: downstream connection is broken")

// fail classifies err from the downstream at stage. 4xx/5xx replies become
// ReplyError and leave the session usable (except 421, RFC 5321 3.8: the
// server is closing); everything else breaks the session.
func (s *smtpConn) fail(err error, stage string) error {
	s.lastFailed = true
	if re, ok := replyError(err, stage); ok {
		if re.Code == 421 {
			s.broken = true
		}
		return re
	}
	s.broken = true
	return fmt.Errorf("relay %s %s: %w", s.host, stage, plainError(err))
}

func (s *smtpConn) usable() error {
	if s.closed {
		return net.ErrClosed
	}
	if s.broken {
		return errBroken
	}
	return nil
}

// errBadAddress is a caller bug: the front end refuses such addresses.
var errBadAddress = errors.New("relay: address contains CR, LF or NUL")

func (s *smtpConn) Mail(from string, opts *smtp.MailOptions) error {
	if err := s.usable(); err != nil {
		return err
	}
	if strings.ContainsAny(from, "\r\n\x00") {
		return errBadAddress
	}
	var o smtp.MailOptions
	if opts != nil {
		o = *opts
	}
	// We advertise neither AUTH nor REQUIRETLS; a sender's AUTH= identity
	// is not ours to vouch for downstream.
	o.Auth, o.RequireTLS = nil, false
	if o.UTF8 {
		if ok, _ := s.c.Extension("SMTPUTF8"); !ok {
			// RFC 6531 3.5: a message that needs SMTPUTF8 cannot be
			// relayed to a server without it; a permanent failure, so
			// it is given as the reply the downstream would imply.
			return &ReplyError{Code: 553, Enhanced: [3]int{5, 6, 7},
				Text: "downstream does not support SMTPUTF8", Stage: "mail"}
		}
	}
	s.uses++
	if err := s.c.Mail(from, &o); err != nil {
		// A refused MAIL opens no transaction (RFC 5321 4.1.1.2).
		return s.fail(err, "mail")
	}
	s.inTx, s.lastFailed = true, false
	return nil
}

func (s *smtpConn) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := s.usable(); err != nil {
		return err
	}
	if strings.ContainsAny(to, "\r\n\x00") {
		return errBadAddress
	}
	if err := s.c.Rcpt(to, opts); err != nil {
		return s.fail(err, "rcpt")
	}
	s.lastFailed = false
	return nil
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (s *smtpConn) Data(msg io.Reader) error {
	if err := s.usable(); err != nil {
		return err
	}
	deadline := time.Now().Add(s.r.opts.DataTimeout)
	w, err := s.c.Data() // DATA and its 354, under CommandTimeout
	if err != nil {
		return s.fail(err, "data")
	}
	// go-smtp clears the deadline after each command and sets none while
	// the body is written: a downstream that stops reading would block us.
	s.raw.SetDeadline(deadline)
	bp := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(w, onlyReader{msg}, *bp)
	copyBufs.Put(bp)
	if err != nil {
		// Never send the final dot after a failed copy: that would deliver
		// a truncated message. Dropping the connection makes the
		// downstream discard the transaction (RFC 5321 3.8).
		s.broken = true
		s.raw.Close()
		return fmt.Errorf("relay %s data: %w", s.host, err)
	}
	left := time.Until(deadline)
	if left <= 0 {
		s.broken = true
		s.raw.Close()
		return fmt.Errorf("relay %s data: %w", s.host, errDataTimeout)
	}
	s.c.SubmissionTimeout = left
	err = w.Close() // final dot and reply
	// RFC 5321 4.1.1.4: the final reply, whatever it says, ends the
	// transaction (a broken session is never reused anyway).
	s.inTx = false
	if err != nil {
		return s.fail(err, "data")
	}
	s.lastFailed = false
	return nil
}

var errDataTimeout = errors.New("data timeout")

// onlyReader hides io.WriterTo so that CopyBuffer uses our pooled buffer
// instead of whatever the source would allocate.
type onlyReader struct{ io.Reader }

// Reset sends RSET when a transaction may be open or the last command
// failed. After an accepted DATA (or on a fresh session) there is nothing to
// reset, and the round trip is skipped: go-smtp's RSET would also make the
// next command re-send EHLO, a second round trip per message for a front
// end that resets after every transaction.
func (s *smtpConn) Reset() error {
	if err := s.usable(); err != nil {
		return err
	}
	if !s.inTx && !s.lastFailed {
		return nil
	}
	if err := s.c.Reset(); err != nil {
		return s.fail(err, "rset")
	}
	s.inTx, s.lastFailed = false, false
	return nil
}

// Close hands an idle, healthy session back to the pool; otherwise it sends
// QUIT (bounded) and closes the connection.
func (s *smtpConn) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.broken {
		s.c.Close()
		return nil
	}
	if p := s.r.pool; p != nil && !s.inTx && !s.lastFailed {
		kept := *s
		kept.closed = false
		if p.put(&kept, poolKey{host: s.host, mode: s.mode}) {
			return nil
		}
	}
	return s.quit()
}

// quit sends QUIT (bounded: the message is settled, a slow goodbye must not
// hold anyone) and closes the connection.
func (s *smtpConn) quit() error {
	s.c.CommandTimeout = min(s.r.opts.CommandTimeout, quitTimeout)
	err := s.c.Quit()
	s.c.Close() // Quit leaves the connection open when it fails
	if err != nil {
		return fmt.Errorf("relay %s quit: %w", s.host, plainError(err))
	}
	return nil
}

// abort closes the socket from another goroutine, making any blocked call
// fail at once.
func (s *smtpConn) abort() { s.raw.Close() }
