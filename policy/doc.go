// Package policy evaluates mxguard's Rego policy: it loads a rules
// directory (or the shipped rules of package rules), compiles it with OPA v1
// under mxguard's restrictions (no network, runtime, clock or random
// built-ins; the input JSON Schema in schema/input.json; strict built-in
// errors), runs the rules' own *_test.rego, and prepares one query per stage
// over the decision document.
//
// Rules add reasons to the sets reject, tempfail, quarantine and tag of
// package mxguard; Eval turns them into a validated Decision (severity
// reject > tempfail > quarantine > tag > accept, per-code dry-run through
// data.mxguard.modes, whole-policy dry-run with Options.Enforce false). Any
// failure — bad input, evaluation error, timeout, undefined or invalid
// decision — is returned as an error together with a 451 4.3.0 tempfail
// decision, never an accept.
//
// Reload and Watch swap new rules in atomically, and only when they compile
// and pass their tests. DecisionLog writes decisions as JSON lines in OPA's
// decision-log shape. The package never logs; see docs/policy.md.
package policy
