package main

import (
	"fmt"
	"runtime/debug"
	"testing"

	"github.com/mxguard/mxguard/config"
)

func TestApplyRuntime(t *testing.T) {
	old := debug.SetGCPercent(100)
	oldLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(old); debug.SetMemoryLimit(oldLimit) })

	env := map[string]string{}
	getenv := func(k string) string { return env[k] }

	gc, limit := applyRuntime(config.Runtime{GCPercent: 400}, 64<<20, getenv)
	if want := fmt.Sprint(64<<20 + autoLimitExtra); gc != "400" || limit != want {
		t.Errorf("automatic limit: gc %q limit %q, want %s", gc, limit, want)
	}
	gc, limit = applyRuntime(config.Runtime{GCPercent: -1, MemoryLimit: 1 << 30}, 64<<20, getenv)
	if gc != "off" || limit != "1073741824" {
		t.Errorf("gc off: gc %q limit %q", gc, limit)
	}
	gc, limit = applyRuntime(config.Runtime{GCPercent: 400, MemoryLimit: 1 << 30}, 64<<20, getenv)
	if gc != "400" || limit != "1073741824" {
		t.Errorf("from the file: gc %q limit %q", gc, limit)
	}
	if got := debug.SetGCPercent(100); got != 400 {
		t.Errorf("GC percent %d, want 400", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Errorf("memory limit %d, want 1 GiB", got)
	}

	// The environment wins: the runtime already read it at start.
	env["GOGC"], env["GOMEMLIMIT"] = "150", "2GiB"
	gc, limit = applyRuntime(config.Runtime{GCPercent: 400, MemoryLimit: 1 << 30}, 64<<20, getenv)
	if gc != "GOGC=150" || limit != "GOMEMLIMIT=2GiB" {
		t.Errorf("from the environment: gc %q limit %q", gc, limit)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent %d changed despite GOGC", got)
	}
}
