package policy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer lets the test read what concurrent Log calls wrote.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func TestDecisionLogShapeAndMask(t *testing.T) {
	e := shippedEngine(t)
	in, err := os.ReadFile("../testdata/policy/dangerous_attachment.input.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Eval(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	l := NewDecisionLog(&buf, []string{"/message/subject", "/input/message/attachments/filename", "/envelope/rcpt_to", "/no/such/field"})
	ts := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	if err := l.Log(context.Background(), Entry{Decision: d, Time: ts}); err != nil {
		t.Fatal(err)
	}
	if strings.Count(buf.String(), "\n") != 1 || !strings.HasSuffix(buf.String(), "\n") {
		t.Fatalf("not one line: %q", buf.String())
	}
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"decision_id", "labels", "path", "input", "result", "timestamp", "metrics", "txn_id", "stage", "revision", "enforced", "dry_run", "masked"} {
		if _, ok := line[k]; !ok {
			t.Errorf("line lacks %q", k)
		}
	}
	if line["path"] != "mxguard/decision" || line["timestamp"] != "2026-11-27T10:00:00Z" || line["decision_id"] != d.ID || line["txn_id"] != "mxg-5f2c9a1e7b3d" {
		t.Errorf("line %v", line)
	}
	if line["labels"].(map[string]any)["id"] != "mx1.corp.example" {
		t.Errorf("labels %v", line["labels"])
	}
	if _, ok := line["metrics"].(map[string]any)["timer_rego_query_eval_ns"]; !ok {
		t.Errorf("metrics %v", line["metrics"])
	}
	input := line["input"].(map[string]any)
	msg := input["message"].(map[string]any)
	if msg["subject"] != Redacted || input["envelope"].(map[string]any)["rcpt_to"] != Redacted {
		t.Errorf("not masked: %v", input)
	}
	for _, a := range msg["attachments"].([]any) {
		if a.(map[string]any)["filename"] != Redacted || a.(map[string]any)["size"] == nil {
			t.Errorf("attachment not masked: %v", a)
		}
	}
	if strings.Contains(buf.String(), "Invoice.PDF.exe\"}") || strings.Contains(buf.String(), "Q4 invoice") {
		t.Errorf("masked value leaked into the input: %s", buf.String())
	}
	res := line["result"].(map[string]any)
	if res["action"] != "quarantine" || len(res["reasons"].([]any)) != 1 {
		t.Errorf("result %v", res)
	}
	// Numbers survive masking unchanged.
	if input["message"].(map[string]any)["size"].(float64) != 5310 {
		t.Errorf("size %v", input["message"])
	}
}

func TestDecisionLogErrorAndDryRun(t *testing.T) {
	var buf bytes.Buffer
	l := NewDecisionLog(&buf, nil)
	e := newEngine(t, Options{Enforce: false})
	b, _ := os.ReadFile("../testdata/policy/dmarc_reject.input.json")
	d, err := e.Eval(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Log(context.Background(), Entry{Decision: d, Gateway: "gw1"}); err != nil {
		t.Fatal(err)
	}
	bad, evalErr := e.Eval(context.Background(), []byte(`{"stage":"nope"}`))
	if err := l.Log(context.Background(), Entry{Decision: bad, Err: evalErr}); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&buf)
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	r := lines[0]["result"].(map[string]any)
	if lines[0]["dry_run"] != true || lines[0]["enforced"] != false || r["action"] != "accept" || r["would_action"] != "reject" || lines[0]["labels"].(map[string]any)["id"] != "gw1" {
		t.Errorf("dry-run line %v", lines[0])
	}
	if !strings.Contains(lines[1]["error"].(string), "stage") || lines[1]["result"].(map[string]any)["action"] != "tempfail" {
		t.Errorf("error line %v", lines[1])
	}
	if rep := lines[1]["reply"].(map[string]any); rep["code"].(float64) != 451 || rep["enhanced"] != "4.3.0" {
		t.Errorf("error reply %v", rep)
	}
}

func TestDecisionLogConcurrent(t *testing.T) {
	e := shippedEngine(t)
	w := &lockedBuffer{}
	l := NewDecisionLog(w, []string{"/message/subject"})
	in := benchTxn()
	in.Message.Subject = "line\r\nX-Injected: yes" // hostile input stays inside its JSON string
	var wg sync.WaitGroup
	const n, per = 8, 50
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				d, err := e.Eval(context.Background(), &in)
				if err != nil {
					t.Error(err)
					return
				}
				if err := l.Log(context.Background(), Entry{Decision: d}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(w.b.String(), "\n"), "\n")
	if len(lines) != n*per {
		t.Fatalf("%d lines, want %d", len(lines), n*per)
	}
	ids := map[string]bool{}
	for _, ln := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("bad line %q: %v", ln, err)
		}
		ids[m["decision_id"].(string)] = true
	}
	if len(ids) != n*per {
		t.Fatalf("decision ids not unique: %d", len(ids))
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestDecisionLogWriteError(t *testing.T) {
	l := NewDecisionLog(failWriter{}, nil)
	if err := l.Log(context.Background(), Entry{Decision: Decision{ID: "x"}}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err %v", err)
	}
}
