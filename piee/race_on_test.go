//go:build race

package piee

// raceBuild: the race detector makes wazero's compiler and every jailed
// worker (this test binary) several times slower.
const raceBuild = true
