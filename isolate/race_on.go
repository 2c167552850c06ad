//go:build race

package isolate

// raceEnabled: the race detector maps terabytes of shadow address space, so
// the worker's RLIMIT_AS cannot be applied in a -race build.
const raceEnabled = true

// raceSlowdown scales CompileTimeout: the race detector makes wazero's
// compiler several times slower.
const raceSlowdown = 5
