package filter_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/mxguard/mxguard/filter"
)

// proxyHeader formats a PROXY protocol header (v1 or v2) naming src as the
// client and our listener as the destination.
func proxyHeader(t testing.TB, version byte, src string) []byte {
	t.Helper()
	sa := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src))
	da := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25}
	proto := proxyproto.TCPv4
	if sa.IP.To4() == nil {
		proto = proxyproto.TCPv6
		da = &net.TCPAddr{IP: net.IPv6loopback, Port: 25}
	}
	h := &proxyproto.Header{Version: version, Command: proxyproto.PROXY, TransportProtocol: proto, SourceAddr: sa, DestinationAddr: da}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func withProxyTrusted(cidrs ...string) gwOption {
	return func(o *filter.Options, _ *gwSetup) {
		o.Gate.ProxyTrusted = nil
		for _, c := range cidrs {
			o.Gate.ProxyTrusted = append(o.Gate.ProxyTrusted, netip.MustParsePrefix(c))
		}
	}
}

// dialProxied connects and sends a PROXY header first (as a load balancer does).
func (g *gw) dialProxied(version byte, src string) *client {
	g.t.Helper()
	cl := g.dial()
	cl.send(string(proxyHeader(g.t, version, src)))
	return cl
}

// drain reads until the server closes the connection (bounded) and returns
// the lines it sent.
func (cl *client) drain() []string {
	_ = cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var lines []string
	for {
		l, err := cl.r.ReadString('\n')
		if l != "" {
			lines = append(lines, strings.TrimRight(l, "\r\n"))
		}
		if err != nil {
			return lines
		}
	}
}

// receivedLine returns our Received field (the first field of the relayed
// message), unfolded.
func receivedLine(t testing.TB, data []byte) string {
	t.Helper()
	s := string(data)
	if !strings.HasPrefix(s, "Received: ") {
		t.Fatalf("message does not start with Received:\n%s", s)
	}
	end := strings.Index(s, "\r\n")
	for end >= 0 && end+2 < len(s) && (s[end+2] == ' ' || s[end+2] == '\t') {
		next := strings.Index(s[end+2:], "\r\n")
		if next < 0 {
			break
		}
		end += 2 + next
	}
	return strings.ReplaceAll(s[:end], "\r\n", "")
}

func TestProxyTrustedPeerClientAddress(t *testing.T) {
	cases := []struct {
		name    string
		version byte
		src     string
		literal string
	}{
		{"v1 IPv4", 1, "192.0.2.77:40000", "[192.0.2.77]"},
		{"v2 IPv4", 2, "192.0.2.77:40000", "[192.0.2.77]"},
		{"v1 IPv6", 1, "[2001:db8::77]:40000", "2001:db8::77]"},
		{"v2 IPv6", 2, "[2001:db8::77]:40000", "2001:db8::77]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := startGW(t, withProxyTrusted("127.0.0.0/8"))
			cl := g.dialProxied(tc.version, tc.src)
			cl.expect(220)
			cl.cmd("EHLO client.example.org", 250)
			cl.cmd("MAIL FROM:<alice@example.org>", 250)
			cl.cmd("RCPT TO:<bob@corp.test>", 250)
			cl.cmd("DATA", 354)
			cl.send(msg("alice@example.org", "bob@corp.test", "proxied", "hi\r\n") + "\r\n.\r\n")
			cl.expect(250)
			m := g.down.WaitMessages(t, 1, 5*time.Second)[0]
			rcv := receivedLine(t, m.Data)
			if !strings.Contains(rcv, tc.literal) || strings.Contains(rcv, "127.0.0.1") {
				t.Errorf("Received names the wrong client (want %s):\n%s", tc.literal, rcv)
			}
			// SPF ran for the proxied address: example.org allows only
			// 127.0.0.1, so the load balancer's address would pass.
			if !strings.Contains(string(m.Data), "spf=fail") {
				t.Errorf("SPF did not judge the proxied address:\n%s", m.Data)
			}
		})
	}
}

// TestProxyHeaderAndCommandInOneSegment: a client that pipelines its first
// command right behind the header must not lose it.
func TestProxyHeaderAndCommandInOneSegment(t *testing.T) {
	g := startGW(t, withProxyTrusted("127.0.0.0/8"))
	for _, v := range []byte{1, 2} {
		cl := g.dial()
		cl.send(string(proxyHeader(t, v, "192.0.2.77:40000")) + "EHLO client.example.org\r\n")
		cl.expect(220)
		cl.expect(250)
		cl.cmd("QUIT", 221)
	}
}

func TestProxyLocalCommandKeepsPeerAddress(t *testing.T) {
	// v2 LOCAL (load-balancer health checks): no client address is
	// carried, the connection's own peer is the client.
	g := startGW(t, withProxyTrusted("127.0.0.0/8"))
	h := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	cl := g.dial()
	cl.send(string(b))
	cl.expect(220)
	cl.cmd("EHLO client.example.org", 250)
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "local", "hi\r\n") + "\r\n.\r\n")
	cl.expect(250)
	rcv := receivedLine(t, g.down.WaitMessages(t, 1, 5*time.Second)[0].Data)
	if !strings.Contains(rcv, "[127.0.0.1]") {
		t.Errorf("Received: %s", rcv)
	}
}

// TestProxyPerIPCapCountsProxiedAddress: behind a load balancer every
// connection comes from the balancer; the cap must count the clients.
func TestProxyPerIPCapCountsProxiedAddress(t *testing.T) {
	g := startGW(t, withProxyTrusted("127.0.0.0/8"), func(o *filter.Options, _ *gwSetup) { o.Gate.MaxConnsPerIP = 2 })
	admitted := func(version byte, src string) bool {
		t.Helper()
		cl := g.dialProxied(version, src)
		code, text := cl.reply()
		switch code {
		case 220:
			return true
		case 421:
			if !strings.Contains(text, "4.7.0") {
				t.Errorf("%s: %q", src, text)
			}
			if !cl.closed() {
				t.Errorf("%s: over-limit connection stayed open", src)
			}
			return false
		}
		t.Fatalf("%s: got %d %q", src, code, text)
		return false
	}
	steps := []struct {
		version byte
		src     string
		want    bool
	}{
		{1, "192.0.2.77:1001", true},
		{2, "192.0.2.77:1002", true},
		{2, "192.0.2.77:1003", false}, // third from the same client
		{1, "192.0.2.78:1004", true},  // another client behind the same balancer
		// IPv6 clients count per /64.
		{2, "[2001:db8:1::1]:1005", true},
		{1, "[2001:db8:1::2]:1006", true},
		{2, "[2001:db8:1::ffff:3]:1007", false},
		{2, "[2001:db8:2::1]:1008", true},
	}
	for _, s := range steps {
		if got := admitted(s.version, s.src); got != s.want {
			t.Errorf("PROXY v%d from %s: admitted=%v, want %v", s.version, s.src, got, s.want)
		}
	}
}

func TestProxyTrustedPeerWithoutHeaderClosed(t *testing.T) {
	g := startGW(t, withProxyTrusted("127.0.0.0/8"), func(o *filter.Options, _ *gwSetup) {
		o.Gate.ProxyTimeout = 300 * time.Millisecond
	})
	cases := []struct{ name, send string }{
		{"SMTP instead of a header", "EHLO client.example.org\r\nMAIL FROM:<alice@example.org>\r\n"},
		{"malformed v1 header", "PROXY TCP4 not-an-address 127.0.0.1 1 25\r\nEHLO client.example.org\r\n"},
		{"truncated v2 signature", "\r\n\r\n\x00\r\nQU"},
		{"silent", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := g.dial()
			start := time.Now()
			if tc.send != "" {
				cl.send(tc.send)
			}
			if lines := cl.drain(); len(lines) > 0 {
				t.Errorf("server answered a trusted peer without a valid header: %q", lines)
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("closed after %v", el)
			}
		})
	}
	if n := g.down.Conns(); n != 0 {
		t.Errorf("downstream contacted %d times", n)
	}
}

// refusedProxyLine checks that a PROXY header from a peer that may not send
// one ends the connection and that nothing pipelined behind it runs.
func refusedProxyLine(t *testing.T, g *gw, header []byte) {
	t.Helper()
	cl := g.dial()
	cl.expect(220) // untrusted peers get the banner before they speak
	txn := "EHLO client.example.org\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@corp.test>\r\nDATA\r\n" +
		msg("alice@example.org", "bob@corp.test", "via proxy", "x\r\n") + "\r\n.\r\nQUIT\r\n"
	cl.send(string(header) + txn)
	for _, l := range cl.drain() {
		if strings.HasPrefix(l, "250") || strings.HasPrefix(l, "354") {
			t.Errorf("a PROXY header from an untrusted peer was followed by %q", l)
		}
	}
	// And a client that waits for replies gets no further either.
	cl = g.dial()
	cl.expect(220)
	cl.send(string(header))
	// (go-smtp may say "421 4.4.0 Connection error" before closing.)
	if lines := cl.drain(); len(lines) > 1 || len(lines) == 1 && !strings.HasPrefix(lines[0], "421") {
		t.Errorf("after the header: %q, want the connection closed", lines)
	}
	time.Sleep(50 * time.Millisecond)
	if g.down.Mails() != 0 || g.down.Delivered() != 0 {
		t.Errorf("downstream saw %d MAIL, %d messages", g.down.Mails(), g.down.Delivered())
	}
}

func TestProxyFromUntrustedPeerClosed(t *testing.T) {
	g := startGW(t, withProxyTrusted("10.0.0.0/8")) // loopback is not trusted
	t.Run("v1", func(t *testing.T) { refusedProxyLine(t, g, proxyHeader(t, 1, "192.0.2.77:40000")) })
	t.Run("v2", func(t *testing.T) { refusedProxyLine(t, g, proxyHeader(t, 2, "192.0.2.77:40000")) })
	t.Run("v2 IPv6", func(t *testing.T) { refusedProxyLine(t, g, proxyHeader(t, 2, "[2001:db8::77]:40000")) })
	t.Run("plain SMTP still works", func(t *testing.T) {
		code, text := g.sendMail("alice@example.org", []string{"bob@corp.test"}, msg("alice@example.org", "bob@corp.test", "direct", "x\r\n"))
		if code != 250 {
			t.Fatalf("got %d %q", code, text)
		}
		rcv := receivedLine(t, g.down.WaitMessages(t, 1, 5*time.Second)[0].Data)
		if !strings.Contains(rcv, "[127.0.0.1]") {
			t.Errorf("Received: %s", rcv)
		}
	})
}

func TestProxyProtocolOffRefusesProxyLine(t *testing.T) {
	g := startGW(t) // no trusted list: PROXY protocol off
	t.Run("v1", func(t *testing.T) { refusedProxyLine(t, g, proxyHeader(t, 1, "192.0.2.77:40000")) })
	t.Run("v2", func(t *testing.T) { refusedProxyLine(t, g, proxyHeader(t, 2, "192.0.2.77:40000")) })
	t.Run("v1 typed by hand", func(t *testing.T) {
		refusedProxyLine(t, g, []byte("PROXY TCP4 192.0.2.77 127.0.0.1 40000 25\r\n"))
	})
}
