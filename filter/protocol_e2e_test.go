package filter_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/filter"
)

// TestSmuggling sends end-of-data look-alikes followed by a smuggled second
// transaction and then a real end. Whatever the server answers, the
// downstream must see at most one message, and never a bare CR, LF or NUL.
func TestSmuggling(t *testing.T) {
	smuggled := "MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@corp.test>\r\nDATA\r\nFrom: ceo@bank.example\r\n\r\nwire the money\r\n"
	variants := []string{"\n.\n", "\r.\r", "\r\n.\n", "\n.\r\n", "\r\n.\r", "\r\r\n.\r\r\n", "\r\n\x00.\r\n", "\r\n.\x00\r\n", "\r\n.\r\x00\n"}
	for _, normalize := range []bool{false, true} {
		for _, v := range variants {
			name := fmt.Sprintf("normalize=%v/%q", normalize, v)
			t.Run(name, func(t *testing.T) {
				g := startGW(t, func(o *filter.Options, _ *gwSetup) { o.Normalize = normalize })
				cl := g.greet("client.example.org")
				cl.cmd("MAIL FROM:<alice@example.org>", 250)
				cl.cmd("RCPT TO:<bob@corp.test>", 250)
				cl.cmd("DATA", 354)
				cl.send(msg("alice@example.org", "bob@corp.test", "x", "first") + v + smuggled + "\r\n.\r\n")
				code, text := cl.reply()
				if normalize && code != 250 {
					t.Fatalf("normalize mode: got %d %q, want 250", code, text)
				}
				// go-smtp's DATA reader unstuffs "\r\n.\r<x>" to "\r\n<x>",
				// dropping the dot and the CR before we see them: no bare CR
				// is left to refuse, and one clean message goes downstream.
				swallowed := v == "\r\n.\r"
				if !normalize && code != 550 && !(swallowed && code == 250) {
					t.Fatalf("reject mode: got %d %q, want 550 5.6.0", code, text)
				}
				// The session must still be in step: the next command is a command.
				cl.cmd("NOOP", 250)
				time.Sleep(100 * time.Millisecond)
				msgs := g.down.Messages()
				if len(msgs) > 1 {
					t.Fatalf("downstream got %d messages", len(msgs))
				}
				for _, m := range msgs {
					assertCRLFOnly(t, m.Data)
					if len(m.To) != 1 || m.To[0] != "bob@corp.test" {
						t.Errorf("smuggled recipients reached downstream: %v", m.To)
					}
				}
			})
		}
	}
}

func TestBDATWithEndOfDataInside(t *testing.T) {
	g := startGW(t)
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	chunk1 := msg("alice@example.org", "bob@corp.test", "bdat", "line one\r\n.\r\nMAIL FROM:<x@y>\r\n")
	chunk2 := "..leading dot line\r\nlast\r\n"
	cl.send(fmt.Sprintf("BDAT %d\r\n%s", len(chunk1), chunk1))
	cl.expect(250)
	cl.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk2), chunk2))
	cl.expect(250)
	m := g.down.WaitMessages(t, 1, 5*time.Second)
	if len(m) != 1 {
		t.Fatalf("got %d messages", len(m))
	}
	data := string(m[0].Data)
	if !strings.Contains(data, "line one\r\n.\r\nMAIL FROM:<x@y>\r\n..leading dot line\r\nlast\r\n") {
		t.Errorf("BDAT content not relayed verbatim:\n%q", data)
	}
	cl.cmd("NOOP", 250)
}

func TestBDATBareLFRefused(t *testing.T) {
	g := startGW(t)
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	chunk := msg("alice@example.org", "bob@corp.test", "bdat", "bare\nlf\r\n")
	cl.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk), chunk))
	text := cl.expect(550)
	if !strings.Contains(text, "5.6.0") {
		t.Errorf("reply %q", text)
	}
	cl.cmd("NOOP", 250)
	if g.down.Delivered() != 0 {
		t.Errorf("delivered")
	}
}

func TestSizeLimitKeepsSessionUsable(t *testing.T) {
	g := startGW(t, func(o *filter.Options, _ *gwSetup) { o.MaxMessageBytes = 10 << 10 })
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org> SIZE=20000", 552)
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 300)
	cl.send(msg("alice@example.org", "bob@corp.test", "big", big) + "\r\n.\r\n")
	text := cl.expect(552)
	if !strings.Contains(text, "5.3.4") {
		t.Errorf("reply %q", text)
	}
	// Still in step: a normal message goes through on the same connection.
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "small", "ok\r\n") + "\r\n.\r\n")
	cl.expect(250)
	if n := len(g.down.WaitMessages(t, 1, 5*time.Second)); n != 1 {
		t.Fatalf("downstream got %d messages, want only the small one", n)
	}
}

func TestRecipientLimit(t *testing.T) {
	g := startGW(t, func(o *filter.Options, _ *gwSetup) { o.MaxRecipients = 3 })
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	for i := 0; i < 3; i++ {
		cl.cmd(fmt.Sprintf("RCPT TO:<u%d@corp.test>", i), 250)
	}
	text := cl.cmd("RCPT TO:<u3@corp.test>", 452)
	if !strings.Contains(text, "4.5.3") {
		t.Errorf("reply %q", text)
	}
}

func TestLongLines(t *testing.T) {
	g := startGW(t, func(o *filter.Options, _ *gwSetup) { o.MaxLineLength = 1000 })
	t.Run("command", func(t *testing.T) {
		cl := g.greet("client.example.org")
		cl.send("MAIL FROM:<" + strings.Repeat("a", 1200) + "@example.org>\r\n")
		code, _ := cl.reply()
		if code != 500 {
			t.Errorf("got %d, want 500", code)
		}
		if !cl.closed() {
			t.Errorf("connection stayed open")
		}
	})
	t.Run("text", func(t *testing.T) {
		cl := g.greet("client.example.org")
		cl.cmd("MAIL FROM:<alice@example.org>", 250)
		cl.cmd("RCPT TO:<bob@corp.test>", 250)
		cl.cmd("DATA", 354)
		cl.send(msg("alice@example.org", "bob@corp.test", "long", strings.Repeat("x", 1500)+"\r\n") + "\r\n.\r\n")
		code, _ := cl.reply()
		if code/100 != 5 {
			t.Errorf("got %d, want a 5xx", code)
		}
		if g.down.Delivered() != 0 {
			t.Errorf("delivered")
		}
	})
	t.Run("bdat", func(t *testing.T) {
		cl := g.greet("client.example.org")
		cl.cmd("MAIL FROM:<alice@example.org>", 250)
		cl.cmd("RCPT TO:<bob@corp.test>", 250)
		chunk := msg("alice@example.org", "bob@corp.test", "long", strings.Repeat("x", 1500)+"\r\n")
		cl.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk), chunk))
		// Either our validator answers 550 5.6.0, or go-smtp's line limit
		// (which sees chunk bytes already buffered with the BDAT command)
		// answers 500 and closes. Both refuse the message.
		code, text := cl.reply()
		if code != 550 && code != 500 {
			t.Errorf("got %d %q, want a refusal", code, text)
		}
		if g.down.Delivered() != 0 {
			t.Errorf("delivered")
		}
	})
}

func TestCommandTimeout(t *testing.T) {
	g := startGW(t, func(o *filter.Options, _ *gwSetup) { o.CommandTimeout = 300 * time.Millisecond })
	cl := g.greet("client.example.org")
	code, text := cl.reply() // wait without sending anything
	if code != 421 {
		t.Fatalf("got %d %q, want 421 after the idle timeout", code, text)
	}
}

func TestSlowDataCutOff(t *testing.T) {
	g := startGW(t, func(o *filter.Options, _ *gwSetup) {
		o.CommandTimeout = 300 * time.Millisecond
		o.DataTimeout = 800 * time.Millisecond
	})
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	start := time.Now()
	// Trickle a line every 200ms: each read is within the command timeout,
	// but the whole transfer passes the data timeout.
	go func() {
		for i := 0; i < 20; i++ {
			if _, err := cl.c.Write([]byte("X-Trickle: 1\r\n")); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	code, text := cl.reply()
	if code != 451 && code != 421 {
		t.Fatalf("got %d %q, want 451 (transfer too slow)", code, text)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("cut off after %v", el)
	}
	if g.down.Delivered() != 0 {
		t.Errorf("delivered")
	}
}

func TestSTARTTLS(t *testing.T) {
	g := startGW(t, func(o *filter.Options, _ *gwSetup) {})
	_ = g
	srvTLS, roots := testenvCert(t)
	g2 := startGW(t, func(o *filter.Options, _ *gwSetup) { o.TLSConfig = srvTLS })
	cl := g2.greet("client.example.org")
	if !strings.Contains(cl.last, "EHLO") {
		t.Fatal("setup")
	}
	// Pipeline a plaintext command right after STARTTLS: it must be
	// discarded, not executed inside the TLS session.
	cl.send("STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
	cl.expect(220)
	cl.upgrade(roots)
	cl.cmd("EHLO client.example.org", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 502) // no MAIL in this session: the injected one was dropped
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "tls", "secret\r\n") + "\r\n.\r\n")
	cl.expect(250)
	m := g2.down.WaitMessages(t, 1, 5*time.Second)[0]
	if m.From != "alice@example.org" {
		t.Errorf("from %q", m.From)
	}
	if !strings.Contains(string(m.Data), "with ESMTPS") || !strings.Contains(string(m.Data), "TLS 1.3") {
		t.Errorf("Received header lacks TLS details:\n%s", m.Data)
	}
}

func TestEHLOAdvertisesExtensions(t *testing.T) {
	srvTLS, _ := testenvCert(t)
	g := startGW(t, func(o *filter.Options, _ *gwSetup) { o.TLSConfig = srvTLS })
	cl := g.dial()
	cl.expect(220)
	text := cl.cmd("EHLO client.example.org", 250)
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SIZE", "ENHANCEDSTATUSCODES", "SMTPUTF8", "STARTTLS", "CHUNKING"} {
		if !strings.Contains(text, ext) {
			t.Errorf("EHLO lacks %s:\n%s", ext, text)
		}
	}
	if strings.Contains(text, "AUTH") {
		t.Errorf("AUTH advertised on the MX port:\n%s", text)
	}
}

func TestPerIPConnectionCap(t *testing.T) {
	g := startGW(t, func(o *filter.Options, _ *gwSetup) { o.Gate.MaxConnsPerIP = 2 })
	a := g.dial()
	a.expect(220)
	b := g.dial()
	b.expect(220)
	c := g.dial()
	text := c.expect(421)
	if !strings.Contains(text, "4.7.0") {
		t.Errorf("reply %q", text)
	}
	if !c.closed() {
		t.Error("over-limit connection stayed open")
	}
	a.cmd("QUIT", 221)
	a.closed()
	// The slot is free again.
	deadline := time.Now().Add(3 * time.Second)
	for {
		d := g.dial()
		code, _ := d.reply()
		if code == 220 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not freed after QUIT (last code %d)", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestGoSMTPClientLibrary(t *testing.T) {
	g := startGW(t)
	c, err := smtp.Dial(g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	body := msg("alice@example.org", "bob@corp.test", "lib", "via go-smtp\r\n")
	if err := c.SendMail("alice@example.org", []string{"bob@corp.test"}, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if n := len(g.down.WaitMessages(t, 1, 5*time.Second)); n != 1 {
		t.Fatalf("got %d", n)
	}
}

var _ net.Conn

// TestPipelinedTransaction: a sender that pipelines MAIL, RCPT and DATA
// (RFC 2920, as Postfix does) gets the three replies in order and its
// message delivered; the next, unpipelined transaction on the same
// connection works as usual.
func TestPipelinedTransaction(t *testing.T) {
	g := startGW(t)
	cl := g.greet("client.example.org")
	cl.send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@corp.test>\r\nRCPT TO:<carol@corp.test>\r\nDATA\r\n")
	for _, want := range []int{250, 250, 250, 354} {
		cl.expect(want)
	}
	cl.send(msg("alice@example.org", "bob@corp.test", "piped", "hi\r\n") + "\r\n.\r\n")
	cl.expect(250)
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "plain", "hi\r\n") + "\r\n.\r\n")
	cl.expect(250)
	cl.cmd("QUIT", 221)
	ms := g.down.WaitMessages(t, 2, 5*time.Second)
	if len(ms) != 2 || len(ms[0].To) != 2 || !strings.Contains(string(ms[0].Data), "Subject: piped") {
		t.Fatalf("delivered %+v", ms)
	}
}
