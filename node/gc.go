package node

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"
)

// ServerGCPercent is the garbage collector's target that ConfigureGC sets
// for a node process: a node's live heap is small (tens of MB) while every
// session allocates about a megabyte that dies with it, so the default
// target (100) collects every few dozen sessions, for about a sixth of
// the node's CPU at full load. At 400 a collection comes four times less
// often, for at most five times the live heap in memory.
const ServerGCPercent = 400

// DefaultMemoryLimit is the soft memory limit `cloister node` gives the Go
// runtime (--memory-limit): five times a live heap of tens of MB, with
// streamed uploads passing 4 MiB chunks through, would otherwise let the
// heap reach 250–300 MB before a collection. Under the limit the
// collector runs as often as it needs to stay below it (never using more
// than about half the CPU for that: a live heap above the limit makes the
// node use more memory, not stop), and the runtime returns freed memory
// to the system sooner. 96 MiB is about 1.6 times the live heap of a node
// with 256 sessions' requests in flight (about 60 MB, most of it their
// connections and bodies) and five times that of a node at 20 sessions/s
// with a few dozen in flight (about 18 MB), so at a steady load the heap
// reaches the limit within its first minute and stays there, rather than
// creeping up for minutes as the live heap grows while bounded windows
// fill (the replay window's 10 minutes of nonces; closed sessions
// remembered, decision 0064) and GOGC=400 multiplies that five-fold
// (decisions 0077, 0063, 0065).
const DefaultMemoryLimit = 96 << 20

// ConfigureGC sets the process's GC target to ServerGCPercent unless the
// operator chose one (GOGC in the environment), and its soft memory limit
// to memoryLimit bytes (none if it is 0) unless GOMEMLIMIT is set, and
// says what is in force. Programs that run a node call it once at start; a
// library embedding a node in a larger process may leave both alone.
func ConfigureGC(memoryLimit int64) string {
	var in []string
	if v := os.Getenv("GOGC"); v != "" {
		in = append(in, "GOGC="+v+" (from the environment)")
	} else {
		debug.SetGCPercent(ServerGCPercent)
		in = append(in, fmt.Sprintf("GOGC=%d (node default; set GOGC to change it)", ServerGCPercent))
	}
	switch v := os.Getenv("GOMEMLIMIT"); {
	case v != "":
		in = append(in, "GOMEMLIMIT="+v+" (from the environment)")
	case memoryLimit > 0:
		debug.SetMemoryLimit(memoryLimit)
		in = append(in, fmt.Sprintf("memory limit %d MiB (--memory-limit)", memoryLimit>>20))
	default:
		in = append(in, "no memory limit (--memory-limit 0)")
	}
	return strings.Join(in, ", ")
}
