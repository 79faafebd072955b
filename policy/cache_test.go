package policy

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	dto "github.com/prometheus/client_model/go"
)

func mailInput(t *testing.T, id string, facts map[string]any) []byte {
	t.Helper()
	in := map[string]any{
		"version": 1, "stage": "mail", "id": id, "gateway": "mx.test",
		"client":   map[string]any{"ip": "192.0.2.1", "port": 1234, "proxied": false, "helo": "a.example", "ptr": "", "ptr_result": "none"},
		"envelope": map[string]any{"mail_from": "a@example.org", "mail_from_domain": "example.org", "declared_size": 0, "smtputf8": false, "rcpt_to": []string{}},
		"auth":     map[string]any{},
	}
	if facts != nil {
		in["ratelimit"] = facts
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fact(allowed bool, remaining int) map[string]any {
	ra := 0.0
	if !allowed {
		ra = 2.5
	}
	return map[string]any{"allowed": allowed, "limit": 100, "remaining": remaining, "retry_after_s": ra, "backend_error": false}
}

// TestDecisionCache: a decision is reused for the next input that agrees on
// every fact the stage's rules read (here: the allowed flags and waits of
// the rate-limit facts, not the remaining counts), with its own id and
// input; a fact that matters changes the decision; a caller changing a
// decision it got does not change the next one.
func TestDecisionCache(t *testing.T) {
	e, err := New(Options{Enforce: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if e.cur.Load().caches["mail"] == nil {
		t.Fatal("the mail stage of the shipped rules is not cached")
	}
	ctx := context.Background()
	hits := func() float64 {
		var m dto.Metric
		if err := e.metrics.cacheHits.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}

	first, err := e.Eval(ctx, mailInput(t, "mxg-1", map[string]any{"client_ip": fact(true, 99)}))
	if err != nil || first.Action != ActionAccept || hits() != 0 {
		t.Fatalf("first: %+v %v, hits %v", first, err, hits())
	}
	second, err := e.Eval(ctx, mailInput(t, "mxg-2", map[string]any{"client_ip": fact(true, 98)}))
	if err != nil || hits() != 1 {
		t.Fatalf("second: %v, hits %v (remaining is not read: want a hit)", err, hits())
	}
	if second.ID == first.ID || second.TxnID != "mxg-2" || !json.Valid(second.Input) || string(second.Input) == string(first.Input) {
		t.Errorf("per-decision fields not refreshed: id %s/%s txn %s", first.ID, second.ID, second.TxnID)
	}
	a, b := first, second
	a.ID, b.ID, a.TxnID, b.TxnID, a.Input, b.Input, a.Duration, b.Duration = "", "", "", "", nil, nil, 0, 0
	if !reflect.DeepEqual(a, b) {
		t.Errorf("cached decision differs:\n%+v\n%+v", a, b)
	}

	limited, err := e.Eval(ctx, mailInput(t, "mxg-3", map[string]any{"client_ip": fact(false, 0)}))
	if err != nil || limited.Action != ActionTempfail || limited.Reply == nil || limited.Reply.Code != 451 {
		t.Fatalf("limited: %+v %v", limited, err)
	}
	// The caller owns what it gets: scribbling on it leaves the cache alone.
	limited.Reasons[0].Code = "scribbled"
	limited.Reply.Code = 250
	again, err := e.Eval(ctx, mailInput(t, "mxg-4", map[string]any{"client_ip": fact(false, 0)}))
	if err != nil || hits() != 2 || again.Reasons[0].Code != "ratelimit" || again.Reply.Code != 451 {
		t.Fatalf("again: %+v %v, hits %v", again, err, hits())
	}
	// A new dimension is a different input.
	if _, err := e.Eval(ctx, mailInput(t, "mxg-5", map[string]any{"client_ip": fact(true, 1), "sender": fact(true, 1)})); err != nil || hits() != 2 {
		t.Fatalf("new dimension: %v, hits %v", err, hits())
	}
}

// TestDecisionCacheNondeterministic: what makes caching safe. Clock and
// random built-ins are refused at load (so no rule can decide differently
// for the same input), and rules that print are evaluated every time so
// that their output is not swallowed.
func TestDecisionCacheNondeterministic(t *testing.T) {
	for _, rule := range []string{
		`tag contains "late" if time.now_ns() > 0`,
		`tag contains "r" if rand.intn("x", 10) > 5`,
		`tag contains "u" if uuid.rfc4122("x") != ""`,
	} {
		src, err := sourceFor("", fstest.MapFS{"p.rego": {Data: []byte("package mxguard\n\n" + rule + "\n")}}, "")
		if err == nil {
			_, err = prepare(context.Background(), src, false, 10*time.Second)
		}
		if err == nil || !strings.Contains(err.Error(), "disabled in mxguard policies") {
			t.Errorf("%s: loaded (%v), want refused", rule, err)
		}
	}
	for rule, cached := range map[string]bool{
		`tag contains "p" if { print(input.client.ip); true }`: false,
		`tag contains "x" if input.client.ip == "1.2.3.4"`:     true,
	} {
		src, err := sourceFor("", fstest.MapFS{"p.rego": {Data: []byte("package mxguard\n\n" + rule + "\n")}}, "")
		if err != nil {
			t.Fatal(err)
		}
		p, err := prepare(context.Background(), src, false, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.caches["data"] != nil; got != cached {
			t.Errorf("%s: data stage cached %v, want %v", rule, got, cached)
		}
	}
	if !deterministic(ast.NewCompiler(), ast.MustParseBody(`x := 1`)) || deterministic(ast.NewCompiler(), ast.MustParseBody(`x := time.now_ns()`)) {
		t.Error("deterministic() misjudges time.now_ns")
	}
}
