package policy

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestPrunedInputSameDecision: converting only the input paths the rules
// read gives the same decisions as converting everything.
func TestPrunedInputSameDecision(t *testing.T) {
	e := shippedEngine(t)
	if e.cur.Load().paths == nil {
		t.Fatal("shipped rules read the whole input: no pruning")
	}
	inputs, _ := filepath.Glob("../testdata/policy/*.input.json")
	for _, p := range inputs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		pruned, err := e.Eval(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		full, _, err := toValue(b)
		if err != nil {
			t.Fatal(err)
		}
		whole, err := e.Eval(context.Background(), full)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(golden(pruned), golden(whole)) {
			t.Errorf("%s: pruned %+v, whole %+v", p, golden(pruned), golden(whole))
		}
	}
}

func TestPruneKeepsWholeInputUses(t *testing.T) {
	cases := map[string]struct {
		rule string
		all  bool
	}{
		"bare input":       {`tag contains "n" if count(object.keys(input)) > 3`, true},
		"walk":             {`tag contains "w" if { walk(input, [p, v]); v == "hello" }`, true},
		"iterate message":  {`tag contains k if { some k, v in input.message; v == "hello" }`, false},
		"dynamic key":      {`tag contains "d" if { k := "subject"; input.message[k] == "hello" }`, false},
		"object.get input": {`tag contains "g" if object.get(input, ["message", "subject"], "") == "hello"`, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := writeRules(t, map[string]string{"p.rego": "package mxguard\n\n" + c.rule + "\n"})
			e := newEngine(t, Options{Dir: dir, Enforce: true})
			if got := e.cur.Load().paths == nil; got != c.all {
				t.Fatalf("whole input kept = %v, want %v", got, c.all)
			}
			d, err := e.Eval(context.Background(), dataInput(""))
			if err != nil || d.Action != ActionTag {
				t.Fatalf("%+v %v", d, err)
			}
		})
	}
}
