package policy

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/mxguard/mxguard/rules"
)

// Stages the engine prepares a query for, in order.
var Stages = []string{"connect", "helo", "mail", "rcpt", "data"}

// Options configure an Engine.
type Options struct {
	// Dir is the rules directory; "" uses the shipped rules (rules.FS).
	Dir string
	// AllowFile is a JSON list of allowed senders (addresses or @domains)
	// merged into data.mxguard.allowed_senders. A missing file is an empty list.
	AllowFile string
	// Enforce false runs the whole policy in dry-run: reasons are reported
	// in Decision.DryRun and the action is accept.
	Enforce bool
	// Timeout bounds one evaluation; 0 means 200ms.
	Timeout time.Duration
	// HeaderPrefix is the only prefix add_headers may use; "" means "X-MXGuard-".
	HeaderPrefix string
	// FS overrides the embedded rules used when Dir is "" (tests).
	FS fs.FS
}

// DefaultTimeout bounds one evaluation when Options.Timeout is 0.
const DefaultTimeout = 200 * time.Millisecond

// DefaultHeaderPrefix is the prefix of headers the policy may add.
const DefaultHeaderPrefix = "X-MXGuard-"

// Engine evaluates the Rego policy. It is safe for concurrent use; Reload
// swaps the prepared queries atomically.
type Engine struct {
	opts    Options
	cur     atomic.Pointer[prepared]
	mu      sync.Mutex // serialises reloads
	metrics *metrics
}

// prepared is one compiled, tested policy revision.
type prepared struct {
	rev     string
	src     *policySource
	queries map[string]rego.PreparedEvalQuery
	meta    map[string]ruleInfo
	modes   map[string]any // data.mxguard.modes from data files
	paths   *inputTree     // the input the rules read; nil: all
	tests   int
}

// New compiles the rules, runs their own *_test.rego tests and prepares one
// query per stage. It refuses rules that fail to compile (with file:line),
// use a disabled built-in, read an input field the schema does not have, or
// fail a test.
func New(opts Options) (*Engine, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.HeaderPrefix == "" {
		opts.HeaderPrefix = DefaultHeaderPrefix
	}
	if opts.FS == nil {
		opts.FS = rules.FS
	}
	e := &Engine{opts: opts, metrics: newMetrics()}
	p, err := e.load(context.Background())
	if err != nil {
		return nil, err
	}
	e.cur.Store(p)
	e.metrics.setRevision(p.rev)
	return e, nil
}

// load reads, compiles, tests and prepares the configured rules.
func (e *Engine) load(ctx context.Context) (*prepared, error) {
	src, err := sourceFor(e.opts.Dir, e.opts.FS, e.opts.AllowFile)
	if err != nil {
		return nil, err
	}
	return prepare(ctx, src, true)
}

func prepare(ctx context.Context, src *policySource, withTests bool) (*prepared, error) {
	c, err := compileSource(src)
	if err != nil {
		return nil, err
	}
	p := &prepared{rev: src.rev, src: src, queries: map[string]rego.PreparedEvalQuery{}, meta: ruleMeta(src), modes: staticModes(src)}
	if withTests {
		res, err := runTests(ctx, src, 10*time.Second, nil)
		if err != nil {
			return nil, err
		}
		if err := testFailure(src.name, res); err != nil {
			return nil, err
		}
		p.tests = len(res)
	}
	store := newStore(src.data)
	var bodies []ast.Body
	for _, stage := range Stages {
		body := decisionQuery(c, stage)
		bodies = append(bodies, body)
		q, err := rego.New(
			rego.ParsedQuery(body),
			rego.Compiler(c),
			rego.Store(store),
			rego.StoreReadAST(true),
			rego.StrictBuiltinErrors(true),
			rego.Capabilities(caps),
			rego.Schemas(inputSchemaSet),
		).PrepareForEval(ctx)
		if err != nil {
			return nil, fmt.Errorf("rules %s: prepare %s query: %w", src.name, stage, err)
		}
		p.queries[stage] = q
	}
	p.paths = inputPaths(c, bodies...)
	return p, nil
}

// staticModes returns data.mxguard.modes from the data files, or nil.
func staticModes(src *policySource) map[string]any {
	mx, _ := src.data[Package].(map[string]any)
	m, _ := mx["modes"].(map[string]any)
	return m
}

// decisionQuery is the query of one stage over the decision document: the
// stage guard (an input of another stage makes it undefined, an error) and
// one expression binding d to [reject, tempfail, quarantine, tag,
// add_headers, modes]. An action set the rules do not define is the empty
// set, so a policy may use only some of them. modes usually lives in a data
// file and is read once at load time (staticModes); only a rule named modes
// is evaluated per decision. One expression and one binding keep rego's
// per-result bookkeeping (expression values, JSON conversion) small.
func decisionQuery(c *ast.Compiler, stage string) ast.Body {
	var parts []string
	for _, s := range append(append([]string{}, actionSets...), "add_headers", "modes") {
		ref := ast.MustParseRef("data." + Package + "." + s)
		switch {
		case len(c.GetRulesExact(ref)) > 0:
			parts = append(parts, ref.String())
		case s == "modes":
			parts = append(parts, "null")
		default:
			parts = append(parts, "set()")
		}
	}
	q := fmt.Sprintf("input.stage == %q\nd := [%s]", stage, strings.Join(parts, ", "))
	return ast.MustParseBodyWithOpts(q, ast.ParserOptions{RegoVersion: ast.RegoV1})
}

// ruleMeta maps reason codes to the title and description of the rule that
// declares them in its METADATA: custom.code (a string) or custom.codes (a
// list). The rule's own title is used; the description may be folded YAML.
func ruleMeta(src *policySource) map[string]ruleInfo {
	out := map[string]ruleInfo{}
	names := make([]string, 0, len(src.modules))
	for n := range src.modules {
		if !src.tests[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		for _, a := range src.modules[n].Annotations {
			for _, code := range annotationCodes(a) {
				if _, dup := out[code]; !dup {
					out[code] = ruleInfo{title: a.Title, description: strings.TrimSpace(a.Description)}
				}
			}
		}
	}
	return out
}

func annotationCodes(a *ast.Annotations) []string {
	if a == nil || a.Custom == nil {
		return nil
	}
	var out []string
	if s, ok := a.Custom["code"].(string); ok {
		out = append(out, s)
	}
	if l, ok := a.Custom["codes"].([]any); ok {
		for _, x := range l {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// Revision is a short hash of the rule and data files (and the allow file)
// of the policy in use.
func (e *Engine) Revision() string { return e.cur.Load().rev }

// Enforced reports whether the engine enforces decisions (Options.Enforce).
func (e *Engine) Enforced() bool { return e.opts.Enforce }

// Explain returns the METADATA title and description of a reason code, for
// tools that show recorded decisions.
func (e *Engine) Explain(code string) (title, description string) {
	m := e.cur.Load().meta[code]
	return m.title, m.description
}

// Reload reads the rules again. New rules must compile and pass their own
// tests; otherwise they are refused, the old rules stay and the error says
// why. The swap is atomic: evaluations in flight finish on the old rules.
func (e *Engine) Reload() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, err := e.load(context.Background())
	if err != nil {
		e.metrics.reloads.WithLabelValues("refused").Inc()
		return fmt.Errorf("policy reload refused, keeping revision %s: %w", e.Revision(), err)
	}
	e.cur.Store(p)
	e.metrics.reloads.WithLabelValues("ok").Inc()
	e.metrics.setRevision(p.rev)
	return nil
}

// Eval decides one stage of a transaction. input is the transaction record
// (anything that encodes to the input JSON, e.g. *filter.Transaction), raw
// JSON ([]byte, json.RawMessage) or an ast.Value; its "stage" picks the
// query.
//
// On any error — bad input, evaluation error, timeout, undefined or invalid
// decision — Eval returns the error together with a tempfail Decision
// carrying ErrorReply (451 4.3.0), never an accept.
func (e *Engine) Eval(ctx context.Context, input any) (Decision, error) {
	start := time.Now()
	p := e.cur.Load()
	d := Decision{ID: newID(), Revision: p.rev, Enforced: e.opts.Enforce, Reasons: []Reason{}, DryRun: []Reason{}}
	fail := func(kind string, err error) (Decision, error) {
		d.Action = ActionTempfail
		d.WouldAction = ""
		d.Reasons, d.DryRun, d.AddHeaders = []Reason{}, []Reason{}, nil
		rep := ErrorReply
		d.Reply = &rep
		d.Duration = time.Since(start)
		e.metrics.errors.WithLabelValues(kind).Inc()
		e.metrics.observe(d.Stage, d.Action, d.Duration)
		return d, err
	}
	in, err := toInput(input, p.paths)
	d.Input, d.Stage, d.TxnID = in.raw, in.stage, in.id
	if err != nil {
		return fail("input", fmt.Errorf("policy input: %w", err))
	}
	q, ok := p.queries[d.Stage]
	if !ok {
		return fail("input", fmt.Errorf("policy input: stage %q is not one of %s", d.Stage, strings.Join(Stages, ", ")))
	}
	// The deadline cancels evaluation through a timer rather than the
	// goroutine per query rego starts for a context with a deadline.
	cancel := topdown.NewCancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(e.opts.Timeout, func() { timedOut.Store(true); cancel.Cancel() })
	stop := context.AfterFunc(ctx, cancel.Cancel)
	rs, err := q.Eval(ctx, rego.EvalParsedInput(in.v), rego.EvalExternalCancel(cancel))
	timer.Stop()
	stop()
	if err != nil {
		if timedOut.Load() {
			return fail("timeout", fmt.Errorf("policy eval %s: timed out after %v: %w", d.Stage, e.opts.Timeout, err))
		}
		if ctx.Err() != nil {
			return fail("canceled", fmt.Errorf("policy eval %s: %w", d.Stage, ctx.Err()))
		}
		return fail("eval", fmt.Errorf("policy eval %s: %w", d.Stage, err))
	}
	if len(rs) == 0 {
		return fail("undefined", fmt.Errorf("policy eval %s: undefined decision", d.Stage))
	}
	rawd, err := rawFromBindings(rs[0].Bindings, p.modes)
	if err != nil {
		return fail("invalid", fmt.Errorf("policy eval %s: %w", d.Stage, err))
	}
	built, err := build(rawd, e.opts.Enforce, e.opts.HeaderPrefix, p.meta)
	if err != nil {
		return fail("invalid", fmt.Errorf("policy eval %s: %w", d.Stage, err))
	}
	built.ID, built.TxnID, built.Stage, built.Revision, built.Input = d.ID, d.TxnID, d.Stage, d.Revision, d.Input
	built.Duration = time.Since(start)
	e.metrics.observe(built.Stage, built.Action, built.Duration)
	return built, nil
}

func rawFromBindings(b rego.Vars, modes map[string]any) (rawDecision, error) {
	r := rawDecision{sets: map[string][]any{}, modes: modes}
	d, ok := b["d"].([]any)
	if !ok || len(d) != len(actionSets)+2 {
		return r, invalid("decision document has the wrong shape")
	}
	for i, s := range actionSets {
		l, err := asList(s, d[i])
		if err != nil {
			return r, err
		}
		r.sets[s] = l
	}
	h, err := asList("add_headers", d[len(actionSets)])
	if err != nil {
		return r, err
	}
	r.headers = h
	if m := d[len(actionSets)+1]; m != nil {
		mm, ok := m.(map[string]any)
		if !ok {
			return r, invalid("modes is %T, want an object", m)
		}
		r.modes = mm
	}
	return r, nil
}

func asList(name string, v any) ([]any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return x, nil
	}
	return nil, invalid("%s is %T, want a set", name, v)
}

func stageAndID(obj ast.Object) (stage, id string) {
	if t := obj.Get(ast.InternedTerm("stage")); t != nil {
		if s, ok := t.Value.(ast.String); ok {
			stage = string(s)
		}
	}
	if t := obj.Get(ast.InternedTerm("id")); t != nil {
		if s, ok := t.Value.(ast.String); ok {
			id = string(s)
		}
	}
	return stage, id
}

// newID returns a random UUID (version 4), the shape of OPA decision ids.
// Ids need to be unique, not secret: math/rand/v2's generator (ChaCha8,
// seeded from the OS) avoids a getrandom call per decision.
func newID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// Tests runs the Rego unit tests of the policy in use again and returns the
// results (the engine already refused rules whose tests fail).
func (e *Engine) Tests(ctx context.Context) ([]TestResult, error) {
	return runTests(ctx, e.cur.Load().src, 30*time.Second, nil)
}
