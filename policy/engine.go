package policy

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
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
	// Timeout bounds one evaluation; 0 means DefaultTimeout.
	Timeout time.Duration
	// HeaderPrefix is the only prefix add_headers may use; "" means "X-MXGuard-".
	HeaderPrefix string
	// FS overrides the embedded rules used when Dir is "" (tests).
	FS fs.FS
}

// DefaultTimeout bounds one evaluation when Options.Timeout is 0.
const DefaultTimeout = time.Second

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
	partial int // stages whose query was partially evaluated
	// stagePaths is the input a partially evaluated stage's query can
	// reach (nil: all); it is smaller than paths, e.g. only ratelimit at
	// connect with the shipped rules.
	stagePaths map[string]*inputTree
	// caches hold decisions of the stages that may be cached (see
	// decisionCache); a stage without one is evaluated every time.
	caches map[string]*decisionCache
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
	// Partial evaluation gets a budget of a few decisions' worth of time for
	// all stages together; a policy that needs more is evaluated as written.
	return prepare(ctx, src, true, 5*e.opts.Timeout)
}

// prepare compiles src, runs its tests (withTests) and prepares one query
// per stage. peBudget > 0 partially evaluates each stage's query first (see
// partialQuery); 0 prepares the queries as written (tests compare the two).
func prepare(ctx context.Context, src *policySource, withTests bool, peBudget time.Duration) (*prepared, error) {
	c, err := compileSource(src)
	if err != nil {
		return nil, err
	}
	p := &prepared{rev: src.rev, src: src, queries: map[string]rego.PreparedEvalQuery{}, meta: ruleMeta(src), modes: staticModes(src),
		stagePaths: map[string]*inputTree{}, caches: map[string]*decisionCache{}}
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
	bodies := make([]ast.Body, len(Stages))
	for i, stage := range Stages {
		bodies[i] = decisionQuery(c, stage)
	}
	p.paths = inputPaths(c, bodies...)
	var peCtx context.Context
	var skip []string
	if peBudget > 0 && p.paths != nil {
		skip = noInline(c)
		var cancel context.CancelFunc
		peCtx, cancel = context.WithTimeout(ctx, peBudget)
		defer cancel()
	}
	for i, stage := range Stages {
		body := bodies[i]
		if peCtx != nil {
			q, paths, cacheable, err := partialQuery(peCtx, src, c, store, stage, body, p.paths, skip)
			if err == nil {
				p.queries[stage] = q
				p.stagePaths[stage] = paths
				if cacheable && paths != nil {
					p.caches[stage] = newDecisionCache()
				}
				p.partial++
				continue
			}
			// Partial evaluation is only an optimisation: on any error
			// (a ground part that fails or runs out of budget, a result
			// that is not one query) the query is evaluated as written,
			// which reports the same error per decision.
		}
		q, err := rego.New(
			rego.ParsedQuery(body),
			rego.Compiler(c),
			rego.Store(store),
			rego.StoreReadAST(true),
			rego.StrictBuiltinErrors(true),
			rego.Capabilities(caps),
			rego.Schemas(inputSchemaSet),
			rego.GenerateJSON(keepAST),
		).PrepareForEval(ctx)
		if err != nil {
			return nil, fmt.Errorf("rules %s: prepare %s query: %w", src.name, stage, err)
		}
		p.queries[stage] = q
	}
	return p, nil
}

// noInline lists the single-value rules (complete rules, functions,
// object rules) that partial evaluation must not inline: those that can
// produce two different values for one input. Evaluation reports that as
// a conflict error (a 451 fail-safe); inlined into the caller, the
// definitions would become alternatives and the conflict would go unseen.
// Kept out of inlining, such a rule is copied into a support rule that
// checks for conflicts at evaluation time. Rules whose every definition
// has the same constant value (`allowed_sender if ...`, `domain_match(n, d)
// if ...`) cannot conflict and are inlined (and folded away when data
// decides them).
func noInline(c *ast.Compiler) []string {
	type group struct {
		value    *ast.Term
		mayClash bool
	}
	groups := map[string]*group{}
	var order []string
	names := make([]string, 0, len(c.Modules))
	for n := range c.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, r := range c.Modules[n].Rules {
			if r.Default || r.Head.RuleKind() != ast.SingleValue {
				continue
			}
			key := r.Ref().GroundPrefix().String()
			g := groups[key]
			if g == nil {
				g = &group{value: r.Head.Value}
				groups[key] = g
				order = append(order, key)
			}
			for x := r; x != nil; x = x.Else {
				v := x.Head.Value
				if v == nil || !v.IsGround() || !v.Equal(g.value) {
					g.mayClash = true
				}
			}
		}
	}
	var out []string
	for _, k := range order {
		if groups[k].mayClash {
			out = append(out, k)
		}
	}
	return out
}

// membersAsSets turns `x in [...]` over a constant list of strings (a data
// list folded in by partial evaluation, e.g. dangerous_content_types) into
// `x in {...}`: membership of any value in a list of strings is membership
// in the set of those strings, found by hash instead of by scanning.
func membersAsSets(m *ast.Module) {
	member := ast.Member.Ref()
	asSet := func(args []*ast.Term) {
		if len(args) != 2 {
			return
		}
		arr, ok := args[1].Value.(*ast.Array)
		if !ok || arr.Len() == 0 {
			return
		}
		elems := make([]*ast.Term, 0, arr.Len())
		for i := range arr.Len() {
			t := arr.Elem(i)
			if _, ok := t.Value.(ast.String); !ok {
				return
			}
			elems = append(elems, t)
		}
		args[1] = ast.SetTerm(elems...)
	}
	ast.WalkExprs(m, func(e *ast.Expr) bool {
		if e.IsCall() && e.Operator().Equal(member) {
			asSet(e.Operands())
		}
		return false
	})
	ast.NewGenericVisitor(func(x any) bool {
		if c, ok := x.(ast.Call); ok && len(c) > 0 {
			if r, ok := c[0].Value.(ast.Ref); ok && r.Equal(member) {
				asSet(c[1:])
			}
		}
		return false
	}).Walk(m)
}

// partialNamespace is the package of the rules partial evaluation writes.
const partialNamespace = "__mxguard_partial__"

// partialQuery partially evaluates the decision query of one stage at load
// time: input.stage is known, every other input field the rules read
// (paths) is unknown, data is known (the store of a revision never
// changes). Rules guarded by another stage disappear, data lookups and
// helper rules over data are folded (an empty allowed_senders list removes
// allowed_sender, an empty blocked list removes its rule), and what remains
// is compiled together with the original modules (rules it could not
// inline are referenced, not copied) and prepared. It also returns the
// input paths the prepared query can reach (reachablePaths), so that Eval
// converts only those.
func partialQuery(ctx context.Context, src *policySource, c *ast.Compiler, store storage.Store, stage string, body ast.Body, paths *inputTree, noInline []string) (_ rego.PreparedEvalQuery, _ *inputTree, cacheable bool, _ error) {
	var none rego.PreparedEvalQuery
	keys := make([]string, 0, len(paths.kids))
	for k := range paths.kids {
		if k != "stage" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	unknowns := make([]*ast.Term, len(keys))
	for i, k := range keys {
		unknowns[i] = ast.NewTerm(ast.InputRootRef.Append(ast.StringTerm(k)))
	}
	known := ast.NewObject(ast.Item(ast.InternedTerm("stage"), ast.StringTerm(stage)))
	pq, err := rego.New(
		rego.ParsedQuery(body),
		rego.Compiler(c),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.StrictBuiltinErrors(true),
		rego.Capabilities(caps),
		rego.PartialNamespace(partialNamespace),
		rego.DisableInlining(noInline),
		rego.ParsedInput(known),
		rego.ParsedUnknowns(unknowns),
	).Partial(ctx)
	if err != nil {
		return none, nil, false, err
	}
	if len(pq.Queries) != 1 {
		// 0: always undefined; >1: a disjunction. Both are rare enough
		// to be evaluated as written.
		return none, nil, false, fmt.Errorf("partial evaluation gave %d queries", len(pq.Queries))
	}
	// The result is `[conditions...;] __localqN__ = [sets...]`: bind the
	// array to d again for rawFromBindings. The stage guard stays in front:
	// the query of one stage given an input of another is undefined (an
	// error), as with the query as written.
	q := pq.Queries[0]
	bad := fmt.Errorf("partial evaluation gave an unexpected query %v", q)
	if len(q) == 0 || !q[len(q)-1].IsEquality() {
		return none, nil, false, bad
	}
	last := q[len(q)-1]
	lhs, rhs := last.Operand(0), last.Operand(1)
	v, ok := lhs.Value.(ast.Var)
	if _, isArr := rhs.Value.(*ast.Array); !ok || !isArr {
		return none, nil, false, bad
	}
	query := ast.NewBody(ast.Equality.Expr(ast.MustParseTerm("input.stage"), ast.StringTerm(stage)))
	for _, e := range q[:len(q)-1] {
		if e.Vars(ast.VarVisitorParams{}).Contains(v) {
			return none, nil, false, bad
		}
		query.Append(e.Copy())
	}
	query.Append(ast.Equality.Expr(ast.VarTerm("d"), rhs))
	mods := map[string]*ast.Module{}
	for n, m := range src.modules {
		if !src.tests[n] {
			mods[n] = m
		}
	}
	for i, m := range pq.Support {
		membersAsSets(m)
		mods[fmt.Sprintf("__partialsupport__%s__%d__", stage, i)] = m
	}
	pc := newCompiler()
	pc.Compile(mods)
	if pc.Failed() {
		return none, nil, false, pc.Errors
	}
	prep, err := rego.New(
		rego.ParsedQuery(query),
		rego.Compiler(pc),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.StrictBuiltinErrors(true),
		rego.Capabilities(caps),
		rego.GenerateJSON(keepAST),
	).PrepareForEval(ctx)
	if err != nil {
		return none, nil, false, err
	}
	return prep, reachablePaths(pc, query), deterministic(pc, query), nil
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
	var kb [512]byte
	rec, err := goInput(input, p.paths, p.stagePaths, p.caches, kb[:0])
	in, key := rec.in, rec.key
	var pi parsedInput
	defer pi.release()
	if errors.Is(err, errGoUnsupported) {
		// Raw JSON, an ast.Value, or a Go type the direct conversion
		// does not cover: through JSON.
		key = nil
		in, pi, err = parseInput(input)
	}
	d.Input, d.Stage, d.TxnID = in.raw, in.stage, in.id
	if err != nil {
		return fail("input", fmt.Errorf("policy input: %w", err))
	}
	paths := p.paths
	if t, ok := p.stagePaths[in.stage]; ok {
		paths = t
	}
	cache := p.caches[in.stage]
	if cache != nil && pi.fv != nil {
		if k, ok := cacheKey(append(kb[:0], 'j'), pi.fv, paths); ok {
			key = k
		}
	}
	if cache == nil || len(key) > maxCacheKey {
		key = nil
	}
	if key != nil {
		if hit, ok := cache.get(key); ok {
			hit.ID, hit.TxnID, hit.Stage, hit.Input = d.ID, d.TxnID, d.Stage, d.Input
			hit.Duration = time.Since(start)
			e.metrics.cacheHits.Inc()
			e.metrics.observe(hit.Stage, hit.Action, hit.Duration)
			return hit, nil
		}
	}
	switch {
	case pi.fv != nil:
		in.v, err = pi.convert(paths)
	case rec.rv.IsValid():
		err = rec.convert()
		in.v = rec.in.v
	}
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
	stop := func() bool { return false }
	if ctx.Done() != nil { // context.Background and TODO never end
		stop = context.AfterFunc(ctx, cancel.Cancel)
	}
	rs, err := q.Eval(ctx, rego.EvalParsedInput(in.v), rego.EvalExternalCancel(cancel), rego.EvalMetrics(opametrics.NoOp()))
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
	if key != nil {
		cache.put(key, built)
	}
	built.Duration = time.Since(start)
	e.metrics.observe(built.Stage, built.Action, built.Duration)
	return built, nil
}

// keepAST hands the query's bindings back as AST terms: rawFromBindings
// converts only the reasons (usually none) to Go values, instead of rego
// converting the whole decision document on every evaluation.
func keepAST(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }

func rawFromBindings(b rego.Vars, modes map[string]any) (rawDecision, error) {
	r := rawDecision{modes: modes}
	t, _ := b["d"].(*ast.Term)
	if t == nil {
		return r, invalid("decision document has the wrong shape")
	}
	d, ok := t.Value.(*ast.Array)
	if !ok || d.Len() != len(actionSets)+2 {
		return r, invalid("decision document has the wrong shape")
	}
	for i, s := range actionSets {
		l, err := asList(s, d.Elem(i).Value)
		if err != nil {
			return r, err
		}
		r.sets[i] = l
	}
	h, err := asList("add_headers", d.Elem(len(actionSets)).Value)
	if err != nil {
		return r, err
	}
	r.headers = h
	if m := d.Elem(len(actionSets) + 1).Value; m.Compare(ast.NullValue) != 0 {
		// The same conversion rego applies to a result (ast.JSON).
		x, err := ast.JSON(m)
		if err != nil {
			return r, invalid("modes: %v", err)
		}
		mm, ok := x.(map[string]any)
		if !ok {
			return r, invalid("modes is %T, want an object", x)
		}
		r.modes = mm
	}
	return r, nil
}

// asList converts a set (or null) of the decision document to Go values
// in the order rego's result conversion uses; an empty set allocates
// nothing.
func asList(name string, v ast.Value) ([]any, error) {
	switch x := v.(type) {
	case ast.Null:
		return nil, nil
	case ast.Set:
		if x.Len() == 0 {
			return nil, nil
		}
		out := make([]any, 0, x.Len())
		err := x.Iter(func(e *ast.Term) error {
			g, err := ast.JSON(e.Value)
			if err != nil {
				return err
			}
			out = append(out, g)
			return nil
		})
		if err != nil {
			return nil, invalid("%s: %v", name, err)
		}
		return out, nil
	}
	return nil, invalid("%s is %s, want a set", name, typeName(v))
}

// typeName names a value's type like the Go type the JSON form of it has,
// as the messages of the policy contract did before results stayed AST.
func typeName(v ast.Value) string {
	x, err := ast.JSON(v)
	if err != nil {
		return ast.ValueName(v)
	}
	return fmt.Sprintf("%T", x)
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
