package node_test

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/node"
)

// TestConfigureGC: the node's defaults apply unless the environment sets
// GOGC or GOMEMLIMIT, and a limit of 0 sets none.
func TestConfigureGC(t *testing.T) {
	gc0, lim0 := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	defer func() { debug.SetGCPercent(gc0); debug.SetMemoryLimit(lim0) }()
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	debug.SetMemoryLimit(1 << 62)
	if got := node.ConfigureGC(node.DefaultMemoryLimit); !strings.Contains(got, "GOGC=400") || !strings.Contains(got, "96 MiB") {
		t.Errorf("defaults: %q", got)
	}
	if gc, lim := debug.SetGCPercent(100), debug.SetMemoryLimit(-1); gc != node.ServerGCPercent || lim != node.DefaultMemoryLimit {
		t.Errorf("defaults set GOGC=%d and a limit of %d", gc, lim)
	}
	debug.SetMemoryLimit(1 << 62)
	t.Setenv("GOMEMLIMIT", "1GiB")
	t.Setenv("GOGC", "150")
	if got := node.ConfigureGC(node.DefaultMemoryLimit); !strings.Contains(got, "GOGC=150 (from the environment)") || !strings.Contains(got, "GOMEMLIMIT=1GiB (from the environment)") {
		t.Errorf("from the environment: %q", got)
	}
	if gc, lim := debug.SetGCPercent(100), debug.SetMemoryLimit(-1); gc != 100 || lim != 1<<62 {
		t.Errorf("the environment's choice was overridden: GOGC=%d, limit %d", gc, lim)
	}
	t.Setenv("GOMEMLIMIT", "")
	if got := node.ConfigureGC(0); !strings.Contains(got, "no memory limit") {
		t.Errorf("limit 0: %q", got)
	}
	if lim := debug.SetMemoryLimit(-1); lim != 1<<62 {
		t.Errorf("limit 0 set a limit of %d", lim)
	}
}
