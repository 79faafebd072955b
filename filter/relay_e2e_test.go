package filter_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/filter"
	"github.com/mxguard/mxguard/relay"
)

func TestCleanRelaySeveralRecipients(t *testing.T) {
	g := startGW(t)
	body := msg("alice@example.org", "bob@corp.test", "hello", "Hi Bob.\r\n")
	code, text := g.sendMail("alice@example.org", []string{"bob@corp.test", "Carol@CORP.test", "dave@sales.test"}, body)
	if code != 250 || !strings.Contains(text, "(id mxg-") {
		t.Fatalf("final reply %d %q, want 250 with the transaction id", code, text)
	}
	got := g.down.WaitMessages(t, 1, 5*time.Second)
	if len(got) != 1 {
		t.Fatalf("downstream got %d messages, want 1", len(got))
	}
	m := got[0]
	if m.From != "alice@example.org" {
		t.Errorf("MAIL FROM %q", m.From)
	}
	wantTo := []string{"bob@corp.test", "Carol@corp.test", "dave@sales.test"}
	if strings.Join(m.To, ",") != strings.Join(wantTo, ",") {
		t.Errorf("RCPT TO %v, want %v (domain lower-cased, local part kept)", m.To, wantTo)
	}
	data := string(m.Data)
	if !strings.HasPrefix(data, "Received: from client.example.org (client.example.org [127.0.0.1])") {
		t.Errorf("message does not start with our Received header:\n%s", data)
	}
	if n := strings.Count(data, "Authentication-Results: mx.test"); n != 1 {
		t.Errorf("%d Authentication-Results for mx.test, want 1:\n%s", n, data)
	}
	if !strings.Contains(data, "spf=pass") {
		t.Errorf("Authentication-Results lacks spf=pass:\n%s", data)
	}
	if !strings.HasSuffix(data, "\r\nHi Bob.\r\n") {
		t.Errorf("body changed:\n%q", data)
	}
	assertCRLFOnly(t, m.Data)
}

// assertCRLFOnly fails on any bare CR, bare LF or NUL.
func assertCRLFOnly(t *testing.T, b []byte) {
	t.Helper()
	for i, c := range b {
		switch c {
		case 0:
			t.Fatalf("NUL at %d", i)
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				t.Fatalf("bare LF at %d: %q", i, b[max(0, i-20):min(len(b), i+20)])
			}
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				t.Fatalf("bare CR at %d: %q", i, b[max(0, i-20):min(len(b), i+20)])
			}
		}
	}
}

func TestDownstreamRecipientRefusalPassedThrough(t *testing.T) {
	g := startGW(t)
	g.down.RefuseRcpt("nobody@corp.test", 550, [3]int{5, 1, 1}, "no such user here at mailbox1.corp.internal")
	g.down.RefuseRcpt("full@corp.test", 452, [3]int{4, 2, 2}, "mailbox full")
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	text := cl.cmd("RCPT TO:<nobody@corp.test>", 550)
	if !strings.Contains(text, "5.1.1") || strings.Contains(text, "corp.internal") || !strings.Contains(text, "(id mxg-") {
		t.Errorf("refusal %q: want 5.1.1, our id, no internal host name", text)
	}
	cl.cmd("RCPT TO:<full@corp.test>", 452)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "x", "x\r\n") + "\r\n.\r\n")
	cl.expect(250)
	m := g.down.WaitMessages(t, 1, 5*time.Second)[0]
	if len(m.To) != 1 || m.To[0] != "bob@corp.test" {
		t.Errorf("downstream recipients %v, want only bob", m.To)
	}
}

func TestDownstreamFailuresAtData(t *testing.T) {
	cases := []struct {
		name     string
		setup    func(g *gw)
		wantCode int
	}{
		{"4xx", func(g *gw) { g.down.SetDataReply(451, [3]int{4, 3, 0}, "try later") }, 451},
		{"5xx", func(g *gw) { g.down.SetDataReply(554, [3]int{5, 6, 0}, "content refused") }, 554},
		{"hung", func(g *gw) { g.down.SetHang(3 * time.Second) }, 451},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := startGW(t, func(o *filter.Options, s *gwSetup) {
				s.relayOpts.CommandTimeout = 500 * time.Millisecond
				s.relayOpts.DataTimeout = time.Second
			})
			cl := g.greet("client.example.org")
			cl.cmd("MAIL FROM:<alice@example.org>", 250)
			cl.cmd("RCPT TO:<bob@corp.test>", 250)
			tc.setup(g)
			cl.cmd("DATA", 354)
			cl.send(msg("alice@example.org", "bob@corp.test", "x", "x\r\n") + "\r\n.\r\n")
			code, text := cl.reply()
			if code != tc.wantCode || !strings.Contains(text, "(id mxg-") {
				t.Fatalf("got %d %q, want %d with id", code, text, tc.wantCode)
			}
			if tc.name != "hung" && g.down.Delivered() != 0 {
				t.Errorf("downstream delivered %d", g.down.Delivered())
			}
		})
	}
}

func TestDownstreamDownOrHungAtRcpt(t *testing.T) {
	t.Run("down", func(t *testing.T) {
		g := startGW(t)
		g.down.Down()
		cl := g.greet("client.example.org")
		cl.cmd("MAIL FROM:<alice@example.org>", 250)
		text := cl.cmd("RCPT TO:<bob@corp.test>", 451)
		if !strings.Contains(text, "4.4.1") || strings.Contains(text, "127.0.0.1") {
			t.Errorf("reply %q: want 4.4.1 without inside addresses", text)
		}
	})
	t.Run("hung", func(t *testing.T) {
		g := startGW(t, func(o *filter.Options, s *gwSetup) { s.relayOpts.CommandTimeout = 300 * time.Millisecond })
		g.down.SetHang(5 * time.Second)
		cl := g.greet("client.example.org")
		cl.cmd("MAIL FROM:<alice@example.org>", 250)
		start := time.Now()
		cl.cmd("RCPT TO:<bob@corp.test>", 451)
		if el := time.Since(start); el > 4*time.Second {
			t.Errorf("a hung downstream held the session for %v", el)
		}
	})
}

func TestRecipientOnOtherRouteGets452(t *testing.T) {
	g := startGW(t)
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	text := cl.cmd("RCPT TO:<eve@other.test>", 452)
	if !strings.Contains(text, "4.5.3") {
		t.Errorf("reply %q, want 4.5.3", text)
	}
	cl.cmd("RCPT TO:<dave@sales.test>", 250) // same downstream: same transaction
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "x", "x\r\n") + "\r\n.\r\n")
	cl.expect(250)
	// The sender retries the other recipient in a new transaction.
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<eve@other.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "eve@other.test", "x", "x\r\n") + "\r\n.\r\n")
	cl.expect(250)
	if n := len(g.down2.WaitMessages(t, 1, 5*time.Second)); n != 1 {
		t.Errorf("other.test downstream got %d messages", n)
	}
}

func TestOpenRelayGuard(t *testing.T) {
	g := startGW(t)
	cases := []struct {
		rcpt string
		code int
	}{
		{"<victim@elsewhere.example>", 550},
		{"<victim%elsewhere.example@corp.test>", 550},
		{"<elsewhere.example!victim@corp.test>", 550},
		{"<@corp.test:victim@elsewhere.example>", 550}, // source route: go-smtp drops it, the real domain is refused
		{"<\"victim@elsewhere.example\"@corp.test>", 550},
		{"<victim@[192.0.2.1]>", 550},
		{"<victim@corp.test.evil.example>", 550},
		{"<victim@elsewhere.example.>", 550},
		{"<bob@CORP.TEST.>", 250}, // trailing dot and case: normalised to corp.test
	}
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	for _, tc := range cases {
		text := cl.cmd("RCPT TO:"+tc.rcpt, tc.code)
		if tc.code == 550 && !strings.Contains(text, "5.7.1") && !strings.Contains(text, "5.1.3") {
			t.Errorf("%s: %q, want 5.7.1", tc.rcpt, text)
		}
	}
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "x", "x\r\n") + "\r\n.\r\n")
	cl.expect(250)
	m := g.down.WaitMessages(t, 1, 5*time.Second)
	if len(m) != 1 || len(m[0].To) != 1 || m[0].To[0] != "bob@corp.test" {
		t.Fatalf("downstream saw %+v, want one message to bob@corp.test only", m)
	}
	if g.down2.Conns() != 0 {
		t.Errorf("another route was contacted")
	}
}

func TestControlCharactersRefused(t *testing.T) {
	g := startGW(t)
	cl := g.dial()
	cl.expect(220)
	cl.cmd("EHLO bad\x01name", 501)
	cl.cmd("EHLO client.example.org", 250)
	cl.cmd("MAIL FROM:<al\x00ice@example.org>", 501)
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bo\rb@corp.test>", 501)
	cl.cmd("RCPT TO:<bób@corp.test>", 553) // 8-bit without SMTPUTF8
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
}

func TestSMTPUTF8Addresses(t *testing.T) {
	g := startGW(t)
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org> SMTPUTF8", 250)
	cl.cmd("RCPT TO:<bób@corp.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "x", "x\r\n") + "\r\n.\r\n")
	cl.expect(250)
	m := g.down.WaitMessages(t, 1, 5*time.Second)[0]
	if m.To[0] != "bób@corp.test" || !m.MailOpts.UTF8 {
		t.Errorf("downstream got %v utf8=%v", m.To, m.MailOpts.UTF8)
	}
}

func TestForgedAuthResultsStripped(t *testing.T) {
	g := startGW(t)
	forged := "Authentication-Results: mx.test; dmarc=pass header.from=bank.example\r\n" +
		"Authentication-Results: MX.TEST (comment);\r\n spf=pass smtp.mailfrom=bank.example\r\n" +
		"Authentication-Results: other.example; spf=pass\r\n" +
		"X-MXGuard-Verdict: accept\r\n"
	code, _ := g.sendMail("alice@example.org", []string{"bob@corp.test"}, forged+msg("alice@example.org", "bob@corp.test", "x", "x\r\n"))
	if code != 250 {
		t.Fatalf("code %d", code)
	}
	data := string(g.down.WaitMessages(t, 1, 5*time.Second)[0].Data)
	if n := strings.Count(strings.ToLower(data), "authentication-results: mx.test"); n != 1 {
		t.Errorf("%d Authentication-Results claiming mx.test, want exactly ours:\n%s", n, data)
	}
	if !strings.Contains(data, "Authentication-Results: other.example; spf=pass") {
		t.Errorf("a foreign authserv-id's field was removed:\n%s", data)
	}
	if strings.Contains(data, "X-MXGuard-Verdict: accept\r\nFrom") {
		t.Errorf("a forged X-MXGuard header went through:\n%s", data)
	}
}

func TestMailLoop(t *testing.T) {
	g := startGW(t)
	var b bytes.Buffer
	for i := 0; i < 50; i++ {
		b.WriteString("Received: from a by b; Fri, 27 Nov 2026 10:00:00 +0000\r\n")
	}
	code, text := g.sendMail("alice@example.org", []string{"bob@corp.test"}, b.String()+msg("alice@example.org", "bob@corp.test", "x", "x\r\n"))
	if code != 554 || !strings.Contains(text, "5.4.6") {
		t.Fatalf("got %d %q, want 554 5.4.6", code, text)
	}
	if g.down.Delivered() != 0 {
		t.Errorf("looping message was delivered")
	}
}

func TestMaildirRoute(t *testing.T) {
	g := startGW(t)
	code, text := g.sendMail("alice@example.org", []string{"bob@maildir.test"}, msg("alice@example.org", "bob@maildir.test", "x", "x\r\n"))
	if code != 250 {
		t.Fatalf("got %d %q", code, text)
	}
}

var _ = relay.TLSNone

// TestNextTransactionAfterDownstreamRefusal: after the downstream refused a
// message at the final dot, the same inbound session sends the next message
// over the same downstream connection (its transaction ended with the reply).
func TestNextTransactionAfterDownstreamRefusal(t *testing.T) {
	g := startGW(t)
	cl := g.greet("client.example.org")
	g.down.SetDataReply(554, [3]int{5, 6, 0}, "no")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "1", "x\r\n") + ".\r\n")
	cl.expect(554)
	g.down.SetDataReply(0, [3]int{}, "")
	for i := 0; i < 2; i++ {
		cl.cmd("MAIL FROM:<alice@example.org>", 250)
		cl.cmd("RCPT TO:<bob@corp.test>", 250)
		cl.cmd("DATA", 354)
		cl.send(msg("alice@example.org", "bob@corp.test", "2", "x\r\n") + ".\r\n")
		cl.expect(250)
	}
	if n := len(g.down.WaitMessages(t, 2, 5*time.Second)); n != 2 {
		t.Fatalf("downstream got %d messages", n)
	}
	if c := g.down.Conns(); c != 1 {
		t.Errorf("%d downstream connections, want 1", c)
	}
}

// TestTransactionLogLine: one JSON summary line per transaction, with the
// refused recipients and escaped client values.
func TestTransactionLogLine(t *testing.T) {
	var buf syncBuffer
	g := startGW(t, func(o *filter.Options, _ *gwSetup) {
		o.Logger = slog.New(slog.NewJSONHandler(&buf, nil))
	})
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<eve@elsewhere.example>", 550)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "x", "x\r\n") + ".\r\n")
	cl.expect(250)
	var line map[string]any
	for _, l := range buf.lines(t) {
		if l["msg"] == "transaction" {
			line = l
		}
	}
	if line == nil {
		t.Fatal("no transaction line")
	}
	for _, k := range []string{"id", "client_ip", "helo", "mail_from", "rcpts", "outcome", "code", "size", "spf", "dmarc", "duration_ms"} {
		if _, ok := line[k]; !ok {
			t.Errorf("log line lacks %q: %v", k, line)
		}
	}
	if line["outcome"] != "delivered" || fmt.Sprint(line["refused_rcpts"]) != "[eve@elsewhere.example 550]" {
		t.Errorf("log line %v", line)
	}
}
