package policy

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGoInputLikeJSON: converting a record directly gives the same AST as
// encoding it to JSON and converting that, whole and pruned to every
// stage's paths, for every golden input under every mutation, plus strings
// that are not UTF-8 and floats that JSON writes in exponent form.
func TestGoInputLikeJSON(t *testing.T) {
	e, err := New(Options{Enforce: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p := e.cur.Load()
	inputs, _ := filepath.Glob("../testdata/policy/*.input.json")
	if len(inputs) < 10 {
		t.Fatalf("only %d golden inputs", len(inputs))
	}
	extra := []struct {
		path []string
		val  any
	}{
		{[]string{"message", "subject"}, "caf\xe9 \xff\xfe ok \u2028"},
		{[]string{"client", "helo"}, "<b>&amp;</b>"},
		{[]string{"ratelimit"}, map[string]any{"x": map[string]any{"allowed": false, "limit": 1, "remaining": 0, "retry_after_s": 1e-7, "backend_error": false},
			"y": map[string]any{"allowed": true, "limit": 2, "remaining": 1, "retry_after_s": 1e21, "backend_error": false},
			"z": map[string]any{"allowed": true, "limit": 2, "remaining": 1, "retry_after_s": 123456.789, "backend_error": false}}},
	}
	n := 0
	for _, f := range inputs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var base map[string]any
		if err := json.Unmarshal(b, &base); err != nil {
			t.Fatal(err)
		}
		all := append(append([]struct {
			path []string
			val  any
		}{}, mutations...), extra...)
		for _, m := range all {
			mb, _ := json.Marshal(mutate(base, m.path, m.val))
			var rec txn
			if err := json.Unmarshal(mb, &rec); err != nil {
				t.Fatal(err)
			}
			// Invalid UTF-8 does not survive the JSON above: set it here.
			if len(m.path) == 2 && m.path[1] == "subject" && rec.Message != nil {
				rec.Message.Subject = m.val.(string)
			}
			for _, stage := range Stages {
				rec.Stage = stage
				raw, err := json.Marshal(&rec)
				if err != nil {
					t.Fatal(err)
				}
				for _, tree := range []*inputTree{nil, p.paths, p.stagePaths[stage]} {
					want, err := toInput(raw, tree)
					if err != nil {
						t.Fatal(err)
					}
					got, err := goInput(&rec, tree, nil, nil, nil)
					if err == nil {
						err = got.convert()
					}
					if err != nil {
						t.Fatalf("%s %v stage %s: %v", filepath.Base(f), m.path, stage, err)
					}
					if got.in.v.Compare(want.v) != 0 || got.in.stage != want.stage || got.in.id != want.id {
						t.Fatalf("%s %v stage %s:\ndirect %v\njson   %v", filepath.Base(f), m.path, stage, got.in.v, want.v)
					}
					n++
				}
			}
		}
	}
	t.Logf("%d conversions compared", n)
}

type marshalsItself struct{ A string }

func (marshalsItself) MarshalJSON() ([]byte, error) { return []byte(`{"a":"b"}`), nil }

// TestGoInputFallsBack: types the direct conversion does not cover go
// through JSON and decide the same.
func TestGoInputFallsBack(t *testing.T) {
	type withIface struct {
		Stage string `json:"stage"`
		X     any    `json:"x"`
	}
	type withMarshaler struct {
		Stage string         `json:"stage"`
		M     marshalsItself `json:"m"`
	}
	type embedded struct{ marshalsItself }
	for _, v := range []any{&withIface{Stage: "mail"}, &withMarshaler{Stage: "mail"}, &embedded{}, map[string]any{"stage": "mail"}, []byte(`{}`), txn{}} {
		if _, err := goInput(v, nil, nil, nil, nil); !errors.Is(err, errGoUnsupported) {
			t.Errorf("%T: %v, want the JSON path", v, err)
		}
	}
	e := shippedEngine(t)
	d, err := e.Eval(context.Background(), &withMarshaler{Stage: "mail"})
	if err != nil || d.Action != ActionAccept || d.Input == nil {
		t.Fatalf("%+v %v", d, err)
	}
}

// BenchmarkEvalGoInput is a mail-stage decision from the record, answered
// by the decision cache, through the direct conversion and through JSON.
func BenchmarkEvalGoInput(b *testing.B) {
	e, err := New(Options{Enforce: true, Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	in := benchTxn()
	in.Stage = "mail"
	in.Message = nil
	for name, input := range map[string]func() any{
		"direct": func() any { return &in },
		"json":   func() any { raw, _ := json.Marshal(&in); return raw },
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := e.Eval(context.Background(), input()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
