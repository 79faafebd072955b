package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	tests := []struct {
		name string
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", ms(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p90 of 1..100", ms(hundred...), 90, 90 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 of 1..100", ms(hundred...), 100, 100 * time.Millisecond},
		{"p50 of 4 is the 2nd (nearest rank)", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of 4 is the 3rd", ms(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"p99 of 10 is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"tiny p is the min", ms(5, 6, 7), 0.001, 5 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.in, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.in, tt.p, got, tt.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1}, 10},
	}
	for _, tt := range tests {
		in := append([]float64(nil), tt.in...)
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
		for i := range in {
			if in[i] != tt.in[i] {
				t.Errorf("median modified its input: %v", tt.in)
			}
		}
	}
}

func TestAggregate(t *testing.T) {
	run := func(sent int, secs float64, lat ...int) runResult {
		r := runResult{sent: sent, elapsed: time.Duration(secs * float64(time.Second)), errs: map[string]int{}}
		for _, l := range lat {
			r.latencies = append(r.latencies, time.Duration(l)*time.Millisecond)
		}
		return r
	}
	recs := []runRecord{
		{path: 1, size: 4096, res: run(100, 1, 1, 2)},   // 100/s
		{path: 1, size: 4096, res: run(100, 0.5, 1, 2)}, // 200/s
		{path: 1, size: 4096, res: run(100, 2, 1, 2)},   // 50/s
		{path: 3, size: 4096, res: run(100, 2, 10, 20), gwCPU: 500 * time.Millisecond},
		{path: 3, size: 4096, res: run(100, 4, 30, 40), gwCPU: 300 * time.Millisecond},
		{path: 3, size: 4096, res: run(100, 1, 50, 60), gwCPU: 400 * time.Millisecond},
	}
	cells := aggregate(recs, map[[2]int]int64{{3, 4096}: 2048})
	if len(cells) != 2 || cells[0].path != 1 || cells[1].path != 3 {
		t.Fatalf("cells = %+v", cells)
	}
	if cells[0].rate != 100 {
		t.Errorf("path 1 median rate = %v, want 100", cells[0].rate)
	}
	c := cells[1]
	if c.rate != 50 || c.p50 != 30 || c.p99 != 40 || c.cpuPK != 4 || c.peakRSSKB != 2048 || c.sent != 300 {
		t.Errorf("path 3 cell = %+v, want rate 50, p50 30, p99 40, cpu 4 s/1k, rss 2048, sent 300", c)
	}
	var out bytes.Buffer
	writeReport(&out, benchOptions{c: 20, k: 10, n: 10, reps: 3}, cells, time.Second)
	if !strings.Contains(out.String(), "| 4KiB | 3 mxguard, relay only | 50.0 |") || !strings.Contains(out.String(), "| 50 % |") {
		t.Errorf("report:\n%s", out.String())
	}
}

func TestProcParsing(t *testing.T) {
	stat := "4242 (mx guard (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 1000000 2000 18446744073709551615"
	got, err := parseStatCPU(stat)
	if err != nil || got != 3250*time.Millisecond {
		t.Errorf("parseStatCPU = %v, %v; want 3.25s", got, err)
	}
	if _, err := parseStatCPU("garbage"); err == nil {
		t.Error("parseStatCPU(garbage): no error")
	}
	status := "Name:\tmxguard\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n"
	if kb, err := parseStatusKB(status, "VmHWM"); err != nil || kb != 51234 {
		t.Errorf("VmHWM = %d, %v", kb, err)
	}
	if _, err := parseStatusKB(status, "VmSwap"); err == nil {
		t.Error("missing field: no error")
	}
	metrics := "# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 57\ngo_goroutines_extra 3\n"
	if v, ok := metricValue(metrics, "go_goroutines"); !ok || v != 57 {
		t.Errorf("go_goroutines = %v, %v", v, ok)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]int{"4KiB": 4096, "64KiB": 65536, "1MiB": 1 << 20, "512": 512, "2K": 2048} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-4KiB", "1GiB", "65MiB", "x"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q): no error", bad)
		}
	}
	o := benchOptions{m: 2000, mBytes: 160 << 20}
	if got := o.msgsFor(4096); got != 2000 {
		t.Errorf("msgsFor(4KiB) = %d", got)
	}
	if got := o.msgsFor(1 << 20); got != 160 {
		t.Errorf("msgsFor(1MiB) = %d", got)
	}
	if got := (benchOptions{m: 2000, mBytes: 1 << 20}).msgsFor(1 << 20); got != 50 {
		t.Errorf("msgsFor floor = %d, want 50", got)
	}
	if sizeName(4096) != "4KiB" || sizeName(1<<20) != "1MiB" || sizeName(1000) != "1000B" {
		t.Error("sizeName")
	}
}

func TestMessageSigned(t *testing.T) {
	w, err := newWorld(2)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := w.messages(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	for i, m := range msgs {
		if !bytes.HasPrefix(m.data, []byte("DKIM-Signature:")) {
			t.Errorf("message %d not signed: %.60q", i, m.data)
		}
		if n := len(m.data); n < 4096 || n > 4096+1024 {
			t.Errorf("message %d is %d bytes, want about 4096 plus the signature", i, n)
		}
	}
	if !bytes.Contains(msgs[0].data, []byte("a=rsa-sha256")) || !bytes.Contains(msgs[1].data, []byte("a=ed25519-sha256")) {
		t.Error("want RSA and Ed25519 signatures alternating")
	}
}

// TestSmoke runs a tiny benchmark end to end: the sink directly and through
// a relay-only mxguard process.
func TestSmoke(t *testing.T) {
	o := benchOptions{sizes: []int{4096}, m: 50, c: 4, k: 5, n: 2, reps: 1, maxDur: 30 * time.Second,
		paths: []int{1, 3}, variants: 1}
	var out, log bytes.Buffer
	if err := runBench(o, &out, &log); err != nil {
		t.Fatalf("runBench: %v\n%s", err, log.String())
	}
	t.Log(log.String())
	report := out.String()
	for _, want := range []string{"| 4KiB | 1 direct to sink |", "| 4KiB | 3 mxguard, relay only |"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "failures:") {
		t.Errorf("failures:\n%s\n%s", report, log.String())
	}
	for _, line := range strings.Split(report, "\n") {
		if strings.HasPrefix(line, "| 4KiB |") && !strings.HasSuffix(line, "| 50 | 0 |") {
			t.Errorf("want 50 sent, 0 failed: %s", line)
		}
	}
}

func TestParseProcIO(t *testing.T) {
	r, w, err := parseProcIO("rchar: 10\nwchar: 20\nsyscr: 7\nsyscw: 9\nread_bytes: 0\n")
	if err != nil || r != 7 || w != 9 {
		t.Fatalf("%d %d %v", r, w, err)
	}
	if _, _, err := parseProcIO("rchar: 10\n"); err == nil {
		t.Fatal("missing counters not reported")
	}
	if _, _, err := procSyscalls(os.Getpid()); err != nil {
		t.Fatalf("own /proc/PID/io: %v", err)
	}
}
