package main

import (
	"fmt"
	"runtime/debug"
	"strconv"

	"github.com/mxguard/mxguard/config"
)

// autoLimitExtra is what the automatic memory limit allows beyond the
// message budget: sessions, buffers, caches, the policy (10,000 idle
// connections take about 170 MiB, docs/performance.md).
const autoLimitExtra = 256 << 20

// applyRuntime sets the garbage collector from the runtime section unless
// the environment already did: GOGC and GOMEMLIMIT are what Go operators
// reach for first, so they win over the file. It returns what is in effect,
// for the startup log line.
func applyRuntime(rc config.Runtime, memoryBudget int64, getenv func(string) string) (gc, limit string) {
	gc = "GOGC=" + getenv("GOGC")
	if getenv("GOGC") == "" {
		debug.SetGCPercent(rc.GCPercent)
		gc = strconv.Itoa(rc.GCPercent)
		if rc.GCPercent < 0 {
			gc = "off"
		}
	}
	limit = "GOMEMLIMIT=" + getenv("GOMEMLIMIT")
	if getenv("GOMEMLIMIT") == "" {
		limit = "none"
		n := rc.MemoryLimit
		if n == 0 {
			n = memoryBudget + autoLimitExtra
		}
		if n > 0 {
			debug.SetMemoryLimit(n)
			limit = fmt.Sprintf("%d", n)
		}
	}
	return gc, limit
}
