package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/relay"
)

const testMsg = "From: alice@example.org\r\nTo: bob@corp.example\r\nSubject: test\r\n\r\n" +
	"Hello.\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"

func testOptions(t testing.TB) relay.Options {
	_, roots := testenv.TestCert(t)
	return relay.Options{
		HeloName:       "gw.test",
		ConnectTimeout: time.Second,
		CommandTimeout: 2 * time.Second,
		DataTimeout:    5 * time.Second,
		RootCAs:        roots,
	}
}

func newRelay(t testing.TB, routes map[string]relay.Route, opts relay.Options) *relay.Relay {
	t.Helper()
	r, err := relay.New(routes, opts)
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
}

func open(t *testing.T, r *relay.Relay, domain string) relay.Conn {
	t.Helper()
	c, err := r.Open(context.Background(), domain)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func transact(c relay.Conn, from string, rcpts []string, msg string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rc := range rcpts {
		if err := c.Rcpt(rc, nil); err != nil {
			return err
		}
	}
	return c.Data(strings.NewReader(msg))
}

func wantReply(t *testing.T, err error, code int, enhanced [3]int, stage string) {
	t.Helper()
	var re *relay.ReplyError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v (%T), want ReplyError %d", err, err, code)
	}
	if re.Code != code || re.Enhanced != enhanced || re.Stage != stage {
		t.Fatalf("ReplyError = %+v, want %d %v at %s", re, code, enhanced, stage)
	}
	if got, want := relay.IsTemporary(err), code/100 == 4; got != want {
		t.Fatalf("IsTemporary(%v) = %v, want %v", err, got, want)
	}
}

// wantFailure checks for a non-reply, temporary error.
func wantFailure(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		t.Fatal("err = nil, want a failure")
	}
	var re *relay.ReplyError
	if errors.As(err, &re) {
		t.Fatalf("err = %v is a ReplyError, want a plain failure", err)
	}
	if !relay.IsTemporary(err) {
		t.Fatalf("IsTemporary(%v) = false", err)
	}
}

func TestDeliverSeveralRecipients(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r := newRelay(t, map[string]relay.Route{
		"corp.example": {Hosts: []string{d.Addr()}, TLS: relay.TLSNone},
	}, testOptions(t))
	c := open(t, r, "Corp.Example")
	rcpts := []string{"bob@corp.example", "carol@corp.example", "dave@corp.example"}
	for i := 0; i < 2; i++ { // the second transaction reuses the session
		if err := transact(c, "alice@example.org", rcpts, testMsg); err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	msgs := d.WaitMessages(t, 2, 5*time.Second)
	for _, m := range msgs {
		if string(m.Data) != testMsg {
			t.Errorf("data = %q\nwant   %q", m.Data, testMsg)
		}
		if m.From != "alice@example.org" || strings.Join(m.To, " ") != strings.Join(rcpts, " ") {
			t.Errorf("envelope = %s %v", m.From, m.To)
		}
		if m.Helo != "gw.test" || m.TLS {
			t.Errorf("helo = %q tls = %v", m.Helo, m.TLS)
		}
	}
	if d.Conns() != 1 {
		t.Errorf("conns = %d, want 1", d.Conns())
	}
}

func TestMailOptionsPassedThrough(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, testOptions(t))
	c := open(t, r, "corp.example")
	auth := "someone@example.org"
	if err := c.Mail("jörg@example.org", &smtp.MailOptions{UTF8: true, Size: 1234, Body: smtp.Body8BitMIME, Auth: &auth}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bøb@corp.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Data(strings.NewReader("Subject: ü\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	m := d.WaitMessages(t, 1, 5*time.Second)[0]
	o := m.MailOpts
	if !o.UTF8 || o.Size != 1234 || o.Body != smtp.Body8BitMIME || o.Auth != nil {
		t.Errorf("mail options = %+v", o)
	}
}

func TestSMTPUTF8Unsupported(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{NoSMTPUTF8: true})
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, testOptions(t))
	c := open(t, r, "corp.example")
	err := c.Mail("jörg@example.org", &smtp.MailOptions{UTF8: true})
	wantReply(t, err, 553, [3]int{5, 6, 7}, "mail")
	if d.Mails() != 0 {
		t.Errorf("downstream saw %d MAIL", d.Mails())
	}
	// ASCII mail still goes through on the same session.
	if err := transact(c, "a@example.org", []string{"b@corp.example"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
}

func TestFailover(t *testing.T) {
	down := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	down.Down()
	hung := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	hung.SetHang(time.Hour)
	tests := []struct {
		name  string
		first func() string
	}{
		{"refused", func() string { return closedAddr(t) }},
		{"down", down.Addr},
		{"hung at ehlo", hung.Addr},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := testenv.StartDownstream(t, testenv.DownstreamOptions{})
			opts := testOptions(t)
			opts.CommandTimeout = 200 * time.Millisecond
			r := newRelay(t, map[string]relay.Route{
				"corp.example": {Hosts: []string{tc.first(), good.Addr()}, TLS: relay.TLSNone},
			}, opts)
			if err := r.Deliver(context.Background(), "corp.example", "a@example.org",
				[]string{"b@corp.example"}, strings.NewReader(testMsg)); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			if got := good.WaitMessages(t, 1, 5*time.Second); string(got[0].Data) != testMsg {
				t.Errorf("data = %q", got[0].Data)
			}
		})
	}
}

func TestAllHostsDown(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	d.Down()
	r := newRelay(t, map[string]relay.Route{
		"corp.example": {Hosts: []string{closedAddr(t), d.Addr()}},
	}, testOptions(t))
	_, err := r.Open(context.Background(), "corp.example")
	wantFailure(t, err)

	// Up again: the same Relay delivers.
	d.Up()
	if err := r.Deliver(context.Background(), "corp.example", "a@example.org",
		[]string{"b@corp.example"}, strings.NewReader(testMsg)); err != nil {
		t.Fatalf("after Up: %v", err)
	}
}

func TestDownMidSession(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, testOptions(t))
	c := open(t, r, "corp.example")
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	d.Down()
	wantFailure(t, c.Rcpt("b@corp.example", nil))
	wantFailure(t, c.Rcpt("b@corp.example", nil)) // broken stays broken
	if err := c.Close(); err != nil {
		t.Errorf("Close of broken conn: %v", err)
	}
}

func TestRcptRefused(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	d.RefuseRcpt("nobody@corp.example", 550, [3]int{5, 1, 1}, "no such user")
	d.RefuseRcpt("full@corp.example", 452, [3]int{4, 2, 2}, "mailbox full")
	d.RefuseRcpt("plain@corp.example", 450, [3]int{}, "try later")
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, testOptions(t))
	c := open(t, r, "corp.example")
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rcpt     string
		code     int
		enhanced [3]int
	}{
		{"nobody@corp.example", 550, [3]int{5, 1, 1}},
		{"full@corp.example", 452, [3]int{4, 2, 2}},
		{"plain@corp.example", 450, [3]int{4, 0, 0}}, // go-smtp's server fills in X.0.0
	}
	for _, tc := range tests {
		wantReply(t, c.Rcpt(tc.rcpt, nil), tc.code, tc.enhanced, "rcpt")
	}
	// The session goes on: the accepted recipient gets the message.
	if err := c.Rcpt("bob@corp.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Data(strings.NewReader(testMsg)); err != nil {
		t.Fatal(err)
	}
	if m := d.WaitMessages(t, 1, 5*time.Second)[0]; strings.Join(m.To, ",") != "bob@corp.example" {
		t.Errorf("to = %v", m.To)
	}
}

func TestDataReplies(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, testOptions(t))
	c := open(t, r, "corp.example")
	tests := []struct {
		code     int
		enhanced [3]int
	}{
		{451, [3]int{4, 3, 0}},
		{554, [3]int{5, 6, 0}},
		{452, [3]int{4, 3, 1}},
	}
	for _, tc := range tests {
		d.SetDataReply(tc.code, tc.enhanced, "nope")
		err := transact(c, "a@example.org", []string{"b@corp.example"}, testMsg)
		wantReply(t, err, tc.code, tc.enhanced, "data")
	}
	d.SetDataReply(0, [3]int{}, "")
	if err := transact(c, "a@example.org", []string{"b@corp.example"}, testMsg); err != nil {
		t.Fatalf("after data errors: %v", err)
	}
	if n := len(d.WaitMessages(t, 1, 5*time.Second)); n != 1 {
		t.Errorf("messages = %d", n)
	}
}

func TestReset(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{TLS: true})
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}, TLS: relay.TLSRequired}}, testOptions(t))
	c := open(t, r, "corp.example")
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("dropped@corp.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := transact(c, "a@example.org", []string{"b@corp.example"}, testMsg); err != nil {
		t.Fatal(err)
	}
	m := d.WaitMessages(t, 1, 5*time.Second)[0]
	if strings.Join(m.To, ",") != "b@corp.example" || !m.TLS {
		t.Errorf("to = %v tls = %v", m.To, m.TLS)
	}
}

func TestHangTimesOut(t *testing.T) {
	const timeout = 150 * time.Millisecond
	tests := []struct {
		name string
		run  func(t *testing.T, d *testenv.Downstream, r *relay.Relay) error
	}{
		{"at ehlo", func(t *testing.T, d *testenv.Downstream, r *relay.Relay) error {
			d.SetHang(time.Hour)
			_, err := r.Open(context.Background(), "corp.example")
			return err
		}},
		{"at rcpt", func(t *testing.T, d *testenv.Downstream, r *relay.Relay) error {
			c := open(t, r, "corp.example")
			if err := c.Mail("a@example.org", nil); err != nil {
				t.Fatal(err)
			}
			d.SetHang(time.Hour)
			return c.Rcpt("b@corp.example", nil)
		}},
		{"at end of data", func(t *testing.T, d *testenv.Downstream, r *relay.Relay) error {
			c := open(t, r, "corp.example")
			if err := c.Mail("a@example.org", nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("b@corp.example", nil); err != nil {
				t.Fatal(err)
			}
			// The 354 is a reply too; hang only after it by hanging
			// from inside the message stream.
			return c.Data(io.MultiReader(strings.NewReader(testMsg), hangAfter{d}))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
			opts := testOptions(t)
			opts.CommandTimeout = timeout
			opts.DataTimeout = 2 * timeout
			r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, opts)
			start := time.Now()
			err := tc.run(t, d, r)
			wantFailure(t, err)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("err = %v, want a timeout", err)
			}
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("took %v", el)
			}
			// At end of data the downstream has stored the message and only
			// its reply hangs: the sender gets 4xx and will resend (a
			// duplicate is the price of never losing one).
			if n := len(d.Messages()); n != 0 && tc.name != "at end of data" {
				t.Errorf("downstream recorded %d messages", n)
			}
		})
	}
}

// hangAfter turns on the downstream's hang when the message has been read
// (it adds no bytes).
type hangAfter struct{ d *testenv.Downstream }

func (h hangAfter) Read([]byte) (int, error) {
	h.d.SetHang(time.Hour)
	return 0, io.EOF
}

func TestContextBoundsOpen(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	d.SetHang(time.Hour)
	opts := testOptions(t)
	opts.CommandTimeout = time.Minute
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Open(ctx, "corp.example")
	wantFailure(t, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want to wrap DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Open took %v", el)
	}
}

func TestMessageReadError(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, testOptions(t))
	c := open(t, r, "corp.example")
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@corp.example", nil); err != nil {
		t.Fatal(err)
	}
	errStop := errors.New("validator says no")
	err := c.Data(io.MultiReader(strings.NewReader("Subject: half\r\n\r\n"), errReader{errStop}))
	if !errors.Is(err, errStop) {
		t.Fatalf("err = %v, want to wrap the reader's error", err)
	}
	wantFailure(t, err)
	wantFailure(t, c.Mail("a@example.org", nil))
	time.Sleep(50 * time.Millisecond) // let the downstream notice the close
	if n := d.Delivered(); n != 0 {
		t.Fatalf("downstream accepted %d messages from a failed stream", n)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestTLS(t *testing.T) {
	tests := []struct {
		name      string
		serverTLS bool
		mode      relay.TLSMode
		noRoots   bool
		skip      bool
		host      string // "" = 127.0.0.1
		wantTLS   bool
		wantErr   bool
		wantConns int
	}{
		{name: "required", serverTLS: true, mode: relay.TLSRequired, wantTLS: true, wantConns: 1},
		{name: "required by name", serverTLS: true, mode: relay.TLSRequired, host: "localhost", wantTLS: true, wantConns: 1},
		{name: "required without starttls", mode: relay.TLSRequired, wantErr: true, wantConns: 1},
		{name: "required bad cert", serverTLS: true, mode: relay.TLSRequired, noRoots: true, wantErr: true, wantConns: 1},
		{name: "required ignores skip-verify", serverTLS: true, mode: relay.TLSRequired, noRoots: true, skip: true, wantErr: true, wantConns: 1},
		{name: "opportunistic", serverTLS: true, mode: relay.TLSOpportunistic, wantTLS: true, wantConns: 1},
		{name: "opportunistic without starttls", mode: relay.TLSOpportunistic, wantConns: 1},
		{name: "opportunistic bad cert falls back", serverTLS: true, mode: relay.TLSOpportunistic, noRoots: true, wantConns: 2},
		{name: "opportunistic skip-verify", serverTLS: true, mode: relay.TLSOpportunistic, noRoots: true, skip: true, wantTLS: true, wantConns: 1},
		{name: "default mode is opportunistic", serverTLS: true, wantTLS: true, wantConns: 1},
		{name: "none", serverTLS: true, mode: relay.TLSNone, wantConns: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := testenv.StartDownstream(t, testenv.DownstreamOptions{TLS: tc.serverTLS})
			addr := d.Addr()
			if tc.host != "" {
				_, port, _ := net.SplitHostPort(addr)
				addr = net.JoinHostPort(tc.host, port)
			}
			opts := testOptions(t)
			if tc.noRoots {
				opts.RootCAs = nil // system pool: does not know the test CA
			}
			opts.InsecureSkipVerify = tc.skip
			r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{addr}, TLS: tc.mode}}, opts)
			err := r.Deliver(context.Background(), "corp.example", "a@example.org",
				[]string{"b@corp.example"}, strings.NewReader(testMsg))
			if tc.wantErr {
				wantFailure(t, err)
				if n := d.Mails(); n != 0 {
					t.Errorf("downstream saw %d MAIL commands", n)
				}
			} else {
				if err != nil {
					t.Fatalf("Deliver: %v", err)
				}
				m := d.WaitMessages(t, 1, 5*time.Second)[0]
				if m.TLS != tc.wantTLS || string(m.Data) != testMsg {
					t.Errorf("tls = %v (want %v), data = %q", m.TLS, tc.wantTLS, m.Data)
				}
			}
			if n := d.Conns(); n != tc.wantConns {
				t.Errorf("conns = %d, want %d", n, tc.wantConns)
			}
		})
	}
}

// TestRequiredTLSFailsOverToTLSHost: a host that cannot do TLS is skipped
// for the next one, which can.
func TestRequiredTLSFailsOverToTLSHost(t *testing.T) {
	plain := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	secure := testenv.StartDownstream(t, testenv.DownstreamOptions{TLS: true})
	r := newRelay(t, map[string]relay.Route{
		"corp.example": {Hosts: []string{plain.Addr(), secure.Addr()}, TLS: relay.TLSRequired},
	}, testOptions(t))
	if err := r.Deliver(context.Background(), "corp.example", "a@example.org",
		[]string{"b@corp.example"}, strings.NewReader(testMsg)); err != nil {
		t.Fatal(err)
	}
	if m := secure.WaitMessages(t, 1, 5*time.Second)[0]; !m.TLS {
		t.Error("not TLS")
	}
	if plain.Mails() != 0 {
		t.Error("plaintext host saw MAIL")
	}
}

func TestMaildir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "md")
	r := newRelay(t, map[string]relay.Route{"demo.test": {Maildir: dir}}, testOptions(t))
	c := open(t, r, "demo.test")
	if err := transact(c, "a@example.org", []string{"x@demo.test", "y@demo.test"}, testMsg); err != nil {
		t.Fatal(err)
	}
	if err := r.Deliver(context.Background(), "demo.test", "a@example.org", []string{"z@demo.test"},
		strings.NewReader("second\r\n")); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("new/ has %d files, want 2", len(entries))
	}
	var got []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(b))
		if strings.ContainsAny(e.Name(), "/:") {
			t.Errorf("bad maildir name %q", e.Name())
		}
	}
	if !(got[0] == testMsg && got[1] == "second\r\n" || got[1] == testMsg && got[0] == "second\r\n") {
		t.Errorf("files = %q", got)
	}
	for _, sub := range []string{"tmp", "cur"} {
		if es, err := os.ReadDir(filepath.Join(dir, sub)); err != nil || len(es) != 0 {
			t.Errorf("%s: %v entries, err %v", sub, len(es), err)
		}
	}
	// DATA without a transaction is refused.
	wantFailure(t, c.Data(strings.NewReader("x\r\n")))
}

func TestMaildirUnwritable(t *testing.T) {
	// A path below a regular file cannot be created, even by root.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, map[string]relay.Route{"demo.test": {Maildir: filepath.Join(file, "md")}}, testOptions(t))
	c := open(t, r, "demo.test")
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("x@demo.test", nil); err != nil {
		t.Fatalf("Rcpt must not validate: %v", err)
	}
	wantFailure(t, c.Data(strings.NewReader(testMsg)))
}

func TestDeliverRcptRefusedSendsNothing(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	d.RefuseRcpt("gone@corp.example", 550, [3]int{5, 1, 1}, "gone")
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, testOptions(t))
	err := r.Deliver(context.Background(), "corp.example", "a@example.org",
		[]string{"b@corp.example", "gone@corp.example"}, strings.NewReader(testMsg))
	wantReply(t, err, 550, [3]int{5, 1, 1}, "rcpt")
	if err := r.Deliver(context.Background(), "corp.example", "", // null sender
		[]string{"b@corp.example"}, strings.NewReader(testMsg)); err != nil {
		t.Fatal(err)
	}
	msgs := d.WaitMessages(t, 1, 5*time.Second)
	if len(msgs) != 1 || msgs[0].From != "" {
		t.Fatalf("messages = %+v", msgs)
	}
	wantFailure(t, r.Deliver(context.Background(), "other.example", "a@example.org",
		[]string{"b@other.example"}, strings.NewReader(testMsg)))
}

func TestNoRoute(t *testing.T) {
	r := newRelay(t, map[string]relay.Route{}, testOptions(t))
	_, err := r.Open(context.Background(), "nowhere.example")
	if !errors.Is(err, relay.ErrNoRoute) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := r.Route("nowhere.example"); ok {
		t.Fatal("Route found")
	}
}

func TestNewValidates(t *testing.T) {
	good := relay.Route{Hosts: []string{"127.0.0.1:25"}}
	tests := []struct {
		name   string
		routes map[string]relay.Route
		helo   string
	}{
		{"upper-case domain", map[string]relay.Route{"Corp.example": good}, "gw.test"},
		{"trailing dot", map[string]relay.Route{"corp.example.": good}, "gw.test"},
		{"non-ascii domain", map[string]relay.Route{"bücher.example": good}, "gw.test"},
		{"empty domain", map[string]relay.Route{"": good}, "gw.test"},
		{"no hosts", map[string]relay.Route{"corp.example": {}}, "gw.test"},
		{"host without port", map[string]relay.Route{"corp.example": {Hosts: []string{"mx1"}}}, "gw.test"},
		{"bad port", map[string]relay.Route{"corp.example": {Hosts: []string{"mx1:99999"}}}, "gw.test"},
		{"empty host", map[string]relay.Route{"corp.example": {Hosts: []string{":25"}}}, "gw.test"},
		{"bad tls mode", map[string]relay.Route{"corp.example": {Hosts: []string{"mx1:25"}, TLS: "always"}}, "gw.test"},
		{"maildir and hosts", map[string]relay.Route{"corp.example": {Hosts: []string{"mx1:25"}, Maildir: "/tmp/x"}}, "gw.test"},
		{"no helo", map[string]relay.Route{"corp.example": good}, ""},
		{"helo with CRLF", map[string]relay.Route{"corp.example": good}, "gw.test\r\nMAIL FROM:<x>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := relay.New(tc.routes, relay.Options{HeloName: tc.helo}); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
	r := newRelay(t, map[string]relay.Route{"corp.example": good, "_dmarc-x.a1.example": good}, relay.Options{HeloName: "gw.test"})
	rt, ok := r.Route("CORP.example")
	if !ok || rt.TLS != relay.TLSOpportunistic || len(rt.Hosts) != 1 {
		t.Fatalf("Route = %+v %v", rt, ok)
	}
}

func TestIsTemporary(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("x"), true},
		{&relay.ReplyError{Code: 451}, true},
		{&relay.ReplyError{Code: 550}, false},
		{fmt.Errorf("wrapped: %w", &relay.ReplyError{Code: 554}), false},
		{context.DeadlineExceeded, true},
	}
	for _, tc := range tests {
		if got := relay.IsTemporary(tc.err); got != tc.want {
			t.Errorf("IsTemporary(%v) = %v", tc.err, got)
		}
	}
}

// fakeServer answers one connection with a script; for protocol garbage a
// real server would never send.
func fakeServer(t *testing.T, script func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		script(c)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func TestProtocolGarbage(t *testing.T) {
	tests := []struct {
		name   string
		script func(c net.Conn)
	}{
		{"bad greeting", func(c net.Conn) { io.WriteString(c, "hello there\r\n"); io.Copy(io.Discard, c) }},
		{"5xx greeting", func(c net.Conn) { io.WriteString(c, "554 no service\r\n"); io.Copy(io.Discard, c) }},
		{"endless ehlo", func(c net.Conn) {
			io.WriteString(c, "220 hi\r\n")
			buf := make([]byte, 512)
			c.Read(buf)
			line := []byte("250-" + strings.Repeat("X", 1000) + "\r\n")
			for i := 0; i < 1000; i++ { // 1 MB, far beyond any reply
				if _, err := c.Write(line); err != nil {
					return
				}
			}
		}},
		{"tls bytes after 220", func(c net.Conn) {
			io.WriteString(c, "220 hi\r\n")
			buf := make([]byte, 512)
			c.Read(buf)
			io.WriteString(c, "250-hi\r\n250 STARTTLS\r\n")
			c.Read(buf)
			io.WriteString(c, "220 go ahead\r\n250 injected\r\n")
			io.Copy(io.Discard, c)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, tc.script)
			opts := testOptions(t)
			opts.CommandTimeout = time.Second
			r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{addr}, TLS: relay.TLSRequired}}, opts)
			_, err := r.Open(context.Background(), "corp.example")
			wantFailure(t, err)
			t.Logf("error: %v", err)
			var se *smtp.SMTPError
			if errors.As(err, &se) {
				t.Errorf("Open error exposes an SMTP reply: %v", err)
			}
		})
	}
}

func TestDeliverStreamsLargeMessage(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{TLS: true})
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}, TLS: relay.TLSRequired}}, testOptions(t))
	var b bytes.Buffer
	b.WriteString("Subject: big\r\n\r\n")
	for b.Len() < 1<<20 {
		b.WriteString(".line of text that starts with a dot and is long enough ............\r\n")
	}
	want := b.String()
	if err := r.Deliver(context.Background(), "corp.example", "a@example.org",
		[]string{"b@corp.example"}, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	if got := d.WaitMessages(t, 1, 10*time.Second)[0].Data; string(got) != want {
		t.Fatalf("large message differs (len %d vs %d)", len(got), len(want))
	}
}

func TestInjectionRefusedLocally(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r := newRelay(t, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}}}, testOptions(t))
	c := open(t, r, "corp.example")
	wantFailure(t, c.Mail("a@example.org>\r\nRCPT TO:<x@evil.example", nil))
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	wantFailure(t, c.Rcpt("b@corp.example>\r\nDATA", nil))
	wantFailure(t, c.Rcpt("b@corp.example\x00", nil))
	// The session is still in sync.
	if err := c.Rcpt("b@corp.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Data(strings.NewReader(testMsg)); err != nil {
		t.Fatal(err)
	}
	if m := d.WaitMessages(t, 1, 5*time.Second)[0]; strings.Join(m.To, ",") != "b@corp.example" {
		t.Errorf("to = %v", m.To)
	}
}
