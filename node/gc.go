package node

import (
	"os"
	"runtime/debug"
)

// ServerGCPercent is the garbage collector's target that ConfigureGC sets
// for a node process: a node's live heap is small (tens of MB) while every
// session allocates about a megabyte that dies with it, so the default
// target (100) collects every few dozen sessions, for about a sixth of
// the node's CPU at full load. At 400 a collection comes four times less
// often, for at most five times the live heap in memory.
const ServerGCPercent = 400

// ConfigureGC sets the process's GC target to ServerGCPercent unless the
// operator chose one (GOGC or GOMEMLIMIT in the environment), and says what
// is in force. Programs that run a node call it once at start; a library
// embedding a node in a larger process may leave the target alone.
func ConfigureGC() string {
	if v := os.Getenv("GOGC"); v != "" {
		return "GOGC=" + v + " (from the environment)"
	}
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		return "GOMEMLIMIT=" + v + " (from the environment), GOGC=100"
	}
	debug.SetGCPercent(ServerGCPercent)
	return "GOGC=400 (node default; set GOGC to change it)"
}
