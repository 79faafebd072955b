// Package filter is the SMTP front end: the connection gate, the go-smtp
// backend and session, the transaction record (the policy input), the DATA
// validator, header edits and the one reply funnel. It runs the stages
// connect → helo → mail → rcpt → data → act for every transaction.
package filter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/auth"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/relay"
)

// Router finds and opens the downstream route of a recipient domain.
// *relay.Relay implements it.
type Router interface {
	Route(domain string) (relay.Route, bool)
	Open(ctx context.Context, domain string) (relay.Conn, error)
}

// Options configure the front end. cmd/mxguard builds them from the config.
type Options struct {
	Hostname  string
	TLSConfig *tls.Config

	MaxMessageBytes int64
	MaxRecipients   int
	MaxLineLength   int
	MaxErrors       int
	MaxReceived     int
	MaxHeaderBytes  int
	CommandTimeout  time.Duration
	DataTimeout     time.Duration
	MinDataRate     int
	// Normalize rewrites bare CR/LF to CRLF and drops NUL instead of refusing.
	Normalize   bool
	SpoolMemory int64
	SpoolDir    string
	// MemoryBudget bounds message bytes in memory across all sessions.
	MemoryBudget *MemoryBudget

	Gate GateOptions

	Router Router
	// Resolver runs the DNS-based checks; nil turns them all off.
	Resolver auth.Resolver
	Checks   Checks
	// Policy decides; nil accepts everything (checks still run and are
	// stamped).
	Policy Decider
	// DecisionLog receives one entry per final decision and per early block.
	DecisionLog *policy.DecisionLog
	Quarantine  Quarantiner
	Limiter     *RateLimits
	Headers     HeaderOptions

	Logger  *slog.Logger
	Metrics *Metrics
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Checks switch the sender-authentication checks.
type Checks struct {
	SPF, DKIM, DMARC, FCrDNS bool
	Timeout                  time.Duration
	MaxDKIMSignatures        int
	MIME                     MIMELimits
}

// HeaderOptions choose the X-MXGuard-* headers on relayed mail.
type HeaderOptions struct {
	Prefix                       string
	Verdict, Reasons, DecisionID bool
}

// setDefaults fills the options NewServer and Inspect both rely on.
func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Headers.Prefix == "" {
		o.Headers.Prefix = "X-MXGuard-"
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = 1 << 20
	}
	if o.SpoolMemory <= 0 {
		o.SpoolMemory = 1 << 20
	}
}

// Server is the SMTP front end.
type Server struct {
	opts Options
	srv  *smtp.Server
	log  *slog.Logger
	m    *Metrics

	mu      sync.Mutex
	gates   []*gate
	closing atomic.Bool
	served  sync.WaitGroup
}

// NewServer builds the front end; Serve starts it on listeners.
func NewServer(opts Options) (*Server, error) {
	if opts.Hostname == "" {
		return nil, errors.New("filter: hostname is required")
	}
	if opts.Router == nil {
		return nil, errors.New("filter: a router is required")
	}
	opts.setDefaults()
	s := &Server{opts: opts, log: opts.Logger, m: opts.Metrics}
	srv := smtp.NewServer(s)
	srv.Domain = opts.Hostname
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = opts.MaxRecipients
	srv.MaxLineLength = opts.MaxLineLength
	srv.ReadTimeout = opts.CommandTimeout
	srv.WriteTimeout = opts.CommandTimeout
	srv.TLSConfig = opts.TLSConfig
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = slogErrorLog{s.log}
	s.srv = srv
	return s, nil
}

// Serve accepts on l until Shutdown; it returns when l is closed.
func (s *Server) Serve(l net.Listener) error {
	gopts := s.opts.Gate
	gopts.OnConnect = s.onConnect
	userReject := gopts.OnReject
	gopts.OnReject = func(reason string) {
		s.m.gateRejects.WithLabelValues(reason).Inc()
		if userReject != nil {
			userReject(reason)
		}
	}
	g := newGate(l, gopts)
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		g.Close()
		return smtp.ErrServerClosed
	}
	s.gates = append(s.gates, g)
	s.served.Add(1)
	s.mu.Unlock()
	defer s.served.Done()
	err := s.srv.Serve(g)
	if s.closing.Load() {
		return nil
	}
	return err
}

// NewSession implements smtp.Backend: it runs at the first EHLO/HELO (and
// again after STARTTLS).
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	gc := findGateConn(c.Conn())
	if gc == nil {
		return nil, ReplyInternalError.SMTPError("")
	}
	sess := &session{srv: s, conn: c, gc: gc, nc: c.Conn(), started: s.opts.Now()}
	sess.base, sess.cancel = context.WithCancel(context.Background())
	sess.initClient()
	if err := sess.helo(); err != nil {
		sess.cancel()
		return nil, err
	}
	gc.sess.Store(sess)
	return sess, nil
}

func findGateConn(c net.Conn) *gateConn {
	for i := 0; i < 4 && c != nil; i++ {
		switch v := c.(type) {
		case *gateConn:
			return v
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// onConnect runs the connect stage in the gate, before the banner.
func (s *Server) onConnect(c *gateConn) *Reply {
	s.m.connections.Inc()
	if s.closing.Load() {
		return &ReplyShuttingDown
	}
	t := &Transaction{
		Version: InputVersion,
		Stage:   StageConnect,
		ID:      c.id,
		Gateway: s.opts.Hostname,
		Client:  Client{IP: c.peer.String(), Proxied: c.proxied},
		Auth:    AuthFacts{DKIM: []auth.DKIMResult{}},
	}
	if ap, err := netip.ParseAddrPort(c.Conn.RemoteAddr().String()); err == nil && !c.proxied {
		t.Client.Port = int(ap.Port())
	}
	c.connect = t
	ctx, cancel := context.WithTimeout(context.Background(), s.stageTimeout())
	defer cancel()
	if s.opts.Limiter != nil {
		s.opts.Limiter.connect(ctx, c, t)
	}
	d, r := s.decide(ctx, t)
	if r != nil && (d.Action == ActionReject || d.Action == ActionTempfail) {
		// RFC 5321 3.1: a server may refuse a connection with 554 (or 421)
		// instead of the 220 greeting; a rate limit closes with 421.
		reply := *r
		if reply.Code/100 == 4 {
			reply.Code = 421
		} else {
			reply.Code = 554
		}
		s.logBlock(t, d, reply)
		return &reply
	}
	return nil
}

// stageTimeout bounds the checks and the policy of one stage.
func (s *Server) stageTimeout() time.Duration {
	if s.opts.Checks.Timeout > 0 {
		return s.opts.Checks.Timeout
	}
	return 20 * time.Second
}

// Shutdown stops accepting, answers idle sessions 421 and lets sessions in
// DATA finish until ctx ends; then it closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for _, g := range s.gates {
		g.Close()
	}
	s.mu.Unlock()

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		gates := append([]*gate(nil), s.gates...)
		s.mu.Unlock()
		for _, g := range gates {
			g.each(func(gc *gateConn) {
				if sess := gc.sess.Load(); sess != nil {
					if !sess.busy.Load() {
						sess.closeIdle()
					}
					return
				}
				// No EHLO yet: nothing in flight.
				_ = gc.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = gc.Write([]byte(ReplyShuttingDown.Line(gc.id)))
				gc.Close()
			})
		}
		if s.Conns() == 0 {
			break
		}
		select {
		case <-ctx.Done():
			s.srv.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
	err := s.srv.Close()
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// Conns reports the open admitted connections (for metrics and tests).
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.gates {
		n += g.Conns()
	}
	return n
}

// Close stops everything at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing.Store(true)
	for _, g := range s.gates {
		g.Close()
	}
	s.mu.Unlock()
	return s.srv.Close()
}

type slogErrorLog struct{ l *slog.Logger }

func (e slogErrorLog) Printf(format string, v ...any) {
	e.l.Debug("smtp", "msg", fmt.Sprintf(format, v...))
}
func (e slogErrorLog) Println(v ...any) { e.l.Debug("smtp", "msg", fmt.Sprint(v...)) }
