package main

import (
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/internal/loadenv"
)

// TestMain lets the test binary play `mxload proxy`: path 4 of the bench
// executes its own binary with "proxy ...", and under `go test` that binary
// is this one.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "proxy" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// proxyWithSink starts a sink and the bare proxy in front of it, as a
// separate process the way the bench does, and signs a few messages.
func proxyWithSink(t *testing.T) (*loadenv.Sink, *gateway, []message) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sink, err := loadenv.StartSink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	p, err := startProxy(self, t.TempDir(), sink.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop() })
	w, err := newWorld(2)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := w.messages(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	return sink, p, msgs
}

// runToSink sends m messages with l and checks that all of them reached
// the sink, byte for byte in total.
func runToSink(t *testing.T, sink *loadenv.Sink, l load) {
	t.Helper()
	before, beforeBytes := sink.Delivered(), sink.Bytes()
	res := l.run()
	if res.sent != l.m || res.failed != 0 {
		t.Fatalf("%s: sent %d, failed %d (%s); want %d sent", l.addr, res.sent, res.failed, res.errorSummary(), l.m)
	}
	if got := sink.Delivered() - before; got != int64(l.m) {
		t.Errorf("%s: sink received %d messages, want %d", l.addr, got, l.m)
	}
	var want int64
	for i := 0; i < l.m; i++ {
		want += int64(len(l.msgs[i%len(l.msgs)].data))
	}
	if got := sink.Bytes() - beforeBytes; got != want {
		t.Errorf("%s: sink received %d bytes, want %d", l.addr, got, want)
	}
}

// TestProxyPathDelivers sends a few sessions of messages through the proxy:
// every message reaches the sink, byte for byte in total.
func TestProxyPathDelivers(t *testing.T) {
	sink, p, msgs := proxyWithSink(t)
	runToSink(t, sink, load{addr: p.addr, msgs: msgs, m: 30, c: 3, k: 5, maxDur: 30 * time.Second})
	// /proc counts CPU in clock ticks (10 ms): 30 small messages may not
	// reach one, so only readability is checked here.
	if cpu, err := procCPU(p.pid()); err != nil || cpu < 0 {
		t.Errorf("proxy CPU from /proc = %v, %v", cpu, err)
	}
}

// TestBenchPath4 runs the bench with path 4 only: the proxy's row is in the
// report with every message sent and its CPU and RSS measured.
func TestBenchPath4(t *testing.T) {
	o := benchOptions{sizes: []int{4096}, m: 50, c: 4, k: 5, n: 2, reps: 2, maxDur: 30 * time.Second,
		paths: []int{1, 4}, variants: 1}
	var out, logBuf bytes.Buffer
	if err := runBench(o, &out, &logBuf); err != nil {
		t.Fatalf("runBench: %v\n%s", err, logBuf.String())
	}
	report := out.String()
	var row string
	for _, line := range strings.Split(report, "\n") {
		if strings.HasPrefix(line, "| 4KiB | 4 bare go-smtp proxy |") {
			row = line
		}
	}
	if row == "" {
		t.Fatalf("report has no path 4 row:\n%s\n%s", report, logBuf.String())
	}
	if !strings.HasSuffix(row, "| 100 | 0 |") {
		t.Errorf("want 100 sent (2 runs of 50), 0 failed: %s\n%s", row, logBuf.String())
	}
	cols := strings.Split(row, "|")
	// | size | path | msgs/s | p50 | p90 | p99 | CPU | RSS | ratio | sent | failed |
	if len(cols) < 10 || strings.TrimSpace(cols[7]) == "—" || strings.TrimSpace(cols[8]) == "—" {
		t.Errorf("path 4 CPU and RSS not measured: %s", row)
	}
}

// TestProxyLockstep checks the relay semantics the bench relies on, with
// the proxy in process: a downstream refusal reaches the client with the
// downstream's code, the aborted transaction does not block the next one on
// the same connection, and one inbound connection uses one downstream
// connection for all its messages.
func TestProxyLockstep(t *testing.T) {
	down := &countingDownstream{}
	downLn := serveSMTP(t, smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		down.sessions.Add(1)
		return &refusingSession{d: down}, nil
	})))
	proxyLn := serveSMTP(t, newProxyServer(downLn))

	c, err := smtp.Dial(proxyLn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
	body := []byte("Subject: t\r\n\r\nhello\r\n.leading dot\r\n")
	for i := 0; i < 3; i++ {
		if err := c.SendMail("a@x.test", []string{"user@corp.test"}, bytes.NewReader(body)); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := c.Mail("a@x.test", nil); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt("nobody@corp.test", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 || !strings.Contains(se.Message, "no such user here") {
		t.Fatalf("refused RCPT: got %v, want the downstream's 550", err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("a@x.test", []string{"user@corp.test"}, bytes.NewReader(body)); err != nil {
		t.Fatalf("message after the refusal: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if got := down.delivered.Load(); got != 4 {
		t.Errorf("downstream received %d messages, want 4", got)
	}
	if got := down.sessions.Load(); got != 1 {
		t.Errorf("downstream sessions = %d, want 1 for one inbound connection", got)
	}
	if got := down.lastBody.Load(); got == nil || !bytes.Equal(*got, body) {
		t.Errorf("downstream body = %q, want %q", deref(got), body)
	}
}

type countingDownstream struct {
	sessions, delivered atomic.Int64
	lastBody            atomic.Pointer[[]byte]
}

// refusingSession accepts everything but the recipient nobody@.
type refusingSession struct{ d *countingDownstream }

func (*refusingSession) Reset()                               {}
func (*refusingSession) Logout() error                        { return nil }
func (*refusingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*refusingSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "nobody@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
	}
	return nil
}
func (s *refusingSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.d.lastBody.Store(&b)
	s.d.delivered.Add(1)
	return nil
}

// serveSMTP serves srv on a loopback port until the test ends.
func serveSMTP(t *testing.T, srv *smtp.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.ErrorLog = log.New(io.Discard, "", 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

func deref(b *[]byte) []byte {
	if b == nil {
		return nil
	}
	return *b
}

// TestPipelinedLoad: the pipelining generator delivers every message, byte
// for byte, straight to a go-smtp server (the sink) and through the bare
// proxy.
func TestPipelinedLoad(t *testing.T) {
	sink, p, msgs := proxyWithSink(t)
	for _, addr := range []string{sink.Addr(), p.addr} {
		runToSink(t, sink, load{addr: addr, msgs: msgs, m: 20, c: 2, k: 5, maxDur: 30 * time.Second, pipeline: true})
	}
}
