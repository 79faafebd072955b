package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/policy"
)

// noConfig points --config at a file that does not exist, explicitly, to
// prove an explicit --config must load; tests otherwise rely on the default
// path being absent or valid.
func runPolicyCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runPolicy(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writePolicyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for n, body := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func emptyConfig(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "absent.yaml")
}

const cliRules = `package mxguard

# METADATA
# title: Bad HELO
# description: The client greets with a name we block.
# custom:
#   code: bad_helo
reject contains {"code": "bad_helo", "msg": "bad helo"} if input.client.helo == "bad.example"
`

const cliTests = `package mxguard_test

import data.mxguard

test_bad_helo if {
	"bad_helo" in {r.code | some r in mxguard.reject} with input as {"stage": "helo", "client": {"helo": "bad.example"}}
}
`

func TestPolicyTestCommand(t *testing.T) {
	good := writePolicyDir(t, map[string]string{"p.rego": cliRules, "p_test.rego": cliTests})
	code, out, errs := runPolicyCmd(t, "test", good, "--coverage")
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out, errs)
	}
	if !strings.Contains(out, "PASS 1/1") || !strings.Contains(out, "coverage:") {
		t.Fatalf("output: %s", out)
	}
	bad := writePolicyDir(t, map[string]string{"p.rego": cliRules, "p_test.rego": cliTests + "\ntest_wrong if false\n"})
	code, out, _ = runPolicyCmd(t, "test", bad)
	if code != 1 || !strings.Contains(out, "FAIL data.mxguard_test.test_wrong") || !strings.Contains(out, "p_test.rego:9") {
		t.Fatalf("exit %d: %s", code, out)
	}
	// No DIR: the shipped rules (the default config path may be absent).
	code, out, errs = runPolicyCmd(t, "test", "--config", writeConfig(t, ""))
	if code != 0 || !strings.Contains(out, "shipped rules: PASS") {
		t.Fatalf("shipped: exit %d: %s %s", code, out, errs)
	}
	// Explicit --config that does not exist is an error.
	if code, _, _ := runPolicyCmd(t, "test", "--config", emptyConfig(t)); code != 1 {
		t.Fatalf("missing explicit config: exit %d", code)
	}
	// A broken rules dir: exit 1 with file:line.
	broken := writePolicyDir(t, map[string]string{"p.rego": "package mxguard\nreject contains x if {\n"})
	code, _, errs = runPolicyCmd(t, "test", broken)
	if code != 1 || !strings.Contains(errs, "p.rego:") {
		t.Fatalf("broken: exit %d: %s", code, errs)
	}
}

// writeConfig writes a minimal valid config (rules: dir, or the shipped ones).
func writeConfig(t *testing.T, rules string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mxguard.yaml")
	body := "hostname: mx.test.example\ndomains:\n  corp.example:\n    downstream: [\"127.0.0.1:2525\"]\n"
	if rules != "" {
		body += "policy:\n  rules: " + rules + "\n"
	}
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyEvalInput(t *testing.T) {
	in := filepath.Join("..", "..", "testdata", "policy", "dmarc_reject.input.json")
	code, out, errs := runPolicyCmd(t, "eval", "--input", in, "--config", writeConfig(t, ""))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"input:", `"stage": "data"`, "decision: reject", "550 5.7.1 message rejected by policy: dmarc_reject",
		"dmarc_reject → reject", "DMARC failure with p=reject", "domain owner asks receivers"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runPolicyCmd(t, "eval", "--json", "--input", in, "--config", writeConfig(t, ""))
	var doc struct {
		Input    map[string]any  `json:"input"`
		Decision policy.Decision `json:"decision"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Decision.Action != "reject" || doc.Input["stage"] != "data" {
		t.Fatalf("json: exit %d: %s", code, out)
	}
	// --rules overrides.
	dir := writePolicyDir(t, map[string]string{"p.rego": cliRules})
	code, out, _ = runPolicyCmd(t, "eval", "--input", in, "--rules", dir, "--config", writeConfig(t, ""))
	if code != 0 || !strings.Contains(out, "decision: accept") {
		t.Fatalf("--rules: exit %d: %s", code, out)
	}
	// A missing message file is a clear error.
	code, _, errs = runPolicyCmd(t, "eval", "--message", "x.eml", "--ip", "192.0.2.1", "--helo", "h.example", "--mail-from", "a@example.org", "--rcpt", "b@corp.example", "--config", writeConfig(t, ""))
	if code != 1 || !strings.Contains(errs, "x.eml") {
		t.Fatalf("--message: exit %d: %s", code, errs)
	}
	if code, _, _ := runPolicyCmd(t, "eval"); code != 2 {
		t.Fatalf("no input: exit %d", code)
	}
}

// TestPolicyEvalMessage runs the gateway's real checks on a spoofed message
// against the test DNS server: DMARC fails with p=reject.
func TestPolicyEvalMessage(t *testing.T) {
	d := testenv.StartDNS(t)
	d.LoadZoneFile(t, filepath.Join("..", "..", "testdata", "zones", "gateway.test.zone"), "")
	eml := filepath.Join(t.TempDir(), "spoof.eml")
	body := "From: CEO <ceo@bank.example>\nTo: <bob@corp.example>\nSubject: wire money\n\nnow\n"
	if err := os.WriteFile(eml, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runPolicyCmd(t, "eval", "--json", "--message", eml, "--ip", "127.0.0.1", "--helo", "client.example.org",
		"--mail-from", "ceo@bank.example", "--rcpt", "bob@corp.example", "--dns", d.Addr(), "--config", writeConfig(t, ""))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var doc struct {
		Input    map[string]any  `json:"input"`
		Decision policy.Decision `json:"decision"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	auth := doc.Input["auth"].(map[string]any)
	if auth["spf"].(map[string]any)["result"] != "fail" || auth["dmarc"].(map[string]any)["result"] != "fail" {
		t.Errorf("auth facts %v", auth)
	}
	msg := doc.Input["message"].(map[string]any)
	if msg["line_endings"].(map[string]any)["bare_lf"] != true {
		t.Errorf("bare LF in the file not recorded: %v", msg["line_endings"])
	}
	if doc.Decision.Action != "reject" || len(doc.Decision.Reasons) == 0 || doc.Decision.Reasons[0].Code != "dmarc_reject" {
		t.Errorf("decision %+v", doc.Decision)
	}
}

func TestPolicyReplay(t *testing.T) {
	// Record decisions with the shipped rules into a decision log.
	e, err := policy.New(policy.Options{Enforce: true})
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	dl := policy.NewDecisionLog(&logBuf, []string{"/message/subject"})
	inputs, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "policy", "*.input.json"))
	for _, p := range inputs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		d, err := e.Eval(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		if err := dl.Log(context.Background(), policy.Entry{Decision: d}); err != nil {
			t.Fatal(err)
		}
	}
	logBuf.WriteString("not json\n")
	logFile := filepath.Join(t.TempDir(), "decisions.jsonl")
	if err := os.WriteFile(logFile, logBuf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// Same rules: nothing changes.
	code, out, errs := runPolicyCmd(t, "replay", "--log", logFile, "--config", writeConfig(t, ""))
	if code != 0 || !strings.Contains(out, "0 changed") || !strings.Contains(out, "1 lines skipped") {
		t.Fatalf("same rules: exit %d: %s %s", code, out, errs)
	}
	// Candidate: the shipped rules with dmarc_reject in dry-run mode.
	cand := t.TempDir()
	entries, _ := os.ReadDir(filepath.Join("..", "..", "rules"))
	for _, en := range entries {
		if strings.HasSuffix(en.Name(), ".rego") {
			b, _ := os.ReadFile(filepath.Join("..", "..", "rules", en.Name()))
			os.WriteFile(filepath.Join(cand, en.Name()), b, 0o644)
		}
	}
	data, _ := os.ReadFile(filepath.Join("..", "..", "rules", "data.json"))
	data = bytes.Replace(data, []byte(`"modes": {}`), []byte(`"modes": {"dmarc_reject": "dryrun"}`), 1)
	os.WriteFile(filepath.Join(cand, "data.json"), data, 0o644)
	code, out, errs = runPolicyCmd(t, "replay", "--log", logFile, "--rules", cand, "--json", "--config", writeConfig(t, ""))
	var rep replayReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("candidate: exit %d: %s %s", code, out, errs)
	}
	// dmarc_reject is now dry-run: the plain spoof is accepted, the one
	// with a dangerous attachment is quarantined.
	if rep.Transitions["reject → accept"] != 1 || rep.Transitions["reject → quarantine"] != 1 || rep.Changed != 2 {
		t.Fatalf("report: %+v", rep)
	}
	code, out, _ = runPolicyCmd(t, "replay", "--log", logFile, "--rules", cand, "--config", writeConfig(t, ""))
	if code != 0 || !strings.Contains(out, "reject → quarantine") || !strings.Contains(out, "changed decisions:") {
		t.Fatalf("text: %s", out)
	}
}
