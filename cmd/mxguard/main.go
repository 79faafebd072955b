// Command mxguard is a security-focused inbound mail gateway: it sits where
// the MX record points, checks every transaction (SPF, DKIM, DMARC, rate
// limits, content), asks a Rego policy for the verdict and relays, rejects,
// defers or quarantines.
//
//	mxguard serve      [--config FILE]   run the gateway
//	mxguard check      spf|dkim|dmarc|message ...
//	mxguard policy     test|eval|replay ...
//	mxguard quarantine list|show|release|delete|purge|stats|review ...
//	mxguard ratelimit  show|reset ...
//	mxguard config     check FILE
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const usage = `mxguard — inbound mail gateway

Usage:
  mxguard serve [--config FILE]                 run the gateway (default config /etc/mxguard/mxguard.yaml)
  mxguard config check FILE                     report every problem in a config file
  mxguard check spf|dkim|dmarc|message ...      run sender-authentication checks by hand
  mxguard policy test|eval|replay ...           test, try and replay Rego policy
  mxguard quarantine list|show|release|delete|purge|stats|review ...
  mxguard ratelimit show|reset ...              look at or clear rate-limit buckets
  mxguard version

Run "mxguard COMMAND --help" for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(rest, stdout, stderr)
	case "config":
		return runConfig(rest, stdout, stderr)
	case "check":
		return runCheck(rest, stdout, stderr)
	case "policy":
		return runPolicy(rest, stdout, stderr)
	case "quarantine":
		return runQuarantine(rest, stdout, stderr, stdin)
	case "ratelimit":
		return runRatelimit(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "mxguard", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mxguard: unknown command %q\n\n%s", cmd, usage)
	return 2
}
