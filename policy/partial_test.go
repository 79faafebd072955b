package policy

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/mxguard/mxguard/rules"
)

// enginePair prepares src twice: queries as written, and partially
// evaluated per stage (what New does).
func enginePair(t *testing.T, src *policySource) (plain, opt *Engine) {
	t.Helper()
	mk := func(budget time.Duration) *Engine {
		p, err := prepare(context.Background(), src, false, budget)
		if err != nil {
			t.Fatal(err)
		}
		e := &Engine{opts: Options{Enforce: true, Timeout: 10 * time.Second, HeaderPrefix: DefaultHeaderPrefix}, metrics: newMetrics()}
		e.cur.Store(p)
		return e
	}
	return mk(0), mk(10 * time.Second)
}

// mutations change one fact of an input each, so that every shipped rule
// fires and stays silent on some input of every stage.
var mutations = []struct {
	path []string
	val  any
}{
	{nil, nil},
	{[]string{"auth", "dmarc", "result"}, "fail"},
	{[]string{"auth", "dmarc", "result"}, "pass"},
	{[]string{"auth", "dmarc", "result"}, "temperror"},
	{[]string{"auth", "dmarc", "result"}, "none"},
	{[]string{"auth", "dmarc", "policy"}, "reject"},
	{[]string{"auth", "dmarc", "policy"}, "quarantine"},
	{[]string{"auth", "dmarc", "testing"}, true},
	{[]string{"auth", "dmarc"}, nil},
	{[]string{"auth", "spf", "result"}, "fail"},
	{[]string{"auth", "spf", "result"}, "pass"},
	{[]string{"auth", "spf", "identity"}, "helo"},
	{[]string{"message", "from_problem"}, "missing"},
	{[]string{"message", "from_problem"}, "multiple_mailboxes"},
	{[]string{"message", "from_problem"}, "invalid"},
	{[]string{"message", "line_endings"}, map[string]any{"bare_lf": true, "bare_cr": true, "nul": false, "normalized": true}},
	{[]string{"message", "attachments"}, []any{map[string]any{"filename": "Run.JS. ", "content_type": "text/plain", "sniffed_type": "", "size": 1, "sha256": ""}}},
	{[]string{"message", "attachments"}, []any{map[string]any{"filename": "", "content_type": "Application/X-MSDownload", "sniffed_type": "", "size": 1, "sha256": ""}}},
	{[]string{"message", "attachments"}, []any{map[string]any{"filename": "a.pdf", "content_type": "application/pdf", "sniffed_type": "application/x-dosexec", "size": 1, "sha256": ""}, map[string]any{"filename": "b\r\n.exe", "content_type": "", "sniffed_type": "", "size": 1, "sha256": ""}}},
	{[]string{"message", "header_from"}, "Boss@Spam.Example"},
	{[]string{"envelope", "mail_from"}, "x@sub.spam.example"},
	{[]string{"envelope", "mail_from"}, "bob@example.com"},
	{[]string{"client", "ip"}, "203.0.113.9"},
	{[]string{"client", "ip"}, "198.51.100.20"},
	{[]string{"client", "ip"}, ""},
	{[]string{"client", "ptr"}, "out.lists.example.net."},
	{[]string{"client", "ptr_result"}, "fail"},
	{[]string{"ratelimit"}, map[string]any{"client_ip": map[string]any{"allowed": false, "limit": 20, "remaining": 0, "retry_after_s": 2.3, "backend_error": false}}},
	{[]string{"ratelimit"}, map[string]any{"a": map[string]any{"allowed": false, "limit": 1, "remaining": 0, "retry_after_s": -1, "backend_error": false}, "b": map[string]any{"allowed": true, "limit": 1, "remaining": 1, "retry_after_s": 0, "backend_error": true}}},
}

func mutate(in map[string]any, path []string, val any) map[string]any {
	b, _ := json.Marshal(in)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	if len(path) == 0 {
		return out
	}
	cur := out
	for _, k := range path[:len(path)-1] {
		next, ok := cur[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[k] = next
		}
		cur = next
	}
	if val == nil {
		delete(cur, path[len(path)-1])
	} else {
		cur[path[len(path)-1]] = val
	}
	return out
}

// comparePartial evaluates every golden input, at every stage, under every
// mutation, with both engines and requires the same decision (or both an
// error). It does it all twice: the second time, the optimised engine
// answers from its decision cache wherever it may.
func comparePartial(t *testing.T, plain, opt *Engine) (n, errs int) {
	t.Helper()
	inputs, _ := filepath.Glob("../testdata/policy/*.input.json")
	if len(inputs) < 10 {
		t.Fatalf("only %d golden inputs", len(inputs))
	}
	for pass := 0; pass < 2; pass++ {
		n, errs = 0, 0
		for _, p := range inputs {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var base map[string]any
			if err := json.Unmarshal(b, &base); err != nil {
				t.Fatal(err)
			}
			for _, stage := range append(append([]string{}, Stages...), "bogus") {
				for _, m := range mutations {
					in := mutate(base, m.path, m.val)
					in["stage"] = stage
					raw, _ := json.Marshal(in)
					dp, errp := plain.Eval(context.Background(), raw)
					do, erro := opt.Eval(context.Background(), raw)
					if (errp == nil) != (erro == nil) || !reflect.DeepEqual(golden(dp), golden(do)) {
						t.Fatalf("%s stage %s %v=%v:\nplain     %+v %v\noptimised %+v %v", filepath.Base(p), stage, m.path, m.val, golden(dp), errp, golden(do), erro)
					}
					n++
					if errp != nil {
						errs++
					}
				}
			}
		}
	}
	return n, errs
}

// TestPartialEvalSameDecisions: the partially evaluated queries decide
// exactly like the queries as written, for the shipped rules with their
// data and with every list filled (so that no rule is folded away).
func TestPartialEvalSameDecisions(t *testing.T) {
	lists := `{"mxguard": {
		"modes": {"spf_fail": "dryrun"},
		"blocked_networks": ["not-a-cidr", "203.0.113.0/24"],
		"blocked_senders": ["@.spam.example", "boss@spam.example"],
		"allowed_senders": ["@example.com"],
		"trusted_forwarders": {"networks": ["198.51.100.0/24"], "ptr_domains": ["lists.example.net"]}
	}}`
	withLists := fstest.MapFS{}
	err := fs.WalkDir(rules.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(rules.FS, p)
		if err != nil {
			return err
		}
		withLists[p] = &fstest.MapFile{Data: b}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	withLists["lists/data.json"] = &fstest.MapFile{Data: []byte(strings.ReplaceAll(lists, `"mxguard": `, `"x": `))}
	// The lists override the shipped empty ones: merge them into data.json.
	var shippedData map[string]map[string]any
	if err := json.Unmarshal(withLists["data.json"].Data, &shippedData); err != nil {
		t.Fatal(err)
	}
	var over map[string]map[string]any
	if err := json.Unmarshal([]byte(lists), &over); err != nil {
		t.Fatal(err)
	}
	for k, v := range over["mxguard"] {
		shippedData["mxguard"][k] = v
	}
	merged, _ := json.Marshal(shippedData)
	withLists["data.json"] = &fstest.MapFile{Data: merged}
	delete(withLists, "lists/data.json")

	for name, fsys := range map[string]fs.FS{"shipped": rules.FS, "lists": withLists} {
		t.Run(name, func(t *testing.T) {
			src, err := sourceFor("", fsys, "")
			if err != nil {
				t.Fatal(err)
			}
			plain, opt := enginePair(t, src)
			if got := opt.cur.Load().partial; got != len(Stages) {
				t.Fatalf("%d of %d stages partially evaluated", got, len(Stages))
			}
			if plain.cur.Load().partial != 0 {
				t.Fatal("plain engine partially evaluated")
			}
			n, errs := comparePartial(t, plain, opt)
			t.Logf("%d inputs compared, %d errors", n, errs)
		})
	}
}

// TestPartialEvalKeepsErrors: constructs whose evaluation errors (a
// conflict, a built-in error, a function or object with two values) must
// still error after partial evaluation, and other shapes (default, else,
// every, with, a modes rule, add_headers) decide the same.
func TestPartialEvalKeepsErrors(t *testing.T) {
	policies := map[string]string{
		"conflict": `x := input.client.ip
x := input.client.helo
tag contains "c" if x`,
		"conflict one rule": `x := y if some y in input.envelope.rcpt_to
tag contains "c" if x`,
		"builtin error": `tag contains "n" if to_number(input.client.helo) > 1`,
		"function values": `f(s) := 1 if s != ""
f(s) := 2 if startswith(s, "x")
reject contains "f" if f(input.client.helo) == 1`,
		"object values": `o[k] := v if { some k, v in {"a": input.client.ip} }
o[k] := v if { some k, v in {"a": input.client.helo} }
tag contains "o" if o.a`,
		"default else every with": `default lvl := "low"
lvl := "high" if input.auth.dmarc.result == "fail"
else := "mid" if input.auth.spf.result == "fail"
ok if every r in input.envelope.rcpt_to { contains(r, "@") }
w if input.client.ip == "1.2.3.4" with input.client.ip as "1.2.3.4"
tag contains lvl if ok
tag contains "w" if w`,
		"modes and headers": `modes := {"hdr": "dryrun"} if input.client.ip != ""
reject contains "hdr" if input.stage == "rcpt"
add_headers contains {"name": "X-MXGuard-Ip", "value": input.client.ip} if input.stage == "data"`,
		"comprehension": `n := count([a | some a in input.message.attachments; a.size > 0])
tempfail contains sprintf("n%d", [n]) if { input.stage != "connect"; n > 0 }`,
	}
	for name, body := range policies {
		t.Run(name, func(t *testing.T) {
			src, err := sourceFor("", fstest.MapFS{"p.rego": {Data: []byte("package mxguard\n\n" + body + "\n")}}, "")
			if err != nil {
				t.Fatal(err)
			}
			plain, opt := enginePair(t, src)
			n, errs := comparePartial(t, plain, opt)
			t.Logf("%d of %d stages partially evaluated; %d inputs compared, %d errors", opt.cur.Load().partial, len(Stages), n, errs)
		})
	}
}
