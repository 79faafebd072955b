package main

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
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
}

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
				c, err := l.dial()
				if err != nil {
					fail(fmt.Errorf("connect: %w", err))
					time.Sleep(10 * time.Millisecond) // do not spin on a refused port
					continue
				}
				for k := 0; ; k++ {
					msg := l.msgs[i%len(l.msgs)]
					t0 := time.Now()
					err := send(c, msg)
					if err != nil {
						fail(err)
						var se *smtp.SMTPError
						if !errors.As(err, &se) {
							break // transport error: the session is gone
						}
						if c.Reset() != nil {
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
				_ = c.Quit()
				_ = c.Close()
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
