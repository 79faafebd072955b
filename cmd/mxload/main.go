// Command mxload is mxguard's load benchmark. It sends DKIM-signed mail from
// N sender domains (SPF, DKIM and DMARC p=reject published by an in-process
// authoritative DNS server on loopback) over four paths, alternating runs:
//
//  1. directly to a discarding SMTP sink (the ceiling);
//  2. through an mxguard process with every check on (SPF, DKIM, DMARC,
//     FCrDNS, rate limits on a private redis-server, the shipped rules, a
//     decision log file, metrics);
//  3. through an mxguard process with the checks off (relay only);
//  4. through a bare go-smtp lockstep proxy process (`mxload proxy`, hidden):
//     the floor of any relay built from the same library.
//
// and reports medians of msgs/s, transaction latency, the gateway's CPU per
// 1,000 messages, its peak RSS and the ratio to path 1. Everything runs on
// 127.0.0.1; every run is bounded in messages and time.
//
//	mxload bench [flags]   the three-path benchmark (default)
//	mxload idle  [flags]   hold many idle connections, report RSS per connection
//	mxload leak  [flags]   long run; goroutine and fd counts before and after
//	mxload large [flags]   many large messages at once: memory budget, spool files, crash recovery
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	mode := "bench"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		mode, args = args[0], args[1:]
	}
	if mode == "proxy" { // path 4's relay, started by bench; its own flags
		return runProxyCmd(args, stderr)
	}
	fs := flag.NewFlagSet("mxload "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	sizes := fs.String("sizes", "4KiB,64KiB,1MiB", "message sizes (bench)")
	m := fs.Int("m", 2000, "messages per run (bench; fewer for large sizes, see -mbytes)")
	mBytes := fs.Int64("mbytes", 160<<20, "at most this many message bytes per run (bench)")
	c := fs.Int("c", 20, "concurrent sessions")
	k := fs.Int("k", 10, "messages per session (one SMTP connection)")
	n := fs.Int("n", 10, "sender domains")
	reps := fs.Int("reps", 3, "runs of each path per size (bench)")
	maxDur := fs.Duration("max-run", 15*time.Second, "hard time bound of one run")
	paths := fs.String("paths", "1,2,3,4", "paths to run (bench)")
	profile := fs.Bool("profile", false, "fetch CPU and heap profiles of the gateways (needs admin.pprof)")
	profSecs := fs.Int("profile-seconds", 8, "length of the CPU profile")
	outDir := fs.String("out", "bench-out", "directory for profiles")
	variants := fs.Int("variants", 4, "distinct signed messages per domain and size")
	halfRate := fs.Bool("half-rate", true, "also measure latency at half the gateway's rate, first size only (bench)")
	pipeline := fs.Bool("pipeline", false, "pipeline MAIL, RCPT and DATA in one write, as MTAs do (RFC 2920; bench)")
	halfDur := fs.Duration("half-rate-dur", 6*time.Second, "length of each half-rate run (bench)")
	conns := fs.Int("conns", 10000, "idle connections to hold (idle)")
	leakMsgs := fs.Int("leak-m", 20000, "messages of the long run (leak)")
	leakDur := fs.Duration("leak-dur", 45*time.Second, "time bound of the long run (leak)")
	largeOpts := addLargeFlags(fs)
	fs.BoolVar(&keepTmp, "keep", false, "keep the work directory (configs, gateway logs, decision logs)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch mode {
	case "bench":
		o := benchOptions{m: *m, mBytes: *mBytes, c: *c, k: *k, n: *n, reps: *reps, maxDur: *maxDur,
			outDir: *outDir, profile: *profile, profSecs: *profSecs, variants: *variants,
			halfRate: *halfRate, halfDur: *halfDur, pipeline: *pipeline}
		var err error
		if o.sizes, err = parseSizes(*sizes); err != nil {
			fmt.Fprintln(stderr, "mxload:", err)
			return 2
		}
		if o.paths, err = parsePaths(*paths); err != nil {
			fmt.Fprintln(stderr, "mxload:", err)
			return 2
		}
		if o.c < 1 || o.k < 1 || o.n < 1 || o.reps < 1 || o.m < 1 {
			fmt.Fprintln(stderr, "mxload: -c, -k, -n, -reps and -m must be positive")
			return 2
		}
		if err := runBench(o, stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "mxload:", err)
			return 1
		}
	case "idle":
		if err := runIdle(*conns, stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "mxload idle:", err)
			return 1
		}
	case "leak":
		if err := runLeak(*leakMsgs, *leakDur, *c, *k, *n, stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "mxload leak:", err)
			return 1
		}
	case "large":
		o, err := largeOpts()
		if err != nil {
			fmt.Fprintln(stderr, "mxload large:", err)
			return 2
		}
		if err := runLarge(o, stdout, stderr); err != nil {
			fmt.Fprintln(stderr, "mxload large:", err)
			return 1
		}
	default:
		fmt.Fprintf(stderr, "mxload: unknown mode %q (bench, idle, leak, large)\n", mode)
		return 2
	}
	return 0
}

// parseSize reads 4096, 4KiB, 64KiB, 1MiB.
func parseSize(s string) (int, error) {
	s = strings.TrimSpace(s)
	mult := 1
	for suf, m := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20, "K": 1 << 10, "M": 1 << 20} {
		if rest, ok := strings.CutSuffix(s, suf); ok {
			s, mult = rest, m
			break
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	if v > (64<<20)/mult {
		return 0, fmt.Errorf("size %q above 64 MiB", s)
	}
	return v * mult, nil
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := parseSize(f)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func parsePaths(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 1 || v > 4 {
			return nil, fmt.Errorf("bad path %q (1, 2, 3 or 4)", f)
		}
		out = append(out, v)
	}
	return out, nil
}
