package policy

import (
	"context"
	"sort"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
)

// TestReport is the outcome of RunTests for one rules directory.
type TestReport struct {
	// Source is the directory, or "embedded" for the shipped rules.
	Source  string       `json:"source"`
	Results []TestResult `json:"results"`
	// Coverage is set when requested: per rule file (tests excluded).
	Coverage *Coverage `json:"coverage,omitempty"`
}

// Passed reports whether every test passed (true without tests: the
// engine loads rules that have none).
func (r *TestReport) Passed() bool {
	for _, t := range r.Results {
		if !t.Pass {
			return false
		}
	}
	return true
}

// Coverage summarises which rule lines the tests evaluated.
type Coverage struct {
	Percent float64        `json:"coverage"`
	Files   []FileCoverage `json:"files"`
}

// FileCoverage is the coverage of one rule file.
type FileCoverage struct {
	File       string  `json:"file"`
	Percent    float64 `json:"coverage"`
	Covered    int     `json:"covered_lines"`
	NotCovered []int   `json:"not_covered,omitempty"` // line numbers
}

// RunTests compiles the rules in dir ("" for the shipped rules) with the
// engine's restrictions and runs their *_test.rego tests, like `opa test`.
// The error is for rules that cannot be loaded or compiled at all.
func RunTests(ctx context.Context, dir string, coverage bool) (*TestReport, error) {
	src, err := sourceFor(dir, nil, "")
	if err != nil {
		return nil, err
	}
	var cov *cover.Cover
	if coverage {
		cov = cover.New()
	}
	res, err := runTests(ctx, src, 30*time.Second, cov)
	if err != nil {
		return nil, err
	}
	rep := &TestReport{Source: src.name, Results: res}
	if cov != nil {
		mods := map[string]*ast.Module{}
		for n, m := range src.modules {
			if !src.tests[n] {
				mods[n] = m
			}
		}
		cr := cov.Report(mods)
		c := &Coverage{Percent: cr.Coverage}
		for name, fr := range cr.Files {
			if !isRuleFile(src, name) {
				continue
			}
			fc := FileCoverage{File: name, Percent: fr.Coverage, Covered: fr.CoveredLines}
			for _, rg := range fr.NotCovered {
				for l := rg.Start.Row; l <= rg.End.Row; l++ {
					fc.NotCovered = append(fc.NotCovered, l)
				}
			}
			c.Files = append(c.Files, fc)
		}
		sort.Slice(c.Files, func(i, j int) bool { return c.Files[i].File < c.Files[j].File })
		rep.Coverage = c
	}
	return rep, nil
}

func isRuleFile(src *policySource, name string) bool {
	_, ok := src.modules[name]
	return ok && !src.tests[name]
}
