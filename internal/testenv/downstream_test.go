package testenv

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func dialDownstream(t *testing.T, d *Downstream) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(d.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.CommandTimeout = 5 * time.Second
	c.SubmissionTimeout = 5 * time.Second
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatalf("hello: %v", err)
	}
	return c
}

func send(c *smtp.Client, from string, to []string, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rc := range to {
		if err := c.Rcpt(rc, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(body)); err != nil {
		return err
	}
	return w.Close()
}

func TestDownstreamRecordsExactBytes(t *testing.T) {
	d := StartDownstream(t, DownstreamOptions{})
	c := dialDownstream(t, d)
	body := "Subject: hi\r\n\r\n.leading dot\r\n..two\r\nlast\r\n"
	if err := send(c, "a@example.org", []string{"b@corp.example", "c@corp.example"}, body); err != nil {
		t.Fatal(err)
	}
	msgs := d.WaitMessages(t, 1, 5*time.Second)
	m := msgs[0]
	if string(m.Data) != body {
		t.Errorf("data = %q, want %q", m.Data, body)
	}
	if m.From != "a@example.org" || strings.Join(m.To, ",") != "b@corp.example,c@corp.example" {
		t.Errorf("envelope = %q %q", m.From, m.To)
	}
	if m.TLS || m.Helo != "client.test" {
		t.Errorf("tls=%v helo=%q", m.TLS, m.Helo)
	}
	if d.Conns() != 1 || d.Mails() != 1 || d.Delivered() != 1 {
		t.Errorf("conns=%d mails=%d delivered=%d", d.Conns(), d.Mails(), d.Delivered())
	}
}

func TestDownstreamRefusals(t *testing.T) {
	d := StartDownstream(t, DownstreamOptions{})
	c := dialDownstream(t, d)
	d.RefuseRcpt("Bad@Corp.Example", 550, [3]int{5, 1, 1}, "no such user")
	d.RefuseRcpt("full@corp.example", 452, [3]int{4, 2, 2}, "mailbox full")

	tests := []struct {
		rcpt     string
		code     int
		enhanced smtp.EnhancedCode
	}{
		{"bad@corp.example", 550, smtp.EnhancedCode{5, 1, 1}},
		{"full@corp.example", 452, smtp.EnhancedCode{4, 2, 2}},
	}
	for _, tc := range tests {
		if err := c.Mail("a@example.org", nil); err != nil {
			t.Fatal(err)
		}
		err := c.Rcpt(tc.rcpt, nil)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != tc.code || se.EnhancedCode != tc.enhanced {
			t.Errorf("rcpt %s: err = %v, want %d %v", tc.rcpt, err, tc.code, tc.enhanced)
		}
		if err := c.Reset(); err != nil {
			t.Fatal(err)
		}
	}
	d.RefuseRcpt("bad@corp.example", 0, [3]int{}, "")
	d.SetDataReply(554, [3]int{5, 6, 0}, "content rejected")
	err := send(c, "a@example.org", []string{"bad@corp.example"}, "x\r\n")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 {
		t.Fatalf("data err = %v, want 554", err)
	}
	d.SetDataReply(0, [3]int{}, "")
	if err := send(c, "a@example.org", []string{"bad@corp.example"}, "y\r\n"); err != nil {
		t.Fatalf("after SetDataReply(0): %v", err)
	}
	if msgs := d.Messages(); len(msgs) != 1 || string(msgs[0].Data) != "y\r\n" {
		t.Fatalf("messages = %+v", msgs)
	}
}

func TestDownstreamTLS(t *testing.T) {
	d := StartDownstream(t, DownstreamOptions{TLS: true})
	_, roots := TestCert(t)
	for _, name := range []string{"127.0.0.1", "localhost", "mx.test"} {
		c, err := smtp.DialStartTLS(d.Addr(), &tls.Config{RootCAs: roots, ServerName: name})
		if err != nil {
			t.Fatalf("starttls as %s: %v", name, err)
		}
		if err := send(c, "a@example.org", []string{"b@corp.example"}, "tls\r\n"); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	for _, m := range d.WaitMessages(t, 3, 5*time.Second) {
		if !m.TLS {
			t.Errorf("message not marked TLS")
		}
	}
	// An untrusting client must fail the handshake.
	c, err := smtp.DialStartTLS(d.Addr(), &tls.Config{ServerName: "mx.test"})
	if err == nil {
		// go-smtp handshakes lazily, at the next command.
		err = c.Noop()
		c.Close()
	}
	var uae x509.UnknownAuthorityError
	if !errors.As(err, &uae) {
		t.Fatalf("handshake with system roots: err = %v, want unknown authority", err)
	}
}

func TestDownstreamHang(t *testing.T) {
	d := StartDownstream(t, DownstreamOptions{})
	d.SetHang(time.Hour)
	c, err := smtp.Dial(d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CommandTimeout = 100 * time.Millisecond
	start := time.Now()
	err = c.Hello("client.test")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("hello err = %v, want timeout", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("hello took %v", el)
	}

	// A short hang delays but does not break the session.
	d.SetHang(30 * time.Millisecond)
	c2 := dialDownstream(t, d)
	if err := send(c2, "a@example.org", []string{"b@corp.example"}, "slow\r\n"); err != nil {
		t.Fatal(err)
	}
	d.SetHang(0)
}

func TestDownstreamDownUp(t *testing.T) {
	d := StartDownstream(t, DownstreamOptions{})
	c := dialDownstream(t, d)
	d.Down()
	d.Down() // idempotent
	if err := c.Noop(); err == nil {
		t.Error("open session survived Down")
	}
	if conn, err := net.DialTimeout("tcp", d.Addr(), time.Second); err == nil {
		conn.Close()
		t.Fatal("connect succeeded while down")
	}
	d.Up()
	c2 := dialDownstream(t, d)
	if err := send(c2, "a@example.org", []string{"b@corp.example"}, "back\r\n"); err != nil {
		t.Fatal(err)
	}
	if got := d.Conns(); got != 2 {
		t.Errorf("conns = %d, want 2", got)
	}
}

func TestDownstreamDiscardAndLongLine(t *testing.T) {
	d := StartDownstream(t, DownstreamOptions{Discard: true})
	c := dialDownstream(t, d)
	long := strings.Repeat("x", 100000) + "\r\n"
	if err := send(c, "a@example.org", []string{"b@corp.example"}, long); err != nil {
		t.Fatal(err)
	}
	if d.Delivered() != 1 || len(d.Messages()) != 0 {
		t.Fatalf("delivered=%d messages=%d", d.Delivered(), len(d.Messages()))
	}
}

func TestCertFilesLoad(t *testing.T) {
	certFile, keyFile, caFile := TestCertFiles(t)
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	_, roots := TestCert(t)
	srv, _ := TestCert(t)
	leaf := srv.Certificates[0].Leaf
	if leaf == nil {
		t.Fatal("leaf not parsed")
	}
	for _, host := range []string{"127.0.0.1", "::1", "localhost", "mx.test"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Errorf("verify: %v", err)
	}
	if b, err := os.ReadFile(caFile); err != nil || !bytes.Contains(b, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("ca file: %v", err)
	}
}
