package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// largeOptions are the knobs of `mxload large`: conns sessions each send one
// message of size bytes at the same time through a relay-only gateway whose
// data.memory_budget is budget and data.spool_memory is spoolMem.
type largeOptions struct {
	conns    int
	size     int
	budget   int64
	spoolMem int64
	maxDur   time.Duration // time bound of each round
	crash    bool          // also run the SIGKILL round
}

// Per-session memory the budget does not cover, for the pass/fail limit.
// The budget counts message bytes; every session also holds fixed buffers
// whatever the message size: ≈ 17 KiB per greeted idle connection (the
// idle mode's measurement: go-smtp's reader and writer, the session, its
// goroutine), about as much for the downstream session opened at RCPT, the
// 32 KiB buffer of the io.Copy that reads DATA and the validator's 34 KiB
// buffer: ≈ 100 KiB, rounded up to 128 KiB. The fixed part is the Go
// runtime and heap growth outside message bytes (the policy engine, metrics,
// allocator spans); GC slack on the message bytes themselves is not allowed
// for: an operator who configures a budget expects the process to stay
// near it.
//
// The gateway runs with runtime.memory_limit set to that same limit plus
// largeIdleHeap, what the idle process's Go runtime already holds (the
// limit counts Go memory, not the binary's pages that RSS also counts):
// the collector's soft limit is how an operator says "stay near it".
// Without it, the default gc_percent of 400 lets garbage grow to several
// times the live heap before a collection.
const (
	largeAllowPerConn = 128 << 10
	largeAllowFixed   = 32 << 20
	largeIdleHeap     = 16 << 20
)

// memoryLimit is the runtime.memory_limit the gateway runs with.
func (o largeOptions) memoryLimit() int64 {
	return largeReport{o: o}.limitBytes() + largeIdleHeap
}

// addLargeFlags registers the flags of `mxload large` on fs and returns a
// function that reads them after fs.Parse.
func addLargeFlags(fs *flag.FlagSet) func() (largeOptions, error) {
	conns := fs.Int("large-conns", 200, "concurrent sessions, one message each (large)")
	size := fs.String("large-size", "10MiB", "size of each message (large)")
	budget := fs.String("large-budget", "64MiB", "data.memory_budget of the gateway (large)")
	spoolMem := fs.String("large-spool-mem", "1MiB", "data.spool_memory of the gateway (large)")
	dur := fs.Duration("large-dur", 3*time.Minute, "time bound of each round (large)")
	crash := fs.Bool("large-crash", true, "also SIGKILL the gateway mid-DATA and check the restart removes the spool files (large)")
	return func() (largeOptions, error) {
		o := largeOptions{conns: *conns, maxDur: *dur, crash: *crash}
		var err error
		if o.size, err = parseSize(*size); err != nil {
			return o, fmt.Errorf("-large-size: %w", err)
		}
		if o.budget, err = parseBytes(*budget); err != nil {
			return o, fmt.Errorf("-large-budget: %w", err)
		}
		if o.spoolMem, err = parseBytes(*spoolMem); err != nil {
			return o, fmt.Errorf("-large-spool-mem: %w", err)
		}
		if o.conns < 1 || o.conns > 5000 {
			return o, fmt.Errorf("-large-conns %d: want 1..5000", o.conns)
		}
		if o.maxDur <= 0 {
			return o, errors.New("-large-dur must be positive")
		}
		return o, nil
	}
}

// parseBytes reads a byte count like parseSize, also GiB, up to 64 GiB: a
// budget may well be larger than any message.
func parseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if rest, ok := strings.CutSuffix(t, u.suf); ok {
			t, mult = rest, u.m
			break
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 || v > (64<<30)/mult {
		return 0, fmt.Errorf("bad byte count %q (1 to 64GiB)", s)
	}
	return v * mult, nil
}

// largeReport is what `mxload large` measured.
type largeReport struct {
	o                   largeOptions
	r1                  largeRoundResult
	sinkDelivered       int64
	rssBefore, rssReady int64 // kB: warm and idle; all sessions at DATA
	rssMaxSampled       int64 // kB, VmRSS sampled every 100 ms
	rssSamples          int
	hwm                 int64 // kB, VmHWM after the round
	maxFiles            int
	filesLeft           int
	// crash round
	crashRan      bool
	r2            largeRoundResult
	filesAtKill   int
	filesAfter    int // after the kill, before the restart
	filesRestart  int // after the restarted gateway is ready
	removedLogged int // count of the restart's log line, -1 if none
}

func (r largeReport) limitBytes() int64 {
	return r.o.budget + int64(r.o.conns)*largeAllowPerConn + largeAllowFixed
}

// checks lists the pass/fail verdicts in report order.
func (r largeReport) checks() []largeCheck {
	growth := (r.hwm - r.rssBefore) << 10
	cs := []largeCheck{
		{r.sinkDelivered == int64(r.r1.delivered) && r.r1.delivered+r.r1.tempfailed == r.o.conns,
			fmt.Sprintf("none lost: %d of %d answered 250 and are at the sink (%d), %d answered 4xx (the sender retries)",
				r.r1.delivered, r.o.conns, r.sinkDelivered, r.r1.tempfailed)},
		{growth <= r.limitBytes(),
			fmt.Sprintf("peak RSS − before = %s ≤ budget %s + allowance %s = %s", mib(growth), mib(r.o.budget),
				mib(r.limitBytes()-r.o.budget), mib(r.limitBytes()))},
		{r.maxFiles > 0, fmt.Sprintf("messages spilled to the spool dir: up to %d files at once", r.maxFiles)},
		{r.filesLeft == 0, fmt.Sprintf("spool files left after every session closed: %d", r.filesLeft)},
	}
	if r.crashRan {
		cs = append(cs,
			largeCheck{r.filesAfter > 0, fmt.Sprintf("spool files left by the SIGKILL: %d", r.filesAfter)},
			largeCheck{r.filesRestart == 0, fmt.Sprintf("spool files after the restart: %d", r.filesRestart)},
			largeCheck{r.removedLogged == r.filesAfter,
				fmt.Sprintf("restart logged \"removed spool files left by a crash\" count=%d (want %d)", r.removedLogged, r.filesAfter)})
	}
	return cs
}

type largeCheck struct {
	ok   bool
	text string
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (r largeReport) write(out io.Writer) {
	o := r.o
	fmt.Fprintf(out, "\nmxload large: %d sessions × %s at once through a relay-only gateway; data.memory_budget %s, data.spool_memory %s, rounds bounded to %v\n",
		o.conns, sizeName(o.size), mib(o.budget), mib(o.spoolMem), o.maxDur)
	total := float64(o.conns) * float64(o.size)
	rate := 0.0
	if r.r1.stream > 0 {
		rate = total / (1 << 20) / r.r1.stream.Seconds()
	}
	fmt.Fprintf(out, "round 1: %d of %d sessions at DATA after %v; all bodies sent and answered %v later (%.0f MiB/s into the gateway)\n",
		r.r1.opened, o.conns, r.r1.setup.Round(time.Millisecond), r.r1.stream.Round(time.Millisecond), rate)
	fmt.Fprintln(out, "| | value |")
	fmt.Fprintln(out, "|---|---:|")
	fmt.Fprintf(out, "| messages accepted at the sink | %d of %d |\n", r.sinkDelivered, o.conns)
	fmt.Fprintf(out, "| gateway RSS before (warm, idle) | %s |\n", mib(r.rssBefore<<10))
	fmt.Fprintf(out, "| gateway RSS, %d sessions waiting at DATA | %s |\n", r.r1.opened, mib(r.rssReady<<10))
	fmt.Fprintf(out, "| gateway RSS, max of %d samples every 100 ms | %s |\n", r.rssSamples, mib(r.rssMaxSampled<<10))
	fmt.Fprintf(out, "| gateway peak RSS (VmHWM) | %s |\n", mib(r.hwm<<10))
	fmt.Fprintf(out, "| peak − before | **%s** |\n", mib((r.hwm-r.rssBefore)<<10))
	fmt.Fprintf(out, "| data.memory_budget | %s |\n", mib(o.budget))
	fmt.Fprintf(out, "| runtime.memory_limit of the gateway | %s |\n", mib(o.memoryLimit()))
	fmt.Fprintf(out, "| allowance: %d × %d KiB per session + %s fixed | %s |\n", o.conns, largeAllowPerConn>>10,
		mib(largeAllowFixed), mib(r.limitBytes()-o.budget))
	fmt.Fprintf(out, "| spool files, max seen | %d |\n", r.maxFiles)
	fmt.Fprintf(out, "| spool files left after the sessions closed | %d |\n", r.filesLeft)
	if len(r.r1.errs) > 0 {
		fmt.Fprintf(out, "round 1 errors: %s\n", summarize(r.r1.errs))
	}
	if r.crashRan {
		fmt.Fprintf(out, "crash round: %d sessions at DATA, each stopped %s into its body; gateway SIGKILLed with %d spool files present\n",
			r.r2.opened, sizeName(crashPause(o)), r.filesAtKill)
		fmt.Fprintln(out, "| | spool files |")
		fmt.Fprintln(out, "|---|---:|")
		fmt.Fprintf(out, "| when SIGKILLed | %d |\n", r.filesAtKill)
		fmt.Fprintf(out, "| after the kill | %d |\n", r.filesAfter)
		fmt.Fprintf(out, "| after the restart on the same spool_dir | %d |\n", r.filesRestart)
		logged := "none"
		if r.removedLogged >= 0 {
			logged = fmt.Sprintf("\"removed spool files left by a crash\" count=%d", r.removedLogged)
		}
		fmt.Fprintf(out, "restart log: %s\n", logged)
		if len(r.r2.errs) > 0 {
			fmt.Fprintf(out, "crash round client errors (expected after the kill): %s\n", summarize(r.r2.errs))
		}
	}
	fmt.Fprintln(out, "checks:")
	for _, c := range r.checks() {
		v := "PASS"
		if !c.ok {
			v = "FAIL"
		}
		fmt.Fprintf(out, "  %s %s\n", v, c.text)
	}
}

func summarize(errs map[string]int) string {
	return runResult{errs: errs}.errorSummary()
}

// crashPause is where the crash round stops each body: halfway, but past
// spool_memory so that every session has spilled to a file.
func crashPause(o largeOptions) int {
	p := max(o.size/2, int(o.spoolMem)+64<<10)
	return min(p, o.size-1)
}

// runLarge runs the large-message scenario and writes the report; it
// returns an error when the environment fails or a check fails.
func runLarge(o largeOptions, out, log io.Writer) error {
	// Per session: the generator's client socket and the sink's; the
	// gateway (which inherits the limit) the inbound and downstream sockets
	// and a spool file.
	want := uint64(4*o.conns) + 1024
	if lim, err := raiseNoFile(want); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	} else if lim < want {
		return fmt.Errorf("RLIMIT_NOFILE hard limit %d is too low for %d sessions", lim, o.conns)
	}
	e, err := setupEnv(1, true, false, log)
	if err != nil {
		return err
	}
	defer e.close()
	spoolDir := filepath.Join(e.tmp, "large-spool")
	if err := os.MkdirAll(spoolDir, 0o700); err != nil {
		return fmt.Errorf("spool dir: %w", err)
	}
	render := func(dir, listen, admin string) (string, error) {
		return largeConfig(e.spec(false, false), o, spoolDir, dir, listen, admin)
	}
	g, err := startGatewayWith(e.bin, e.tmp, render)
	if err != nil {
		return err
	}
	defer g.stop()

	from := "sender0@" + e.world.senders[0].domain
	body := buildMessage(from, o.size, 0)
	if bytes.Contains(body, []byte("\n.")) || !bytes.HasSuffix(body, []byte("\r\n")) {
		return errors.New("generated body needs dot-stuffing or lacks a final CRLF")
	}
	// One small load first so that the relay, the policy engine and the
	// spool buffers' code are warm and their memory is in the baseline.
	warm, err := e.world.messages(4<<10, 1)
	if err != nil {
		return err
	}
	if r := (load{addr: g.addr, msgs: warm, m: 20, c: 2, k: 5, maxDur: 20 * time.Second}).run(); r.failed > 0 {
		return fmt.Errorf("warm-up failed: %s", r.errorSummary())
	}
	time.Sleep(500 * time.Millisecond)
	rep := largeReport{o: o, removedLogged: -1}
	if rep.rssBefore, err = procStatusKB(g.pid(), "VmRSS"); err != nil {
		return err
	}
	sink0 := e.sink.Delivered()

	// Round 1: every session at DATA, then all bodies at once.
	fmt.Fprintf(log, "large: round 1, %d × %s\n", o.conns, sizeName(o.size))
	var smp *sampler
	rnd := largeRound{addr: g.addr, from: from, body: body, conns: o.conns, deadline: time.Now().Add(o.maxDur)}
	rep.r1 = rnd.run(func() {
		time.Sleep(300 * time.Millisecond) // let the gateway finish the RCPT replies' work
		rep.rssReady, _ = procStatusKB(g.pid(), "VmRSS")
		smp = startSampler(g.pid(), spoolDir, 100*time.Millisecond)
	}, nil)
	if smp != nil {
		smp.finish()
		rep.rssMaxSampled, rep.rssSamples, rep.maxFiles = smp.maxRSS, smp.n, smp.maxFiles
	}
	if rep.hwm, err = procStatusKB(g.pid(), "VmHWM"); err != nil {
		return err
	}
	rep.sinkDelivered = e.sink.Delivered() - sink0
	// Spools are closed before the reply to the final dot; a little grace
	// for sessions that failed and are still being torn down.
	rep.filesLeft = waitFiles(spoolDir, 0, 5*time.Second)

	if o.crash {
		rep.crashRan = true
		if err := crashRound(&rep, g, render, e, spoolDir, from, body, log); err != nil {
			rep.write(out)
			return err
		}
	}
	rep.write(out)
	var failed []string
	for _, c := range rep.checks() {
		if !c.ok {
			failed = append(failed, c.text)
		}
	}
	if len(failed) > 0 {
		for _, l := range g.errorLines(3) {
			fmt.Fprintln(log, "gateway log:", l)
		}
		return fmt.Errorf("%d check(s) failed: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// crashRound stops every session partway into its body, SIGKILLs the
// gateway g (the process this run started) once the spool files exist,
// then starts a new gateway on the same spool_dir and checks that its
// start removed them and said so.
func crashRound(rep *largeReport, g *gateway, render func(dir, listen, admin string) (string, error), e *env,
	spoolDir, from string, body []byte, log io.Writer) error {
	o := rep.o
	fmt.Fprintf(log, "large: crash round, %d sessions stop %s into the body\n", o.conns, sizeName(crashPause(o)))
	rnd := largeRound{addr: g.addr, from: from, body: body, conns: o.conns, deadline: time.Now().Add(o.maxDur),
		pauseAt: crashPause(o)}
	var killErr error
	rep.r2 = rnd.run(nil, func(opened int) {
		// The generator has written its part; the gateway spills each
		// session once it has read past spool_memory or the budget.
		rep.filesAtKill = waitFiles(spoolDir, opened, 20*time.Second)
		if err := g.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			killErr = fmt.Errorf("SIGKILL gateway pid %d: %w", g.pid(), err)
			return
		}
		// Keep the exit for g.stop, which waits on the same channel.
		werr := <-g.exited
		g.exited <- werr
	})
	if killErr != nil {
		return killErr
	}
	var err error
	if rep.filesAfter, err = countFiles(spoolDir); err != nil {
		return err
	}
	g2, err := startGatewayWith(e.bin, e.tmp, render)
	if err != nil {
		return fmt.Errorf("restart after SIGKILL: %w", err)
	}
	defer g2.stop()
	if rep.filesRestart, err = countFiles(spoolDir); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(g2.dir, "stderr.log"))
	if err != nil {
		return fmt.Errorf("restarted gateway's log: %w", err)
	}
	rep.removedLogged = removedCount(b)
	return nil
}

// removedCount finds the start-up line of a gateway's JSON log that
// reports removed spool files and returns its count, -1 without one.
func removedCount(log []byte) int {
	for _, line := range bytes.Split(log, []byte("\n")) {
		var rec struct {
			Msg   string   `json:"msg"`
			Count *float64 `json:"count"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "removed spool files left by a crash" && rec.Count != nil {
			return int(*rec.Count)
		}
	}
	return -1
}

// largeConfig is the relay-only gateway config of the benchmark with the
// limits, spool and log level this scenario needs. It edits the lines
// gatewayConfig writes, so that both stay one config; a missing line is an
// error rather than a silently different config.
func largeConfig(spec gwSpec, o largeOptions, spoolDir, dir, listen, admin string) (string, error) {
	cfg := gatewayConfig(spec, dir, listen, admin)
	conns := o.conns + 100
	maxMsg := max(int64(o.size)+1<<20, 32<<20)
	var err error
	for _, r := range []struct{ prefix, line string }{
		{"limits:", fmt.Sprintf("limits: {max_conns: %d, max_conns_per_ip: %d, max_message_bytes: %d}", conns, conns, maxMsg)},
		{"data:", fmt.Sprintf("data: {spool_dir: %q, spool_memory: %d, memory_budget: %d}", spoolDir, o.spoolMem, o.budget)},
		// Info: the start-up line about removed spool files is at info.
		{"log:", "log: {level: info}"},
	} {
		if cfg, err = replaceLine(cfg, r.prefix, r.line); err != nil {
			return "", err
		}
	}
	return cfg + fmt.Sprintf("runtime: {memory_limit: %d}\n", o.memoryLimit()), nil
}

// replaceLine replaces the one line of text that starts with prefix.
func replaceLine(text, prefix, line string) (string, error) {
	lines := strings.Split(text, "\n")
	found := 0
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			lines[i] = line
			found++
		}
	}
	if found != 1 {
		return "", fmt.Errorf("gateway config has %d lines starting with %q, want 1", found, prefix)
	}
	return strings.Join(lines, "\n"), nil
}

// largeRound is one round of the scenario: conns sessions each run EHLO,
// MAIL and RCPT, wait until all have, then send DATA and body at once.
// SMTP is spoken directly (net/textproto) and the body written as is —
// it has no line starting with a dot — so the generator spends no CPU on
// dot-stuffing beside the gateway on the same cores.
type largeRound struct {
	addr     string
	from     string
	body     []byte
	conns    int
	deadline time.Time // bounds every dial, command and write of the round
	// pauseAt > 0: each session stops after this many body bytes until
	// the paused callback has returned (the crash round).
	pauseAt int
}

type largeRoundResult struct {
	opened    int // sessions that reached DATA (RCPT accepted)
	delivered int // 250 to the final dot
	// tempfailed: 4xx to the final dot. Not lost: the sender keeps the
	// message and retries (under this overload a policy evaluation can
	// wait for a CPU longer than policy.timeout).
	tempfailed int
	setup      time.Duration
	stream     time.Duration // from releasing the sessions to the last reply
	errs       map[string]int
}

// run runs the round. atBarrier runs once every session is at DATA (or
// has failed), before any body byte is sent; paused (pauseAt > 0) once
// every session has written pauseAt bytes, with the number that did.
func (r largeRound) run(atBarrier func(), paused func(opened int)) largeRoundResult {
	res := largeRoundResult{errs: map[string]int{}}
	var mu sync.Mutex
	fail := func(err error) {
		msg := idRE.ReplaceAllString(err.Error(), "(id …)")
		msg = addrRE.ReplaceAllString(msg, "…") // count equal errors of different sockets together
		if len(msg) > 120 {
			msg = msg[:120]
		}
		mu.Lock()
		res.errs[msg]++
		mu.Unlock()
	}
	ready := make(chan bool, r.conns)   // one per session: reached DATA?
	halfway := make(chan bool, r.conns) // one per opened session (pauseAt > 0)
	start, resume := make(chan struct{}), make(chan struct{})
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < r.conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := dialLarge(r.addr, r.from, len(r.body), r.deadline)
			ready <- err == nil
			if err != nil {
				fail(err)
				return
			}
			defer s.close()
			<-start
			ok, err := s.send(r.body, r.pauseAt, func() {
				halfway <- true
				<-resume
			})
			if r.pauseAt > 0 && !s.pausedOnce {
				halfway <- false // never paused: still report once
			}
			if err != nil {
				var te *textproto.Error
				if errors.As(err, &te) && te.Code/100 == 4 {
					mu.Lock()
					res.tempfailed++
					mu.Unlock()
				}
				fail(err)
				return
			}
			if ok {
				mu.Lock()
				res.delivered++
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < r.conns; i++ {
		if <-ready {
			res.opened++
		}
	}
	res.setup = time.Since(t0)
	if atBarrier != nil {
		atBarrier()
	}
	t1 := time.Now()
	close(start)
	if r.pauseAt > 0 {
		n := 0
		for i := 0; i < res.opened; i++ {
			if <-halfway {
				n++
			}
		}
		if paused != nil {
			paused(n)
		}
	}
	close(resume)
	wg.Wait()
	res.stream = time.Since(t1)
	return res
}

// addrRE matches the socket addresses in network errors.
var addrRE = regexp.MustCompile(`tcp [0-9.:\[\]a-f]+->[0-9.:\[\]a-f]+`)

// largeSession is one raw SMTP client session.
type largeSession struct {
	c          net.Conn
	tc         *textproto.Conn
	pausedOnce bool
}

// dialLarge connects and runs EHLO, MAIL and RCPT.
func dialLarge(addr, from string, size int, deadline time.Time) (*largeSession, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	_ = c.SetDeadline(deadline)
	s := &largeSession{c: c, tc: textproto.NewConn(c)}
	if _, _, err := s.tc.ReadResponse(220); err != nil {
		s.close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	for _, step := range []struct {
		code int
		cmd  string
	}{
		{250, "EHLO " + clientHelo},
		{250, fmt.Sprintf("MAIL FROM:<%s> SIZE=%d", from, size)},
		{250, "RCPT TO:<" + rcptAddr + ">"},
	} {
		if err := s.cmd(step.code, step.cmd); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func (s *largeSession) cmd(code int, line string) error {
	if err := s.tc.PrintfLine("%s", line); err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(line)[0], err)
	}
	if _, _, err := s.tc.ReadResponse(code); err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(line)[0], err)
	}
	return nil
}

// send runs DATA with body (which must end in CRLF and need no
// dot-stuffing); with pauseAt > 0 it calls pause after that many bytes.
// ok is a 250 reply to the final dot.
func (s *largeSession) send(body []byte, pauseAt int, pause func()) (ok bool, err error) {
	if err := s.cmd(354, "DATA"); err != nil {
		return false, err
	}
	rest := body
	if pauseAt > 0 && pauseAt < len(body) {
		if _, err := s.c.Write(body[:pauseAt]); err != nil {
			return false, fmt.Errorf("body: %w", err)
		}
		s.pausedOnce = true
		pause()
		rest = body[pauseAt:]
	}
	if _, err := s.c.Write(rest); err != nil {
		return false, fmt.Errorf("body: %w", err)
	}
	if _, err := s.c.Write([]byte(".\r\n")); err != nil {
		return false, fmt.Errorf("final dot: %w", err)
	}
	if _, _, err := s.tc.ReadResponse(250); err != nil {
		return false, fmt.Errorf("reply to the final dot: %w", err)
	}
	_ = s.tc.PrintfLine("QUIT")
	_, _, _ = s.tc.ReadResponse(221)
	return true, nil
}

func (s *largeSession) close() { s.c.Close() }

// sampler reads a process's VmRSS and counts the files of a directory at a
// fixed interval and keeps the maxima.
type sampler struct {
	pid      int
	dir      string
	stop     chan struct{}
	done     chan struct{}
	maxRSS   int64 // kB
	maxFiles int
	n        int
}

func startSampler(pid int, dir string, every time.Duration) *sampler {
	s := &sampler{pid: pid, dir: dir, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if kb, err := procStatusKB(s.pid, "VmRSS"); err == nil {
				s.maxRSS = max(s.maxRSS, kb)
				s.n++
			}
			if n, err := countFiles(s.dir); err == nil {
				s.maxFiles = max(s.maxFiles, n)
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// finish stops the sampler; its fields are final afterwards.
func (s *sampler) finish() {
	close(s.stop)
	<-s.done
}

// countFiles counts the regular files in dir (the spool dir is private to
// this run, so every file in it is a spool file).
func countFiles(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("count spool files: %w", err)
	}
	n := 0
	for _, e := range ents {
		if e.Type().IsRegular() {
			n++
		}
	}
	return n, nil
}

// waitFiles polls dir every 20 ms until it holds want files (at least want
// when want > 0, none when want is 0) or wait passes, and returns the last
// count (-1 if the directory cannot be read).
func waitFiles(dir string, want int, wait time.Duration) int {
	deadline := time.Now().Add(wait)
	for {
		n, err := countFiles(dir)
		if err != nil {
			return -1
		}
		if (want == 0 && n == 0) || (want > 0 && n >= want) || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}
