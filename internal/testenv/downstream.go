package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// DownstreamOptions configures StartDownstream.
type DownstreamOptions struct {
	// TLS advertises STARTTLS with the TestCert certificate.
	TLS bool
	// Discard drops message bodies instead of recording them (benchmarks):
	// Messages stays empty, Delivered still counts.
	Discard bool
	// NoSMTPUTF8 stops advertising SMTPUTF8 (advertised by default).
	NoSMTPUTF8 bool
}

// Received is one message the downstream accepted with 250 at end of DATA.
type Received struct {
	From string
	To   []string
	// Data is exactly what go-smtp's DATA reader returned: dot-unstuffed,
	// CRLF line endings kept, without the terminating "." line.
	Data []byte
	// TLS reports whether the transaction ran inside STARTTLS.
	TLS bool
	// Helo is the EHLO/HELO name the client gave in this session.
	Helo string
	// MailOpts are the MAIL FROM parameters as go-smtp parsed them
	// (BODY, SIZE, SMTPUTF8, ...).
	MailOpts smtp.MailOptions
}

// Downstream is a recording SMTP server (go-smtp) on 127.0.0.1 standing in
// for the mailbox servers behind mxguard. It can be told to refuse
// recipients, answer DATA with an error, hang, or go down and come back on
// the same port. All methods are safe for concurrent use.
type Downstream struct {
	tb   testing.TB
	srv  *smtp.Server
	addr string

	hang atomic.Int64 // time.Duration

	mu        sync.Mutex
	ln        net.Listener // nil while down
	serveDone chan struct{}
	conns     map[*downConn]struct{}
	closed    bool
	nconns    int
	mails     int
	delivered int
	msgs      []Received
	changed   chan struct{} // closed and replaced whenever msgs grows
	refuse    map[string]*smtp.SMTPError
	dataReply *smtp.SMTPError
	discard   bool
}

// StartDownstream starts a downstream on 127.0.0.1:0; it is stopped (and
// every session closed) when the test ends.
func StartDownstream(tb testing.TB, opts DownstreamOptions) *Downstream {
	tb.Helper()
	d := &Downstream{
		tb:      tb,
		conns:   make(map[*downConn]struct{}),
		changed: make(chan struct{}),
		refuse:  make(map[string]*smtp.SMTPError),
		discard: opts.Discard,
	}
	srv := smtp.NewServer(smtp.BackendFunc(d.newSession))
	srv.Domain = "mx.test"
	// Generous limits: the downstream must accept whatever the gateway
	// sends, so that tests see exactly what went through.
	srv.MaxLineLength = 1 << 20
	srv.MaxMessageBytes = 64 << 20
	srv.EnableSMTPUTF8 = !opts.NoSMTPUTF8
	srv.ReadTimeout = 2 * time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if opts.TLS {
		srv.TLSConfig, _ = TestCert(tb)
	}
	d.srv = srv

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("downstream listen: %v", err)
	}
	d.addr = ln.Addr().String()
	d.serve(ln)
	tb.Cleanup(d.stop)
	return d
}

// Addr returns "127.0.0.1:port"; it stays the same across Down and Up.
func (d *Downstream) Addr() string { return d.addr }

// Messages returns the messages accepted so far, oldest first. The caller
// must not modify the Data slices.
func (d *Downstream) Messages() []Received {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Received(nil), d.msgs...)
}

// WaitMessages waits until at least n messages were accepted and returns
// them; it fails the test after timeout.
func (d *Downstream) WaitMessages(tb testing.TB, n int, timeout time.Duration) []Received {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		d.mu.Lock()
		if len(d.msgs) >= n {
			msgs := append([]Received(nil), d.msgs...)
			d.mu.Unlock()
			return msgs
		}
		got, ch := len(d.msgs), d.changed
		d.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			tb.Fatalf("downstream: got %d messages, want %d within %v", got, n, timeout)
			return nil
		}
	}
}

// Delivered returns how many messages got 250 at end of DATA (counted also
// with Discard).
func (d *Downstream) Delivered() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.delivered
}

// Mails returns how many MAIL FROM commands reached the backend (the ones
// go-smtp parsed; across all sessions). Tests use it to prove that no
// transaction was started, for example in plaintext.
func (d *Downstream) Mails() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mails
}

// Conns returns how many TCP connections were accepted so far.
func (d *Downstream) Conns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nconns
}

// RefuseRcpt makes RCPT TO:<addr> (case-insensitive) fail with the given
// reply. code 0 accepts the address again.
func (d *Downstream) RefuseRcpt(addr string, code int, enhanced [3]int, text string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := strings.ToLower(addr)
	if code == 0 {
		delete(d.refuse, key)
		return
	}
	d.refuse[key] = &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode(enhanced), Message: text}
}

// SetDataReply makes every end of DATA answer with this reply after reading
// the whole message (the message is then not recorded). code 0 restores the
// normal 250.
func (d *Downstream) SetDataReply(code int, enhanced [3]int, text string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if code == 0 {
		d.dataReply = nil
		return
	}
	d.dataReply = &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode(enhanced), Message: text}
}

// SetHang delays every reply after the greeting by dur (0 turns it off).
// Precisely: on every connection, the first write that follows a read is
// held back by dur. That delays each reply once (a multi-line EHLO reply
// once, not per line), and also the server's TLS handshake flights. A
// connection that is closed wakes up at once.
func (d *Downstream) SetHang(dur time.Duration) { d.hang.Store(int64(dur)) }

// Down stops listening (new connections are refused) and drops every open
// session, like a crashed mailbox server.
func (d *Downstream) Down() {
	d.mu.Lock()
	ln, done := d.ln, d.serveDone
	d.ln = nil
	conns := d.takeConnsLocked()
	d.mu.Unlock()
	if ln == nil {
		return
	}
	ln.Close()
	for _, c := range conns {
		c.Close()
	}
	<-done
}

// Up listens again on the same address after Down.
func (d *Downstream) Up() {
	d.tb.Helper()
	d.mu.Lock()
	up := d.ln != nil || d.closed
	d.mu.Unlock()
	if up {
		return
	}
	// The port was ours a moment ago; retry briefly in case the kernel has
	// not released it yet.
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		ln, err = net.Listen("tcp", d.addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		d.tb.Fatalf("downstream up on %s: %v", d.addr, err)
	}
	d.serve(ln)
}

func (d *Downstream) serve(ln net.Listener) {
	done := make(chan struct{})
	tl := &trackingListener{Listener: ln, d: d}
	d.mu.Lock()
	d.ln, d.serveDone = ln, done
	d.mu.Unlock()
	go func() {
		defer close(done)
		_ = d.srv.Serve(tl) // returns when ln is closed
	}()
}

func (d *Downstream) stop() {
	d.mu.Lock()
	d.closed = true
	ln, done := d.ln, d.serveDone
	d.ln = nil
	conns := d.takeConnsLocked()
	d.mu.Unlock()
	if ln != nil {
		ln.Close()
		<-done
	}
	for _, c := range conns {
		c.Close()
	}
	// Shutdown closes go-smtp's own view of the listeners and waits for
	// the connection goroutines, which end now that their sockets are
	// closed.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.srv.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
		d.tb.Logf("downstream shutdown: %v", err)
	}
}

func (d *Downstream) takeConnsLocked() []*downConn {
	conns := make([]*downConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	clear(d.conns)
	return conns
}

func (d *Downstream) record(m Received) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.delivered++
	if d.discard {
		return
	}
	d.msgs = append(d.msgs, m)
	close(d.changed)
	d.changed = make(chan struct{})
}

// trackingListener wraps accepted connections so that Down can drop them and
// SetHang can delay their replies.
type trackingListener struct {
	net.Listener
	d *Downstream
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	dc := &downConn{Conn: c, d: l.d, done: make(chan struct{})}
	l.d.mu.Lock()
	l.d.nconns++
	if l.d.closed {
		l.d.mu.Unlock()
		dc.Close()
		return dc, nil
	}
	l.d.conns[dc] = struct{}{}
	l.d.mu.Unlock()
	return dc, nil
}

type downConn struct {
	net.Conn
	d         *Downstream
	readSince atomic.Bool
	done      chan struct{}
	closeOnce sync.Once
}

func (c *downConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.readSince.Store(true)
	}
	return n, err
}

func (c *downConn) Write(p []byte) (int, error) {
	if c.readSince.Swap(false) {
		if dur := time.Duration(c.d.hang.Load()); dur > 0 {
			t := time.NewTimer(dur)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return 0, net.ErrClosed
			}
		}
	}
	return c.Conn.Write(p)
}

func (c *downConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.d.mu.Lock()
		delete(c.d.conns, c)
		c.d.mu.Unlock()
	})
	return c.Conn.Close()
}

type downSession struct {
	d    *Downstream
	helo string
	tls  bool
	from string
	opts smtp.MailOptions
	to   []string
}

func (d *Downstream) newSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &downSession{d: d, helo: c.Hostname(), tls: isTLS}, nil
}

func (s *downSession) Mail(from string, opts *smtp.MailOptions) error {
	s.d.mu.Lock()
	s.d.mails++
	s.d.mu.Unlock()
	s.from, s.to = from, nil
	if opts != nil {
		s.opts = *opts
	} else {
		s.opts = smtp.MailOptions{}
	}
	return nil
}

func (s *downSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.d.mu.Lock()
	refused := s.d.refuse[strings.ToLower(to)]
	s.d.mu.Unlock()
	if refused != nil {
		e := *refused
		return &e
	}
	s.to = append(s.to, to)
	return nil
}

func (s *downSession) Data(r io.Reader) error {
	var data []byte
	var err error
	if s.d.discard {
		_, err = io.Copy(io.Discard, r)
	} else {
		data, err = io.ReadAll(r)
	}
	if err != nil {
		return err
	}
	s.d.mu.Lock()
	reply := s.d.dataReply
	s.d.mu.Unlock()
	if reply != nil {
		e := *reply
		return &e
	}
	s.d.record(Received{
		From:     s.from,
		To:       append([]string(nil), s.to...),
		Data:     data,
		TLS:      s.tls,
		Helo:     s.helo,
		MailOpts: s.opts,
	})
	return nil
}

func (s *downSession) Reset() { s.from, s.to, s.opts = "", nil, smtp.MailOptions{} }

func (s *downSession) Logout() error { return nil }

// String describes the downstream for test failure messages.
func (d *Downstream) String() string { return fmt.Sprintf("downstream %s", d.addr) }
