package main

import (
	"fmt"
	"runtime/debug"
	"strconv"

	"github.com/mxguard/mxguard/config"
)

// applyRuntime sets the garbage collector from the runtime section unless
// the environment already did: GOGC and GOMEMLIMIT are what Go operators
// reach for first, so they win over the file. It returns what is in effect,
// for the startup log line.
func applyRuntime(rc config.Runtime, getenv func(string) string) (gc, limit string) {
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
		if rc.MemoryLimit > 0 {
			debug.SetMemoryLimit(rc.MemoryLimit)
			limit = fmt.Sprintf("%d", rc.MemoryLimit)
		}
	}
	return gc, limit
}
