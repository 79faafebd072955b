package main

import (
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// load describes one run: M messages over C concurrent sessions, K per
// session, to addr, stopping early at maxDur.
type load struct {
	addr   string
	msgs   []message
	m      int
	c      int
	k      int
	maxDur time.Duration
	// rate > 0 paces the start of transactions at rate per second (open
	// loop); 0 sends as fast as the C sessions allow.
	rate float64
	// pipeline sends MAIL, RCPT and DATA in one write and then reads their
	// three replies (RFC 2920), as MTAs such as Postfix do, instead of
	// go-smtp's client, which waits for each reply.
	pipeline bool
}

// session is one SMTP session of the generator.
type session interface {
	send(m message) error
	reset() error
	quit()
}

type smtpSender struct{ c *smtp.Client }

func (s smtpSender) send(m message) error { return send(s.c, m) }
func (s smtpSender) reset() error         { return s.c.Reset() }
func (s smtpSender) quit()                { _ = s.c.Quit(); _ = s.c.Close() }

// runResult is what one run measured.
type runResult struct {
	sent      int // transactions answered 250 at end of DATA
	failed    int
	elapsed   time.Duration
	latencies []time.Duration // per successful transaction, MAIL to the DATA reply; sorted
	errs      map[string]int  // error text → count
}

func (r runResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.sent) / r.elapsed.Seconds()
}

// errorSummary lists the distinct errors, most frequent first (at most 5).
func (r runResult) errorSummary() string {
	type kv struct {
		k string
		n int
	}
	var l []kv
	for k, n := range r.errs {
		l = append(l, kv{k, n})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].n > l[j].n })
	s := ""
	for i, e := range l {
		if i == 5 {
			break
		}
		s += fmt.Sprintf("%d× %s; ", e.n, e.k)
	}
	return s
}

// idRE matches the transaction id mxguard appends to every reply, so that
// equal errors are counted together.
var idRE = regexp.MustCompile(`\(id mxg-[0-9a-f]+\)`)

// clientTimeout bounds every command and every DATA transfer of the generator.
const clientTimeout = 60 * time.Second

// run sends the load and returns what it measured. Failed transactions are
// counted, not retried.
func (l load) run() runResult {
	var (
		next    atomic.Int64
		mu      sync.Mutex
		res     = runResult{errs: map[string]int{}}
		wg      sync.WaitGroup
		start   = time.Now()
		stopAt  = start.Add(l.maxDur)
		perWork = make([][]time.Duration, l.c)
	)
	fail := func(err error) {
		mu.Lock()
		res.failed++
		msg := idRE.ReplaceAllString(err.Error(), "(id …)")
		if len(msg) > 120 {
			msg = msg[:120]
		}
		res.errs[msg]++
		mu.Unlock()
	}
	var tokens chan struct{}
	if l.rate > 0 {
		tokens = make(chan struct{})
		done := make(chan struct{})
		defer close(done)
		go pace(l.rate, tokens, done)
	}
	claim := func() (int, bool) {
		if tokens != nil {
			select {
			case <-tokens:
			case <-time.After(time.Until(stopAt)):
				return 0, false
			}
		}
		if time.Now().After(stopAt) {
			return 0, false
		}
		i := int(next.Add(1) - 1)
		return i, i < l.m
	}
	for w := 0; w < l.c; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				i, ok := claim()
				if !ok {
					return
				}
				c, err := l.dialSender()
				if err != nil {
					fail(fmt.Errorf("connect: %w", err))
					time.Sleep(10 * time.Millisecond) // do not spin on a refused port
					continue
				}
				for k := 0; ; k++ {
					msg := l.msgs[i%len(l.msgs)]
					t0 := time.Now()
					err := c.send(msg)
					if err != nil {
						fail(err)
						var se *smtp.SMTPError
						var te *textproto.Error
						if !errors.As(err, &se) && !errors.As(err, &te) {
							break // transport error: the session is gone
						}
						if c.reset() != nil {
							break
						}
					} else {
						perWork[w] = append(perWork[w], time.Since(t0))
					}
					if k+1 >= l.k {
						break
					}
					if i, ok = claim(); !ok {
						break
					}
				}
				c.quit()
			}
		}(w)
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, p := range perWork {
		res.latencies = append(res.latencies, p...)
	}
	res.sent = len(res.latencies)
	sortDurations(res.latencies)
	return res
}

// pace offers one token per 1/rate seconds on tokens until done is closed;
// a token nobody takes in time is dropped (an open-loop schedule does not
// catch up in bursts).
func pace(rate float64, tokens chan<- struct{}, done <-chan struct{}) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			select {
			case tokens <- struct{}{}:
			default:
			}
		}
	}
}

func (l load) dialSender() (session, error) {
	if l.pipeline {
		return dialPipelined(l.addr)
	}
	c, err := l.dial()
	if err != nil {
		return nil, err
	}
	return smtpSender{c}, nil
}

func (l load) dial() (*smtp.Client, error) {
	c, err := smtp.Dial(l.addr)
	if err != nil {
		return nil, err
	}
	c.CommandTimeout = clientTimeout
	c.SubmissionTimeout = clientTimeout
	if err := c.Hello(clientHelo); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// send runs one transaction: MAIL, RCPT, DATA.
func send(c *smtp.Client, m message) error {
	if err := c.Mail(m.from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcptAddr, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(m.data); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// pipeSender speaks SMTP itself so that it can pipeline: MAIL, RCPT and
// DATA go out in one write, then the three replies are read.
type pipeSender struct {
	c  net.Conn
	tc *textproto.Conn
}

func dialPipelined(addr string) (*pipeSender, error) {
	c, err := net.DialTimeout("tcp", addr, clientTimeout)
	if err != nil {
		return nil, err
	}
	p := &pipeSender{c: c, tc: textproto.NewConn(c)}
	p.deadline()
	if _, _, err := p.tc.ReadResponse(220); err != nil {
		c.Close()
		return nil, err
	}
	if err := p.tc.PrintfLine("EHLO %s", clientHelo); err != nil {
		c.Close()
		return nil, err
	}
	_, text, err := p.tc.ReadResponse(250)
	if err == nil && !strings.Contains(text, "PIPELINING") {
		err = errors.New("server does not offer PIPELINING")
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

func (p *pipeSender) deadline() { _ = p.c.SetDeadline(time.Now().Add(clientTimeout)) }

func (p *pipeSender) send(m message) error {
	p.deadline()
	w := p.tc.Writer.W
	fmt.Fprintf(w, "MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n", m.from, rcptAddr)
	if err := w.Flush(); err != nil {
		return err
	}
	// Read all three replies even after a refusal: they were all sent.
	var first error
	for _, want := range []int{250, 250, 354} {
		if _, _, err := p.tc.ReadResponse(want); err != nil {
			var te *textproto.Error
			if !errors.As(err, &te) {
				return err
			}
			if first == nil {
				first = err
			}
		}
	}
	if first != nil {
		return first
	}
	dw := p.tc.DotWriter()
	if _, err := dw.Write(m.data); err != nil {
		return err
	}
	if err := dw.Close(); err != nil {
		return err
	}
	_, _, err := p.tc.ReadResponse(250)
	return err
}

func (p *pipeSender) reset() error {
	p.deadline()
	if err := p.tc.PrintfLine("RSET"); err != nil {
		return err
	}
	_, _, err := p.tc.ReadResponse(250)
	return err
}

func (p *pipeSender) quit() {
	p.deadline()
	if p.tc.PrintfLine("QUIT") == nil {
		_, _, _ = p.tc.ReadResponse(221)
	}
	_ = p.c.Close()
}
