package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/util"
	"go.yaml.in/yaml/v3"

	"github.com/mxguard/mxguard/rules"
)

// InputSchema is the JSON Schema of the policy input (policy/schema/input.json),
// given to the Rego compiler so that a rule reading a field that does not
// exist fails to load.
//
//go:embed schema/input.json
var InputSchema []byte

// Package is the Rego package policies are written in.
const Package = "mxguard"

// Bounds on what a rules directory may hold.
const (
	maxPolicyFiles    = 1000
	maxPolicyFileSize = 8 << 20
	maxAllowFileSize  = 8 << 20
)

// disabledBuiltins are refused on top of every built-in OPA marks
// nondeterministic: a policy sees only input and data. Network (http.send,
// net.lookup_ip_addr), runtime (opa.runtime), clock and randomness would make
// decisions slow, unrepeatable (replay) or a way out of the sandbox.
var disabledBuiltins = []string{
	"http.send", "net.lookup_ip_addr", "opa.runtime", "time.now_ns", "rand.intn",
	"uuid.rfc4122", "io.jwt.decode_verify", "io.jwt.encode_sign", "io.jwt.encode_sign_raw",
	"crypto.x509.parse_and_verify_certificates",
	"crypto.x509.parse_and_verify_certificates_with_options", "providers.aws.sign_req",
	"trace",
}

// policyCapabilities returns OPA's capabilities minus the disabled built-ins,
// and the set of names removed.
func policyCapabilities() (*ast.Capabilities, map[string]bool) {
	caps := ast.CapabilitiesForThisVersion()
	removed := map[string]bool{}
	for _, n := range disabledBuiltins {
		removed[n] = true
	}
	kept := caps.Builtins[:0]
	for _, b := range caps.Builtins {
		if b.Nondeterministic {
			removed[b.Name] = true
		}
		if removed[b.Name] {
			continue
		}
		kept = append(kept, b)
	}
	caps.Builtins = kept
	caps.AllowNet = []string{} // no remote schemas or bundles either
	return caps, removed
}

var (
	caps, removedBuiltins = policyCapabilities()
	inputSchemaSet        = mustSchemaSet()
)

func mustSchemaSet() *ast.SchemaSet {
	var schema any
	if err := util.UnmarshalJSON(InputSchema, &schema); err != nil {
		panic("policy: bad embedded input schema: " + err.Error())
	}
	ss := ast.NewSchemaSet()
	ss.Put(ast.SchemaRootRef, schema)
	return ss
}

// policySource is one rules directory (or the embedded default) read into
// memory: the hash covers exactly what was compiled.
type policySource struct {
	name    string                 // for messages: the directory, or "embedded"
	modules map[string]*ast.Module // path → module (tests included)
	tests   map[string]bool        // path is a *_test.rego file
	data    map[string]any
	rev     string
}

// readSource reads every .rego, .json, .yaml and .yml file under fsys (hidden
// files and directories skipped), like `opa eval -d DIR`: a data file's
// content is placed at the document path of its directory. display turns an
// fs path into the name used in messages.
func readSource(fsys fs.FS, name string, display func(string) string, allowFile string) (*policySource, error) {
	src := &policySource{name: name, modules: map[string]*ast.Module{}, tests: map[string]bool{}, data: map[string]any{}}
	h := sha256.New()
	var paths []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		base := d.Name()
		if p != "." && (strings.HasPrefix(base, ".") || strings.HasPrefix(base, "..")) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		switch path.Ext(base) {
		case ".rego", ".json", ".yaml", ".yml":
		default:
			return nil
		}
		if !d.Type().IsRegular() {
			// A symlink to a regular file is read (Kubernetes mounts
			// ConfigMap files as symlinks into ..data); anything else is
			// skipped.
			st, err := fs.Stat(fsys, p)
			if err != nil || !st.Mode().IsRegular() {
				return nil
			}
		}
		paths = append(paths, p)
		if len(paths) > maxPolicyFiles {
			return fmt.Errorf("more than %d policy files", maxPolicyFiles)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read rules %s: %w", name, err)
	}
	sort.Strings(paths)
	rego := 0
	for _, p := range paths {
		b, err := readBounded(fsys, p, maxPolicyFileSize)
		if err != nil {
			return nil, fmt.Errorf("read rules %s: %w", display(p), err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		dn := display(p)
		if strings.HasSuffix(p, ".rego") {
			rego++
			m, err := ast.ParseModuleWithOpts(dn, string(b), ast.ParserOptions{ProcessAnnotation: true, RegoVersion: ast.RegoV1})
			if err != nil {
				return nil, err
			}
			src.modules[dn] = m
			src.tests[dn] = strings.HasSuffix(p, "_test.rego")
			continue
		}
		var doc any
		if strings.HasSuffix(p, ".json") {
			err = util.UnmarshalJSON(b, &doc)
		} else {
			err = yaml.Unmarshal(b, &doc)
			if err == nil {
				doc, err = roundTrip(doc)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dn, err)
		}
		if doc == nil {
			continue
		}
		var at []string
		if dir := path.Dir(p); dir != "." {
			at = strings.Split(dir, "/")
		}
		if err := mergeAt(src.data, at, doc); err != nil {
			return nil, fmt.Errorf("%s: %w", dn, err)
		}
	}
	if rego == 0 {
		return nil, fmt.Errorf("rules %s: no .rego files", name)
	}
	if allowFile != "" {
		b, err := os.ReadFile(allowFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// A missing allow file is an empty list: it is created by the
			// first `quarantine release --allow-sender`.
		case err != nil:
			return nil, fmt.Errorf("allow file: %w", err)
		case len(b) > maxAllowFileSize:
			return nil, fmt.Errorf("allow file %s: larger than %d bytes", allowFile, maxAllowFileSize)
		default:
			fmt.Fprintf(h, "allow\x00%d\x00", len(b))
			h.Write(b)
			if err := mergeAllowList(src.data, allowFile, b); err != nil {
				return nil, err
			}
		}
	}
	src.rev = hex.EncodeToString(h.Sum(nil))[:16]
	return src, nil
}

func readBounded(fsys fs.FS, p string, max int64) ([]byte, error) {
	f, err := fsys.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return b, nil
}

// roundTrip turns YAML-decoded data into JSON-shaped data (json.Number, string keys).
func roundTrip(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var out any
	return out, util.UnmarshalJSON(b, &out)
}

// mergeAt deep-merges doc into root at the path at; two files setting the
// same leaf is an error.
func mergeAt(root map[string]any, at []string, doc any) error {
	cur := root
	for i, k := range at {
		next, ok := cur[k]
		if !ok {
			m := map[string]any{}
			cur[k] = m
			cur = m
			continue
		}
		m, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("data path %s conflicts with a value", strings.Join(at[:i+1], "."))
		}
		cur = m
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		if len(at) == 0 {
			return errors.New("a data file at the rules root must hold an object")
		}
		return fmt.Errorf("data file must hold an object")
	}
	return mergeObj(cur, obj, strings.Join(at, "."))
}

func mergeObj(dst, src map[string]any, where string) error {
	for k, v := range src {
		p := strings.TrimPrefix(where+"."+k, ".")
		old, ok := dst[k]
		if !ok {
			dst[k] = v
			continue
		}
		om, ok1 := old.(map[string]any)
		nm, ok2 := v.(map[string]any)
		if !ok1 || !ok2 {
			return fmt.Errorf("data %s is set by two files", p)
		}
		if err := mergeObj(om, nm, p); err != nil {
			return err
		}
	}
	return nil
}

// mergeAllowList adds the allow file's entries (a JSON array of addresses
// and @domains) to data.mxguard.allowed_senders.
func mergeAllowList(data map[string]any, name string, b []byte) error {
	var list []string
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &list); err != nil {
			return fmt.Errorf("allow file %s: want a JSON list of addresses or @domains: %w", name, err)
		}
	}
	for i, s := range list {
		if s == "" || strings.ContainsAny(s, " \t\r\n\x00") {
			return fmt.Errorf("allow file %s: entry %d %q is not an address or @domain", name, i, s)
		}
	}
	mx, _ := data[Package].(map[string]any)
	if mx == nil {
		mx = map[string]any{}
		data[Package] = mx
	}
	var merged []any
	switch old := mx["allowed_senders"].(type) {
	case nil:
	case []any:
		merged = append(merged, old...)
	default:
		return fmt.Errorf("allow file %s: data.mxguard.allowed_senders is not a list", name)
	}
	for _, s := range list {
		// Rules look entries up as lower-case keys (rules/README.md).
		merged = append(merged, strings.ToLower(s))
	}
	mx["allowed_senders"] = merged
	return nil
}

// newCompiler returns a compiler with mxguard's safety settings: restricted
// built-ins, the input schema, Rego v1.
func newCompiler() *ast.Compiler {
	return ast.NewCompiler().
		WithCapabilities(caps).
		WithSchemas(inputSchemaSet).
		WithUseTypeCheckAnnotations(true).
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(false)
}

// compileErrors rewrites compiler errors into one message with file:line per
// problem, naming disabled built-ins as such.
func compileErrors(name string, errs ast.Errors) error {
	var b strings.Builder
	fmt.Fprintf(&b, "rules %s do not compile:", name)
	for _, e := range errs {
		msg := e.Message
		if strings.HasPrefix(msg, "undefined function ") {
			fn := strings.TrimPrefix(msg, "undefined function ")
			if removedBuiltins[fn] {
				msg = fmt.Sprintf("built-in %s is disabled in mxguard policies (no network, runtime, clock or random built-ins: rules see only input and data)", fn)
			}
		}
		loc := "?"
		if e.Location != nil {
			loc = fmt.Sprintf("%s:%d", e.Location.File, e.Location.Row)
		}
		fmt.Fprintf(&b, "\n  %s: %s", loc, msg)
	}
	return errors.New(b.String())
}

// compileSource compiles the non-test modules for evaluation and checks the
// contract: the action sets must be partial set rules.
func compileSource(src *policySource) (*ast.Compiler, error) {
	mods := map[string]*ast.Module{}
	for n, m := range src.modules {
		if !src.tests[n] {
			mods[n] = m
		}
	}
	c := newCompiler()
	c.Compile(mods)
	if c.Failed() {
		return nil, compileErrors(src.name, c.Errors)
	}
	pkg := ast.MustParseRef("data." + Package)
	var errs []string
	for n, m := range mods {
		if !m.Package.Path.Equal(pkg) {
			continue
		}
		for _, r := range m.Rules {
			name := r.Head.Name.String()
			if len(r.Head.Ref()) > 0 {
				name = r.Head.Ref()[0].Value.String()
			}
			if !isActionSet(name) && name != "add_headers" {
				continue
			}
			if r.Head.RuleKind() != ast.MultiValue || len(r.Head.Ref()) != 1 {
				errs = append(errs, fmt.Sprintf("\n  %s:%d: %s must be a partial set rule (%s contains ... if { ... })", n, r.Location.Row, name, name))
			}
		}
	}
	errs = append(errs, unusedSets(c, mods)...)
	if mx, ok := src.data[Package].(map[string]any); ok {
		for _, s := range append(append([]string{}, actionSets...), "add_headers") {
			if _, ok := mx[s]; ok {
				errs = append(errs, fmt.Sprintf("\n  data.%s.%s: a data file may not define an action set", Package, s))
			}
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("rules %s break the policy contract:%s", src.name, strings.Join(errs, ""))
	}
	return c, nil
}

// unusedSets finds partial set rules of package mxguard that are neither an
// action set nor used by any rule: `deny contains ...` or a misspelt
// `rejects contains ...` would otherwise be silently ignored, and the mail
// it meant to stop accepted.
func unusedSets(c *ast.Compiler, mods map[string]*ast.Module) []string {
	pkg := ast.MustParseRef("data." + Package)
	used := map[string]bool{}
	for _, m := range c.Modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if len(r) > len(pkg) && r.HasPrefix(pkg) {
				if s, ok := r[len(pkg)].Value.(ast.String); ok {
					used[string(s)] = true
				}
			}
			return false
		})
	}
	var errs []string
	for n, m := range mods {
		if !m.Package.Path.Equal(pkg) {
			continue
		}
		for _, r := range m.Rules {
			if r.Head.RuleKind() != ast.MultiValue {
				continue
			}
			name := r.Head.Ref()[0].Value.String()
			if isActionSet(name) || name == "add_headers" || used[name] {
				continue
			}
			errs = append(errs, fmt.Sprintf("\n  %s:%d: %s is not an action set (reject, tempfail, quarantine, tag, add_headers) and no rule uses it; a typo?", n, r.Location.Row, name))
		}
	}
	return errs
}

func isActionSet(name string) bool {
	for _, a := range actionSets {
		if a == name {
			return true
		}
	}
	return false
}

// newStore builds the data store. Values are kept as AST so evaluation does
// not convert them on every read.
func newStore(data map[string]any) storage.Store {
	return inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
}

// TestResult is one Rego unit test outcome.
type TestResult struct {
	Name     string        `json:"name"` // package.rule
	Location string        `json:"location"`
	Pass     bool          `json:"pass"`
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// runTests runs the source's *_test.rego tests against its rules and data,
// with the same built-in and schema restrictions as evaluation.
func runTests(ctx context.Context, src *policySource, timeout time.Duration, cov *cover.Cover) ([]TestResult, error) {
	store := newStore(src.data)
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)
	mods := make(map[string]*ast.Module, len(src.modules))
	for n, m := range src.modules {
		mods[n] = m.Copy()
	}
	r := tester.NewRunner().
		SetCompiler(newCompiler()).
		SetStore(store).
		SetModules(mods).
		RaiseBuiltinErrors(true).
		SetTimeout(timeout)
	if cov != nil {
		r.SetCoverageQueryTracer(cov)
	}
	ch, err := r.RunTests(ctx, txn)
	if err != nil {
		var ae ast.Errors
		if errors.As(err, &ae) {
			return nil, compileErrors(src.name+" (with tests)", ae)
		}
		return nil, fmt.Errorf("rules %s: tests: %w", src.name, err)
	}
	var out []TestResult
	for res := range ch {
		tr := TestResult{Name: res.Package + "." + res.Name, Pass: res.Pass(), Duration: res.Duration}
		if res.Location != nil {
			tr.Location = fmt.Sprintf("%s:%d", res.Location.File, res.Location.Row)
		}
		if res.Error != nil {
			tr.Error = res.Error.Error()
		} else if res.Fail {
			tr.Error = "test failed"
		}
		if res.Skip {
			tr.Pass = true
		}
		out = append(out, tr)
	}
	return out, nil
}

// testFailure summarises failed tests as one error, or nil.
func testFailure(name string, results []TestResult) error {
	var b strings.Builder
	failed := 0
	for _, r := range results {
		if r.Pass {
			continue
		}
		failed++
		fmt.Fprintf(&b, "\n  %s: %s: %s", r.Location, r.Name, r.Error)
	}
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("rules %s: %d of %d tests failed:%s", name, failed, len(results), b.String())
}

// sourceFor reads the embedded default (dir "") or a rules directory.
func sourceFor(dir string, embedded fs.FS, allowFile string) (*policySource, error) {
	if embedded == nil {
		embedded = rules.FS
	}
	if dir == "" {
		return readSource(embedded, "embedded", func(p string) string { return "rules/" + p }, allowFile)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("rules: %s is not a directory", dir)
	}
	return readSource(os.DirFS(dir), dir, func(p string) string { return filepath.Join(dir, filepath.FromSlash(p)) }, allowFile)
}
