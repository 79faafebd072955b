package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/config"
)

// TestLarge runs `mxload large` end to end at a small size: 8 sessions ×
// 2 MiB at once against a 4 MiB budget, then the SIGKILL round. Every
// check must pass: all messages delivered, growth within the limit, spool
// files seen and none left, the crash's files removed by the restart.
func TestLarge(t *testing.T) {
	o := largeOptions{conns: 8, size: 2 << 20, budget: 4 << 20, spoolMem: 1 << 20, maxDur: 60 * time.Second, crash: true}
	var out, log bytes.Buffer
	if err := runLarge(o, &out, &log); err != nil {
		t.Fatalf("runLarge: %v\n%s\n%s", err, out.String(), log.String())
	}
	report := out.String()
	t.Log(report)
	for _, want := range []string{
		"| messages accepted at the sink | 8 of 8 |",
		"| spool files left after the sessions closed | 0 |",
		"| when SIGKILLed | 8 |",
		"| after the kill | 8 |",
		"| after the restart on the same spool_dir | 0 |",
		`restart log: "removed spool files left by a crash" count=8`,
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(report, "FAIL") {
		t.Errorf("a check failed:\n%s", report)
	}
	if got := strings.Count(report, "  PASS "); got != 7 {
		t.Errorf("%d PASS lines, want 7", got)
	}
}

// TestLargeChecks: the verdicts that decide the exit status.
func TestLargeChecks(t *testing.T) {
	good := largeReport{
		o:             largeOptions{conns: 10, size: 1 << 20, budget: 8 << 20},
		r1:            largeRoundResult{delivered: 10},
		sinkDelivered: 10,
		rssBefore:     40 << 10,
		hwm:           (40 << 10) + (8 << 10) + 10*128 + (32 << 10), // exactly at the limit, in kB
		maxFiles:      10,
		crashRan:      true,
		filesAtKill:   10, filesAfter: 10, filesRestart: 0, removedLogged: 10,
	}
	failing := func(r largeReport) []string {
		var out []string
		for _, c := range r.checks() {
			if !c.ok {
				out = append(out, c.text)
			}
		}
		return out
	}
	if f := failing(good); len(f) > 0 {
		t.Fatalf("good report fails: %v", f)
	}
	tests := []struct {
		name string
		edit func(*largeReport)
		want string
	}{
		{"one message missing at the sink", func(r *largeReport) { r.sinkDelivered = 9 }, "are at the sink (9)"},
		{"one message neither delivered nor tempfailed", func(r *largeReport) { r.r1.delivered = 9; r.sinkDelivered = 9 }, "9 of 10 answered 250"},
		{"a tempfail is not a loss", func(r *largeReport) { r.r1.delivered = 9; r.sinkDelivered = 9; r.r1.tempfailed = 1 }, ""},
		{"1 kB over the limit", func(r *largeReport) { r.hwm++ }, "peak RSS − before"},
		{"nothing spilled", func(r *largeReport) { r.maxFiles = 0 }, "up to 0 files"},
		{"a file left", func(r *largeReport) { r.filesLeft = 1 }, "left after every session closed: 1"},
		{"unreadable spool dir", func(r *largeReport) { r.filesLeft = -1 }, "left after every session closed: -1"},
		{"kill left nothing to recover", func(r *largeReport) { r.filesAfter = 0; r.removedLogged = 0 }, "left by the SIGKILL: 0"},
		{"restart kept files", func(r *largeReport) { r.filesRestart = 3 }, "after the restart: 3"},
		{"restart did not log", func(r *largeReport) { r.removedLogged = -1 }, "count=-1 (want 10)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good
			tt.edit(&r)
			f := failing(r)
			if tt.want == "" {
				if len(f) != 0 {
					t.Errorf("failing checks = %q, want none", f)
				}
				return
			}
			if len(f) != 1 || !strings.Contains(f[0], tt.want) {
				t.Errorf("failing checks = %q, want one containing %q", f, tt.want)
			}
		})
	}
}

// TestLargeConfig: the edited gateway config is one mxguard accepts, with
// the scenario's budget, spool and limits.
func TestLargeConfig(t *testing.T) {
	spec := gwSpec{dnsAddr: "127.0.0.1:5353", sinkAddr: "127.0.0.1:2525"}
	o := largeOptions{conns: 200, size: 10 << 20, budget: 64 << 20, spoolMem: 1 << 20}
	text, err := largeConfig(spec, o, "/tmp/x/large-spool", "/tmp/x/gw-1", "127.0.0.1:2500", "127.0.0.1:2501")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("config.Parse: %v\n%s", err, text)
	}
	if cfg.Data.MemoryBudget != 64<<20 || cfg.Data.SpoolMemory != 1<<20 || cfg.Data.SpoolDir != "/tmp/x/large-spool" {
		t.Errorf("data = %+v", cfg.Data)
	}
	if cfg.Limits.MaxConns < 200 || cfg.Limits.MaxConnsPerIP < 200 || cfg.Limits.MaxMessageBytes < 10<<20 {
		t.Errorf("limits = %+v", cfg.Limits)
	}
	if cfg.Runtime.MemoryLimit != o.memoryLimit() || cfg.Runtime.MemoryLimit < cfg.Data.MemoryBudget {
		t.Errorf("runtime.memory_limit %d, want %d", cfg.Runtime.MemoryLimit, o.memoryLimit())
	}
	if cfg.Log.Level != "info" {
		t.Errorf("log level %q: the spool clean-up line would not be logged", cfg.Log.Level)
	}
	if _, err := replaceLine("a: 1\nb: 2\n", "c:", "c: 3"); err == nil {
		t.Error("replaceLine: missing line not reported")
	}
	if _, err := replaceLine("a: 1\na: 2\n", "a:", "a: 3"); err == nil {
		t.Error("replaceLine: duplicate line not reported")
	}
}

func TestRemovedCount(t *testing.T) {
	log := `{"time":"x","level":"INFO","msg":"listening","addr":"127.0.0.1:1"}
{"time":"x","level":"INFO","msg":"removed spool files left by a crash","count":200}
`
	if got := removedCount([]byte(log)); got != 200 {
		t.Errorf("removedCount = %d, want 200", got)
	}
	if got := removedCount([]byte(`{"msg":"listening"}` + "\nnot json\n")); got != -1 {
		t.Errorf("removedCount without the line = %d, want -1", got)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"64MiB": 64 << 20, "1GiB": 1 << 30, "4096": 4096, "2K": 2048} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1MiB", "65GiB", "x"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q): no error", bad)
		}
	}
}
