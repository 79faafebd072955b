package filter

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	utf8pkg "unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/auth"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/ratelimit"
	"github.com/mxguard/mxguard/relay"
)

// newID returns a transaction id: "mxg-" and 12 hex digits (48 random bits,
// enough to find one line in a day of logs; it is not a secret).
func newID() string {
	const hexdigits = "0123456789abcdef"
	v := rand.Uint64()
	b := []byte("mxg-000000000000")
	for i := len(b) - 1; i >= 4; i-- {
		b[i] = hexdigits[v&0xf]
		v >>= 4
	}
	return string(b)
}

// session is one SMTP session (from EHLO to QUIT or the next STARTTLS). It
// carries one Transaction at a time.
type session struct {
	srv  *Server
	conn *smtp.Conn
	gc   *gateConn
	// nc is the connection as it was when the session began (TLS or not):
	// other goroutines (shutdown, Logout) close it without touching go-smtp.
	nc      net.Conn
	started time.Time

	// mu serialises the Session methods: go-smtp may call Logout from
	// Server.Close while another goroutine is inside Data.
	mu sync.Mutex
	// base is cancelled by Logout so that checks in flight stop early.
	base   context.Context
	cancel context.CancelFunc

	client Client
	t      *Transaction
	// txStart is when MAIL started the current transaction.
	txStart time.Time
	// txCount counts transactions on this session: the first one keeps the
	// connection's id, later ones get a new id.
	txCount int

	// block is an early reject/tempfail from the mail stage, returned at
	// every RCPT (ARCHITECTURE.md: a block is remembered).
	block *Reply
	// held is the most severe non-blocking action of early stages
	// (quarantine or tag) with its decision, applied at data.
	held *policy.Decision

	// down is the downstream connection, kept across transactions of this
	// session; downInTx is set once MAIL was mirrored in this transaction.
	down       relay.Conn
	downRoute  string
	downInTx   bool
	downBroken bool
	mailOpts   *smtp.MailOptions

	errors     int
	busy       atomic.Bool
	closeAfter bool
	closed     atomic.Bool
}

func (s *session) opts() *Options { return &s.srv.opts }

// initClient takes the connect-stage facts and the TLS state.
func (s *session) initClient() {
	if ct := s.gc.connect; ct != nil {
		s.client = ct.Client
	} else {
		s.client = Client{IP: s.gc.peer.String()}
	}
	if cs, ok := s.conn.TLSConnectionState(); ok {
		s.client.TLS = &TLSInfo{Version: tls.VersionName(cs.Version), Cipher: tls.CipherSuiteName(cs.CipherSuite)}
	}
}

// newTransaction starts a fresh record for the next MAIL.
func (s *session) newTransaction() *Transaction {
	id := s.gc.id
	if s.txCount > 0 {
		id = newID()
	}
	s.txCount++
	t := &Transaction{
		Version:  InputVersion,
		ID:       id,
		Gateway:  s.opts().Hostname,
		Client:   s.client,
		Envelope: Envelope{RcptTo: []string{}},
		Auth:     AuthFacts{DKIM: []auth.DKIMResult{}},
	}
	if ct := s.gc.connect; ct != nil && len(ct.Ratelimit) > 0 {
		t.Ratelimit = make(map[string]ratelimit.Fact, len(ct.Ratelimit)+4)
		for k, v := range ct.Ratelimit {
			t.Ratelimit[k] = v
		}
	}
	return t
}

// id is the id to show in replies right now.
func (s *session) id() string {
	if s.t != nil {
		return s.t.ID
	}
	return s.gc.id
}

// refuse records a refused recipient for the transaction's log line, then
// fails with r.
func (s *session) refuse(rcpt string, r Reply) error {
	if t := s.t; t != nil && len(t.refused) < maxLoggedRefusals {
		t.refused = append(t.refused, fmt.Sprintf("%s %d", truncate(rcpt, 254), r.Code))
	}
	return s.fail(r)
}

// fail counts an error reply and returns it; past the error limit the
// connection is closed after the reply.
func (s *session) fail(r Reply) error {
	s.errors++
	if max := s.opts().MaxErrors; max > 0 && s.errors >= max {
		s.closeAfter = true
		s.srv.m.sessionErrors.Inc()
		// go-smtp writes our reply, then the connection goes. (Close the
		// net.Conn, not the smtp.Conn: go-smtp may hold its lock around us.)
		nc := s.nc
		time.AfterFunc(100*time.Millisecond, func() { nc.Close() })
		return ReplyTooManyErrors.SMTPError(s.id())
	}
	return r.SMTPError(s.id())
}

func (s *session) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.base, s.srv.stageTimeout())
}

// helo runs the helo stage: HELO hygiene, FCrDNS, policy.
func (s *session) helo() error {
	name := s.conn.Hostname()
	if !validHelo(name) {
		return s.fail(ReplyBadHelo)
	}
	s.client.Helo = name
	ctx, cancel := s.ctx()
	defer cancel()
	s.client.PTRResult = "none"
	if s.opts().Checks.FCrDNS && s.opts().Resolver != nil {
		s.client.PTR, s.client.PTRResult = fcrdns(ctx, s.opts().Resolver, s.gc.peer)
	}
	t := s.newTransaction()
	s.txCount = 0 // the helo-stage record is not a mail transaction
	t.Stage = StageHelo
	d, r := s.srv.decide(ctx, t)
	if r != nil {
		s.srv.logBlock(t, d, *r)
		return s.fail(*r)
	}
	return nil
}

// validHelo: printable ASCII without spaces, at most 255 octets (RFC 5321
// 4.1.1.1 domain or address literal; we only refuse what cannot be a name
// and leave judging odd names to the policy).
func validHelo(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if h[i] <= ' ' || h[i] >= 0x7f {
			return false
		}
	}
	return true
}

// fcrdns finds a PTR name of ip that resolves back to ip (forward-confirmed
// reverse DNS). At most 10 names are tried (like RFC 7208 4.6.4's PTR limit).
func fcrdns(ctx context.Context, r auth.Resolver, ip netip.Addr) (string, string) {
	names, err := r.LookupAddr(ctx, ip.String())
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return "", "fail"
		}
		return "", "temperror"
	}
	network := "ip4"
	if ip.Is6() && !ip.Is4In6() {
		network = "ip6"
	}
	temp := false
	for i, n := range names {
		if i == 10 {
			break
		}
		addrs, err := r.LookupNetIP(ctx, network, n)
		if err != nil {
			var de *net.DNSError
			if errors.As(err, &de) && de.IsTemporary {
				temp = true
			}
			continue
		}
		for _, a := range addrs {
			if a.Unmap() == ip.Unmap() {
				return strings.ToLower(strings.TrimSuffix(n, ".")), "pass"
			}
		}
	}
	if temp {
		return "", "temperror"
	}
	return "", "fail"
}

// Mail runs the mail stage.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endTransaction("reset")
	s.t = s.newTransaction()
	s.txStart = s.srv.opts.Now()
	t := s.t
	t.Stage = StageMail
	// A later EHLO may have changed the name (go-smtp resets without
	// asking us): check it again.
	if h := s.conn.Hostname(); h != s.client.Helo {
		if !validHelo(h) {
			return s.fail(ReplyBadHelo)
		}
		s.client.Helo, t.Client.Helo = h, h
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	if from != "" {
		if hasControl(from) {
			return s.fail(ReplyBadCommandChars)
		}
		if r := checkAddress(from, opts.UTF8, false); r != nil {
			return s.fail(*r)
		}
	}
	t.Envelope.MailFrom = from
	t.Envelope.MailFromDomain = domainOf(from)
	t.Envelope.DeclaredSize = opts.Size
	t.Envelope.SMTPUTF8 = opts.UTF8
	t.Envelope.Body = string(opts.Body)
	s.mailOpts = &smtp.MailOptions{Size: opts.Size, UTF8: opts.UTF8, Body: opts.Body}

	ctx, cancel := s.ctx()
	defer cancel()
	if s.opts().Checks.SPF && s.opts().Resolver != nil {
		ip, _ := netip.ParseAddr(t.Client.IP)
		res := auth.CheckSPF(ctx, s.opts().Resolver, ip, t.Client.Helo, from, auth.SPFOptions{
			Timeout: s.srv.stageTimeout(), ReceiverName: s.opts().Hostname})
		t.Auth.SPF = &res
	}
	if s.opts().Limiter != nil {
		s.opts().Limiter.count(ctx, StageMail, t, 1)
	}
	d, r := s.srv.decide(ctx, t)
	if r != nil {
		// Remembered and returned at every RCPT: some clients handle a
		// refused MAIL badly, and RCPT lets the log show the recipients.
		s.block = r
		s.srv.logBlock(t, d, *r)
		return nil
	}
	s.hold(d)
	return nil
}

// hold remembers a quarantine or tag decision of an early stage.
func (s *session) hold(d policy.Decision) {
	if d.Action != ActionQuarantine && d.Action != ActionTag {
		return
	}
	if s.held == nil || moreSevere(d.Action, s.held.Action) {
		dd := d
		s.held = &dd
	}
}

// Rcpt runs the rcpt stage: open-relay guard, route, rate limits, policy,
// then the downstream's own verdict on the recipient.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.t
	if t == nil {
		return s.fail(ReplyInternalError)
	}
	if s.block != nil {
		return s.refuse(to, *s.block)
	}
	if hasControl(to) {
		return s.refuse(to, ReplyBadCommandChars)
	}
	if r := checkAddress(to, t.Envelope.SMTPUTF8, true); r != nil {
		return s.refuse(to, *r)
	}
	addr, domain := normalizeRcpt(to)
	route, ok := s.opts().Router.Route(domain)
	if !ok {
		// The open-relay guard is Go, not policy (ARCHITECTURE.md principle 1).
		s.srv.m.relayDenied.Inc()
		return s.refuse(to, ReplyRelayDenied)
	}
	key := routeKey(route)
	if s.downInTx && key != s.downRoute {
		// One transaction goes to one downstream (lockstep): the sender
		// retries this recipient in a new transaction (RFC 5321 4.5.3.1.10).
		return ReplyOtherRoute.SMTPError(s.id())
	}
	if s.downBroken {
		return s.refuse(to, ReplyDownstreamDown)
	}

	t.Stage = StageRcpt
	t.Envelope.Rcpt = addr
	t.Envelope.RcptDomain = domain
	defer func() { t.Envelope.Rcpt, t.Envelope.RcptDomain = "", "" }()

	ctx, cancel := s.ctx()
	defer cancel()
	var saved map[string]ratelimit.Fact
	if s.opts().Limiter != nil {
		saved = stageFacts(t, StageRcpt)
		s.opts().Limiter.count(ctx, StageRcpt, t, 1)
	}
	d, r := s.srv.decide(ctx, t)
	if r != nil {
		s.srv.logBlock(t, d, *r)
		if saved != nil {
			restoreFacts(t, StageRcpt, saved)
		}
		return s.refuse(to, *r)
	}
	s.hold(d)

	if !s.downInTx {
		if s.down != nil && key != s.downRoute {
			// The kept connection goes elsewhere: this transaction needs another.
			s.down.Close()
			s.down = nil
		}
		if s.down == nil {
			// Open is bounded by the relay's own connect and command
			// timeouts per host; this caps the whole failover walk.
			dctx, dcancel := context.WithTimeout(s.base, openTimeout)
			defer dcancel()
			conn, err := s.opts().Router.Open(dctx, domain)
			if err != nil {
				s.srv.m.downstreamErrors.WithLabelValues("open").Inc()
				s.srv.log.Warn("downstream unavailable", "id", t.ID, "domain", domain, "err", err)
				return s.refuse(to, ReplyDownstreamDown)
			}
			s.down, s.downRoute = conn, key
		}
		if err := s.down.Mail(t.Envelope.MailFrom, s.mailOpts); err != nil {
			r := s.downstreamFailure("mail", err)
			s.down.Close()
			s.down, s.downBroken = nil, false
			return s.refuse(to, r)
		}
		s.downInTx = true
	}
	if err := s.down.Rcpt(addr, &smtp.RcptOptions{}); err != nil {
		return s.refuse(to, s.downstreamFailure("rcpt", err))
	}
	t.Envelope.RcptTo = append(t.Envelope.RcptTo, addr)
	return nil
}

// openTimeout caps opening a downstream session across all its hosts.
const openTimeout = 2 * time.Minute

// downstreamFailure maps a downstream error to the sender's reply. A
// downstream reply keeps its code class; anything else (broken connection,
// timeout) is 451 4.4.1, and the connection is not used again.
func (s *session) downstreamFailure(stage string, err error) Reply {
	var re *relay.ReplyError
	if errors.As(err, &re) {
		s.srv.m.downstreamReplies.WithLabelValues(stage, strconv.Itoa(re.Code/100)+"xx").Inc()
		return downstreamReply(re.Code, re.Enhanced)
	}
	s.srv.m.downstreamErrors.WithLabelValues(stage).Inc()
	s.srv.log.Warn("downstream failed", "id", s.id(), "stage", stage, "err", err)
	if s.down != nil {
		s.downBroken = true
	}
	return ReplyDownstreamDown
}

func routeKey(r relay.Route) string {
	return string(r.TLS) + "|" + r.Maildir + "|" + strings.Join(r.Hosts, ",")
}

// Reset ends the transaction (RSET, or after DATA; also a new EHLO).
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	// go-smtp calls Reset after it wrote the reply to DATA: only now is the
	// session idle for a graceful shutdown (a 421 before the 250 reached the
	// sender would make it send the message again).
	s.busy.Store(false)
	s.endTransaction("reset")
	if s.closeAfter {
		// go-smtp calls Reset with its connection lock held, after the
		// reply was written: close the socket, go-smtp notices on its read.
		s.nc.Close()
	}
}

// Logout ends the session. go-smtp calls it from the session's goroutine
// at QUIT or EOF, but also from Server.Close while Data may be running:
// closing the socket and cancelling the checks first makes Data return.
func (s *session) Logout() error {
	s.cancel()
	if s.busy.Load() {
		s.nc.Close()
	}
	defer s.busy.Store(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endTransaction("quit")
	if s.down != nil {
		s.down.Close()
		s.down = nil
	}
	s.gc.sess.CompareAndSwap(s, nil)
	return nil
}

// endTransaction logs an unfinished transaction and resets the downstream
// so the next transaction can reuse the connection.
func (s *session) endTransaction(why string) {
	if s.t != nil && !s.t.done() {
		s.srv.logTransaction(s.t, s.txStart, outcome{Result: "abandoned", Why: why})
	}
	s.t = nil
	s.block = nil
	s.held = nil
	if s.down != nil && (s.downBroken || s.downInTx && s.down.Reset() != nil) {
		s.down.Close()
		s.down = nil
	}
	s.downBroken = false
	s.downInTx = false
}

// closeIdle answers an idle session 421 and closes it (graceful shutdown).
func (s *session) closeIdle() {
	if !s.closed.CompareAndSwap(false, true) {
		return
	}
	_ = s.nc.SetWriteDeadline(time.Now().Add(time.Second))
	// The connection id: the session's own record belongs to its goroutine.
	_, _ = s.nc.Write([]byte(ReplyShuttingDown.Line(s.gc.id)))
	s.nc.Close()
}

// hasControl reports C0 controls, DEL or NUL, which must never reach a
// lookup, a log or the downstream.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// checkAddress applies RFC 5321 4.1.2 and 4.5.3.1 to a path go-smtp already
// parsed (it strips source routes and unquotes quoted local parts).
// Recipients are held to the open-relay guard: %, ! and a second @ are
// routing syntax some mailbox servers still honour, so they are refused
// outright rather than passed downstream.
func checkAddress(addr string, utf8 bool, rcpt bool) *Reply {
	bad := &ReplyBadSender
	if rcpt {
		bad = &ReplyBadRecipient
	}
	// RFC 5321 4.5.3.1.3: a path is at most 256 octets.
	if len(addr) > 254 {
		return bad
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return bad
	}
	local, domain := addr[:at], addr[at+1:]
	// RFC 5321 4.5.3.1.1: local part at most 64 octets.
	if len(local) > 64 {
		return bad
	}
	if rcpt && strings.ContainsAny(local, "@%!") {
		return &ReplyRelayDenied
	}
	if !isASCII(addr) {
		if !utf8 {
			return &ReplyNeedSMTPUTF8
		}
		// RFC 6532 3.1: internationalised addresses are UTF-8; anything
		// else would reach the policy and the downstream as two different
		// strings.
		if !utf8pkg.ValidString(addr) {
			return bad
		}
	}
	if !dotAtom(local) {
		if rcpt {
			return &ReplyRelayDenied
		}
		return bad
	}
	if strings.HasPrefix(domain, "[") {
		// An address literal names a host, not one of our domains.
		if rcpt {
			return &ReplyRelayDenied
		}
		return nil
	}
	d := strings.TrimSuffix(domain, ".")
	if !validDomain(d) {
		if rcpt {
			return &ReplyRelayDenied
		}
		return bad
	}
	return nil
}

// dotAtom: RFC 5321 4.1.2 Dot-string (atext from RFC 5322 3.2.3; 8-bit
// allowed here, SMTPUTF8 is checked separately).
func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) < 0 {
			return false
		}
	}
	return true
}

func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// normalizeRcpt lower-cases the domain and drops a trailing dot, so that
// route lookup and the downstream see one spelling; the local part keeps its
// case (RFC 5321 2.4: it may be case-sensitive).
func normalizeRcpt(addr string) (string, string) {
	at := strings.LastIndexByte(addr, '@')
	domain := strings.ToLower(strings.TrimSuffix(addr[at+1:], "."))
	return addr[:at+1] + domain, domain
}

func domainOf(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[at+1:], "."))
}

// deadlineReader keeps the DATA transfer inside its bounds: each read must
// arrive within the command timeout, the whole transfer within the data
// timeout, and after the first command timeout the average rate must stay
// above the minimum.
type deadlineReader struct {
	r        io.Reader
	conn     net.Conn
	start    time.Time
	idle     time.Duration
	total    time.Duration
	minRate  int
	n        int64
	timedOut bool
}

var errTooSlow = errors.New("data transfer too slow")

func (d *deadlineReader) Read(p []byte) (int, error) {
	now := time.Now()
	if d.minRate > 0 && d.idle > 0 {
		if el := now.Sub(d.start); el > d.idle && float64(d.n) < float64(d.minRate)*el.Seconds() {
			d.timedOut = true
			return 0, errTooSlow
		}
	}
	if d.conn != nil {
		dl := d.start.Add(d.total)
		if d.idle > 0 {
			if next := now.Add(d.idle); next.Before(dl) {
				dl = next
			}
		}
		_ = d.conn.SetReadDeadline(dl)
	}
	n, err := d.r.Read(p)
	d.n += int64(n)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
			d.timedOut = true
		}
	}
	return n, err
}
