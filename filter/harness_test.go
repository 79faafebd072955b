package filter_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/filter"
	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/relay"
	"github.com/mxguard/mxguard/resolver"
)

// gw is a running front end on loopback with a recording downstream and an
// authoritative DNS server.
type gw struct {
	t     testing.TB
	srv   *filter.Server
	addr  string
	down  *testenv.Downstream
	down2 *testenv.Downstream
	dns   *testenv.DNS
	roots *x509.CertPool
	done  chan error
}

type gwOption func(*filter.Options, *gwSetup)

type gwSetup struct {
	downOpts  testenv.DownstreamOptions
	relayOpts relay.Options
	routeTLS  relay.TLSMode
}

// startGW starts a gateway for corp.test (→ down) and other.test (→ down2).
func startGW(t testing.TB, mods ...gwOption) *gw {
	t.Helper()
	g := &gw{t: t, done: make(chan error, 1)}
	setup := &gwSetup{routeTLS: relay.TLSNone, relayOpts: relay.Options{
		HeloName: "mx.test", ConnectTimeout: 2 * time.Second, CommandTimeout: 5 * time.Second, DataTimeout: 10 * time.Second}}
	g.dns = testenv.StartDNS(t)
	g.dns.LoadZoneFile(t, testenv.RepoRoot(t)+"/testdata/zones/gateway.test.zone", "")
	res, err := resolver.New(resolver.Config{Servers: []string{g.dns.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	opts := filter.Options{
		Hostname:        "mx.test",
		MaxMessageBytes: 1 << 20,
		MaxRecipients:   10,
		MaxLineLength:   2000,
		MaxErrors:       20,
		MaxReceived:     50,
		MaxHeaderBytes:  64 << 10,
		CommandTimeout:  5 * time.Second,
		DataTimeout:     20 * time.Second,
		SpoolMemory:     64 << 10,
		SpoolDir:        t.TempDir(),
		Gate:            filter.GateOptions{MaxConns: 100, MaxConnsPerIP: 50, ProxyTimeout: time.Second},
		Resolver:        res,
		Checks:          filter.Checks{SPF: true, DKIM: true, DMARC: true, FCrDNS: true, Timeout: 5 * time.Second, MaxDKIMSignatures: 5},
		Headers:         filter.HeaderOptions{Verdict: true, Reasons: true, DecisionID: true},
		Logger:          slog.New(slog.NewJSONHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, m := range mods {
		m(&opts, setup)
	}
	g.down = testenv.StartDownstream(t, setup.downOpts)
	g.down2 = testenv.StartDownstream(t, setup.downOpts)
	_, g.roots = testenv.TestCert(t)
	if setup.relayOpts.RootCAs == nil {
		setup.relayOpts.RootCAs = g.roots
	}
	rl, err := relay.New(map[string]relay.Route{
		"corp.test":    {Hosts: []string{g.down.Addr()}, TLS: setup.routeTLS},
		"sales.test":   {Hosts: []string{g.down.Addr()}, TLS: setup.routeTLS},
		"other.test":   {Hosts: []string{g.down2.Addr()}, TLS: setup.routeTLS},
		"maildir.test": {Maildir: t.TempDir()},
	}, setup.relayOpts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Router = rl
	srv, err := filter.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.srv, g.addr = srv, l.Addr().String()
	go func() { g.done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case <-g.done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return g
}

// testWriter sends log lines to t.Log (visible with -v or on failure).
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	if os.Getenv("MXGUARD_TEST_LOG") != "" {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// client is a raw SMTP client for protocol edge cases.
type client struct {
	t    testing.TB
	c    net.Conn
	r    *bufio.Reader
	last string
}

func (g *gw) dial() *client {
	g.t.Helper()
	c, err := net.DialTimeout("tcp", g.addr, 2*time.Second)
	if err != nil {
		g.t.Fatal(err)
	}
	cl := &client{t: g.t, c: c, r: bufio.NewReader(c)}
	g.t.Cleanup(func() { c.Close() })
	return cl
}

// greet reads the banner and sends EHLO.
func (g *gw) greet(helo string) *client {
	cl := g.dial()
	cl.expect(220)
	cl.cmd("EHLO "+helo, 250)
	return cl
}

func (cl *client) send(s string) {
	cl.t.Helper()
	_ = cl.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(cl.c, s); err != nil {
		cl.t.Fatalf("write: %v", err)
	}
}

// reply reads one (possibly multi-line) reply; code 0 and the error text on
// a closed connection.
func (cl *client) reply() (int, string) {
	_ = cl.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var text []string
	for {
		line, err := cl.r.ReadString('\n')
		if err != nil {
			return 0, "read: " + err.Error()
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 {
			return 0, "short reply: " + line
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, "bad reply: " + line
		}
		text = append(text, line)
		if line[3] == ' ' {
			return code, strings.Join(text, "\n")
		}
	}
}

func (cl *client) expect(code int) string {
	cl.t.Helper()
	got, text := cl.reply()
	if got != code {
		cl.t.Fatalf("want %d, got %d %q (after %q)", code, got, text, cl.last)
	}
	return text
}

func (cl *client) cmd(line string, code int) string {
	cl.t.Helper()
	cl.last = line
	cl.send(line + "\r\n")
	return cl.expect(code)
}

// closed reports whether the server closed the connection (reads EOF).
func (cl *client) closed() bool {
	_ = cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, err := cl.r.ReadString('\n')
		if err != nil {
			return true
		}
	}
}

func (cl *client) startTLS(roots *x509.CertPool) {
	cl.t.Helper()
	cl.cmd("STARTTLS", 220)
	tc := tls.Client(cl.c, &tls.Config{RootCAs: roots, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		cl.t.Fatalf("tls handshake: %v", err)
	}
	cl.c = tc
	cl.r = bufio.NewReader(tc)
}

// msg builds a small valid message.
func msg(from, to, subject, body string) string {
	return fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%d@test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n%s",
		from, to, subject, time.Now().UnixNano(), body)
}

// sendMail runs one whole transaction over a raw connection and returns the
// final reply.
func (g *gw) sendMail(from string, rcpts []string, data string) (int, string) {
	g.t.Helper()
	cl := g.greet("client.example.org")
	defer cl.c.Close()
	cl.cmd("MAIL FROM:<"+from+">", 250)
	for _, r := range rcpts {
		cl.cmd("RCPT TO:<"+r+">", 250)
	}
	cl.cmd("DATA", 354)
	if !strings.HasSuffix(data, "\r\n") {
		data += "\r\n"
	}
	cl.send(data + ".\r\n")
	return cl.reply()
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// upgrade runs the TLS handshake after a 220 to STARTTLS.
func (cl *client) upgrade(roots *x509.CertPool) {
	cl.t.Helper()
	tc := tls.Client(cl.c, &tls.Config{RootCAs: roots, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		cl.t.Fatalf("tls handshake: %v", err)
	}
	cl.c = tc
	cl.r = bufio.NewReader(tc)
}

func testenvCert(t testing.TB) (*tls.Config, *x509.CertPool) {
	return testenv.TestCert(t)
}
