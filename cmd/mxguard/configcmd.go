package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/mxguard/mxguard/config"
)

// runConfig: `mxguard config check FILE` prints every problem with its key
// path and exits 1 when there is any.
func runConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: mxguard config check FILE")
		return 2
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "config file (or give it as the argument)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	path := *cfgPath
	if fs.NArg() > 0 {
		path = fs.Arg(0)
	}
	if path == "" {
		path = config.DefaultPath
	}
	_, err := loadConfig(path)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			fmt.Fprintf(stderr, "%s: %d problem(s):\n", path, len(ps))
			for _, p := range ps {
				fmt.Fprintf(stderr, "  %s\n", p)
			}
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return 0
}
