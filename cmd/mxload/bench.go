package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mxguard/mxguard/internal/loadenv"
)

// benchOptions are the knobs of the three-path benchmark.
type benchOptions struct {
	sizes    []int
	m        int           // messages per run at the smallest sizes
	mBytes   int64         // ... at most this many bytes per run (fewer messages for large sizes)
	c, k, n  int           // sessions, messages per session, sender domains
	reps     int           // runs of each path per size
	maxDur   time.Duration // hard bound of one run
	paths    []int         // which of 1, 2, 3, 4
	outDir   string        // profiles go here
	profile  bool
	profSecs int
	variants int // distinct signed messages per domain and size
	// halfRate runs paths 2 and 3 (and path 1 beside each) paced at half of
	// the gateway path's median rate, at the first size, for halfDur each:
	// the latency mxguard adds below saturation.
	halfRate bool
	halfDur  time.Duration
	// pipeline makes the generator pipeline MAIL, RCPT and DATA (RFC 2920).
	pipeline bool
}

// pathNames are the row labels of the report.
var pathNames = map[int]string{
	1: "1 direct to sink",
	2: "2 mxguard, all checks",
	3: "3 mxguard, relay only",
	4: "4 bare go-smtp proxy",
}

// runRecord is one measured run.
type runRecord struct {
	path, size, rep int
	res             runResult
	gwCPU           time.Duration // gateway (or proxy) CPU during the run (paths 2, 3, 4)
}

// cell aggregates the runs of one path and size.
type cell struct {
	path, size                 int
	rate, p50, p90, p99, cpuPK float64 // medians; latencies in ms; CPU s per 1,000 messages
	peakRSSKB                  int64
	sent, failed               int
	errs                       string
}

// keepTmp leaves the work directory (gateway configs, logs, decision logs)
// in place for inspection (-keep).
var keepTmp bool

// env is what the benchmark starts once: DNS, sink, Redis, the gateway binary.
type env struct {
	world *world
	dns   *loadenv.DNS
	sink  *loadenv.Sink
	redis *loadenv.Redis
	bin   string
	tmp   string
}

func setupEnv(n int, needGateway, needRedis bool, log io.Writer) (*env, error) {
	e := &env{}
	var err error
	if e.tmp, err = os.MkdirTemp("", "mxload-"); err != nil {
		return nil, err
	}
	if keepTmp {
		fmt.Fprintf(log, "work directory (kept): %s\n", e.tmp)
	}
	if needGateway {
		root, err := moduleRoot()
		if err != nil {
			e.close()
			return nil, err
		}
		t0 := time.Now()
		if e.bin, err = buildGateway(root, e.tmp); err != nil {
			e.close()
			return nil, err
		}
		fmt.Fprintf(log, "built mxguard in %v\n", time.Since(t0).Round(time.Millisecond))
	}
	t0 := time.Now()
	if e.world, err = newWorld(n); err != nil {
		e.close()
		return nil, err
	}
	fmt.Fprintf(log, "generated %d sender domains (RSA-2048 and Ed25519 alternating) in %v\n", n, time.Since(t0).Round(time.Millisecond))
	if e.dns, err = loadenv.StartDNS(e.world.records); err != nil {
		e.close()
		return nil, err
	}
	if e.sink, err = loadenv.StartSink(); err != nil {
		e.close()
		return nil, err
	}
	if needRedis {
		rdir := filepath.Join(e.tmp, "redis")
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			e.close()
			return nil, err
		}
		if e.redis, err = loadenv.StartRedis(rdir); err != nil {
			e.close()
			return nil, err
		}
	}
	return e, nil
}

func (e *env) close() {
	if e.redis != nil {
		e.redis.Stop()
	}
	if e.sink != nil {
		e.sink.Close()
	}
	if e.dns != nil {
		e.dns.Close()
	}
	if e.tmp != "" && !keepTmp {
		os.RemoveAll(e.tmp)
	}
}

func (e *env) spec(checks bool, pprof bool) gwSpec {
	s := gwSpec{checks: checks, dnsAddr: e.dns.Addr(), sinkAddr: e.sink.Addr(), pprof: pprof}
	if checks && e.redis != nil {
		s.redis = e.redis.Addr
	}
	return s
}

// msgsFor is M for a size: o.m, fewer when that would exceed o.mBytes, at
// least 2*c*k... bounded below by 50.
func (o benchOptions) msgsFor(size int) int {
	m := o.m
	if o.mBytes > 0 && int64(m)*int64(size) > o.mBytes {
		m = int(o.mBytes / int64(size))
	}
	if m < 50 {
		m = 50
	}
	return m
}

// runBench runs the alternating benchmark and writes the report to out.
func runBench(o benchOptions, out, log io.Writer) error {
	want := map[int]bool{}
	for _, p := range o.paths {
		want[p] = true
	}
	needGW := want[2] || want[3]
	e, err := setupEnv(o.n, needGW, want[2], log)
	if err != nil {
		return err
	}
	defer e.close()
	var self string // path 4 runs this binary's hidden proxy subcommand
	if want[4] {
		if self, err = os.Executable(); err != nil {
			return fmt.Errorf("path 4: own executable: %w", err)
		}
	}
	if o.profile && o.outDir != "" {
		if err := os.MkdirAll(o.outDir, 0o755); err != nil {
			return err
		}
	}

	var records []runRecord
	peak := map[[2]int]int64{}
	started := time.Now()
	load0 := loadAvg()
	var halves []halfRow
	for _, size := range o.sizes {
		msgs, err := e.world.messages(size, o.variants)
		if err != nil {
			return err
		}
		gws := map[int]*gateway{}
		for _, p := range []int{2, 3, 4} {
			if !want[p] {
				continue
			}
			var g *gateway
			if p == 4 {
				g, err = startProxy(self, e.tmp, e.sink.Addr())
			} else {
				g, err = startGateway(e.bin, e.tmp, e.spec(p == 2, o.profile))
			}
			if err != nil {
				stopAll(gws, log)
				return fmt.Errorf("path %d gateway: %w", p, err)
			}
			gws[p] = g
			// Warm-up (not measured): fills the DNS cache, opens Redis
			// connections, touches every code path once.
			w := load{addr: g.addr, msgs: msgs, m: 2 * len(msgs), c: 4, k: 5, maxDur: 30 * time.Second, pipeline: o.pipeline}.run()
			if w.failed > 0 {
				stopAll(gws, log)
				return fmt.Errorf("path %d warm-up at %s: %d of %d failed: %s", p, sizeName(size), w.failed, w.failed+w.sent, w.errorSummary())
			}
		}
		m := o.msgsFor(size)
		for rep := 0; rep < o.reps; rep++ {
			for _, p := range o.paths {
				addr := e.sink.Addr()
				g := gws[p]
				if g != nil {
					addr = g.addr
				}
				var cpu0 time.Duration
				var r0, w0 int64
				if g != nil {
					cpu0, _ = procCPU(g.pid())
					r0, w0, _ = procSyscalls(g.pid())
				}
				self0, _ := procCPU(os.Getpid())
				res := load{addr: addr, msgs: msgs, m: m, c: o.c, k: o.k, maxDur: o.maxDur, pipeline: o.pipeline}.run()
				self1, _ := procCPU(os.Getpid())
				rec := runRecord{path: p, size: size, rep: rep, res: res}
				sys := ""
				if g != nil {
					cpu1, _ := procCPU(g.pid())
					rec.gwCPU = cpu1 - cpu0
					if r1, w1, err := procSyscalls(g.pid()); err == nil && res.sent > 0 {
						sys = fmt.Sprintf("  gw syscalls/msg read %.1f write %.1f", float64(r1-r0)/float64(res.sent), float64(w1-w0)/float64(res.sent))
					}
				}
				records = append(records, rec)
				fmt.Fprintf(log, "size %-7s path %d rep %d: %5d sent %3d failed in %6.2fs = %8.1f msg/s  p50 %6.2fms p99 %7.2fms  gw cpu %.2fs  mxload cpu %.2fs%s\n",
					sizeName(size), p, rep+1, res.sent, res.failed, res.elapsed.Seconds(), res.rate(),
					ms(percentile(res.latencies, 50)), ms(percentile(res.latencies, 99)), rec.gwCPU.Seconds(), (self1 - self0).Seconds(), sys)
				if res.failed > 0 {
					fmt.Fprintf(log, "    errors: %s\n", res.errorSummary())
				}
			}
		}
		if o.halfRate && size == o.sizes[0] {
			halves = append(halves, halfRateRuns(e, gws, size, msgs, records, o, log)...)
		}
		if o.profile {
			for _, p := range []int{2, 3} {
				if g := gws[p]; g != nil {
					if err := profileRun(g, p, size, msgs, o); err != nil {
						fmt.Fprintf(log, "profile path %d %s: %v\n", p, sizeName(size), err)
					} else {
						fmt.Fprintf(log, "profiles of path %d at %s written to %s\n", p, sizeName(size), o.outDir)
					}
				}
			}
		}
		for p, g := range gws {
			if kb, err := procStatusKB(g.pid(), "VmHWM"); err == nil {
				peak[[2]int{p, size}] = kb
			}
		}
		stopAll(gws, log)
	}
	cells := aggregate(records, peak)
	writeReport(out, o, cells, time.Since(started))
	writeHalfRate(out, halves)
	fmt.Fprintf(out, "\nmachine: %d CPUs; load average (1 min) %s at start, %s at end\n", runtime.NumCPU(), load0, loadAvg())
	return nil
}

func stopAll(gws map[int]*gateway, log io.Writer) {
	for p, g := range gws {
		g.stop()
		if lines := g.errorLines(3); len(lines) > 0 {
			fmt.Fprintf(log, "path %d gateway logged errors; first ones:\n    %s\n", p, strings.Join(lines, "\n    "))
		}
		delete(gws, p)
	}
}

// profileRun loads gateway g for o.profSecs seconds while fetching a CPU
// profile, then a heap profile; and writes `go tool pprof -top` summaries.
func profileRun(g *gateway, path, size int, msgs []message, o benchOptions) error {
	base := filepath.Join(o.outDir, fmt.Sprintf("path%d-%s", path, sizeName(size)))
	var wg sync.WaitGroup
	var perr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		perr = g.fetch(fmt.Sprintf("/debug/pprof/profile?seconds=%d", o.profSecs), base+".cpu.pprof",
			time.Duration(o.profSecs+30)*time.Second)
	}()
	load{addr: g.addr, msgs: msgs, m: 1 << 30, c: o.c, k: o.k, maxDur: time.Duration(o.profSecs)*time.Second + 500*time.Millisecond, pipeline: o.pipeline}.run()
	wg.Wait()
	if perr != nil {
		return fmt.Errorf("cpu profile (is admin.pprof served?): %w", perr)
	}
	if err := g.fetch("/debug/pprof/heap", base+".heap.pprof", 30*time.Second); err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	for _, kind := range []string{"cpu", "heap"} {
		args := []string{"tool", "pprof", "-top", "-nodecount=30"}
		if kind == "cpu" {
			args = append(args, "-cum")
		}
		args = append(args, g.cmd.Path, base+"."+kind+".pprof")
		top, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			continue
		}
		_ = os.WriteFile(base+"."+kind+".top.txt", top, 0o644)
		flat, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=30", g.cmd.Path, base+"."+kind+".pprof").CombinedOutput()
		if err == nil && kind == "cpu" {
			_ = os.WriteFile(base+".cpu.flat.txt", flat, 0o644)
		}
	}
	return nil
}

func aggregate(records []runRecord, peak map[[2]int]int64) []cell {
	type key [2]int
	groups := map[key][]runRecord{}
	var keys []key
	for _, r := range records {
		k := key{r.path, r.size}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][1] != keys[j][1] {
			return keys[i][1] < keys[j][1]
		}
		return keys[i][0] < keys[j][0]
	})
	var cells []cell
	for _, k := range keys {
		rs := groups[k]
		var rate, p50, p90, p99, cpu []float64
		c := cell{path: k[0], size: k[1], peakRSSKB: peak[k]}
		errs := map[string]int{}
		for _, r := range rs {
			rate = append(rate, r.res.rate())
			p50 = append(p50, ms(percentile(r.res.latencies, 50)))
			p90 = append(p90, ms(percentile(r.res.latencies, 90)))
			p99 = append(p99, ms(percentile(r.res.latencies, 99)))
			if r.res.sent > 0 {
				cpu = append(cpu, r.gwCPU.Seconds()*1000/float64(r.res.sent))
			}
			c.sent += r.res.sent
			c.failed += r.res.failed
			for e, n := range r.res.errs {
				errs[e] += n
			}
		}
		c.rate, c.p50, c.p90, c.p99, c.cpuPK = median(rate), median(p50), median(p90), median(p99), median(cpu)
		c.errs = runResult{errs: errs}.errorSummary()
		cells = append(cells, c)
	}
	return cells
}

func writeReport(w io.Writer, o benchOptions, cells []cell, took time.Duration) {
	client := "go-smtp client, one command at a time"
	if o.pipeline {
		client = "pipelining client (MAIL, RCPT, DATA in one write)"
	}
	fmt.Fprintf(w, "\nmxload: C=%d sessions, K=%d messages per session, N=%d sender domains, %s, %d runs per path (alternating), medians; took %v\n\n",
		o.c, o.k, o.n, client, o.reps, took.Round(time.Second))
	fmt.Fprintln(w, "| size | path | msgs/s | p50 ms | p90 ms | p99 ms | gw CPU s/1k msgs | gw peak RSS MiB | ratio to path 1 | sent | failed |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	direct := map[int]float64{}
	for _, c := range cells {
		if c.path == 1 {
			direct[c.size] = c.rate
		}
	}
	for _, c := range cells {
		cpu, rss, ratio := "—", "—", "—"
		if c.path != 1 {
			cpu = fmt.Sprintf("%.3f", c.cpuPK)
			rss = fmt.Sprintf("%.1f", float64(c.peakRSSKB)/1024)
		}
		if d := direct[c.size]; d > 0 {
			ratio = fmt.Sprintf("%.0f %%", 100*c.rate/d)
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.2f | %.2f | %.2f | %s | %s | %s | %d | %d |\n",
			sizeName(c.size), pathNames[c.path], c.rate, c.p50, c.p90, c.p99, cpu, rss, ratio, c.sent, c.failed)
	}
	var bad []string
	for _, c := range cells {
		if c.failed > 0 {
			bad = append(bad, fmt.Sprintf("path %d %s: %s", c.path, sizeName(c.size), c.errs))
		}
	}
	if len(bad) > 0 {
		fmt.Fprintf(w, "\nfailures:\n  %s\n", strings.Join(bad, "\n  "))
	}
}

// loadAvg is the 1-minute load average, to tell a quiet machine from a
// shared, busy one in the report.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sizeName prints 4096 as 4KiB and 1048576 as 1MiB.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// halfRow is one paced comparison: gateway path p and path 1 at the same
// offered rate.
type halfRow struct {
	path, size int
	offered    float64
	gw, direct runResult
}

// halfRateRuns paces path 1 and each gateway path at half of that path's
// median rate measured in records (warm DNS cache: the gateways have served
// the full runs already).
func halfRateRuns(e *env, gws map[int]*gateway, size int, msgs []message, records []runRecord, o benchOptions, log io.Writer) []halfRow {
	var rows []halfRow
	for _, p := range []int{2, 3} {
		g := gws[p]
		if g == nil {
			continue
		}
		var rates []float64
		for _, r := range records {
			if r.path == p && r.size == size {
				rates = append(rates, r.res.rate())
			}
		}
		half := median(rates) / 2
		if half < 1 {
			continue
		}
		m := int(half*o.halfDur.Seconds()) + 1
		bound := o.halfDur + 10*time.Second
		direct := load{addr: e.sink.Addr(), msgs: msgs, m: m, c: o.c, k: o.k, maxDur: bound, rate: half, pipeline: o.pipeline}.run()
		gw := load{addr: g.addr, msgs: msgs, m: m, c: o.c, k: o.k, maxDur: bound, rate: half, pipeline: o.pipeline}.run()
		fmt.Fprintf(log, "half rate %.0f/s at %s: path 1 p99 %.2fms; path %d p90 %.2fms p95 %.2fms p99 %.2fms max %.2fms (%d/%d failed)\n",
			half, sizeName(size), ms(percentile(direct.latencies, 99)), p, ms(percentile(gw.latencies, 90)),
			ms(percentile(gw.latencies, 95)), ms(percentile(gw.latencies, 99)), ms(percentile(gw.latencies, 100)), direct.failed, gw.failed)
		rows = append(rows, halfRow{path: p, size: size, offered: half, gw: gw, direct: direct})
	}
	return rows
}

func writeHalfRate(w io.Writer, rows []halfRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nLatency at half of the gateway path's median rate (paced, warm DNS cache); added = gateway path minus path 1 at the same rate:")
	fmt.Fprintln(w, "| size | path | offered msgs/s | achieved msgs/s | p50 ms | p99 ms | path 1 p50 ms | path 1 p99 ms | added p50 ms | added p99 ms | failed |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		g50, g99 := ms(percentile(r.gw.latencies, 50)), ms(percentile(r.gw.latencies, 99))
		d50, d99 := ms(percentile(r.direct.latencies, 50)), ms(percentile(r.direct.latencies, 99))
		fmt.Fprintf(w, "| %s | %s | %.0f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %d |\n", sizeName(r.size), pathNames[r.path],
			r.offered, r.gw.rate(), g50, g99, d50, d99, g50-d50, g99-d99, r.gw.failed+r.direct.failed)
	}
}
