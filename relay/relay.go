package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// TLSMode is a route's STARTTLS policy; see the package documentation.
type TLSMode string

// The TLS modes a route can have.
const (
	TLSNone          TLSMode = "none"
	TLSOpportunistic TLSMode = "opportunistic"
	TLSRequired      TLSMode = "required"
)

// Route says where mail for one domain goes.
type Route struct {
	// Hosts are "host:port" pairs, tried in order until one accepts the
	// connection, greets and completes EHLO (and STARTTLS per TLS).
	Hosts []string
	// TLS is the STARTTLS policy; empty means opportunistic, the usual
	// MTA-to-MTA behaviour. Ignored for maildir routes.
	TLS TLSMode
	// Maildir, when set (config "maildir:PATH"), delivers into
	// PATH/{tmp,new,cur} instead of SMTP. Hosts must then be empty.
	Maildir string
}

// Options tune every downstream connection.
type Options struct {
	// HeloName is the name we give in EHLO (required).
	HeloName string
	// ConnectTimeout bounds the TCP connect to one host; default 10s.
	ConnectTimeout time.Duration
	// CommandTimeout bounds the wait for the greeting, for every command's
	// reply and for the TLS handshake; default 60s.
	CommandTimeout time.Duration
	// DataTimeout bounds the whole DATA transfer including the final reply;
	// default 10m.
	DataTimeout time.Duration
	// RootCAs verifies downstream certificates; nil means the system pool.
	RootCAs *x509.CertPool
	// InsecureSkipVerify accepts unverified certificates on opportunistic
	// routes only (RFC 7435: unauthenticated encryption beats cleartext).
	// Required routes always verify.
	InsecureSkipVerify bool

	// Connection pool: Conn.Close keeps a healthy idle session per host and
	// TLS mode for the next Open. A negative value in any of these three
	// turns pooling off (every Open dials, every Close sends QUIT).

	// PoolMaxIdle bounds the idle sessions kept per host and TLS mode;
	// default 8.
	PoolMaxIdle int
	// PoolIdleTimeout is how long an idle session is kept before QUIT;
	// default 30s. Keep it below the downstream's own idle timeout
	// (RFC 5321 4.5.3.2.7 suggests servers wait 5 minutes).
	PoolIdleTimeout time.Duration
	// PoolMaxUses bounds the transactions (MAIL commands) of one session;
	// the session is QUIT at the first Close after it reaches the bound.
	// Default 100.
	PoolMaxUses int
}

// Defaults for zero Options fields.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultCommandTimeout = 60 * time.Second
	DefaultDataTimeout    = 10 * time.Minute
)

// quitTimeout bounds QUIT at Close: the message is already settled, so a
// slow goodbye must not hold the caller.
const quitTimeout = 5 * time.Second

// Conn is one downstream session in lockstep with an inbound transaction.
// A Conn is not safe for concurrent use. After Data (whatever its outcome,
// unless the connection broke) or Reset a new Mail may start.
type Conn interface {
	// Mail sends MAIL FROM. SMTPUTF8 and SIZE from opts are passed on when
	// the downstream advertises them; BODY=8BITMIME is sent whenever the
	// downstream advertises 8BITMIME. AUTH and REQUIRETLS are never passed
	// on (the front end advertises neither).
	Mail(from string, opts *smtp.MailOptions) error
	// Rcpt sends RCPT TO.
	Rcpt(to string, opts *smtp.RcptOptions) error
	// Data streams msg (CRLF lines; dot-stuffing is done here) and waits
	// for the final reply: nil only on the downstream's 2xx. If reading msg
	// fails, the connection is dropped without the final dot, so the
	// downstream discards the partial message, and the error wraps msg's.
	Data(msg io.Reader) error
	// Reset ends any open transaction with RSET and keeps the connection
	// usable. When none can be open (after Data got its final reply, or
	// before any Mail) and the last command succeeded, it sends nothing.
	Reset() error
	// Close ends the Conn. A healthy session with no open transaction
	// (after Data or Reset, or unused) whose last command succeeded goes
	// back to the relay's pool; any other is sent QUIT (bounded) and
	// closed. The Conn must not be used after Close; calling Close again
	// does nothing.
	Close() error
}

// Relay holds the routes, opens downstream connections and pools idle
// ones. It is safe for concurrent use. Close releases the pool.
type Relay struct {
	routes map[string]Route
	opts   Options
	dialer net.Dialer
	pool   *pool // nil when pooling is off
	m      *metrics
}

// New validates routes (keys: lower-case ASCII domains) and options.
func New(routes map[string]Route, opts Options) (*Relay, error) {
	if err := validHelo(opts.HeloName); err != nil {
		return nil, err
	}
	if opts.ConnectTimeout < 0 || opts.CommandTimeout < 0 || opts.DataTimeout < 0 {
		return nil, errors.New("relay: negative timeout")
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.CommandTimeout == 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	if opts.DataTimeout == 0 {
		opts.DataTimeout = DefaultDataTimeout
	}
	pooling := opts.PoolMaxIdle >= 0 && opts.PoolIdleTimeout >= 0 && opts.PoolMaxUses >= 0
	if opts.PoolMaxIdle == 0 {
		opts.PoolMaxIdle = DefaultPoolMaxIdle
	}
	if opts.PoolIdleTimeout == 0 {
		opts.PoolIdleTimeout = DefaultPoolIdleTimeout
	}
	if opts.PoolMaxUses == 0 {
		opts.PoolMaxUses = DefaultPoolMaxUses
	}
	r := &Relay{
		routes: make(map[string]Route, len(routes)),
		opts:   opts,
		dialer: net.Dialer{Timeout: opts.ConnectTimeout},
		m:      newMetrics(),
	}
	if pooling {
		r.pool = newPool(opts, r.m)
	}
	for domain, rt := range routes {
		if err := validDomain(domain); err != nil {
			return nil, fmt.Errorf("relay: route %q: %w", domain, err)
		}
		rt, err := normalizeRoute(rt)
		if err != nil {
			return nil, fmt.Errorf("relay: route %q: %w", domain, err)
		}
		r.routes[domain] = rt
	}
	return r, nil
}

func normalizeRoute(rt Route) (Route, error) {
	if rt.Maildir != "" {
		if len(rt.Hosts) != 0 {
			return rt, errors.New("maildir route must not have hosts")
		}
		if strings.ContainsRune(rt.Maildir, 0) {
			return rt, errors.New("maildir path contains NUL")
		}
		return rt, nil
	}
	if len(rt.Hosts) == 0 {
		return rt, errors.New("no downstream hosts")
	}
	switch rt.TLS {
	case "":
		rt.TLS = TLSOpportunistic
	case TLSNone, TLSOpportunistic, TLSRequired:
	default:
		return rt, fmt.Errorf("unknown tls mode %q (none, opportunistic, required)", rt.TLS)
	}
	for _, h := range rt.Hosts {
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			return rt, fmt.Errorf("host %q: %w", h, err)
		}
		if host == "" {
			return rt, fmt.Errorf("host %q: empty host", h)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return rt, fmt.Errorf("host %q: bad port", h)
		}
	}
	rt.Hosts = append([]string(nil), rt.Hosts...)
	return rt, nil
}

// validDomain accepts lower-case ASCII LDH names (and "_"), as the config
// normalises them; anything else would silently never match a recipient.
func validDomain(d string) error {
	if d == "" || len(d) > 253 {
		return errors.New("domain must be 1-253 characters")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q not allowed (lower-case ASCII only)", c)
			}
		}
	}
	return nil
}

func validHelo(name string) error {
	if name == "" {
		return errors.New("relay: Options.HeloName is required")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("relay: HeloName %q has a space, control or non-ASCII character", name)
		}
	}
	return nil
}

// Route returns the route of domain (lower-cased).
func (r *Relay) Route(domain string) (Route, bool) {
	rt, ok := r.routes[strings.ToLower(domain)]
	if ok {
		rt.Hosts = append([]string(nil), rt.Hosts...)
	}
	return rt, ok
}

// Open connects to domain's route. For SMTP it first takes a pooled idle
// session of the route's hosts, in order, that answers a NOOP probe (dead
// ones are discarded); failing that it dials the hosts in order and returns
// the first that greets, answers EHLO and satisfies the TLS mode (failover
// on any of these failing). For a maildir route it returns a local Conn
// without I/O. ctx bounds Open only, not the returned Conn. An Open error is
// never a ReplyError: whatever a greeting said, the sender should retry
// later.
func (r *Relay) Open(ctx context.Context, domain string) (Conn, error) {
	rt, ok := r.routes[strings.ToLower(domain)]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrNoRoute, domain)
	}
	if rt.Maildir != "" {
		return &maildirConn{dir: rt.Maildir}, nil
	}
	if r.pool != nil && ctx.Err() == nil {
		// Pooled sessions of any host before a dial to the first: a
		// session that exists saves three round trips (and a TLS
		// handshake), and while the first host is down, a dial to it per
		// message. Traffic returns to the first host as the pooled
		// sessions expire or reach PoolMaxUses.
		for _, host := range rt.Hosts {
			if sc := r.pool.take(ctx, poolKey{host: host, mode: rt.TLS}); sc != nil {
				return sc, nil
			}
		}
		r.m.poolMisses.Inc()
	}
	var errs []error
	for _, host := range rt.Hosts {
		c, err := r.openHost(ctx, host, rt.TLS)
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", host, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("relay %s: no downstream host available: %w", domain, errors.Join(errs...))
}

// Deliver sends one message in its own session (quarantine release). It is
// all or nothing per attempt: if any recipient is refused, the transaction
// is reset, nothing is sent, and that recipient's ReplyError is returned.
// ctx bounds the whole delivery.
func (r *Relay) Deliver(ctx context.Context, domain, from string, rcpts []string, msg io.Reader) (err error) {
	if len(rcpts) == 0 {
		return errors.New("relay: deliver without recipients")
	}
	c, err := r.Open(ctx, domain)
	if err != nil {
		return err
	}
	sc, _ := c.(*smtpConn)
	var stop func() bool
	if sc != nil {
		// Closing the socket is the one way to interrupt a blocked read or
		// write from another goroutine.
		stop = context.AfterFunc(ctx, sc.abort)
	}
	defer func() {
		// Disarm the abort before Close can pool the session; if it has
		// fired, the socket is (being) closed and must not be pooled.
		if stop != nil && !stop() {
			sc.broken = true
		}
		cerr := c.Close()
		if ctx.Err() != nil && err != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		_ = cerr // the message is settled; a failed QUIT changes nothing
	}()
	opts := &smtp.MailOptions{UTF8: !isASCII(from)}
	for _, rc := range rcpts {
		if !isASCII(rc) {
			opts.UTF8 = true
		}
	}
	if err := c.Mail(from, opts); err != nil {
		return err
	}
	for _, rc := range rcpts {
		if err := c.Rcpt(rc, nil); err != nil {
			_ = c.Reset()
			return err
		}
	}
	return c.Data(msg)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// openHost runs dial, greeting, EHLO and STARTTLS on one host. For
// opportunistic TLS a failed handshake costs one more dial, in plaintext.
func (r *Relay) openHost(ctx context.Context, host string, mode TLSMode) (*smtpConn, error) {
	c, err := r.dialHost(ctx, host, mode)
	var hsErr *handshakeError
	if mode == TLSOpportunistic && errors.As(err, &hsErr) {
		c, err = r.dialHost(ctx, host, TLSNone)
		if err != nil {
			err = fmt.Errorf("plaintext after failed TLS handshake (%v): %w", hsErr.err, err)
		} else {
			c.mode = mode // pooled for the route's mode, not for "none" routes
		}
	}
	return c, err
}

// handshakeError marks a failed TLS handshake (including verification).
type handshakeError struct{ err error }

func (e *handshakeError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }

func (r *Relay) dialHost(ctx context.Context, host string, mode TLSMode) (_ *smtpConn, err error) {
	raw, err := r.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	lc := &limitConn{Conn: raw}
	// ctx bounds the whole setup; closing the socket interrupts any wait.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer func() {
		if !stop() || err != nil {
			raw.Close()
			if err == nil {
				err = ctx.Err()
			}
		}
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
	}()

	c := r.newClient(lc)
	if err := c.Hello(r.opts.HeloName); err != nil {
		return nil, fmt.Errorf("greeting/ehlo: %w", plainError(err))
	}
	sc := &smtpConn{r: r, c: c, raw: raw, host: host, mode: mode}
	if mode == TLSNone {
		return sc, nil
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		if mode == TLSRequired {
			return nil, errors.New("tls required but STARTTLS not offered")
		}
		return sc, nil
	}
	tc, err := r.startTLS(ctx, lc, host, mode)
	if err != nil {
		var refused *starttlsRefused
		if mode == TLSOpportunistic && errors.As(err, &refused) {
			// RFC 3207 4: after a refused STARTTLS the session goes on
			// as before, in plaintext.
			return sc, nil
		}
		return nil, err
	}
	// RFC 3207 4.2: forget everything learned before TLS, EHLO again.
	// The greeting was consumed before STARTTLS, so go-smtp's new client
	// is handed a synthetic one.
	c = r.newClient(&greetedConn{Conn: tc, greeting: "220 tls\r\n"})
	if err := c.Hello(r.opts.HeloName); err != nil {
		return nil, fmt.Errorf("ehlo after starttls: %w", plainError(err))
	}
	sc.c, sc.tls = c, true
	return sc, nil
}

func (r *Relay) newClient(nc net.Conn) *smtp.Client {
	c := smtp.NewClient(nc)
	c.CommandTimeout = r.opts.CommandTimeout
	c.SubmissionTimeout = r.opts.DataTimeout
	return c
}

type starttlsRefused struct{ code int }

func (e *starttlsRefused) Error() string { return fmt.Sprintf("STARTTLS refused with %d", e.code) }

// startTLS sends STARTTLS on lc, which go-smtp's client has just finished
// with (its EHLO reply fully read, nothing buffered), and runs the
// handshake. go-smtp v0.25 has no exported STARTTLS on an open client.
func (r *Relay) startTLS(ctx context.Context, lc *limitConn, host string, mode TLSMode) (*tls.Conn, error) {
	lc.SetDeadline(time.Now().Add(r.opts.CommandTimeout))
	defer lc.SetDeadline(time.Time{})
	if _, err := io.WriteString(lc, "STARTTLS\r\n"); err != nil {
		return nil, fmt.Errorf("starttls: %w", err)
	}
	code, err := readReplyUnbuffered(lc)
	if err != nil {
		return nil, fmt.Errorf("starttls reply: %w", err)
	}
	if code != 220 {
		if mode == TLSRequired {
			return nil, fmt.Errorf("tls required but STARTTLS refused with %d", code)
		}
		return nil, &starttlsRefused{code: code}
	}
	serverName, _, _ := net.SplitHostPort(host)
	cfg := &tls.Config{
		ServerName: serverName,
		RootCAs:    r.opts.RootCAs,
		MinVersion: tls.VersionTLS12,
	}
	if mode == TLSOpportunistic && r.opts.InsecureSkipVerify {
		cfg.InsecureSkipVerify = true
	}
	tc := tls.Client(lc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, &handshakeError{err: err}
	}
	return tc, nil
}
