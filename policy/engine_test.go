package policy

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/mxguard/mxguard/rules"
)

var update = flag.Bool("update", false, "rewrite testdata/policy/*.decision.json")

func newEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	if opts.Timeout == 0 {
		// The production default (200ms) is a deadline for one decision;
		// on a shared, loaded test machine a stall can exceed it. Only
		// the timeout test sets a short one.
		opts.Timeout = 10 * time.Second
	}
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var (
	shippedOnce sync.Once
	shipped     *Engine
	shippedErr  error
)

// shippedEngine is one enforcing engine with the shipped rules, shared by
// the tests that only evaluate (loading runs the Rego suite each time).
func shippedEngine(t testing.TB) *Engine {
	t.Helper()
	shippedOnce.Do(func() { shipped, shippedErr = New(Options{Enforce: true, Timeout: 10 * time.Second}) })
	if shippedErr != nil {
		t.Fatal(shippedErr)
	}
	return shipped
}

// writeRules creates a rules directory from name → content.
func writeRules(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func dataInput(extra string) []byte {
	s := `{"version":1,"stage":"data","id":"mxg-test","client":{"ip":"192.0.2.1","helo":"x.example"},
	"envelope":{"mail_from":"a@example.org","rcpt_to":["b@corp.example"]},
	"message":{"header_from":"a@example.org","subject":"hello","attachments":[]},
	"auth":{"dkim":[]}` + extra + `}`
	return []byte(s)
}

// TestShippedRegoTests runs the shipped rules' own *_test.rego (opa test).
func TestShippedRegoTests(t *testing.T) {
	e := shippedEngine(t)
	res, err := e.Tests(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) < 30 {
		t.Fatalf("only %d Rego tests ran", len(res))
	}
	for _, r := range res {
		if !r.Pass {
			t.Errorf("%s %s: %s", r.Location, r.Name, r.Error)
		}
	}
}

// TestShippedRulesMetadata: every rule of the shipped policy has METADATA
// with a title and description; every rule adding a reason names its code
// in custom.code, and that code appears in rules/README.md.
func TestShippedRulesMetadata(t *testing.T) {
	src, err := sourceFor("", rules.FS, "")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../rules/README.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for name, m := range src.modules {
		if src.tests[name] {
			continue
		}
		for _, r := range m.Rules {
			if r.Default {
				continue
			}
			// Only the first definition of a multi-definition rule needs it.
			key := name + ":" + r.Head.Ref().String()
			if len(r.Annotations) == 0 {
				if !seen[key] && !hasAnnotatedSibling(m, r) {
					t.Errorf("%s:%d: rule %s has no METADATA", name, r.Location.Row, r.Head.Ref())
				}
				continue
			}
			seen[key] = true
			a := r.Annotations[0]
			if a.Title == "" || a.Description == "" {
				t.Errorf("%s:%d: rule %s METADATA needs title and description", name, r.Location.Row, r.Head.Ref())
			}
			if isActionSet(r.Head.Ref()[0].Value.String()) {
				codes := annotationCodes(a)
				if len(codes) == 0 {
					t.Errorf("%s:%d: reason rule without custom.code", name, r.Location.Row)
				}
				for _, c := range codes {
					if !strings.Contains(string(readme), "`"+c+"`") {
						t.Errorf("code %s is not listed in rules/README.md", c)
					}
				}
			}
		}
	}
}

func hasAnnotatedSibling(m *ast.Module, r *ast.Rule) bool {
	for _, o := range m.Rules {
		if o != r && len(o.Annotations) > 0 && o.Head.Ref().Equal(r.Head.Ref()) {
			return true
		}
	}
	return false
}

type goldenReason struct {
	Code   string `json:"code"`
	Action string `json:"action"`
	Msg    string `json:"msg,omitempty"`
	Title  string `json:"title,omitempty"`
	Reply  *Reply `json:"reply,omitempty"`
}

type goldenDecision struct {
	TxnID       string         `json:"txn_id"`
	Stage       string         `json:"stage"`
	Action      string         `json:"action"`
	WouldAction string         `json:"would_action,omitempty"`
	Reasons     []goldenReason `json:"reasons"`
	DryRun      []goldenReason `json:"dry_run"`
	Reply       *Reply         `json:"reply,omitempty"`
	AddHeaders  []Header       `json:"add_headers,omitempty"`
	Enforced    bool           `json:"enforced"`
}

func golden(d Decision) goldenDecision {
	conv := func(rs []Reason) []goldenReason {
		out := []goldenReason{}
		for _, r := range rs {
			out = append(out, goldenReason{r.Code, r.Action, r.Msg, r.Title, r.Reply})
		}
		return out
	}
	return goldenDecision{d.TxnID, d.Stage, d.Action, d.WouldAction, conv(d.Reasons), conv(d.DryRun), d.Reply, d.AddHeaders, d.Enforced}
}

// TestGolden evaluates testdata/policy/*.input.json with the shipped rules
// and compares with *.decision.json (go test -run Golden -update rewrites).
func TestGolden(t *testing.T) {
	e := shippedEngine(t)
	inputs, _ := filepath.Glob("../testdata/policy/*.input.json")
	if len(inputs) < 10 {
		t.Fatalf("only %d golden inputs", len(inputs))
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".input.json")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			d, err := e.Eval(context.Background(), b)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.MarshalIndent(golden(d), "", "  ")
			got = append(got, '\n')
			want := strings.TrimSuffix(in, ".input.json") + ".decision.json"
			if *update {
				if err := os.WriteFile(want, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			wb, err := os.ReadFile(want)
			if err != nil {
				t.Fatal(err)
			}
			if string(wb) != string(got) {
				t.Errorf("decision differs from %s:\n got %s\nwant %s", want, got, wb)
			}
		})
	}
}

// TestLoadRefused: rules that must not load, with the file:line in the error.
func TestLoadRefused(t *testing.T) {
	cases := []struct {
		name, rule string
		want       []string
	}{
		{"schema typo", `package mxguard

reject contains "dmarc_reject" if {
	input.auth.dmarc.polcy == "reject"
}
`, []string{"policy.rego:4", "undefined ref: input.auth.dmarc.polcy"}},
		{"http.send", `package mxguard

reject contains "x" if {
	http.send({"method": "get", "url": "http://127.0.0.1:1/"}).status_code == 200
}
`, []string{"policy.rego:4", "built-in http.send is disabled"}},
		{"net.lookup_ip_addr", `package mxguard

reject contains "x" if {
	"127.0.0.1" in net.lookup_ip_addr(input.client.helo)
}
`, []string{"policy.rego:4", "built-in net.lookup_ip_addr is disabled"}},
		{"opa.runtime", `package mxguard

tag contains "x" if opa.runtime().env.HOME
`, []string{"policy.rego:3", "built-in opa.runtime is disabled"}},
		{"time.now_ns", `package mxguard

tag contains "x" if time.now_ns() > 0
`, []string{"policy.rego:3", "built-in time.now_ns is disabled"}},
		{"syntax", `package mxguard

reject contains "x" if {
	input.stage ==
}
`, []string{"policy.rego:"}},
		{"boolean action rule", `package mxguard

reject if input.stage == "data"
`, []string{"policy.rego:3", "reject must be a partial set rule"}},
		{"unknown action set", `package mxguard

rejects contains "x" if input.stage == "data"
`, []string{"policy.rego:3", "rejects is not an action set"}},
		{"failing test", `package mxguard

tag contains "x" if input.stage == "data"

test_wrong if {
	"y" in tag with input as {"stage": "data"}
}
`, []string{"policy.rego:5", "test_wrong", "1 of 1 tests failed"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeRules(t, map[string]string{"policy.rego": c.rule})
			_, err := New(Options{Dir: dir})
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

const goodRules = `package mxguard

# METADATA
# title: Test reject
# description: rejects helo bad.example
# custom:
#   code: bad_helo
reject contains {"code": "bad_helo", "msg": "bad helo"} if input.client.helo == "bad.example"

tag contains "always" if input.stage == "data"
`

func TestReloadRefusedKeepsOld(t *testing.T) {
	dir := writeRules(t, map[string]string{"policy.rego": goodRules})
	e := newEngine(t, Options{Dir: dir, Enforce: true})
	rev := e.Revision()
	in := dataInput(`,"gateway":"g"`)
	in = []byte(strings.Replace(string(in), "x.example", "bad.example", 1))

	for name, broken := range map[string]string{
		"compile":  "package mxguard\nreject contains x if {",
		"test":     goodRules + "\ntest_broken if false\n",
		"schema":   goodRules + "\ntag contains \"t\" if input.client.hello == \"x\"\n",
		"builtin":  goodRules + "\ntag contains \"t\" if http.send({\"method\": \"get\", \"url\": \"http://127.0.0.1:1\"})\n",
		"contract": goodRules + "\nquarantine := {\"x\"}\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := e.Reload(); err == nil {
			t.Fatalf("%s: broken rules reloaded", name)
		}
		if e.Revision() != rev {
			t.Fatalf("%s: revision changed after refused reload", name)
		}
		d, err := e.Eval(context.Background(), in)
		if err != nil || d.Action != ActionReject || d.Revision != rev {
			t.Fatalf("%s: after refused reload: %+v %v", name, d, err)
		}
	}
	newer := strings.Replace(goodRules, `"bad.example"`, `"worse.example"`, 1)
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(newer), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if e.Revision() == rev {
		t.Fatal("revision unchanged after reload")
	}
	d, err := e.Eval(context.Background(), in)
	if err != nil || d.Action != ActionTag {
		t.Fatalf("after reload: %+v %v", d, err)
	}
}

// TestFailSafe: every way evaluation can fail gives a 451 4.3.0 tempfail
// decision together with an error, never an accept.
func TestFailSafe(t *testing.T) {
	cases := []struct {
		name, rule string
		input      []byte
		timeout    time.Duration
		want       string
	}{
		{"undefined stage", goodRules, []byte(`{"stage":"bogus"}`), 0, "stage"},
		{"missing stage", goodRules, []byte(`{"id":"x"}`), 0, "stage"},
		{"not json", goodRules, []byte(`{"stage":`), 0, "policy input"},
		{"not an object", goodRules, []byte(`[1,2]`), 0, "not a JSON object"},
		{"runtime error", `package mxguard

tag contains "n" if to_number(input.client.helo) > 1
`, dataInput(""), 0, "to_number"},
		{"conflict", `package mxguard

x := input.client.ip
x := input.client.helo
tag contains "c" if x
`, dataInput(""), 0, "conflict"},
		{"timeout", `package mxguard

tag contains "slow" if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}
`, dataInput(""), 20 * time.Millisecond, "timed out"},
		{"bad code", `package mxguard

reject contains "Not-Snake" if true
`, dataInput(""), 0, "snake_case"},
		{"reply class", `package mxguard

reject contains {"code": "x", "reply": {"code": 451, "enhanced": "4.7.1", "text": "no"}} if true
`, dataInput(""), 0, "not a 5xx"},
		{"enhanced class", `package mxguard

tempfail contains {"code": "x", "reply": {"code": 451, "enhanced": "5.7.1", "text": "no"}} if true
`, dataInput(""), 0, "does not match"},
		{"reply on quarantine", `package mxguard

quarantine contains {"code": "x", "reply": {"code": 250, "enhanced": "2.0.0", "text": "ok"}} if true
`, dataInput(""), 0, "cannot carry a reply"},
		{"crlf in reply", `package mxguard

reject contains {"code": "x", "reply": {"code": 550, "enhanced": "5.7.1", "text": "no\r\n250 ok"}} if true
`, dataInput(""), 0, "control character"},
		{"crlf in msg", `package mxguard

reject contains {"code": "x", "msg": concat("", ["a", "\n", "b"])} if true
`, dataInput(""), 0, "control character"},
		{"unknown reason field", `package mxguard

reject contains {"code": "x", "action": "accept"} if true
`, dataInput(""), 0, "unknown field"},
		{"header outside prefix", `package mxguard

add_headers contains {"name": "Received", "value": "forged"} if true
`, dataInput(""), 0, "outside"},
		{"header injection", `package mxguard

add_headers contains {"name": "X-MXGuard-Note", "value": "a\r\nBcc: evil@example.net"} if true
`, dataInput(""), 0, "control character"},
		{"bad header name", `package mxguard

add_headers contains {"name": "X-MXGuard-A B", "value": "v"} if true
`, dataInput(""), 0, "not a valid field name"},
		{"bad mode", `package mxguard

modes := {"x": "sometimes"}
reject contains "x" if true
`, dataInput(""), 0, "modes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeRules(t, map[string]string{"policy.rego": c.rule})
			e := newEngine(t, Options{Dir: dir, Enforce: true, Timeout: c.timeout})
			start := time.Now()
			d, err := e.Eval(context.Background(), c.input)
			if err == nil {
				t.Fatalf("no error; decision %+v", d)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
			if d.Action != ActionTempfail || d.Reply == nil || *d.Reply != ErrorReply {
				t.Errorf("fail-safe decision %+v", d)
			}
			if c.timeout > 0 && time.Since(start) > 2*time.Second {
				t.Errorf("timeout took %v", time.Since(start))
			}
		})
	}
}

func TestModesDryRun(t *testing.T) {
	dir := writeRules(t, map[string]string{
		"policy.rego": goodRules,
		"data.json":   `{"mxguard": {"modes": {"bad_helo": "dryrun"}}}`,
	})
	e := newEngine(t, Options{Dir: dir, Enforce: true})
	in := []byte(strings.Replace(string(dataInput("")), "x.example", "bad.example", 1))
	d, err := e.Eval(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if d.Action != ActionTag || d.WouldAction != ActionReject || !d.Enforced {
		t.Fatalf("decision %+v", d)
	}
	if len(d.DryRun) != 1 || d.DryRun[0].Code != "bad_helo" || d.DryRun[0].Title != "Test reject" {
		t.Fatalf("dry run %+v", d.DryRun)
	}
	if len(d.Reasons) != 1 || d.Reasons[0].Code != "always" || d.Reply != nil {
		t.Fatalf("reasons %+v reply %+v", d.Reasons, d.Reply)
	}
}

func TestEnforceFalse(t *testing.T) {
	e := newEngine(t, Options{Enforce: false})
	b, err := os.ReadFile("../testdata/policy/dmarc_reject.input.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Eval(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if d.Action != ActionAccept || d.WouldAction != ActionReject || d.Enforced || d.Reply != nil || len(d.Reasons) != 0 {
		t.Fatalf("decision %+v", d)
	}
	if len(d.DryRun) == 0 || d.DryRun[0].Code != "dmarc_reject" {
		t.Fatalf("dry run %+v", d.DryRun)
	}
	hs := d.VerdictHeaders(DefaultHeaderPrefix, true, true, true)
	if hs[0].Value != "accept (dry-run: would reject)" || !strings.Contains(hs[1].Value, "dmarc_reject(dry-run)") {
		t.Fatalf("headers %+v", hs)
	}
}

func TestAddHeadersAndReplyOverride(t *testing.T) {
	dir := writeRules(t, map[string]string{"policy.rego": `package mxguard

add_headers contains {"name": "X-MXGuard-Score", "value": "5"} if input.stage == "data"

tempfail contains {"code": "greylist", "msg": "first contact", "reply": {"code": 450, "enhanced": "4.2.0", "text": "greylisted, try again: greylist"}} if input.stage == "rcpt"

tempfail contains "other" if input.stage == "rcpt"
`})
	e := newEngine(t, Options{Dir: dir, Enforce: true})
	d, err := e.Eval(context.Background(), dataInput(""))
	if err != nil || len(d.AddHeaders) != 1 || d.AddHeaders[0].Name != "X-MXGuard-Score" {
		t.Fatalf("%+v %v", d, err)
	}
	in := []byte(strings.Replace(string(dataInput("")), `"stage":"data"`, `"stage":"rcpt"`, 1))
	d, err = e.Eval(context.Background(), in)
	if err != nil || d.Action != ActionTempfail || d.Reply == nil || d.Reply.Code != 450 || d.Reply.Text != "greylisted, try again: greylist" {
		t.Fatalf("%+v %+v %v", d, d.Reply, err)
	}
	// The policy's headers are outside a different prefix.
	e2 := newEngine(t, Options{Dir: dir, Enforce: true, HeaderPrefix: "X-Corp-"})
	if _, err := e2.Eval(context.Background(), dataInput("")); !errors.Is(err, ErrInvalidDecision) {
		t.Fatalf("header outside prefix accepted: %v", err)
	}
}

func TestAllowFile(t *testing.T) {
	allow := filepath.Join(t.TempDir(), "allow.json")
	// Missing file: empty list.
	e := newEngine(t, Options{AllowFile: allow, Enforce: true})
	in := []byte(strings.Replace(string(dataInput(`,"auth":{"spf":{"result":"pass","identity":"mailfrom"},"dkim":[]}`)),
		`"attachments":[]`, `"attachments":[{"filename":"tool.exe"}]`, 1))
	in = []byte(strings.Replace(string(in), `,"auth":{"dkim":[]}`, "", 1))
	d, err := e.Eval(context.Background(), in)
	if err != nil || d.Action != ActionQuarantine {
		t.Fatalf("%+v %v", d, err)
	}
	rev := e.Revision()
	if err := os.WriteFile(allow, []byte(`["@example.org"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if e.Revision() == rev {
		t.Fatal("allow file not in revision")
	}
	d, err = e.Eval(context.Background(), in)
	if err != nil || d.Action != ActionAccept {
		t.Fatalf("allowed sender: %+v %v", d, err)
	}
	if err := os.WriteFile(allow, []byte(`{"not":"a list"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(); err == nil || !strings.Contains(err.Error(), "allow file") {
		t.Fatalf("bad allow file: %v", err)
	}
}

func TestWatch(t *testing.T) {
	dir := writeRules(t, map[string]string{"policy.rego": goodRules})
	e := newEngine(t, Options{Dir: dir, Enforce: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type ev struct {
		rev string
		err error
	}
	ch := make(chan ev, 64)
	done := make(chan struct{})
	go func() { e.Watch(ctx, func(rev string, err error) { ch <- ev{rev, err} }); close(done) }()
	defer func() { cancel(); <-done }()
	old := e.Revision()
	// waitFor rewrites policy.rego (the watcher may not be set up before
	// the first write) until a reload reports what ok wants.
	waitFor := func(body string, ok func(ev) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		tick := time.NewTicker(700 * time.Millisecond)
		defer tick.Stop()
		write := func() {
			if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write()
		for {
			select {
			case got := <-ch:
				if ok(got) {
					return
				}
			case <-tick.C:
				write()
			case <-deadline:
				t.Fatal("no matching reload after a change")
			}
		}
	}
	waitFor("package mxguard\nreject contains x if {", func(got ev) bool { return got.err != nil && got.rev == old })
	if err := os.WriteFile(filepath.Join(dir, "extra.rego"), []byte("package mxguard\ntag contains \"extra\" if input.stage == \"data\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(goodRules, func(got ev) bool { return got.err == nil && got.rev != old })
	d, err := e.Eval(context.Background(), dataInput(""))
	if err != nil || len(d.Reasons) != 2 {
		t.Fatalf("after watch reload: %+v %v", d, err)
	}
}

// TestSymlinkedRules: rule files that are symlinks (Kubernetes ConfigMap
// mounts) are read, and the revision follows their content.
func TestSymlinkedRules(t *testing.T) {
	store := writeRules(t, map[string]string{"policy.rego": goodRules})
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(store, "policy.rego"), filepath.Join(dir, "policy.rego")); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, Options{Dir: dir, Enforce: true})
	d, err := e.Eval(context.Background(), dataInput(""))
	if err != nil || d.Action != ActionTag {
		t.Fatalf("%+v %v", d, err)
	}
}

func TestConcurrentEvalAndReload(t *testing.T) {
	dir := writeRules(t, map[string]string{"policy.rego": goodRules})
	e := newEngine(t, Options{Dir: dir, Enforce: true})
	in := dataInput("")
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if d, err := e.Eval(context.Background(), in); err != nil || d.Action != ActionTag {
					t.Errorf("%+v %v", d, err)
					return
				}
			}
		}()
	}
	for i := 0; i < 3; i++ {
		if err := e.Reload(); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
}

func TestInputFromStruct(t *testing.T) {
	e := shippedEngine(t)
	in := benchTxn()
	d, err := e.Eval(context.Background(), &in)
	// A Go record is converted directly: no JSON is made for it (the
	// decision log encodes the record itself when it writes a line).
	if err != nil || d.Action != ActionAccept || d.TxnID != in.ID || d.Input != nil {
		t.Fatalf("%+v %v", d, err)
	}
	// ast.Value input gives the same decision.
	raw, err := json.Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := toValue(raw)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := e.Eval(context.Background(), v)
	if err != nil || !reflect.DeepEqual(golden(d), golden(d2)) {
		t.Fatalf("%+v %v", d2, err)
	}
}

func TestVerdictHeadersFold(t *testing.T) {
	h := Header{Name: "X-MXGuard-Reasons", Value: strings.Repeat("dangerous_attachment, ", 8) + "end"}
	if err := CheckHeader(DefaultHeaderPrefix, h); err != nil {
		t.Fatal(err)
	}
	f := h.Fold()
	for i, line := range strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n") {
		if len(line) > 78 {
			t.Errorf("line %d too long: %q", i, line)
		}
		if i > 0 && line[0] != ' ' {
			t.Errorf("continuation line %d not folded with whitespace: %q", i, line)
		}
	}
	if strings.Count(f, ":") != 1 {
		t.Errorf("fold created a field: %q", f)
	}
	for _, bad := range []Header{{"X-MXGuard-A", "a\rb"}, {"X-MXGuard-A", "a\nb"}, {"X-MXGuard-", "x"}, {"x-mxguard-ok", "é"}} {
		if CheckHeader(DefaultHeaderPrefix, bad) == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestRuleExplain(t *testing.T) {
	e := shippedEngine(t)
	title, desc := e.Explain("dmarc_reject")
	if title == "" || desc == "" {
		t.Fatal("no metadata for dmarc_reject")
	}
	var codes []string
	for c := range e.cur.Load().meta {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	want := []string{"bare_line_endings", "blocked_network", "blocked_sender", "dangerous_attachment", "dmarc_fail_forwarded", "dmarc_quarantine", "dmarc_reject", "dmarc_temperror", "from_invalid", "from_missing", "from_multiple", "ratelimit", "spf_fail"}
	if !reflect.DeepEqual(codes, want) {
		t.Fatalf("codes %v", codes)
	}
}

// TestUndefinedDecision: a query whose result is undefined (here the data
// query given a mail-stage input, as a mis-wired query would) is an error
// and a 451 4.3.0 tempfail, never an accept.
func TestUndefinedDecision(t *testing.T) {
	dir := writeRules(t, map[string]string{"policy.rego": goodRules})
	e := newEngine(t, Options{Dir: dir, Enforce: true})
	p := *e.cur.Load()
	p.queries = map[string]rego.PreparedEvalQuery{"mail": p.queries["data"]}
	e.cur.Store(&p)
	d, err := e.Eval(context.Background(), []byte(`{"stage":"mail","client":{"helo":"bad.example"}}`))
	if err == nil || !strings.Contains(err.Error(), "undefined decision") {
		t.Fatalf("err %v", err)
	}
	if d.Action != ActionTempfail || d.Reply == nil || *d.Reply != ErrorReply {
		t.Fatalf("decision %+v", d)
	}
}
