package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestQuickstartConfigLoads(t *testing.T) {
	cfg, err := Load("quickstart.yaml")
	if err != nil {
		t.Fatalf("quickstart.yaml: %v", err)
	}
	if cfg.Listen[0] != "127.0.0.1:2525" || cfg.Admin.Listen != "127.0.0.1:9025" {
		t.Errorf("listen %v admin %q", cfg.Listen, cfg.Admin.Listen)
	}
	if d, ok := cfg.Domains["demo.test"]; !ok || d.Downstream[0] != "maildir:./var/delivered" {
		t.Errorf("domains %+v", cfg.Domains)
	}
	// Defaults fill what the file leaves out.
	if cfg.Limits.MaxMessageBytes != 25<<20 || cfg.Limits.MaxRecipients != 100 || cfg.Limits.CommandTimeout != 5*time.Minute {
		t.Errorf("defaults not applied: %+v", cfg.Limits)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	if _, err := Load("example.yaml"); err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
}

// TestEveryProblemReported checks that one bad file yields every problem,
// each with its key path, not just the first.
func TestEveryProblemReported(t *testing.T) {
	_, err := Load("../testdata/configs/bad.yaml")
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %v", err)
	}
	// Unknown keys are reported first (before values are decoded).
	if len(ps) != 1 || ps[0].Path != "polcy" || !strings.Contains(ps[0].Msg, `did you mean "policy"`) {
		t.Fatalf("unknown-key pass: %v", ps)
	}
}

func TestValueProblems(t *testing.T) {
	data, err := os.ReadFile("../testdata/configs/bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	fixed := strings.Replace(string(data), "polcy: {enforce: true}", "", 1)
	_, err = Parse([]byte(fixed))
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %v", err)
	}
	want := []string{
		"hostname", "listen[1]", "tls", "proxy_protocol.trusted[0]", "limits.max_recipients",
		"limits.max_line_length", "data.line_endings", "domains.corp.example.downstream",
		"domains.other.example.downstream[0]", "domains.other.example.tls", "ratelimit.redis.addrs",
		"ratelimit.limits.client_ipp", "quarantine.backend", "admin.listen",
	}
	got := map[string]bool{}
	for _, p := range ps {
		got[p.Path] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("no problem reported at %s; got:\n%v", w, ps)
		}
	}
}

func TestUnknownKeysEverywhere(t *testing.T) {
	_, err := Parse([]byte("hostname: mx.test\nlimits: {max_rcpts: 5}\ndomains:\n  a.test: {downstream: [\"h:25\"], tsl: none}\n"))
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 2 {
		t.Fatalf("want 2 problems, got %v", err)
	}
	if ps[0].Path != "limits.max_rcpts" || ps[1].Path != "domains.a.test.tsl" || ps[1].Line != 4 {
		t.Errorf("paths/lines: %+v", ps)
	}
}

func TestTypeErrors(t *testing.T) {
	_, err := Parse([]byte("hostname: mx.test\nlimits: {max_recipients: many}\ndomains: {a.test: {downstream: [\"h:25\"]}}\n"))
	if err == nil || !strings.Contains(err.Error(), "many") {
		t.Fatalf("want a type error naming the value, got %v", err)
	}
}

func TestDomainNamesNormalised(t *testing.T) {
	cfg, err := Parse([]byte("hostname: mx.test\ndomains: {Corp.Example.: {downstream: [\"h:25\"]}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.Domains["corp.example"]; !ok {
		t.Errorf("domains %v", cfg.Domains)
	}
}

func TestTLSFilesChecked(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "cert.pem")
	os.WriteFile(cert, []byte("not a cert"), 0o600)
	_, err := Parse([]byte("hostname: mx.test\ntls: {cert: " + cert + ", key: " + cert + "}\ndomains: {a.test: {downstream: [\"h:25\"]}}\n"))
	if err == nil || !strings.Contains(err.Error(), "tls: cannot load certificate") {
		t.Fatalf("got %v", err)
	}
}

func TestOversizedFileRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	os.WriteFile(p, make([]byte, maxConfigBytes+10), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v", err)
	}
}

func TestRateFinerThanMicrosecondRefused(t *testing.T) {
	_, err := Parse([]byte("hostname: mx.test\ndomains: {a.test: {downstream: [\"h:25\"]}}\nratelimit:\n  limits:\n    client_ip_bytes: {rate: 10000000000, per: 1h}\n"))
	if err == nil || !strings.Contains(err.Error(), "ratelimit.limits.client_ip_bytes") || !strings.Contains(err.Error(), "microsecond") {
		t.Fatalf("got %v", err)
	}
	if _, err := Parse([]byte("hostname: mx.test\ndomains: {a.test: {downstream: [\"h:25\"]}}\nratelimit:\n  limits:\n    client_ip_bytes: {rate: 1000000000, per: 1h}\n")); err != nil {
		t.Fatalf("1 GB/h refused: %v", err)
	}
}

func TestRuntimeProblems(t *testing.T) {
	base := "hostname: mx.test\ndomains: {a.test: {downstream: [\"h:25\"]}}\n"
	for _, tc := range []struct{ yaml, path string }{
		{"runtime: {gc_percent: 0}", "runtime.gc_percent"},
		{"runtime: {gc_percent: -2}", "runtime.gc_percent"},
		{"runtime: {gc_percent: -1, memory_limit: -1}", "runtime.gc_percent"},
		{"runtime: {memory_limit: -2}", "runtime.memory_limit"},
		{"runtime: {gc_percent: -1}", ""},
		{"runtime: {memory_limit: -1}", ""},
		{"runtime: {memory_limit: 1048576}", "runtime.memory_limit"},
		{"runtime: {gc_percent: -1, memory_limit: 1073741824}", ""},
		{"runtime: {gc_percent: 100}", ""},
	} {
		_, err := Parse([]byte(base + tc.yaml + "\n"))
		var ps Problems
		errors.As(err, &ps)
		if tc.path == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.yaml, err)
			}
			continue
		}
		if len(ps) != 1 || ps[0].Path != tc.path {
			t.Errorf("%s: want one problem at %s, got %v", tc.yaml, tc.path, err)
		}
	}
}
