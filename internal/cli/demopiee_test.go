package cli

import (
	"testing"
	"time"
)

// TestDemoPiee runs "cloister demo piee" with every component a process
// of the test-built binary: the honest nodes pass, the rigged one fails
// and is outvoted as a verifier, the stopped one is unavailable, and
// every verdict is the one recomputed from the signed reveals.
func TestDemoPiee(t *testing.T) {
	playDemo(t, "starts a validator and four nodes and runs an epoch of 80 s", 12*time.Minute, runPieeDemo,
		"test network up", "published 8 operators", "demo: stopped n3", "the validators' VRF shares of the epoch's input", "the draw (checked here from the shares)",
		"committed H(", "revealed Q = ", "verdict on n2: FAIL", "verdict on n3: UNAVAILABLE", "recomputed here from the signed reveals", "console of", "all steps behaved")
}
