package cli

import (
	"testing"
	"time"
)

// The federation demo on a test network of separate processes: three
// hospitals' nodes and the initiator's, the logistic regression checked
// against a centralised fit, canaries absent, the output rule and a
// revocation refusing what they should.
func TestDemoFederation(t *testing.T) {
	playDemo(t, "starts a test network of four nodes and compiles two 3 MiB modules", 15*time.Minute, runFederationDemo,
		"test network up", "3 models published", "console of research shows the published models", "sub-model calls, answer sealed to the initiator",
		"of the centralised fit", "model.called receipts on the ledger", "no hospital's canary row",
		"research writes its compute plan", "workflow status: the call graph recorded on the ledger", "research fetched its answer again from the blob store", "awaiting a person (count, 2 calls, 2 h)", "refused by hospital-a's output rule", "its model was revoked by its owner", "all steps behaved")
}
