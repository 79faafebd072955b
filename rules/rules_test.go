package rules_test

import (
	"context"
	"testing"

	"github.com/mxguard/mxguard/policy"
)

// TestRego runs the shipped rules' *_test.rego with the engine's
// restrictions (disabled built-ins, input schema), like `opa test`.
func TestRego(t *testing.T) {
	rep, err := policy.RunTests(context.Background(), "", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if !r.Pass {
			t.Errorf("%s %s: %s", r.Location, r.Name, r.Error)
		}
	}
	if len(rep.Results) < 40 {
		t.Errorf("only %d Rego tests", len(rep.Results))
	}
	for _, f := range rep.Coverage.Files {
		if len(f.NotCovered) > 0 {
			t.Errorf("%s: lines not covered by tests: %v", f.File, f.NotCovered)
		}
	}
}
