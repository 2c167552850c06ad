package cli

import (
	"testing"
	"time"
)

// TestDemoSealedProgram runs "cloister demo sealed-program" and checks its
// steps: the key released by brokers whose entries are committed, the
// right answer from the jailed worker, the release's inclusion proved, the
// request after the revocation refused.
func TestDemoSealedProgram(t *testing.T) {
	playDemo(t, "compiles a 3 MiB sealed module", 15*time.Minute, runSealedDemo,
		"gave each one share, 2 of 3 needed", "artifact.registered #0", "cloister node --ledger",
		`dave opened count.json {"bytes":114,"lines":4,"words":21} (expected)`, "key.released entries for that session", "is included in the checkpoint", "acl.revoked #",
		"a second session's run is refused", "all steps behaved")
}
