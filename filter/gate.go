package filter

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
)

// errProxyFromUntrusted is returned to go-smtp when a peer that may not use
// the PROXY protocol sends a PROXY header: the connection is closed.
var errProxyFromUntrusted = errors.New("PROXY header from an untrusted peer")

// GateOptions configure the connection gate.
type GateOptions struct {
	MaxConns      int
	MaxConnsPerIP int
	// ProxyTrusted lists the peers allowed (and required) to send a PROXY
	// protocol v1/v2 header; empty: PROXY protocol off.
	ProxyTrusted []netip.Prefix
	// ProxyTimeout bounds reading the PROXY header (default 5s).
	ProxyTimeout time.Duration
	// OnConnect runs in the connection's own goroutine before the banner;
	// a non-nil reply is written and the connection closed.
	OnConnect func(c *gateConn) *Reply
	// OnReject is told about every connection the gate refused.
	OnReject func(reason string)
}

// gate is mxguard's own accept loop in front of go-smtp: it reads PROXY
// headers (with a deadline, in the connection's goroutine, so one slow peer
// cannot stall accepting), enforces total and per-client concurrency, and
// only then hands the connection to go-smtp through Accept.
type gate struct {
	inner net.Listener
	opts  GateOptions
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once

	mu    sync.Mutex
	perIP map[netip.Prefix]int
	total int
	conns map[*gateConn]struct{}

	wg sync.WaitGroup
}

func newGate(l net.Listener, opts GateOptions) *gate {
	if opts.ProxyTimeout <= 0 {
		// Zero would disable go-proxyproto's header deadline.
		opts.ProxyTimeout = 5 * time.Second
	}
	g := &gate{inner: l, opts: opts, ready: make(chan net.Conn), done: make(chan struct{}), perIP: map[netip.Prefix]int{}, conns: map[*gateConn]struct{}{}}
	g.wg.Add(1)
	go g.loop()
	return g
}

// clientKey groups IPv6 clients by /64: one host usually owns the whole
// prefix, so counting single addresses would be trivially evaded.
func clientKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

func (g *gate) loop() {
	defer g.wg.Done()
	var delay time.Duration
	for {
		c, err := g.inner.Accept()
		if err != nil {
			select {
			case <-g.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off instead of spinning.
			delay = min(max(delay*2, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go g.admit(c)
	}
}

func (g *gate) admit(raw net.Conn) {
	peer := addrOf(raw.RemoteAddr())
	var c net.Conn = raw
	proxied := false
	if len(g.opts.ProxyTrusted) > 0 {
		if trusted(g.opts.ProxyTrusted, peer) {
			pc := proxyproto.NewConn(raw, proxyproto.WithPolicy(proxyproto.REQUIRE),
				proxyproto.SetReadHeaderTimeout(g.opts.ProxyTimeout))
			// Read the header now, before go-smtp writes the banner.
			if pc.ProxyHeader() == nil {
				g.reject(raw, nil, "proxy_header_missing")
				return
			}
			if a := addrOf(pc.RemoteAddr()); a.IsValid() {
				peer = a
				proxied = true
			}
			c = pc
		} else {
			c = &proxySniffer{Conn: raw}
		}
	} else {
		c = &proxySniffer{Conn: raw}
	}

	key := clientKey(peer)
	g.mu.Lock()
	over := ""
	switch {
	case g.opts.MaxConns > 0 && g.total >= g.opts.MaxConns:
		over = "max_conns"
	case g.opts.MaxConnsPerIP > 0 && g.perIP[key] >= g.opts.MaxConnsPerIP:
		over = "max_conns_per_ip"
	default:
		g.total++
		g.perIP[key]++
	}
	g.mu.Unlock()
	if over != "" {
		g.reject(c, &ReplyTooManyConns, over)
		return
	}

	gc := &gateConn{Conn: c, peer: peer, proxied: proxied, id: newID()}
	gc.release = func() { g.release(key, gc) }
	g.mu.Lock()
	g.conns[gc] = struct{}{}
	g.mu.Unlock()
	if g.opts.OnConnect != nil {
		if r := g.opts.OnConnect(gc); r != nil {
			gc.rejected = true
			g.reject(gc, r, "connect_policy")
			return
		}
	}
	select {
	case g.ready <- gc:
	case <-g.done:
		gc.Close()
	}
}

func (g *gate) reject(c net.Conn, r *Reply, reason string) {
	if r != nil {
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		id := ""
		if gc, ok := c.(*gateConn); ok {
			id = gc.id
		}
		_, _ = c.Write([]byte(r.Line(id)))
	}
	c.Close()
	if g.opts.OnReject != nil {
		g.opts.OnReject(reason)
	}
}

func (g *gate) release(key netip.Prefix, gc *gateConn) {
	g.mu.Lock()
	delete(g.conns, gc)
	g.total--
	if g.perIP[key] <= 1 {
		delete(g.perIP, key)
	} else {
		g.perIP[key]--
	}
	g.mu.Unlock()
}

// Accept hands admitted connections to go-smtp.
func (g *gate) Accept() (net.Conn, error) {
	select {
	case c := <-g.ready:
		return c, nil
	case <-g.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; admitted connections stay open.
func (g *gate) Close() error {
	var err error
	g.once.Do(func() {
		close(g.done)
		err = g.inner.Close()
	})
	return err
}

func (g *gate) Addr() net.Addr { return g.inner.Addr() }

// each calls f for every open admitted connection.
func (g *gate) each(f func(*gateConn)) {
	g.mu.Lock()
	list := make([]*gateConn, 0, len(g.conns))
	for c := range g.conns {
		list = append(list, c)
	}
	g.mu.Unlock()
	for _, c := range list {
		f(c)
	}
}

// Conns is the number of open admitted connections.
func (g *gate) Conns() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

func trusted(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func addrOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(v.IP)
		return ip.Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// gateConn is an admitted connection: it remembers the client address (from
// the PROXY header when there was one) and frees its concurrency slot once.
type gateConn struct {
	net.Conn
	id       string
	peer     netip.Addr
	proxied  bool
	rejected bool
	release  func()
	closed   atomic.Bool
	// facts from the connect stage, picked up by the session
	connect *Transaction
	// sess is the go-smtp session on this connection, once EHLO created it.
	sess atomic.Pointer[session]

	mu      sync.Mutex
	closers []func()

	// wmu guards pending: replies held back until the next read (see Write).
	wmu     sync.Mutex
	pending []byte
}

// maxPendingReplies bounds the reply bytes held back per connection.
const maxPendingReplies = 16 << 10

// Write holds replies back until the connection is next read, closed, or
// more than maxPendingReplies wait. go-smtp flushes every reply with a
// write of its own; a sender that pipelines (RFC 2920: MAIL, RCPT…, DATA
// in one packet, as Postfix does) then gets one packet per reply. Held
// back, the replies to one batch go out in one write when go-smtp turns
// to read the next command. A sender that does not pipeline sees no
// delay: go-smtp reads right after each reply.
func (c *gateConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.pending)+len(p) > maxPendingReplies {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) >= maxPendingReplies {
		return c.Conn.Write(p)
	}
	c.pending = append(c.pending, p...)
	return len(p), nil
}

// Read sends the replies held back first: the sender may be waiting for
// them before it sends more.
func (c *gateConn) Read(p []byte) (int, error) {
	c.wmu.Lock()
	err := c.flushLocked()
	c.wmu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *gateConn) flushLocked() error {
	if len(c.pending) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.pending)
	if cap(c.pending) > 4<<10 {
		c.pending = nil // do not keep a large buffer on an idle connection
	} else {
		c.pending = c.pending[:0]
	}
	return err
}

// onClose registers f to run once when the connection closes.
func (c *gateConn) onClose(f func()) {
	c.mu.Lock()
	c.closers = append(c.closers, f)
	c.mu.Unlock()
}

func (c *gateConn) Close() error {
	// The last replies (221 to QUIT, 421 at shutdown or on errors) go out
	// before the connection closes, bounded; unless a write is in progress
	// (a sender not reading), which the close is then meant to interrupt.
	if c.wmu.TryLock() {
		if len(c.pending) > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = c.flushLocked()
		}
		c.wmu.Unlock()
	}
	if c.closed.CompareAndSwap(false, true) {
		if c.release != nil {
			c.release()
		}
		c.mu.Lock()
		fs := c.closers
		c.closers = nil
		c.mu.Unlock()
		for _, f := range fs {
			f()
		}
	}
	return c.Conn.Close()
}

// proxySniffer watches the first bytes of a connection from a peer that may
// not send a PROXY header: if they are one (v1 "PROXY " or the v2 signature),
// reading fails and go-smtp closes the connection.
type proxySniffer struct {
	net.Conn
	seen    []byte
	checked bool
}

var (
	proxyV1 = []byte("PROXY ")
	proxyV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

func (p *proxySniffer) Read(b []byte) (int, error) {
	n, err := p.Conn.Read(b)
	if p.checked || n == 0 {
		return n, err
	}
	need := len(proxyV2) - len(p.seen)
	p.seen = append(p.seen, b[:min(n, need)]...)
	if looksLikeProxy(p.seen) {
		if len(p.seen) >= len(proxyV1) && bytes.HasPrefix(p.seen, proxyV1) || len(p.seen) >= len(proxyV2) {
			return 0, errProxyFromUntrusted
		}
		// Could still be a header: hold back judgement until more arrives.
		return n, err
	}
	p.checked = true
	p.seen = nil
	return n, err
}

// looksLikeProxy: seen is a prefix of (or starts with) a PROXY signature.
func looksLikeProxy(seen []byte) bool {
	for _, sig := range [][]byte{proxyV1, proxyV2} {
		k := min(len(seen), len(sig))
		if bytes.Equal(seen[:k], sig[:k]) {
			return true
		}
	}
	return false
}
