package loadenv

import (
	"context"
	"io"
	"log"
	"net"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// Sink is a go-smtp server on 127.0.0.1 that accepts every transaction and
// discards the message bodies: the mailbox server behind the gateway, and the
// ceiling of the benchmark when clients send to it directly.
type Sink struct {
	srv       *smtp.Server
	ln        net.Listener
	done      chan struct{}
	delivered atomic.Int64
	bytes     atomic.Int64
}

// StartSink listens on a free loopback port until Close.
func StartSink() (*Sink, error) {
	s := &Sink{done: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	srv.Domain = "sink.mxload.test"
	srv.MaxLineLength = 1 << 20
	srv.MaxMessageBytes = 64 << 20
	srv.EnableSMTPUTF8 = true
	srv.ReadTimeout = 2 * time.Minute
	srv.WriteTimeout = 2 * time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.srv, s.ln = srv, ln
	go func() {
		defer close(s.done)
		_ = srv.Serve(ln)
	}()
	return s, nil
}

// Addr is "127.0.0.1:PORT".
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Delivered counts the messages answered 250 at end of DATA.
func (s *Sink) Delivered() int64 { return s.delivered.Load() }

// Bytes counts the message bytes received.
func (s *Sink) Bytes() int64 { return s.bytes.Load() }

// Close stops listening and closes every session (bounded to 5 s).
func (s *Sink) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

type sinkSession struct{ s *Sink }

func (*sinkSession) Reset()                               {}
func (*sinkSession) Logout() error                        { return nil }
func (*sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss *sinkSession) Data(r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return err
	}
	ss.s.bytes.Add(n)
	ss.s.delivered.Add(1)
	return nil
}
