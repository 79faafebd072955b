package main

// Path 4: a bare lockstep SMTP proxy built from the same library as mxguard
// (go-smtp, server and client) and nothing else: no checks, no header edits,
// no policy, no logging. It is the floor of what any relay of this shape
// costs on the machine, so the report can tell how much of the gap between
// mxguard and the direct path is inherent to being a lockstep proxy (a
// second process, two more TCP endpoints, a buffered body, dot-stuffing
// twice) and how much is mxguard's own work.
//
// The bench runs it as `mxload proxy -listen ADDR -downstream ADDR` in a
// separate process, so that its CPU and peak RSS are read from /proc exactly
// like the gateway's.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/internal/loadenv"
)

// Limits and timeouts of the proxy: mxguard's defaults where it has one
// (config/load.go; the bench's gateway config raises max_message_bytes to
// 32 MiB, and so does the proxy), so that neither side is measured with
// looser bounds than the other.
const (
	proxyMaxMessageBytes = 32 << 20
	proxyMaxRecipients   = 100
	proxyMaxLineLength   = 2000
	proxyCommandTimeout  = 5 * time.Minute // inbound read and write
	proxyDialTimeout     = 10 * time.Second
	proxyDownCmdTimeout  = 60 * time.Second // relay.DefaultCommandTimeout
	proxyDownDataTimeout = 10 * time.Minute
	proxyQuitTimeout     = 5 * time.Second
	proxyHelo            = "proxy.mxload.test"
	// A body buffer that grew past this is not pooled: one large message
	// should not pin its size in memory for the rest of the run.
	proxyMaxPooledBuf = 4 << 20
)

// runProxyCmd is the hidden `mxload proxy` subcommand. It serves until
// SIGTERM or SIGINT and then exits 0.
func runProxyCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxload proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "address to serve SMTP on (127.0.0.1:PORT)")
	downstream := fs.String("downstream", "", "SMTP server to relay to (127.0.0.1:PORT)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *listen == "" || *downstream == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: mxload proxy -listen 127.0.0.1:PORT -downstream 127.0.0.1:PORT")
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "mxload proxy: listen: %v\n", err)
		return 1
	}
	srv := newProxyServer(*downstream)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		// The bench stops the proxy between sizes, when no run is going:
		// closing the idle sessions at once loses nothing.
		_ = srv.Close()
		<-served
		return 0
	case err := <-served:
		fmt.Fprintf(stderr, "mxload proxy: serve: %v\n", err)
		return 1
	}
}

// newProxyServer returns the proxy's go-smtp server, relaying to downstream.
func newProxyServer(downstream string) *smtp.Server {
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &proxySession{downstream: downstream}, nil
	}))
	srv.Domain = proxyHelo
	srv.MaxMessageBytes = proxyMaxMessageBytes
	srv.MaxRecipients = proxyMaxRecipients
	srv.MaxLineLength = proxyMaxLineLength
	srv.ReadTimeout = proxyCommandTimeout
	srv.WriteTimeout = proxyCommandTimeout
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = log.New(io.Discard, "", 0)
	return srv
}

// proxyBufs holds message bodies between the inbound DATA and the
// downstream one.
var proxyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// proxySession is one inbound SMTP session. It keeps one downstream session
// for its whole life, opened (greeting and EHLO) at the first MAIL and
// reused for every later transaction on the same inbound connection: the
// work per message is MAIL, RCPT and DATA downstream, as with mxguard's
// pooled downstream sessions.
type proxySession struct {
	downstream string
	c          *smtp.Client // nil until the first MAIL, or after a transport error
	raw        net.Conn     // c's connection, for the deadline of the body
	inTx       bool         // downstream accepted MAIL and has not answered the final dot yet
}

var errNoDownstream = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 0},
	Message: "no downstream session"}

// dial opens the downstream session: TCP, greeting and EHLO.
func (s *proxySession) dial() error {
	nc, err := net.DialTimeout("tcp", s.downstream, proxyDialTimeout)
	if err != nil {
		return fmt.Errorf("dial downstream %s: %w", s.downstream, err)
	}
	c := smtp.NewClient(nc)
	c.CommandTimeout = proxyDownCmdTimeout
	c.SubmissionTimeout = proxyDownDataTimeout
	if err := c.Hello(proxyHelo); err != nil {
		c.Close()
		return fmt.Errorf("greet downstream %s: %w", s.downstream, err)
	}
	s.c, s.raw, s.inTx = c, nc, false
	return nil
}

// drop closes the downstream session after a transport error.
func (s *proxySession) drop() {
	if s.c != nil {
		s.c.Close()
	}
	s.c, s.raw, s.inTx = nil, nil, false
}

// reply turns a downstream error into the inbound reply: the downstream's
// own reply when it gave one, else 451 (and the session is dropped, since
// its state is unknown).
func (s *proxySession) reply(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	s.drop()
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "downstream: " + err.Error()}
}

func (s *proxySession) Mail(from string, opts *smtp.MailOptions) error {
	reused := s.c != nil
	if !reused {
		if err := s.dial(); err != nil {
			return s.reply(err)
		}
	}
	err := s.c.Mail(from, opts)
	var se *smtp.SMTPError
	if err != nil && reused && !errors.As(err, &se) {
		// The kept session died while idle (downstream timeout or
		// restart): one fresh dial, as a pool would hand out another.
		s.drop()
		if err := s.dial(); err != nil {
			return s.reply(err)
		}
		err = s.c.Mail(from, opts)
	}
	if err != nil {
		return s.reply(err)
	}
	s.inTx = true
	return nil
}

func (s *proxySession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.c == nil {
		return errNoDownstream
	}
	if err := s.c.Rcpt(to, opts); err != nil {
		return s.reply(err)
	}
	return nil
}

func (s *proxySession) Data(r io.Reader) error {
	buf := proxyBufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= proxyMaxPooledBuf {
			proxyBufs.Put(buf)
		}
	}()
	// The whole body first, as mxguard does (it must see all of it before
	// deciding): go-smtp returns its own errors here (size limit, broken
	// connection) and the downstream transaction is aborted by Reset.
	if _, err := buf.ReadFrom(r); err != nil {
		return err
	}
	if s.c == nil {
		return errNoDownstream
	}
	w, err := s.c.Data()
	if err != nil {
		return s.reply(err)
	}
	// go-smtp's client sets no deadline while the body is written: bound
	// it here, so a downstream that stops reading cannot hold us.
	_ = s.raw.SetDeadline(time.Now().Add(proxyDownDataTimeout))
	if _, err := w.Write(buf.Bytes()); err != nil {
		// No final dot after a failed write: that would deliver a
		// truncated message. Closing makes the downstream discard it.
		s.drop()
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
			Message: "downstream data: " + err.Error()}
	}
	err = w.Close()
	// The final reply, whatever it is, ends the downstream transaction: no
	// RSET before the next MAIL.
	s.inTx = false
	if err != nil {
		return s.reply(err)
	}
	return nil
}

// Reset aborts a downstream transaction left open (a refused RCPT, an
// inbound RSET or a failed DATA read). go-smtp calls it after every DATA
// too; then inTx is false and it costs nothing.
func (s *proxySession) Reset() {
	if s.c == nil || !s.inTx {
		return
	}
	s.inTx = false
	if err := s.c.Reset(); err != nil {
		s.drop()
	}
}

func (s *proxySession) Logout() error {
	if s.c == nil {
		return nil
	}
	s.c.CommandTimeout = proxyQuitTimeout
	if err := s.c.Quit(); err != nil {
		s.c.Close()
	}
	s.c, s.raw = nil, nil
	return nil
}

// startProxy runs `bin proxy` (bin is this mxload binary) in a fresh
// directory under parent, relaying to downstream, and waits (at most 30 s)
// until it greets. The result is a *gateway so that the bench measures it
// like the gateways: pid for /proc, stop, the log file.
func startProxy(bin, parent, downstream string) (*gateway, error) {
	dir, err := os.MkdirTemp(parent, "proxy-")
	if err != nil {
		return nil, err
	}
	port, err := loadenv.FreePort()
	if err != nil {
		return nil, err
	}
	g := &gateway{dir: dir, addr: "127.0.0.1:" + strconv.Itoa(port), exited: make(chan error, 1)}
	if g.stderr, err = os.Create(filepath.Join(dir, "stderr.log")); err != nil {
		return nil, err
	}
	g.cmd = exec.Command(bin, "proxy", "-listen", g.addr, "-downstream", downstream)
	g.cmd.Dir = dir
	g.cmd.Stdout = g.stderr
	g.cmd.Stderr = g.stderr
	if err := g.cmd.Start(); err != nil {
		g.stderr.Close()
		return nil, fmt.Errorf("start proxy: %w", err)
	}
	go func() { g.exited <- g.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if greets(g.addr) {
			return g, nil
		}
		select {
		case err := <-g.exited:
			g.exited <- err
			g.stderr.Close()
			out, _ := os.ReadFile(filepath.Join(dir, "stderr.log"))
			return nil, fmt.Errorf("mxload proxy exited at start (%v):\n%s", err, out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.stop()
			return nil, errors.New("mxload proxy not greeting within 30s")
		}
	}
}

// greets reports whether addr accepts a connection and sends a 220 greeting.
func greets(addr string) bool {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(nc).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "220")
}
