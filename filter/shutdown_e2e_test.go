package filter_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/filter"
)

// shutdown runs Shutdown in the background with the given deadline.
func (g *gw) shutdown(timeout time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		done <- g.srv.Shutdown(ctx)
	}()
	return done
}

// waitErr waits (bounded) for Shutdown's result.
func waitErr(t *testing.T, done <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatalf("Shutdown did not return within %v", within)
		return nil
	}
}

// expectShutdownReply reads the 421 4.3.2 that shutdown sends an idle
// session, and then the close.
func expectShutdownReply(t *testing.T, cl *client, who string) {
	t.Helper()
	code, text := cl.reply()
	if code != 421 || !strings.Contains(text, "4.3.2") || !strings.Contains(text, "(id mxg-") {
		t.Errorf("%s: got %d %q, want 421 4.3.2 with the id", who, code, text)
	}
	if !cl.closed() {
		t.Errorf("%s: connection stayed open", who)
	}
}

// refusesNewConnections: after Shutdown started, a new connection is either
// refused by the kernel or closed without a banner.
func refusesNewConnections(t *testing.T, g *gw) {
	t.Helper()
	c, err := net.DialTimeout("tcp", g.addr, 2*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	if strings.HasPrefix(string(buf[:n]), "220") {
		t.Errorf("a new connection got a banner after Shutdown started: %q", buf[:n])
	}
}

func waitConns(t *testing.T, g *gw, want int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for g.srv.Conns() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", g.srv.Conns(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestShutdownClosesIdleSessions(t *testing.T) {
	srvTLS, roots := testenvCert(t)
	g := startGW(t, func(o *filter.Options, _ *gwSetup) { o.TLSConfig = srvTLS })

	banner := g.dial() // connected, no EHLO yet
	banner.expect(220)
	ehlo := g.greet("client.example.org")
	inTx := g.greet("client.example.org") // MAIL and RCPT given, no DATA
	inTx.cmd("MAIL FROM:<alice@example.org>", 250)
	inTx.cmd("RCPT TO:<bob@corp.test>", 250)
	overTLS := g.greet("client.example.org")
	overTLS.startTLS(roots)
	overTLS.cmd("EHLO client.example.org", 250)
	waitConns(t, g, 4)

	start := time.Now()
	done := g.shutdown(10 * time.Second)
	expectShutdownReply(t, banner, "before EHLO")
	expectShutdownReply(t, ehlo, "after EHLO")
	expectShutdownReply(t, inTx, "in a transaction before DATA")
	expectShutdownReply(t, overTLS, "inside TLS")
	if err := waitErr(t, done, 5*time.Second); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("Shutdown took %v with only idle sessions", el)
	}
	if n := g.srv.Conns(); n != 0 {
		t.Errorf("%d connections left after Shutdown returned", n)
	}
	refusesNewConnections(t, g)
	if g.down.Delivered() != 0 {
		t.Errorf("downstream got a message")
	}
}

func TestShutdownLetsDataFinish(t *testing.T) {
	g := startGW(t)
	idle := g.greet("client.example.org")
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	full := msg("alice@example.org", "bob@corp.test", "in flight", "first half\r\nsecond half\r\n")
	cut := strings.Index(full, "second half")
	cl.send(full[:cut])
	time.Sleep(100 * time.Millisecond) // the session is inside Data now

	done := g.shutdown(10 * time.Second)
	// The idle session goes first; by then the listener is closed.
	expectShutdownReply(t, idle, "idle")
	refusesNewConnections(t, g)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a message was in DATA", err)
	case <-time.After(200 * time.Millisecond):
	}

	cl.send(full[cut:] + ".\r\n")
	code, text := cl.reply()
	if code != 250 {
		t.Fatalf("message in flight during shutdown: got %d %q, want 250", code, text)
	}
	m := g.down.WaitMessages(t, 1, 5*time.Second)
	if len(m) != 1 || !strings.HasSuffix(string(m[0].Data), "\r\nfirst half\r\nsecond half\r\n") {
		t.Fatalf("downstream got %d messages: %+v", len(m), m)
	}
	// Once its message is done, the session is idle and is closed too.
	expectShutdownReply(t, cl, "after its message")
	if err := waitErr(t, done, 5*time.Second); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if n := g.srv.Conns(); n != 0 {
		t.Errorf("%d connections left after Shutdown returned", n)
	}
}

func TestShutdownLetsBDATFinish(t *testing.T) {
	g := startGW(t)
	idle := g.greet("client.example.org")
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	chunk1 := msg("alice@example.org", "bob@corp.test", "bdat in flight", "part one\r\n")
	chunk2 := "part two\r\n"
	cl.send(fmt.Sprintf("BDAT %d\r\n%s", len(chunk1), chunk1))
	cl.expect(250)

	done := g.shutdown(10 * time.Second)
	expectShutdownReply(t, idle, "idle") // Shutdown has started
	refusesNewConnections(t, g)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) between BDAT chunks", err)
	case <-time.After(200 * time.Millisecond):
	}
	cl.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk2), chunk2))
	if code, text := cl.reply(); code != 250 {
		t.Fatalf("BDAT LAST during shutdown: got %d %q, want 250", code, text)
	}
	if m := g.down.WaitMessages(t, 1, 5*time.Second); !strings.HasSuffix(string(m[0].Data), "part one\r\npart two\r\n") {
		t.Errorf("downstream got %q", m[0].Data)
	}
	expectShutdownReply(t, cl, "after BDAT LAST")
	if err := waitErr(t, done, 5*time.Second); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestShutdownCutsUnfinishedDataAtDeadline(t *testing.T) {
	g := startGW(t) // command timeout 5s, DATA timeout 20s: only Shutdown can cut this
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "never ends", "and then silence\r\n"))
	time.Sleep(100 * time.Millisecond)

	start := time.Now()
	done := g.shutdown(700 * time.Millisecond)
	err := waitErr(t, done, 5*time.Second)
	el := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if el < 600*time.Millisecond || el > 3*time.Second {
		t.Errorf("Shutdown returned after %v, want about the 700ms deadline", el)
	}
	// The session is cut: no 250, the connection ends.
	code, text := cl.reply()
	if code == 250 || code == 354 {
		t.Errorf("unfinished message got %d %q", code, text)
	}
	if !cl.closed() {
		t.Errorf("connection stayed open after the deadline")
	}
	waitConns(t, g, 0)
	time.Sleep(50 * time.Millisecond)
	if g.down.Delivered() != 0 {
		t.Errorf("an unfinished message reached the downstream")
	}
}
