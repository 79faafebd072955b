package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"
)

// raiseNoFile lifts the soft RLIMIT_NOFILE to at least want (up to the hard
// limit). The gateway started afterwards inherits it.
func raiseNoFile(want uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur >= want {
		return rl.Cur, nil
	}
	rl.Cur = min(want, rl.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	return rl.Cur, nil
}

// gwSnapshot is what the leak and idle checks read from the gateway.
type gwSnapshot struct {
	rssKB      int64
	fds        int
	goroutines float64
}

func snapshot(g *gateway) (gwSnapshot, error) {
	var s gwSnapshot
	var err error
	if s.rssKB, err = procStatusKB(g.pid(), "VmRSS"); err != nil {
		return s, err
	}
	if s.fds, err = procFDs(g.pid()); err != nil {
		return s, err
	}
	body, err := g.get("/metrics", 5*time.Second)
	if err != nil {
		return s, err
	}
	v, ok := metricValue(body, "go_goroutines")
	if !ok {
		return s, fmt.Errorf("/metrics has no go_goroutines")
	}
	s.goroutines = v
	return s, nil
}

// runIdle holds n idle connections (each has read the 220 greeting) to a
// relay-only gateway and reports its RSS growth per connection.
func runIdle(n int, out, log io.Writer) error {
	if n < 1 || n > 15000 {
		return fmt.Errorf("-conns %d: want 1..15000", n)
	}
	lim, err := raiseNoFile(uint64(n) + 1024)
	if err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	if lim < uint64(n)+256 {
		return fmt.Errorf("RLIMIT_NOFILE hard limit %d is too low for %d connections", lim, n)
	}
	e, err := setupEnv(2, true, false, log)
	if err != nil {
		return err
	}
	defer e.close()
	spec := e.spec(false, false)
	spec.maxConns = n + 100
	g, err := startGateway(e.bin, e.tmp, spec)
	if err != nil {
		return err
	}
	defer g.stop()
	// One message first so that the relay and the policy engine are warm
	// and their memory is in the baseline.
	msgs, err := e.world.messages(4<<10, 1)
	if err != nil {
		return err
	}
	if r := (load{addr: g.addr, msgs: msgs, m: 20, c: 2, k: 5, maxDur: 20 * time.Second}).run(); r.failed > 0 {
		return fmt.Errorf("warm-up failed: %s", r.errorSummary())
	}
	time.Sleep(500 * time.Millisecond)
	before, err := snapshot(g)
	if err != nil {
		return err
	}
	conns := make([]net.Conn, 0, n)
	var mu sync.Mutex
	var failed int
	var firstErr error
	t0 := time.Now()
	sem := make(chan struct{}, 100) // dial at most 100 at a time
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", g.addr, 10*time.Second)
			if err == nil {
				_ = c.SetReadDeadline(deadline)
				var line string
				line, err = bufio.NewReader(c).ReadString('\n')
				if err == nil && !strings.HasPrefix(line, "220") {
					err = fmt.Errorf("greeting %q", strings.TrimSpace(line))
				}
				_ = c.SetReadDeadline(time.Time{})
				if err != nil {
					c.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	opened := time.Since(t0)
	time.Sleep(2 * time.Second) // let the gateway settle
	held, err := snapshot(g)
	// Every connection must still be open: a NOOP on each gets 250.
	alive := 0
	for _, c := range conns {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, werr := c.Write([]byte("NOOP\r\n")); werr != nil {
			continue
		}
		line, rerr := bufio.NewReader(c).ReadString('\n')
		if rerr == nil && strings.HasPrefix(line, "250") {
			alive++
		}
	}
	for _, c := range conns {
		c.Close()
	}
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	after, _ := snapshot(g)
	perConn := 0.0
	if len(conns) > 0 {
		perConn = float64(held.rssKB-before.rssKB) / float64(len(conns))
	}
	fmt.Fprintf(out, "\nmxload idle: %d connections requested, %d held (greeted) in %v, %d failed", n, len(conns), opened.Round(time.Millisecond), failed)
	if firstErr != nil {
		fmt.Fprintf(out, " (first: %v)", firstErr)
	}
	fmt.Fprintf(out, ", %d answered NOOP after the hold\n", alive)
	fmt.Fprintln(out, "| | gateway RSS MiB | open fds | goroutines |")
	fmt.Fprintln(out, "|---|---:|---:|---:|")
	fmt.Fprintf(out, "| before | %.1f | %d | %.0f |\n", float64(before.rssKB)/1024, before.fds, before.goroutines)
	fmt.Fprintf(out, "| %d idle connections held | %.1f | %d | %.0f |\n", len(conns), float64(held.rssKB)/1024, held.fds, held.goroutines)
	fmt.Fprintf(out, "| 2 s after closing them | %.1f | %d | %.0f |\n", float64(after.rssKB)/1024, after.fds, after.goroutines)
	fmt.Fprintf(out, "RSS per idle connection: %.1f KiB (target ≤ 40 KiB); goroutines per connection: %.2f\n",
		perConn, (held.goroutines-before.goroutines)/float64(max(1, len(conns))))
	return nil
}

// runLeak runs a long all-checks load and compares the gateway's goroutines
// and open fds before and after, once the sessions have closed.
func runLeak(m int, dur time.Duration, c, k, n int, out, log io.Writer) error {
	e, err := setupEnv(n, true, true, log)
	if err != nil {
		return err
	}
	defer e.close()
	g, err := startGateway(e.bin, e.tmp, e.spec(true, false))
	if err != nil {
		return err
	}
	defer g.stop()
	msgs, err := e.world.messages(4<<10, 2)
	if err != nil {
		return err
	}
	if r := (load{addr: g.addr, msgs: msgs, m: 2 * len(msgs), c: c, k: k, maxDur: 30 * time.Second}).run(); r.failed > 0 {
		return fmt.Errorf("warm-up failed: %s", r.errorSummary())
	}
	warm, err := settle(g, gwSnapshot{}, 3*time.Second)
	if err != nil {
		return err
	}
	// Two halves: connection pools (Redis, downstream) may still grow to
	// their bound in the first, which is not a leak; a leak keeps growing
	// in the second.
	res := load{addr: g.addr, msgs: msgs, m: m / 2, c: c, k: k, maxDur: dur / 2}.run()
	before, err := settle(g, warm, 15*time.Second)
	if err != nil {
		return err
	}
	res2 := load{addr: g.addr, msgs: msgs, m: m - m/2, c: c, k: k, maxDur: dur / 2}.run()
	res.sent += res2.sent
	res.failed += res2.failed
	res.elapsed += res2.elapsed
	for k, v := range res2.errs {
		res.errs[k] += v
	}
	after, err := settle(g, before, 15*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nmxload leak: %d messages (%d failed) over %v at %.0f msg/s, all checks on, 4KiB, C=%d K=%d, in two halves\n",
		res.sent, res.failed, res.elapsed.Round(time.Millisecond), res.rate(), c, k)
	fmt.Fprintln(out, "| | goroutines | open fds | RSS MiB |")
	fmt.Fprintln(out, "|---|---:|---:|---:|")
	fmt.Fprintf(out, "| after warm-up | %.0f | %d | %.1f |\n", warm.goroutines, warm.fds, float64(warm.rssKB)/1024)
	fmt.Fprintf(out, "| after the first half (settled) | %.0f | %d | %.1f |\n", before.goroutines, before.fds, float64(before.rssKB)/1024)
	fmt.Fprintf(out, "| after the second half (settled) | %.0f | %d | %.1f |\n", after.goroutines, after.fds, float64(after.rssKB)/1024)
	verdict := "no growth in the second half"
	if after.goroutines > before.goroutines || after.fds > before.fds {
		verdict = fmt.Sprintf("GROWTH in the second half: %+.0f goroutines, %+d fds", after.goroutines-before.goroutines, after.fds-before.fds)
	}
	fmt.Fprintln(out, "verdict:", verdict)
	if res.failed > 0 {
		fmt.Fprintln(out, "errors:", res.errorSummary())
		for _, l := range g.errorLines(3) {
			fmt.Fprintln(out, "gateway log:", l)
		}
	}
	return nil
}

// settle polls the gateway until goroutines and fds are back at or below
// base (zero base: a short fixed wait), or wait passes; it returns the last
// snapshot.
func settle(g *gateway, base gwSnapshot, wait time.Duration) (gwSnapshot, error) {
	deadline := time.Now().Add(wait)
	for {
		time.Sleep(250 * time.Millisecond)
		s, err := snapshot(g)
		if err != nil {
			return s, err
		}
		done := base.fds > 0 && s.goroutines <= base.goroutines && s.fds <= base.fds
		if done || time.Now().After(deadline) {
			return s, nil
		}
	}
}
