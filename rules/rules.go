// Package rules holds mxguard's shipped Rego policy (package mxguard), its
// data and its unit tests. FS is the default policy the engine loads when no
// rules directory is configured; rules/README.md lists every reason code.
package rules

import "embed"

// FS holds the shipped policy: *.rego (rules and their *_test.rego) and
// data.json. The engine compiles the rules and runs their tests from it.
//
//go:embed *.rego data.json
var FS embed.FS
