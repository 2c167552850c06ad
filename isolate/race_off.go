//go:build !race

package isolate

const raceEnabled = false

// raceSlowdown scales CompileTimeout: the race detector makes wazero's
// compiler several times slower.
const raceSlowdown = 1
