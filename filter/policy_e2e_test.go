package filter_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/filter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
	"github.com/mxguard/mxguard/relay"
)

// syncBuffer is a decision log sink the test can read while the gateway writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("decision log line is not JSON: %v\n%s", err, l)
		}
		out = append(out, m)
	}
	return out
}

type policyGW struct {
	*gw
	store *quarantine.Dir
	log   *syncBuffer
	rl    *relay.Relay
}

// startPolicyGW runs the gateway with the shipped rules, a dir quarantine
// and a decision log.
func startPolicyGW(t *testing.T, enforce bool, mods ...gwOption) *policyGW {
	t.Helper()
	eng, err := policy.New(policy.Options{Enforce: enforce})
	if err != nil {
		t.Fatal(err)
	}
	store, err := quarantine.OpenDir(t.TempDir(), quarantine.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pg := &policyGW{store: store, log: &syncBuffer{}}
	mods = append([]gwOption{func(o *filter.Options, _ *gwSetup) {
		o.Policy = eng
		o.Quarantine = store
		o.DecisionLog = policy.NewDecisionLog(pg.log, []string{"/message/subject"})
	}}, mods...)
	pg.gw = startGW(t, mods...)
	return pg
}

func TestDMARCRejectSpoofGets550WithReasonCode(t *testing.T) {
	g := startPolicyGW(t, true)
	code, text := g.sendMail("ceo@bank.example", []string{"bob@corp.test"}, msg("ceo@bank.example", "bob@corp.test", "wire money", "now\r\n"))
	if code != 550 || !strings.Contains(text, "5.7.1") || !strings.Contains(text, "dmarc_reject") || !strings.Contains(text, "(id mxg-") {
		t.Fatalf("got %d %q, want 550 5.7.1 naming dmarc_reject and the id", code, text)
	}
	time.Sleep(50 * time.Millisecond)
	if g.down.Delivered() != 0 {
		t.Fatal("spoof delivered")
	}
	lines := g.log.lines(t)
	if len(lines) == 0 {
		t.Fatal("no decision log line")
	}
	last := lines[len(lines)-1]
	res := last["result"].(map[string]any)
	if res["action"] != "reject" || last["stage"] != "data" || last["revision"] == "" || last["decision_id"] == "" {
		t.Errorf("decision log line: %v", last)
	}
	in := last["input"].(map[string]any)
	if in["message"].(map[string]any)["subject"] != policy.Redacted {
		t.Errorf("masked field not redacted: %v", in["message"])
	}
}

func TestLegitimateMailDeliveredWithVerdictHeaders(t *testing.T) {
	g := startPolicyGW(t, true)
	code, text := g.sendMail("alice@example.org", []string{"bob@corp.test"}, msg("alice@example.org", "bob@corp.test", "hi", "hello\r\n"))
	if code != 250 {
		t.Fatalf("got %d %q", code, text)
	}
	data := string(g.down.WaitMessages(t, 1, 5*time.Second)[0].Data)
	for _, want := range []string{"X-MXGuard-Verdict: accept", "X-MXGuard-Decision-ID: ", "dmarc=pass", "spf=pass"} {
		if !strings.Contains(data, want) {
			t.Errorf("relayed message lacks %q:\n%s", want, data)
		}
	}
}

func TestDMARCQuarantineHeldAndReleasedOnce(t *testing.T) {
	g := startPolicyGW(t, true)
	code, text := g.sendMail("news@shop.example", []string{"bob@corp.test"}, msg("news@shop.example", "bob@corp.test", "offer", "buy\r\n"))
	if code != 250 || !strings.Contains(text, "(id mxg-") {
		t.Fatalf("got %d %q, want 250 (held)", code, text)
	}
	time.Sleep(50 * time.Millisecond)
	if g.down.Delivered() != 0 {
		t.Fatal("a quarantined message reached the downstream")
	}
	items, _, err := g.store.List(ctxT(t), quarantine.Filter{})
	if err != nil || len(items) != 1 {
		t.Fatalf("quarantine list: %v %v", items, err)
	}
	it := items[0]
	if it.Status != quarantine.StatusHeld || it.MailFrom != "news@shop.example" || len(it.Rcpts) != 1 ||
		len(it.Decision.Reasons) == 0 || it.Decision.Reasons[0].Code != "dmarc_quarantine" || it.Decision.Reasons[0].Title == "" {
		t.Fatalf("quarantine item %+v", it)
	}
	rl, err := relay.New(map[string]relay.Route{"corp.test": {Hosts: []string{g.down.Addr()}, TLS: relay.TLSNone}}, relay.Options{HeloName: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := quarantine.Release(ctxT(t), g.store, it.ID, "reviewer", rl); err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := quarantine.Release(ctxT(t), g.store, it.ID, "reviewer", rl); !errors.Is(err, quarantine.ErrNotHeld) {
		t.Fatalf("second release: %v, want ErrNotHeld", err)
	}
	got := g.down.WaitMessages(t, 1, 5*time.Second)
	time.Sleep(50 * time.Millisecond)
	if len(g.down.Messages()) != 1 {
		t.Fatalf("released %d times", len(g.down.Messages()))
	}
	data := string(got[0].Data)
	if !strings.Contains(data, "X-MXGuard-Released: by=reviewer") || strings.Count(data, "Authentication-Results: mx.test") != 1 {
		t.Errorf("released message:\n%s", data)
	}
}

func TestDryRunDeliversAndLogsWouldReject(t *testing.T) {
	g := startPolicyGW(t, false)
	code, text := g.sendMail("ceo@bank.example", []string{"bob@corp.test"}, msg("ceo@bank.example", "bob@corp.test", "x", "x\r\n"))
	if code != 250 {
		t.Fatalf("dry-run: got %d %q, want 250", code, text)
	}
	g.down.WaitMessages(t, 1, 5*time.Second)
	lines := g.log.lines(t)
	last := lines[len(lines)-1]
	res := last["result"].(map[string]any)
	if res["action"] != "accept" || res["would_action"] != "reject" || last["enforced"] != false {
		t.Errorf("decision log: %v", last)
	}
}

func TestDMARCTemperrorTempfails(t *testing.T) {
	g := startPolicyGW(t, true)
	g.dns.SetRcode("_dmarc.broken.example.", dns.TypeANY, dns.RcodeServerFailure)
	code, text := g.sendMail("a@broken.example", []string{"bob@corp.test"}, msg("a@broken.example", "bob@corp.test", "x", "x\r\n"))
	if code != 451 || !strings.Contains(text, "dmarc_temperror") {
		t.Fatalf("got %d %q, want 451 dmarc_temperror", code, text)
	}
}

func TestMissingFromRejected(t *testing.T) {
	g := startPolicyGW(t, true)
	code, text := g.sendMail("alice@example.org", []string{"bob@corp.test"}, "Subject: no from\r\n\r\nbody\r\n")
	if code != 550 || !strings.Contains(text, "from_missing") {
		t.Fatalf("got %d %q", code, text)
	}
}

func TestDangerousAttachmentQuarantined(t *testing.T) {
	g := startPolicyGW(t, true)
	eml, err := os.ReadFile(filepath.Join(rootDir(t), "testdata/messages/mime-exe-octet-stream.eml"))
	if err != nil {
		t.Skip("fixture missing")
	}
	body := strings.ReplaceAll(string(eml), "\r\n", "\n")
	body = strings.ReplaceAll(body, "\n", "\r\n")
	// Make the From one that passes DMARC, so only the attachment matters.
	body = replaceHeader(body, "From", "<alice@example.org>")
	code, text := g.sendMail("alice@example.org", []string{"bob@corp.test"}, body)
	if code != 250 {
		t.Fatalf("got %d %q", code, text)
	}
	items, _, _ := g.store.List(ctxT(t), quarantine.Filter{})
	if len(items) != 1 || items[0].Decision.Reasons[0].Code != "dangerous_attachment" {
		t.Fatalf("items %+v", items)
	}
}

// TestPolicyErrorTempfails: a rule that fails at evaluation gives 451 4.3.0,
// never an accept and never a 5xx.
func TestPolicyErrorTempfails(t *testing.T) {
	dir := t.TempDir()
	rule := "package mxguard\n\nreject contains x if {\n\tinput.stage == \"data\"\n\tx := sprintf(\"%d\", [to_number(input.message.subject)])\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "broken.rego"), []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.New(policy.Options{Dir: dir, Enforce: true})
	if err != nil {
		t.Fatal(err)
	}
	g := startGW(t, func(o *filter.Options, _ *gwSetup) { o.Policy = eng })
	code, text := g.sendMail("alice@example.org", []string{"bob@corp.test"}, msg("alice@example.org", "bob@corp.test", "not a number", "x\r\n"))
	if code != 451 || !strings.Contains(text, "4.3.0") {
		t.Fatalf("got %d %q, want 451 4.3.0", code, text)
	}
	if g.down.Delivered() != 0 {
		t.Fatal("delivered on a policy error")
	}
}

func replaceHeader(msg, name, value string) string {
	lines := strings.Split(msg, "\r\n")
	for i, l := range lines {
		if l == "" {
			break
		}
		if strings.HasPrefix(strings.ToLower(l), strings.ToLower(name)+":") {
			lines[i] = name + ": " + value
		}
	}
	return strings.Join(lines, "\r\n")
}

func rootDir(t *testing.T) string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}
