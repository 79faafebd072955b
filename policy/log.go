package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DecisionPath is the "path" of every decision-log line: the decision
// document of package mxguard.
const DecisionPath = Package + "/decision"

// Redacted replaces masked input values (OPA's mask convention).
const Redacted = "**REDACTED**"

// DecisionLog writes one JSON line per decision in OPA's decision-log shape
// (decision_id, labels, path, input, result, timestamp, metrics) plus
// mxguard's fields. It is safe for concurrent use; each line is one Write.
type DecisionLog struct {
	mu   sync.Mutex
	w    io.Writer
	mask [][]string
}

// NewDecisionLog writes to w and replaces the input values at the mask paths
// (JSON pointers into the input, e.g. "/message/subject"; a leading "/input"
// is accepted; a path through an array applies to each element) by
// "**REDACTED**".
func NewDecisionLog(w io.Writer, mask []string) *DecisionLog {
	l := &DecisionLog{w: w}
	for _, m := range mask {
		p := strings.TrimPrefix(strings.TrimPrefix(m, "/input"), "/")
		if p == "" {
			continue
		}
		segs := strings.Split(p, "/")
		for i, s := range segs {
			// RFC 6901 escapes.
			segs[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
		}
		l.mask = append(l.mask, segs)
	}
	return l
}

// Entry is one decision to log: the final decision of a transaction, or an
// early block (reject/tempfail at connect, helo, mail or rcpt).
type Entry struct {
	Decision Decision
	// Input is the evaluated input; nil uses Decision.Input (the JSON the
	// engine encoded). Raw JSON ([]byte, json.RawMessage), an ast.Value or any
	// JSON-encodable value.
	Input any
	// Err is the evaluation error, if the decision is the fail-safe tempfail.
	Err error
	// Reply is the reply the gateway actually sent (its funnel may differ
	// from the policy's, e.g. 421 at connect or 250 after quarantine); nil
	// logs Decision.Reply.
	Reply *Reply
	// Gateway labels the line (labels.id); "" uses the input's "gateway".
	Gateway string
	// Time is the decision time; zero means now.
	Time time.Time
}

type logLine struct {
	DecisionID string            `json:"decision_id"`
	Labels     map[string]string `json:"labels"`
	Path       string            `json:"path"`
	Input      json.RawMessage   `json:"input,omitempty"`
	Result     logResult         `json:"result"`
	Timestamp  string            `json:"timestamp"`
	Metrics    map[string]int64  `json:"metrics"`
	Masked     []string          `json:"masked,omitempty"`
	TxnID      string            `json:"txn_id,omitempty"`
	Stage      string            `json:"stage"`
	Revision   string            `json:"revision"`
	Enforced   bool              `json:"enforced"`
	DryRun     bool              `json:"dry_run"`
	Reply      *Reply            `json:"reply,omitempty"`
	Error      string            `json:"error,omitempty"`
}

type logResult struct {
	Action      string   `json:"action"`
	WouldAction string   `json:"would_action,omitempty"`
	Reasons     []Reason `json:"reasons"`
	DryRun      []Reason `json:"dry_run"`
	Reply       *Reply   `json:"reply,omitempty"`
	AddHeaders  []Header `json:"add_headers,omitempty"`
}

// Log writes one line for e.
func (l *DecisionLog) Log(ctx context.Context, e Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d := e.Decision
	in, masked, err := l.input(e)
	if err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	ts := e.Time
	if ts.IsZero() {
		ts = time.Now()
	}
	gw := e.Gateway
	if gw == "" {
		gw = gatewayOf(in)
	}
	line := logLine{
		DecisionID: d.ID,
		Labels:     map[string]string{"id": gw},
		Path:       DecisionPath,
		Input:      in,
		Result: logResult{Action: d.Action, WouldAction: d.WouldAction, Reasons: nonNil(d.Reasons), DryRun: nonNil(d.DryRun),
			Reply: d.Reply, AddHeaders: d.AddHeaders},
		Timestamp: ts.UTC().Format(time.RFC3339Nano),
		Metrics:   map[string]int64{"timer_rego_query_eval_ns": d.Duration.Nanoseconds()},
		Masked:    masked,
		TxnID:     d.TxnID,
		Stage:     d.Stage,
		Revision:  d.Revision,
		Enforced:  d.Enforced,
		DryRun:    !d.Enforced || len(d.DryRun) > 0,
		Reply:     d.Reply,
	}
	if e.Reply != nil {
		line.Reply = e.Reply
	}
	if e.Err != nil {
		line.Error = e.Err.Error()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(line); err != nil { // Encode appends the newline
		return fmt.Errorf("decision log: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	return nil
}

func nonNil(r []Reason) []Reason {
	if r == nil {
		return []Reason{}
	}
	return r
}

// input returns the input JSON with the mask applied.
func (l *DecisionLog) input(e Entry) (json.RawMessage, []string, error) {
	var raw []byte
	switch v := e.Input.(type) {
	case nil:
		raw = e.Decision.Input
	case []byte:
		raw = v
	case json.RawMessage:
		raw = v
	case ast.Value:
		raw = []byte(v.String()) // an ast object's string form is JSON
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, nil, err
		}
		raw = b
	}
	if len(raw) == 0 || len(l.mask) == 0 {
		return raw, nil, nil
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, err
	}
	var masked []string
	for _, m := range l.mask {
		if maskPath(doc, m) {
			masked = append(masked, "/input/"+strings.Join(m, "/"))
		}
	}
	if len(masked) == 0 {
		return raw, nil, nil
	}
	b, err := json.Marshal(doc)
	return b, masked, err
}

// maskPath replaces the value at path (descending into every element of an
// array on the way) and reports whether anything was replaced.
func maskPath(doc any, path []string) bool {
	switch v := doc.(type) {
	case map[string]any:
		x, ok := v[path[0]]
		if !ok {
			return false
		}
		if len(path) == 1 {
			v[path[0]] = Redacted
			return true
		}
		return maskPath(x, path[1:])
	case []any:
		hit := false
		for i := range v {
			if maskPath(v[i], path) {
				hit = true
			}
		}
		return hit
	}
	return false
}

func gatewayOf(in []byte) string {
	if len(in) == 0 {
		return ""
	}
	p := parserPool.Get()
	defer parserPool.Put(p)
	v, err := p.ParseBytes(in)
	if err != nil {
		return ""
	}
	return string(v.GetStringBytes("gateway"))
}
